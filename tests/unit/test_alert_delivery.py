"""Alert messages and their delivery through Prefect's webhook block to a real HTTP receiver on
127.0.0.1: what the message says, which events go out, and that a receiver that fails, hangs or
is not there costs a warning, never an exception or an unbounded wait."""

from __future__ import annotations

import socket

import pytest
from webhook_receiver import WebhookReceiver

from feature_store.errors import ParameterError
from tasks import alerts, approval
from tasks.alerts import Alert, AlertConfig
from tasks.settings import get_settings

FAILED = Alert(
    event=alerts.FAILED, dataset="synthetic_clicks", model="synthetic_clicks-ranker", run_date="2026-01-10",
    version="7", arch="wide", champion_before="5", champion_after="5",
    reason="IngestError: day=2026-01-09 missing: the staging holdout {{not a template}}",
    flow_run_url="http://127.0.0.1:4200/runs/flow-run/abc", mlflow_run="http://127.0.0.1:5000/#/experiments/1/runs/r1",
    state="Failed",
)


def test_a_failure_message_names_the_night_the_model_the_reason_and_the_links():
    assert FAILED.subject() == "[recloop] synthetic_clicks 2026-01-10: night FAILED"
    body = FAILED.body()
    for line in ("Event: failed (flow run Failed)", "Dataset: synthetic_clicks, run date 2026-01-10",
                 "Model: synthetic_clicks-ranker v7 (wide)", "Champion: v5 -> v5 (unchanged)",
                 f"Reason: {FAILED.reason}", "Prefect flow run: http://127.0.0.1:4200/runs/flow-run/abc",
                 "MLflow: http://127.0.0.1:5000/#/experiments/1/runs/r1"):
        assert line in body.splitlines(), (line, body)


def test_a_promotion_message_shows_the_champion_moving_and_who_decided():
    promoted = Alert(event=alerts.PROMOTED, dataset="d", model="d-ranker", run_date="2026-01-11", version="8",
                     champion_before=None, champion_after="8", reason="by auto-gate: staging gate passed")
    body = promoted.body().splitlines()
    assert promoted.subject() == "[recloop] d 2026-01-11: new champion"
    assert "Champion: none -> v8 (moved)" in body and "Reason: by auto-gate: staging gate passed" in body
    assert not any(line.startswith(("Prefect", "MLflow")) for line in body)  # no links known: none shown
    nothing = Alert(event=alerts.FAILED, dataset="d", model="d-ranker")
    assert "Model: d-ranker (no version registered)" in nothing.body() and nothing.subject().endswith("d: night FAILED")


def test_decision_events_are_spelled_like_the_registry_verdicts():
    # The flow passes approval's verdict as the event name.
    assert (alerts.REJECTED, alerts.TIMEOUT, alerts.STALE) == (approval.REJECTED, approval.TIMEOUT, approval.STALE)


def test_settings_read_the_alerts_section_from_recloop_alerts_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    assert not get_settings().alerts.enabled  # unset: no alerts
    monkeypatch.setenv("RECLOOP_ALERTS_WEBHOOK_URL", "")  # docker-compose passes an unset one as empty
    monkeypatch.setenv("RECLOOP_ALERTS_BLOCK", "")
    assert not get_settings().alerts.enabled
    monkeypatch.setenv("RECLOOP_ALERTS_WEBHOOK_URL", "https://hooks.example.com/T0/B0/x")
    monkeypatch.setenv("RECLOOP_ALERTS_EVENTS", "failed, promoted")
    monkeypatch.setenv("RECLOOP_ALERTS_TIMEOUT_S", "3")
    cfg = get_settings().alerts
    assert cfg == AlertConfig(webhook_url="https://hooks.example.com/T0/B0/x", events=("failed", "promoted"),
                              timeout_s=3)
    assert cfg.wants("failed") and not cfg.wants("rejected")
    monkeypatch.setenv("RECLOOP_ALERTS_EVENTS", '["rolled_back"]')
    assert get_settings().alerts.events == ("rolled_back",)
    monkeypatch.setenv("RECLOOP_ALERTS_EVENTS", "failed,promotd")
    with pytest.raises(ParameterError, match=r"RECLOOP_ALERTS_EVENTS='failed,promotd'.*unknown alert events \['promotd'\]"):
        get_settings()
    monkeypatch.delenv("RECLOOP_ALERTS_EVENTS")
    monkeypatch.setenv("RECLOOP_ALERTS_BLOCK", "slack-webhook/oncall")
    with pytest.raises(ParameterError, match="not both"):
        get_settings()
    monkeypatch.delenv("RECLOOP_ALERTS_WEBHOOK_URL")
    assert get_settings().alerts.block == "slack-webhook/oncall"
    monkeypatch.setenv("RECLOOP_ALERTS_BLOCK", "oncall")
    with pytest.raises(ParameterError, match="<block-type-slug>/<block-name>"):
        get_settings()


def test_the_webhook_receives_json_with_the_message_and_its_fields():
    with WebhookReceiver() as hook:
        warnings: list[str] = []
        assert alerts.send(AlertConfig(webhook_url=hook.url), alerts.FAILED, lambda: FAILED, warnings.append)
    assert warnings == []
    ((post),) = hook.posts
    assert post["path"] == "/hooks/recloop"
    body = post["json"]
    assert body["subject"] == FAILED.subject() and body["body"] == FAILED.body()
    assert body["text"] == f"{FAILED.subject()}\n{FAILED.body()}"  # what Slack-style receivers show
    assert {k: body[k] for k in ("event", "dataset", "run_date", "version", "champion_before", "state")} == {
        "event": "failed", "dataset": "synthetic_clicks", "run_date": "2026-01-10", "version": "7",
        "champion_before": "5", "state": "Failed"}
    assert "{{not a template}}" in body["body"]  # free text is not templated


def test_unset_or_unwanted_events_send_nothing():
    with WebhookReceiver() as hook:
        assert not alerts.send(AlertConfig(), alerts.FAILED, lambda: FAILED)
        assert not alerts.send(AlertConfig(webhook_url=hook.url, events=("promoted",)), alerts.FAILED, lambda: FAILED)
    assert hook.posts == []


@pytest.mark.parametrize("status, delay_s, expected", [
    (500, 0.0, ("HTTPStatusError: Server error '500 Internal Server Error'",)),
    # The receiver hangs: the block's request timeout or, if that is late, the thread's gives up.
    (200, 3.0, ("ReadTimeout", "no answer within 1 s")),
])
def test_a_failing_or_hanging_receiver_costs_one_warning(status, delay_s, expected):
    with WebhookReceiver(status=status, delay_s=delay_s) as hook:
        warnings: list[str] = []
        cfg = AlertConfig(webhook_url=hook.url, timeout_s=0.5)
        assert alerts.send(cfg, alerts.PROMOTED, lambda: FAILED, warnings.append) is False
    (warning,) = warnings
    port = hook.server.server_address[1]
    assert warning.startswith(f"alert 'promoted' not delivered to webhook http://127.0.0.1:{port}/...: "), warning
    assert any(e in warning for e in expected), warning
    assert "/hooks/recloop" not in warning  # a webhook's path is often its secret
    assert len(hook.posts) == 1  # it was tried


def test_a_stalled_alert_is_abandoned_after_twice_the_timeout():
    """Whatever stalls (a registry read, a block without its own timeout), `send` returns."""
    import threading

    release = threading.Event()

    def stalled() -> Alert:
        release.wait(30)
        return FAILED

    warnings: list[str] = []
    with WebhookReceiver() as hook:
        assert not alerts.send(AlertConfig(webhook_url=hook.url, timeout_s=0.2), alerts.FAILED, stalled,
                               warnings.append)
        release.set()
    assert warnings == [f"alert 'failed' not delivered to webhook http://127.0.0.1:{hook.server.server_address[1]}"
                        "/...: no answer within 0.4 s"]


def test_nobody_listening_or_a_broken_message_costs_one_warning():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/x"
    warnings: list[str] = []
    assert not alerts.send(AlertConfig(webhook_url=url, timeout_s=2), alerts.FAILED, lambda: FAILED, warnings.append)
    assert "ConnectError" in warnings[0], warnings

    def broken() -> Alert:
        raise RuntimeError("registry unreachable")

    assert not alerts.send(AlertConfig(webhook_url=url), alerts.FAILED, broken, warnings.append)
    assert warnings[1].endswith("RuntimeError: registry unreachable"), warnings
