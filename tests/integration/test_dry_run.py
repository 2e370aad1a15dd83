"""The served dry run before promotion, against a real SQLite MLflow registry and a real
`python -m tasks.serve` subprocess: a passing dry run records its latency on the run and the
version and makes the challenger; a server that does not start, predictions that differ and a
p99 over the budget each fail the candidate with a named reason, leave the champion where it
was and the version without the `challenger` alias; no server outlives its dry run, also when
the night raises or is killed."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from feature_store.generators.synthetic import generate_synthetic
from feature_store.spec import load_spec
from models.trainer import TrainConfig
from tasks import doctor, registry, tracking
from tasks.dryrun import PENDING, DryRunConfig, scoring_server
from tasks.evaluate import GatePolicy
from tasks.handoff import Night
from tasks.ingest import load_window
from tasks.preprocess import prepare
from tasks.processes import process_start_time
from tasks.report import comparison_rows, markdown_table
from tasks.settings import get_settings
from tasks.stage import run_staging
from tasks.train import train_candidate

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
REPO = Path(__file__).resolve().parents[2]
# This module tests the dry run, not which model wins: the gate's other checks are relaxed.
POLICY = GatePolicy(auc_tolerance=1.0, logloss_tolerance=1.0, min_auc=0.5, calibration_bounds=(0.2, 5.0),
                    bootstrap_samples=50)
SMALL = DryRunConfig(sample_rows=1000, request_rows=100)  # 10 timed requests: seconds, not minutes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One trained `wide` candidate, registered by hand as champion v1, and the night's context."""
    home = tmp_path_factory.mktemp("dryrun") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home.parent / "absent.env"))
        for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_FAULT"):
            mp.delenv(var, raising=False)
        settings = get_settings(window_days=3)
        generate_synthetic(settings.resolved_data_root, start=date(2026, 3, 1), days=4, rows_per_day=2000, seed=3)
        spec = load_spec(DATASET)
        window = load_window(settings.resolved_data_root, spec, date(2026, 3, 5), settings.window_days)
        train = TrainConfig(epochs=1, batch_size=512, threads=1, seed=0)
        data = prepare(window, spec, home / "work", settings.stream, train=train)
        client = tracking.configure(settings)
        exp_id, parent = tracking.start_night(client, DATASET, "night-test", {}, tracking.artifact_location(settings))
        night = Night(DATASET, date(2026, 3, 5), {"dataset": DATASET}).started(exp_id, parent)
        cand = train_candidate("wide", data, spec, train, None, night, log=lambda _: None)
        mv = registry.register_version(client, NAME, DATASET, cand.model_uri, cand.run_id,
                                       {"arch": "wide", "gate.verdict": "pass", "gate.passed": "true"})
        registry.promote(client, NAME, mv.version, approved_by="test", reason="a champion to leave alone")
        yield {"client": client, "night": night, "data": data, "cand": cand, "champion": str(mv.version)}


def _children() -> set[int]:
    """Live child processes of this process (from /proc; a zombie is not alive)."""
    me = str(os.getpid())
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if fields[1] == me and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _stage(world, config: DryRunConfig, cand=None):
    """One staging run of the candidate with the given dry run; the children before and after."""
    before = _children()
    outcome = run_staging(world["client"], world["night"], [cand or world["cand"]], world["data"].holdout_raw,
                          world["data"].holdout_labels, POLICY, log=lambda _: None, dry_run=config)
    assert _children() == before, "a server outlived its dry run"
    return outcome


def _tags(world, version: str) -> dict[str, str]:
    return world["client"].get_model_version(NAME, version).tags


def _assert_failed(world, outcome, reason: str) -> dict[str, str]:
    """The candidate failed on the dry run alone: not challenger, the champion where it was."""
    gate, tags = outcome.version_gate, _tags(world, outcome.version)
    assert not gate.passed and gate.verdict == "fail (served_dry_run)", gate.explanation
    assert tags["dryrun.result"].startswith(f"failed: {reason}"), tags["dryrun.result"]
    assert tags["gate.passed"] == "false" and "FAILED served_dry_run" in tags["gate.checks"]
    assert "ok bundle_reload" in tags["gate.checks"]  # in process it reloaded fine
    challenger = registry.alias_version(world["client"], NAME, registry.CHALLENGER)
    assert challenger is None or str(challenger.version) != outcome.version
    assert str(registry.alias_version(world["client"], NAME, registry.CHAMPION).version) == world["champion"]
    return tags


def test_a_passing_dry_run_records_latency_and_makes_the_challenger(world):
    outcome = _stage(world, SMALL)
    gate, client = outcome.version_gate, world["client"]
    assert gate.passed, gate.explanation
    served = gate.dry_run
    assert served.uri == f"models:/{NAME}/{outcome.version}"  # the registered version, as it will be served
    assert (served.rows, served.requests, served.request_rows) == (1000, 10, 100)
    assert 0 < served.p50_ms <= served.p99_ms and served.max_abs_diff <= 1e-6

    tags = _tags(world, outcome.version)
    assert tags["dryrun.result"] == "passed" and tags["gate.passed"] == "true"
    assert float(tags["dryrun.p50_ms"]) == pytest.approx(served.p50_ms, abs=0.01)
    assert float(tags["dryrun.p99_ms"]) == pytest.approx(served.p99_ms, abs=0.01)
    assert "ok served_dry_run" in tags["gate.checks"] and "budget 250" in tags["gate.checks"]
    assert str(registry.alias_version(client, NAME, registry.CHALLENGER).version) == outcome.version
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == world["champion"]

    metrics = client.get_run(world["cand"].run_id).data.metrics
    assert metrics["dryrun_p50_ms"] == pytest.approx(served.p50_ms)
    assert metrics["dryrun_p99_ms"] == pytest.approx(served.p99_ms)
    assert metrics["dryrun_max_abs_diff"] <= 1e-6 and metrics["dryrun_seconds"] > 0

    rows = comparison_rows([world["cand"]], outcome, world["data"].holdout_labels, None)
    assert (rows[0].served_p50_ms, rows[0].served_p99_ms) == (served.p50_ms, served.p99_ms)
    assert rows[1].served_p99_ms is None  # the champion is not served tonight
    table = markdown_table(rows).splitlines()
    assert table[0].rstrip(" |").endswith("served p50 / p99 ms")
    assert table[2].rstrip(" |").endswith(f"{served.p50_ms:.1f} / {served.p99_ms:.1f}")


def test_a_p99_over_the_budget_fails_the_candidate(world):
    outcome = _stage(world, dataclasses.replace(SMALL, p99_budget_ms=0.001))
    tags = _assert_failed(world, outcome, "p99 over budget")
    assert tags["dryrun.result"].endswith("> 0.001 ms")
    assert float(tags["dryrun.p99_ms"]) > 0.001  # measured, recorded, over budget
    assert outcome.version_gate.dry_run.max_abs_diff <= 1e-6  # only the latency failed


def test_predictions_that_differ_from_the_in_memory_ones_fail_the_candidate(world):
    # 5e-6 passes the reload check (1e-5, in process) but not the served comparison (1e-6).
    cand = dataclasses.replace(world["cand"], holdout_pred=world["cand"].holdout_pred + 5e-6)
    outcome = _stage(world, SMALL, cand)
    tags = _assert_failed(world, outcome, "predictions differ")
    assert "max |served - in-memory| 5.00e-06 > 1e-06" in tags["dryrun.result"]


def test_a_server_that_cannot_load_the_version_fails_the_candidate(world, monkeypatch):
    """The version's weights are damaged after the in-process reload check passed: the server
    process exits, and its own error is the reason."""
    real = registry.register_version
    weights = {}

    def register_then_damage(client, *args, **kwargs):
        mv = real(client, *args, **kwargs)
        root = Path(client.get_model_version_download_uri(NAME, mv.version).removeprefix("file://"))
        path = root / "artifacts" / "model.pt"
        weights[path] = path.read_bytes()
        path.write_bytes(b"not a checkpoint")
        return mv

    monkeypatch.setattr(registry, "register_version", register_then_damage)
    try:
        outcome = _stage(world, SMALL)
    finally:
        for path, data in weights.items():  # the champion shares these artifacts
            path.write_bytes(data)
    tags = _assert_failed(world, outcome, "server did not start: exited with status 1")
    assert f"models:/{NAME}/{outcome.version} does not load" in tags["dryrun.result"]
    assert "dryrun.p99_ms" not in tags and outcome.version_gate.dry_run.p99_ms is None


def test_a_server_not_ready_in_time_fails_the_candidate_and_is_stopped(world):
    outcome = _stage(world, dataclasses.replace(SMALL, startup_timeout_s=0.5))
    tags = _assert_failed(world, outcome, "server did not start: no healthy /ping within 0.5 s")
    assert "dryrun.p50_ms" not in tags
    assert world["client"].get_run(world["cand"].run_id).data.metrics["dryrun_seconds"] < 30


def test_a_night_that_dies_during_the_dry_run_leaves_a_version_that_never_passed(world, monkeypatch):
    """The registry side of a crash mid-dry-run: registered, `gate.passed=false`, the dry run
    pending, not challenger; the next night's doctor records it as interrupted."""
    import tasks.stage

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # as far as the registry writes go, the night stops here

    monkeypatch.setattr(tasks.stage, "run_dry_run", die)
    versions_before = {mv.version for mv in registry.all_versions(world["client"], NAME)}
    with pytest.raises(KeyboardInterrupt):
        _stage(world, SMALL)
    (version,) = {mv.version for mv in registry.all_versions(world["client"], NAME)} - versions_before
    tags = _tags(world, str(version))
    assert (tags["dryrun.result"], tags["gate.passed"]) == (PENDING, "false")
    assert tags["gate.verdict"] == "fail (served_dry_run)" and "pending" in tags["gate.checks"]
    challenger = registry.alias_version(world["client"], NAME, registry.CHALLENGER)
    assert challenger is None or str(challenger.version) != str(version)

    repairs = doctor.repair_registry(world["client"], NAME)
    assert [r.what for r in repairs] == ["marked dry run interrupted"] and repairs[0].subject.endswith(f"v{version}")
    tags = _tags(world, str(version))
    assert tags["dryrun.result"].startswith("failed: interrupted") and tags["gate.passed"] == "false"
    assert doctor.repair_registry(world["client"], NAME) == []


def test_the_server_is_stopped_when_the_caller_raises(world):
    before = _children()
    with pytest.raises(RuntimeError, match="boom"), scoring_server(f"models:/{NAME}/{world['champion']}", 120) as server:
        assert server.pid in _children()
        raise RuntimeError("boom")
    assert _children() == before and process_start_time(server.pid) is None


_KILLED_MID_DRY_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from feature_store.partitions import read_day
    from tasks.dryrun import DryRunConfig, run_dry_run
    from tasks.handoff import FrameDay

    day = read_day(sys.argv[2], "synthetic_clicks", "2026-03-04").head(200)
    # RECLOOP_FAULT=during_dry_run: SIGKILLed once the server is up, as the OOM killer would.
    run_dry_run(sys.argv[1], FrameDay(day), np.zeros(len(day)), None, DryRunConfig(sample_rows=100),
                log=lambda line: print(line, flush=True))
""")


def test_a_server_dies_with_a_night_killed_during_the_dry_run(world):
    import mlflow

    settings = get_settings()
    env = {**os.environ, "RECLOOP_FAULT": "during_dry_run", "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri()}
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_DRY_RUN, f"models:/{NAME}/{world['champion']}",
                           str(settings.resolved_data_root)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("dry run:"))
    pid = int(line.split("(pid ")[1].split(")")[0])
    deadline = time.monotonic() + 30
    while process_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process_start_time(pid) is None, f"server {pid} outlived its night"
