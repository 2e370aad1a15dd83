"""Nights that die mid-way, champions that break, nights that must not run: every case leaves a
registry and a tracking store that are consistent, or that `recloop doctor` (or the next night)
makes consistent, and says what it did.

Kills are real: `recloop run` runs in a child process with RECLOOP_FAULT naming the point where
it SIGKILLs itself (no finally, no atexit, no Prefect hook). The child talks to the session's
Prefect test server and this module's SQLite MLflow store; the nights that are not killed run
in-process through the same CLI. Run dates increase through the module: each night's staging
day is after the champion's training window, as production nights are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feature_store.generators.synthetic import generate_synthetic
from tasks import registry, tracking

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
START = date(2026, 3, 1)


def night(n: int) -> str:
    """Run date of the n-th night: window of 3 days, staging on the day before the run date."""
    return str(START + timedelta(days=3 + n))


# The gate is relaxed: this module tests what survives a crash, not which model wins.
ENV = {
    "RECLOOP_WINDOW_DAYS": "3", "RECLOOP_TRAIN_EPOCHS": "2", "RECLOOP_TRAIN_BATCH_SIZE": "256",
    "RECLOOP_GATE_BOOTSTRAP_SAMPLES": "50", "RECLOOP_GATE_MIN_AUC": "0.5", "RECLOOP_GATE_CALIBRATION_BOUNDS": "[0.2, 5.0]",
    "RECLOOP_GATE_AUC_TOLERANCE": "1.0", "RECLOOP_GATE_LOGLOSS_TOLERANCE": "1.0",
}


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("crash") / "home"
    generate_synthetic(home / "data", start=START, days=16, rows_per_day=1200, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_APPROVAL_MODE",
                    "RECLOOP_FAULT"):
            mp.delenv(var, raising=False)
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        for key, value in ENV.items():
            mp.setenv(key, value)
        from flows.cli import app
        from tasks.settings import get_settings

        client = tracking.configure(get_settings())
        child_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
                     "PYTHONWARNINGS": "ignore"}
        yield {"home": home, "client": client, "app": app, "env": child_env, "mp": mp}


def _cli(loop, *args: str):
    res = CliRunner().invoke(loop["app"], list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(*res.exc_info))) from None
    return res


def _child(loop, *args: str, fault: str | None = None, env: dict | None = None, timeout: float = 600):
    """`recloop ARGS` in its own process (killed at `fault` when given)."""
    child_env = {**loop["env"], **(env or {})}
    if fault:
        child_env["RECLOOP_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=child_env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _snapshot(client) -> dict:
    """Everything a crash could leave inconsistent: aliases, versions and their tags, runs."""
    exp = client.get_experiment_by_name(DATASET)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    challenger = registry.alias_version(client, NAME, registry.CHALLENGER)
    return {
        "champion": champion and str(champion.version),
        "challenger": challenger and str(challenger.version),
        "versions": {str(v.version): dict(v.tags) for v in registry.all_versions(client, NAME)},
        "runs": {r.info.run_id: (r.info.run_name, r.info.status, dict(r.data.tags)) for r in runs},
    }


def _running(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot["runs"].items() if v[1] == "RUNNING"}


def _flow_run_state(flow_run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state.type.value


def test_first_night_makes_the_champion(loop):
    res = _cli(loop, "run", "--date", night(1), "--arch", "wide")
    assert res.exit_code == 0, res.output
    assert _snapshot(loop["client"])["champion"] == "1"


def test_killed_during_training_then_doctor_ends_its_runs_and_its_flow_run(loop):
    client = loop["client"]
    before = _snapshot(client)
    res = _child(loop, "run", "--date", night(2), "--arch", "wide", fault="after_first_epoch")
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr

    hurt = _snapshot(client)
    left = _running(hurt)
    assert sorted(name for name, _, _ in left.values()) == [f"night-{night(2)}", "wide"]  # the defect
    (flow_run_id,) = {tags["flow_run_id"] for _, _, tags in left.values()}
    assert _flow_run_state(flow_run_id) == "RUNNING"
    assert (hurt["champion"], hurt["versions"]) == (before["champion"], before["versions"])

    fixed = _cli(loop, "doctor", "--dataset", DATASET)
    assert fixed.exit_code == 0, fixed.output
    assert "ended run" in fixed.output and "crashed flow run" in fixed.output, fixed.output
    after = _snapshot(client)
    assert not _running(after)
    for run_id in left:
        _, status, tags = after["runs"][run_id]
        assert status == "KILLED" and f"pid {tags['recloop.pid']} " in tags["recloop.ended_by"]
    assert _flow_run_state(flow_run_id) == "CRASHED"
    assert (after["champion"], after["versions"]) == (before["champion"], before["versions"])
    assert "nothing to repair" in _cli(loop, "doctor", "--dataset", DATASET).output


def test_killed_after_registration_leaves_a_complete_version_and_the_next_night_cleans_up(loop):
    client = loop["client"]
    res = _child(loop, "run", "--date", night(2), "--arch", "wide", fault="after_version_created")
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    hurt = _snapshot(client)
    newest = max(hurt["versions"], key=int)
    tags = hurt["versions"][newest]
    # Visible only with its complete gate result (the issue: a READY version with no gate.* tags).
    assert tags["gate.passed"] == "true" and "bundle_reload" in tags["gate.checks"] and tags["health"] == "ok"
    assert hurt["champion"] == "1" and hurt["challenger"] is None
    assert [name for name, _, _ in _running(hurt).values()] == [f"night-{night(2)}"]  # training had ended

    # No doctor: the next night reconciles before it starts, and says so.
    res = _cli(loop, "run", "--date", night(3), "--arch", "wide", "--json", str(loop["home"] / "n3.json"))
    assert res.exit_code == 0, res.output
    summary = json.loads((loop["home"] / "n3.json").read_text())
    assert sum(n.startswith(f"ended run: night-{night(2)}") for n in summary["notes"]) == 1, summary["notes"]
    after = _snapshot(client)
    assert not _running(after) and summary["promoted"] and after["champion"] == summary["registered_version"]


def test_killed_after_the_alias_moved_then_doctor_completes_the_promotion(loop):
    client = loop["client"]
    before = _snapshot(client)["champion"]
    res = _child(loop, "run", "--date", night(4), "--arch", "wide", fault="after_champion_alias")
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    hurt = _snapshot(client)
    new = hurt["champion"]
    assert new != before and hurt["challenger"] == new  # champion and challenger on one version
    assert "previous_champion" not in hurt["versions"][new]

    fixed = _cli(loop, "doctor")
    assert fixed.exit_code == 0 and "completed promotion" in fixed.output, fixed.output
    after = _snapshot(client)
    tags = after["versions"][new]
    assert after["champion"] == new and after["challenger"] is None
    assert tags["previous_champion"] == before and tags["approval.by"] == "auto-gate"
    assert registry.INTENT not in tags and not _running(after)


def test_a_rerun_of_the_champions_night_is_a_no_op_unless_forced(loop):
    client = loop["client"]
    before = _snapshot(client)
    res = _cli(loop, "run", "--date", night(4), "--arch", "wide")  # the night that made the champion
    assert res.exit_code == 0, res.output
    assert "nothing to do" in res.output and f"champion v{before['champion']}" in res.output
    assert _snapshot(client) == before  # no run, no version

    forced = _cli(loop, "run", "--date", night(4), "--arch", "wide", "--force")
    assert forced.exit_code == 0, forced.output
    assert len(_snapshot(client)["runs"]) == len(before["runs"]) + 2


def test_a_backfill_is_refused_before_work_and_evaluates_only_when_asked(loop):
    client = loop["client"]
    before = _snapshot(client)
    champion = before["versions"][before["champion"]]
    res = _child(loop, "run", "--date", night(2), "--arch", "wide")
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    staging = str(date.fromisoformat(night(2)) - timedelta(days=1))
    assert f"stages on {staging}" in line and f"up to {champion['validation_day']}" in line and "--backfill" in line
    assert "local Prefect server" not in res.stdout  # refused before any server or run
    assert _snapshot(client) == before

    res = _cli(loop, "run", "--date", night(2), "--arch", "wide", "--backfill", "--json",
               str(loop["home"] / "bf.json"))
    assert res.exit_code == 0, res.output
    summary = json.loads((loop["home"] / "bf.json").read_text())
    assert summary["backfill"] and summary["registered_version"] is None and not summary["promoted"]
    after = _snapshot(client)
    assert after["champion"] == before["champion"] and after["versions"].keys() == before["versions"].keys()
    unhealthy = {v: {k: x for k, x in t.items() if not k.startswith("health")} for v, t in after["versions"].items()}
    assert unhealthy == {v: {k: x for k, x in t.items() if not k.startswith("health")}
                         for v, t in before["versions"].items()}  # only the champion's health check is new


def test_a_broken_champion_is_flagged_and_replaced(loop):
    client = loop["client"]
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    store = loop["home"] / "artifacts"
    model_id = champion.source.removeprefix("models:/")
    deleted = [p for p in store.rglob("model.pt") if model_id in str(p)]
    assert deleted, f"no model.pt of {model_id} under {store}"
    for p in deleted:
        p.unlink()

    # A night whose challenger fails the floor: the broken champion stays, flagged, and says so.
    loop["mp"].setenv("RECLOOP_GATE_MIN_AUC", "0.999")
    kept = _cli(loop, "run", "--date", night(5), "--arch", "wide")
    loop["mp"].setenv("RECLOOP_GATE_MIN_AUC", ENV["RECLOOP_GATE_MIN_AUC"])
    assert kept.exit_code == 0, kept.output
    assert f"champion v{champion.version} marked health=broken" in kept.output, kept.output
    tags = client.get_model_version(NAME, champion.version).tags
    assert tags["health"] == "broken" and "FileNotFoundError" in tags["health.reason"]
    status = _cli(loop, "status", "--dataset", DATASET)
    assert f"v{champion.version} is broken: cannot score the staging day: FileNotFoundError" in status.output, status.output
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == str(champion.version)

    replaced = _cli(loop, "run", "--date", night(6), "--arch", "wide")
    assert replaced.exit_code == 0, replaced.output
    new = registry.alias_version(client, NAME, registry.CHAMPION)
    assert str(new.version) != str(champion.version) and new.tags["previous_champion"] == str(champion.version)
    # Rolling back onto the broken version is refused; an older sound version can be named.
    refused = _cli(loop, "rollback", DATASET, "--reviewer", "ann", "--reason", "x")
    assert refused.exit_code == 1 and "health=broken" in refused.output, refused.output
    sound = next(v for v, t in _snapshot(client)["versions"].items()
                 if t.get("gate.passed") == "true" and t.get("health") == "ok" and v != str(new.version))
    done = _cli(loop, "rollback", DATASET, "--reviewer", "ann", "--reason", "x", "--to-version", sound)
    assert done.exit_code == 0, done.output


def test_concurrent_nights_are_serialized_and_the_newest_date_ends_champion(loop):
    """Two nights started together, the older date second: they never overlap (the dataset
    lock) and the older one can never replace the newer one (it stages inside its window)."""
    client = loop["client"]
    procs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--date", d, "--arch", "wide"],
                              env=loop["env"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in (night(8), night(7))]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes[0] == 0, outs[0]
    assert codes[1] in (0, 2), outs[1]  # 2: it ran second and its staging day is inside the champion's window
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    assert champion.tags["run_date"] == night(8)
    parents = [r for r in client.search_runs([client.get_experiment_by_name(DATASET).experiment_id])
               if r.info.run_name in (f"night-{night(7)}", f"night-{night(8)}")]
    spans = sorted((r.info.start_time, r.info.end_time) for r in parents)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans


def test_the_local_prefect_server_dies_with_a_killed_cli(loop, tmp_path):
    """Without a configured Prefect API the CLI runs a private server; SIGKILL of the CLI must not
    leave it behind (Prefect's own ephemeral server stays up as an orphan)."""
    env = {k: v for k, v in loop["env"].items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    marker = f"RECLOOP_TEST_MARKER={uuid.uuid4().hex}"
    env["RECLOOP_TEST_MARKER"] = marker.split("=", 1)[1]
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--date", night(9), "--arch", "wide"],
                          env={**env, "RECLOOP_FAULT": "after_first_epoch"}, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "local Prefect server on" in proc.stdout
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _processes_with(marker):
        time.sleep(0.5)
    assert not _processes_with(marker), "a process of the killed CLI is still running"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
