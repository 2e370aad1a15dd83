"""Alerts from real nights on a real Prefect test server and SQLite MLflow, received by a real
HTTP server on 127.0.0.1: a failed night, a promotion whose receiver answers 500 (the night
completes and promotes all the same), and a rollback through a notification block saved in
Prefect."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from approval_waits import night_env
from typer.testing import CliRunner
from webhook_receiver import WebhookReceiver

from feature_store.generators.synthetic import generate_synthetic
from tasks import registry

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
START = date(2026, 3, 1)
DAYS = 5  # one night: staging day START+4, training START+1..START+3


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    home = tmp_path_factory.mktemp("home")
    with WebhookReceiver() as hook, pytest.MonkeyPatch.context() as mp:
        night_env(mp, home, "RECLOOP_ALERTS_BLOCK", "RECLOOP_ALERTS_EVENTS", ALERTS_WEBHOOK_URL=hook.url,
                  ALERTS_TIMEOUT_S="5")
        from flows.nightly import nightly_retrain
        from tasks import tracking
        from tasks.settings import get_settings

        generate_synthetic(home / "data", start=START, days=DAYS, rows_per_day=2000, seed=3)
        yield {"hook": hook, "flow": nightly_retrain, "client": tracking.configure(get_settings()), "mp": mp}


def test_a_failed_night_alerts_with_the_exception_line(loop):
    hook = loop["hook"]
    with pytest.raises(Exception, match="staging holdout") as raised:
        loop["flow"](run_date=date(2030, 1, 1), dataset=DATASET, architectures=["wide"], epochs=1)
    alert = hook.wait_for("failed", lambda b: b["run_date"] == "2030-01-01", timeout=30)
    assert (alert["dataset"], alert["state"]) == (DATASET, "Failed")
    assert alert["subject"] == f"[recloop] {DATASET} 2030-01-01: night FAILED"
    assert f"Reason: {type(raised.value).__name__}: {raised.value}"[:200] in alert["body"], alert["body"]
    assert "Champion: none -> none (unchanged)" in alert["body"]
    assert "/runs/flow-run/" in alert["flow_run_url"]  # the test server's UI


def test_a_promotion_alerts_and_a_receiver_that_fails_does_not_fail_the_night(loop):
    hook = loop["hook"]
    hook.status = 500
    try:
        summary = loop["flow"](run_date=START + timedelta(days=DAYS), dataset=DATASET, architectures=["wide"],
                               epochs=2, approval_mode="auto")
    finally:
        hook.status = 200
    assert summary.promoted and summary.champion_after == summary.registered_version
    alert = hook.wait_for("promoted", timeout=30)  # tried, answered 500, and the night went on
    version = summary.registered_version
    assert (alert["version"], alert["arch"], alert["champion_after"]) == (version, "wide", version)
    assert "champion_before" not in alert  # the first champion
    assert alert["run_date"] == str(START + timedelta(days=DAYS))
    body = alert["body"].splitlines()
    assert f"Model: {NAME} v{version} (wide)" in body and f"Champion: none -> v{version} (moved)" in body
    assert any(line.startswith("Reason: by auto-gate: staging gate passed") for line in body), body
    assert f"MLflow: run {summary.parent_run_id} (sqlite:///" in alert["body"]  # no server: the run id and store
    assert "/runs/flow-run/" in alert["flow_run_url"]


def test_a_rollback_alerts_through_a_saved_notification_block(loop):
    """RECLOOP_ALERTS_BLOCK names a block saved in Prefect (here Prefect's generic webhook with
    its own JSON template; a Slack or email block works the same way)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    hook, client, mp = loop["hook"], loop["client"], loop["mp"]
    CustomWebhookNotificationBlock(name="oncall", url=hook.url, json_data={"event": "from-block", "text": "{{body}}",
                                                                            "title": "{{subject}}"}
                                   ).save("recloop-oncall", overwrite=True)
    mp.delenv("RECLOOP_ALERTS_WEBHOOK_URL")
    mp.setenv("RECLOOP_ALERTS_BLOCK", "custom-webhook/recloop-oncall")
    # A second champion (no bundle needed: a rollback only moves aliases and tags).
    first = registry.alias_version(client, NAME, registry.CHAMPION)
    run = client.create_run(client.get_run(first.run_id).info.experiment_id)
    second = registry.register_version(client, NAME, DATASET, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                       {"gate.passed": "true", "dataset": DATASET})
    registry.promote(client, NAME, str(second.version), approved_by="ann", reason="second")

    from flows.cli import app

    res = CliRunner().invoke(app, ["rollback", DATASET, "--reviewer", "carol", "--reason", "CTR dropped"])
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    alert = hook.wait_for("from-block", timeout=30)
    assert alert["title"] == f"[recloop] {DATASET} {first.tags['run_date']}: champion rolled back"
    text = alert["text"].splitlines()
    assert f"Champion: v{second.version} -> v{first.version} (moved)" in text, text
    assert "Reason: by carol: CTR dropped" in text and f"Model: {NAME} v{first.version} (wide)" in text

    # A block that does not exist: the rollback still happens, with one warning.
    mp.setenv("RECLOOP_ALERTS_BLOCK", "custom-webhook/nobody-saved-this")
    registry.promote(client, NAME, str(second.version), approved_by="ann", reason="again")
    res = CliRunner().invoke(app, ["rollback", DATASET, "--reviewer", "carol", "--reason", "again"])
    assert res.exit_code == 0, res.output
    assert "warning: alert 'rolled_back' not delivered to block custom-webhook/nobody-saved-this" in " ".join(
        res.output.split()), res.output
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == str(first.version)
