"""Manual approval end to end: the night waits in its `nightly-approval` subflow run, paused on a
real Prefect test server, while the night itself stays Running; a person decides through the
real CLI (`recloop pending / approve / reject`), and the decision lands on the model version in a
real SQLite MLflow registry. Also: a pause that times out promotes nothing, and a version whose
night died while it waited is marked `crashed`."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from approval_waits import (
    Night,
    approval_artifact,
    cli,
    flow_run,
    flow_run_state,
    night_env,
    night_of,
    wait_until_paused,
)

from feature_store.generators.synthetic import generate_synthetic
from tasks import approval, registry

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
START = date(2026, 2, 1)
DAYS = 8
# One run date per night, strictly increasing (the loop refuses to stage on a day the champion
# trained on, and a repeated night is a no-op): staging day D-1, training days D-4..D-2.
RUN_DATES = iter(START + timedelta(days=n) for n in range(4, DAYS + 1))


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        night_env(mp, home, APPROVAL_POLL_S="1")  # the paused run notices a resume within a second
        from flows.cli import app
        from flows.nightly import nightly_retrain
        from tasks import tracking
        from tasks.settings import get_settings

        generate_synthetic(home / "data", start=START, days=DAYS, rows_per_day=2000, seed=5)
        client = tracking.configure(get_settings())
        yield {"client": client, "flow": nightly_retrain, "app": app}


def _champion(client) -> str | None:
    mv = registry.alias_version(client, NAME, registry.CHAMPION)
    return str(mv.version) if mv else None


def test_approve_from_the_cli_promotes_and_records_who_and_why(loop, monkeypatch):
    client = loop["client"]
    champion_before = _champion(client)
    monkeypatch.setenv("RECLOOP_DRYRUN_ENABLED", "true")  # this night serves its challenger first
    night = Night(loop, next(RUN_DATES))
    run_id = wait_until_paused(night, set())

    listed = cli(loop, "pending")
    assert listed.exit_code == 0, listed.output
    challenger = registry.alias_version(client, NAME, registry.CHALLENGER)
    assert run_id in listed.output and f"v{challenger.version}" in listed.output, listed.output
    # The paused run is the approval subflow; the night it belongs to keeps running (and would
    # keep renewing a deployment's concurrency lease).
    paused, night_id = flow_run(run_id), night_of(run_id)
    assert paused.name == f"approve-{DATASET}-v{challenger.version}"
    assert flow_run_state(night_id).is_running()
    assert night_id in listed.output and "Running" in listed.output, listed.output
    assert challenger.tags["approval.decision"] == "pending"
    assert challenger.tags["approval.flow_run_id"] == run_id and challenger.tags["approval.night_run_id"] == night_id
    markdown = approval_artifact(run_id)
    assert f"Approval needed: {NAME} v{challenger.version}" in markdown
    assert "| AUC |" in markdown and challenger.run_id in markdown and f"recloop approve {run_id}" in markdown
    assert challenger.tags["dryrun.result"] == "passed"
    assert "| served p50 ms |" in markdown and "| served p99 ms |" in markdown

    approved = cli(loop, "approve", run_id, "--reviewer", "ann", "--reason", "beats the champion on AUC")
    assert approved.exit_code == 0, approved.output
    summary = night.finish()

    assert summary.decision == "approved" and summary.promoted
    assert summary.champion_before == champion_before
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    assert str(champion.version) == summary.registered_version == str(challenger.version)
    assert champion.tags["approval.decision"] == "approved"
    assert champion.tags["approval.by"] == "ann"
    assert champion.tags["approval.reason"] == "beats the champion on AUC"
    assert champion.tags["approval.flow_run_id"] == run_id
    assert champion.tags["previous_champion"] == (champion_before or "none")
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    assert flow_run_state(run_id).is_completed() and flow_run_state(night_id).is_completed()

    # The run is finished: resuming it again is refused with a clear message.
    again = cli(loop, "approve", run_id, "--reviewer", "ann")
    assert again.exit_code == 1 and "is not paused: it is Completed" in again.output, again.output
    assert "could not be resumed" not in again.output


def test_reject_keeps_the_champion_and_drops_the_challenger(loop):
    client = loop["client"]
    champion_before = _champion(client)
    night = Night(loop, next(RUN_DATES))
    run_id = wait_until_paused(night, set())
    version = str(registry.alias_version(client, NAME, registry.CHALLENGER).version)

    # The night's id (what its page in the UI shows first) leads to its approval run.
    rejected = cli(loop, "reject", night_of(run_id), "--reviewer", "bob", "--reason", "calibration drifted")
    assert rejected.exit_code == 0, rejected.output
    assert f"waits in approval run {run_id}" in rejected.output, rejected.output
    summary = night.finish()

    assert summary.decision == "rejected" and not summary.promoted
    assert _champion(client) == champion_before == summary.champion_after
    tags = client.get_model_version(NAME, version).tags
    assert tags["approval.decision"] == "rejected"
    assert tags["approval.by"] == "bob" and tags["approval.reason"] == "calibration drifted"
    assert tags["approval.flow_run_id"] == run_id
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    assert flow_run_state(run_id).is_completed()


def test_an_approval_after_the_champion_moved_promotes_nothing(loop):
    """The reviewer approved a comparison against v_old, but during the pause someone promoted
    another version (an emergency promotion; a rollback does the same): the approval is stale."""
    client = loop["client"]
    night = Night(loop, next(RUN_DATES))
    run_id = wait_until_paused(night, set())
    challenger = str(registry.alias_version(client, NAME, registry.CHALLENGER).version)
    compared = _champion(client)
    other = next(str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")
                 if str(v.version) not in (challenger, compared))
    registry.promote(client, NAME, other, approved_by="ops", reason="hotfix while a night waited")

    approved = cli(loop, "approve", run_id, "--reviewer", "ann", "--reason", "looks good")
    assert approved.exit_code == 0, approved.output
    summary = night.finish()

    assert summary.decision == "stale" and not summary.promoted
    assert _champion(client) == other
    tags = client.get_model_version(NAME, challenger).tags
    assert tags["approval.decision"] == "stale" and tags["approval.by"] == "ann"
    assert f"moved from v{compared} to v{other}" in tags["approval.reason"], tags["approval.reason"]
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None


def test_a_pause_that_times_out_promotes_nothing(loop, tmp_path, monkeypatch):
    """Through `recloop run`: the flow raises ApprovalExpired (run Failed), the CLI still prints
    and writes the night's summary, and exits 3."""
    client = loop["client"]
    champion_before = _champion(client)
    monkeypatch.setenv("RECLOOP_APPROVAL_TIMEOUT_S", "5")
    out = tmp_path / "night.json"
    res = cli(loop, "run", "--date", str(next(RUN_DATES)), "--arch", "wide", "--epochs", "2",
               "--approval", "manual", "--json", str(out))
    assert res.exit_code == 3, res.output
    assert "no decision on v" in res.output and "within 5 s: champion unchanged" in res.output, res.output
    summary = json.loads(out.read_text())

    assert summary["decision"] == "timeout" and not summary["promoted"]
    assert _champion(client) == champion_before
    tags = client.get_model_version(NAME, summary["registered_version"]).tags
    assert tags["approval.decision"] == "timeout" and tags["approval.by"] == "nobody"
    run_id = tags["approval.flow_run_id"]
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None
    assert flow_run_state(run_id).is_failed() and flow_run_state(tags["approval.night_run_id"]).is_failed()
    late = cli(loop, "approve", run_id, "--reviewer", "ann")
    assert late.exit_code == 1 and "is not paused" in late.output, late.output


def test_cli_refuses_what_it_cannot_resume(loop):
    missing = cli(loop, "approve", str(uuid.uuid4()), "--reviewer", "ann")
    assert missing.exit_code == 1 and "no flow run" in missing.output, missing.output
    garbled = cli(loop, "reject", "not-a-run-id", "--reviewer", "ann", "--reason", "x")
    assert garbled.exit_code == 2 and "not a flow run id" in garbled.output, garbled.output
    no_reason = cli(loop, "reject", str(uuid.uuid4()), "--reviewer", "ann")
    assert no_reason.exit_code != 0  # a rejection needs a reason
    nobody = cli(loop, "approve", str(uuid.uuid4()), "--reviewer", " ")
    assert nobody.exit_code == 2 and "--reviewer" in nobody.output, nobody.output


def test_versions_whose_night_died_while_waiting_are_marked_crashed(loop):
    """What the worker leaves after a `kill -9` of a paused night: the night Crashed, its
    approval run still Paused, the version `pending` with the `challenger` alias. `recloop
    pending` marks it `crashed`, drops the alias, says why on the night's MLflow run and ends
    the orphaned approval run; a version whose night still runs is left alone. The night's own
    on_crashed hook does the same in-process, before the server shows the crash."""
    from prefect import get_client
    from prefect.states import Crashed, Paused, Running

    from flows.nightly import _record_abandoned_approval, nightly_approval, nightly_retrain

    client = loop["client"]
    source = client.search_model_versions(f"name = '{NAME}'")[0]
    exp_id = client.get_experiment_by_name(DATASET).experiment_id

    def version(night_state=None, approval_state=None, legacy_run=None):
        """A registered version waiting on (real, server-side) flow runs in the given states."""
        parent = client.create_run(exp_id, run_name="night-under-test").info.run_id  # RUNNING
        mv = client.create_model_version(NAME, source=source.source, run_id=source.run_id,
                                         tags={"parent_run_id": parent, "run_date": "2026-02-28"})
        with get_client(sync_client=True) as pc:
            if legacy_run is not None:  # a version from before the approval subflow
                approval.mark_pending(client, NAME, mv.version, legacy_run, 600)
                return mv, None, None, parent
            night = pc.create_flow_run(nightly_retrain, parameters={"dataset": DATASET}, state=Running())
            waiting = pc.create_flow_run(nightly_approval, parameters={"night_run_id": str(night.id)},
                                         state=Running())
            pc.set_flow_run_state(waiting.id, approval_state or Paused(timeout_seconds=600), force=True)
            if night_state is not None:
                pc.set_flow_run_state(night.id, night_state, force=True)
        approval.mark_pending(client, NAME, mv.version, str(waiting.id), 600, str(night.id))
        client.set_registered_model_alias(NAME, registry.CHALLENGER, mv.version)
        return mv, str(night.id), str(waiting.id), parent

    alive, alive_night, alive_waiting, _ = version()
    killed = Crashed(message="Flow run process exited with non-zero status code -9.")  # as the worker says
    dead, dead_night, dead_waiting, dead_parent = version(killed)

    listed = cli(loop, "pending")
    assert listed.exit_code == 0, listed.output
    tags = client.get_model_version(NAME, dead.version).tags
    assert tags["approval.decision"] == "crashed" and tags["approval.by"] == "nobody"
    assert tags["approval.reason"].startswith(f"flow run {dead_night} is Crashed (Flow run process exited"), tags
    assert f"{NAME} v{dead.version}: approval.decision=crashed" in listed.output, listed.output
    assert registry.alias_version(client, NAME, registry.CHALLENGER) is None  # it pointed to `dead`
    run = client.get_run(dead_parent)
    assert run.info.status == "FAILED" and dead_night in run.data.tags["failure.reason"]
    assert flow_run_state(dead_waiting).is_cancelled()  # the UI no longer offers a Resume
    assert client.get_model_version(NAME, alive.version).tags["approval.decision"] == "pending"
    assert alive_waiting in listed.output and alive_night in listed.output

    refused = cli(loop, "approve", dead_waiting, "--reviewer", "ann")
    assert refused.exit_code == 1 and "is not paused: it is Cancelled" in refused.output, refused.output

    # The hook: the night that waited on `alive` crashes in-process (e.g. a failed lease
    # renewal); the server still says Running when the hook runs.
    _record_abandoned_approval(nightly_retrain, flow_run(alive_night), Crashed(message="lease renewal failed"))
    tags = client.get_model_version(NAME, alive.version).tags
    assert tags["approval.decision"] == "crashed"
    assert tags["approval.reason"].startswith(f"flow run {alive_night} is Crashed (lease renewal failed)"), tags
    assert flow_run_state(alive_waiting).is_cancelled()

    # A version tagged by an older release (the paused run was the night itself), whose run the
    # server no longer knows: marked too; it is the newest version, so `pending` names it after.
    legacy, *_ = version(legacy_run=str(uuid.uuid4()))
    listed = cli(loop, "pending")
    assert listed.exit_code == 0, listed.output
    reason = client.get_model_version(NAME, legacy.version).tags["approval.reason"]
    assert "is not known to the Prefect API" in reason, reason
    again = cli(loop, "pending")
    assert f"{NAME} v{legacy.version} was not decided on: approval.decision=crashed" in again.output, again.output
    assert "approval.decision=crashed (" not in again.output  # nothing left to fix
