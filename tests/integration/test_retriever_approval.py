"""Manual approval of retrievers: a manual night whose retriever passes its gate waits in a
second approval run (`approve-<dataset>-retriever-v<N>`, after the ranker's), and the reviewer's
decision through the real CLI lands on the `<dataset>-retriever` version, with its alerts. Real
Prefect test server, real SQLite MLflow registry."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from approval_waits import Night, approval_artifact, cli, flow_run, night_env, wait_until_paused
from webhook_receiver import WebhookReceiver

from feature_store.generators.synthetic import generate_synthetic
from tasks import registry

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
RANKER, RETRIEVER = registry.model_names(DATASET)
START = date(2026, 2, 1)
FIRST_NIGHT = START + timedelta(days=4)  # window of 3 days, staging day D-1


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    home = tmp_path_factory.mktemp("home")
    with WebhookReceiver() as hook, pytest.MonkeyPatch.context() as mp:
        night_env(mp, home, APPROVAL_POLL_S="1", ALERTS_WEBHOOK_URL=hook.url,
                  RETRIEVAL_ENABLED="true",  # tests/conftest.py turns it off for other nights
                  RETRIEVAL_BOOTSTRAP_SAMPLES="50",
                  # Every ranker and retriever passes its gate: this module is about the decisions, not the gates.
                  RETRIEVAL_RECALL_TOLERANCE="1.0", GATE_MIN_AUC="0.5", GATE_CALIBRATION_BOUNDS="[0.2, 5.0]",
                  GATE_AUC_TOLERANCE="1.0", GATE_LOGLOSS_TOLERANCE="1.0")
        from flows.cli import app
        from flows.nightly import nightly_retrain
        from tasks import tracking
        from tasks.settings import get_settings

        generate_synthetic(home / "data", start=START, days=6, rows_per_day=3000, seed=5)
        yield {"client": tracking.configure(get_settings()), "flow": nightly_retrain, "app": app, "hook": hook}


def _decide(loop, night: Night, verb: str, reviewer: str, reason: str, before: set[str] = frozenset()) -> str:
    """Wait for the night's next paused approval run and decide on it through the CLI."""
    run_id = wait_until_paused(night, set(before))
    res = cli(loop, verb, run_id, "--reviewer", reviewer, "--reason", reason)
    assert res.exit_code == 0, res.output
    return run_id


def test_a_manual_night_waits_for_its_retriever_and_approval_promotes_it(loop):
    client, hook = loop["client"], loop["hook"]
    night = Night(loop, FIRST_NIGHT)
    ranker_run = _decide(loop, night, "approve", "ann", "ranker ok")  # the ranker's decision comes first
    retriever_run = wait_until_paused(night, {ranker_run})
    challenger = registry.alias_version(client, RETRIEVER, registry.CHALLENGER)
    assert flow_run(retriever_run).name == f"approve-{DATASET}-retriever-v{challenger.version}"
    assert (challenger.tags["approval.decision"], challenger.tags["approval.flow_run_id"]) == ("pending", retriever_run)
    listed = cli(loop, "pending")
    assert retriever_run in listed.output and f"{RETRIEVER} v{challenger.version}" in listed.output, listed.output
    markdown = approval_artifact(retriever_run, key="synthetic-clicks-retriever-approval")
    assert f"Approval needed: {RETRIEVER} v{challenger.version}" in markdown
    assert "| Recall@10 |" in markdown and "| NDCG@10 |" in markdown and "| Recall@100 |" in markdown
    assert "ok recall_floor" in markdown and challenger.run_id in markdown and "champion (none yet)" in markdown

    res = cli(loop, "approve", retriever_run, "--reviewer", "bob", "--reason", "recall is fine")
    assert res.exit_code == 0, res.output
    summary = night.finish()

    assert summary.decision == "approved" and summary.promoted  # the ranker
    assert summary.retrieval.decision == "approved" and summary.retrieval.promoted
    assert summary.retrieval.champion_after == str(challenger.version)
    champion = registry.alias_version(client, RETRIEVER, registry.CHAMPION)
    assert str(champion.version) == str(challenger.version)
    assert (champion.tags["approval.decision"], champion.tags["approval.by"], champion.tags["approval.reason"]) == (
        "approved", "bob", "recall is fine")
    assert champion.tags["approval.flow_run_id"] == retriever_run and champion.tags["previous_champion"] == "none"
    assert registry.alias_version(client, RETRIEVER, registry.CHALLENGER) is None
    alert = hook.wait_for("promoted", lambda b: b["model"] == RETRIEVER, timeout=30)
    assert alert["version"] == str(champion.version) and "by bob: recall is fine" in alert["body"], alert


def test_a_rejected_retriever_leaves_the_champion(loop):
    client, hook = loop["client"], loop["hook"]
    champion_before = str(registry.alias_version(client, RETRIEVER, registry.CHAMPION).version)
    night = Night(loop, FIRST_NIGHT + timedelta(days=1))
    ranker_run = _decide(loop, night, "reject", "ann", "not tonight")
    retriever_run = _decide(loop, night, "reject", "bob", "too few new items", before={ranker_run})
    summary = night.finish()

    assert summary.decision == "rejected" and summary.retrieval.decision == "rejected"
    assert not summary.retrieval.promoted and summary.retrieval.champion_after == champion_before
    assert str(registry.alias_version(client, RETRIEVER, registry.CHAMPION).version) == champion_before
    tags = client.get_model_version(RETRIEVER, summary.retrieval.registered_version).tags
    assert (tags["approval.decision"], tags["approval.by"], tags["approval.reason"]) == (
        "rejected", "bob", "too few new items")
    assert tags["approval.flow_run_id"] == retriever_run
    assert registry.alias_version(client, RETRIEVER, registry.CHALLENGER) is None
    hook.wait_for("rejected", lambda b: b["model"] == RETRIEVER, timeout=30)
