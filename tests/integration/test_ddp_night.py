"""Nights with RECLOOP_TRAIN_PROCESSES=2: training runs in two DDP processes, the night's own
process logs to MLflow and registers as with one process; a training process that dies fails
the night with its rank named, before anything is registered."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from feature_store.generators.synthetic import generate_synthetic
from models.distributed import DistributedTrainingError
from tasks import faults, registry, tracking

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
START = date(2026, 3, 1)
ENV = {
    "RECLOOP_TRAIN_PROCESSES": "2", "RECLOOP_WINDOW_DAYS": "3", "RECLOOP_TRAIN_EPOCHS": "2",
    "RECLOOP_TRAIN_BATCH_SIZE": "256", "RECLOOP_GATE_BOOTSTRAP_SAMPLES": "50", "RECLOOP_GATE_MIN_AUC": "0.5",
    "RECLOOP_GATE_CALIBRATION_BOUNDS": "[0.2, 5.0]",
}


def night(n: int) -> str:
    return str(START + timedelta(days=3 + n))


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    home = tmp_path_factory.mktemp("ddp-night") / "home"
    generate_synthetic(home / "data", start=START, days=6, rows_per_day=1500, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_APPROVAL_MODE",
                    faults.ENV):
            mp.delenv(var, raising=False)
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        for key, value in ENV.items():
            mp.setenv(key, value)
        from flows.cli import app
        from tasks.settings import get_settings

        yield {"app": app, "client": tracking.configure(get_settings()), "mp": mp}


def _snapshot(client) -> dict:
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    challenger = registry.alias_version(client, NAME, registry.CHALLENGER)
    return {"champion": champion and str(champion.version), "challenger": challenger and str(challenger.version),
            "versions": {str(v.version): dict(v.tags) for v in registry.all_versions(client, NAME)}}


def _runs(client) -> dict[str, tuple[str, str, dict]]:
    exp = client.get_experiment_by_name(DATASET)
    return {r.info.run_id: (r.info.run_name, r.info.status, dict(r.data.params))
            for r in client.search_runs([exp.experiment_id])}


def test_a_two_process_night_trains_registers_and_promotes(loop):
    res = CliRunner().invoke(loop["app"], ["run", "--date", night(1), "--arch", "wide"])
    assert res.exit_code == 0, (res.output, res.exception)
    after = _snapshot(loop["client"])
    assert after["champion"] == "1" and after["versions"]["1"]["gate.passed"] == "true"
    (child,) = [params for name, _, params in _runs(loop["client"]).values() if name == "wide"]
    assert child["train.processes"] == "2"


def test_a_dying_rank_fails_the_night_and_leaves_the_registry_untouched(loop):
    client = loop["client"]
    before, runs_before = _snapshot(client), set(_runs(client))
    loop["mp"].setenv(faults.ENV, faults.RANK_POINT.format(rank=1))
    try:
        res = CliRunner().invoke(loop["app"], ["run", "--date", night(2), "--arch", "wide"])
    finally:
        loop["mp"].delenv(faults.ENV)
    assert res.exit_code != 0
    assert isinstance(res.exception, DistributedTrainingError), (res.output, res.exception)
    assert "rank 1 of 2 was killed by SIGKILL" in str(res.exception)
    assert _snapshot(client) == before  # no version, no alias moved
    new = {k: v for k, v in _runs(client).items() if k not in runs_before}
    assert sorted((name, status) for name, status, _ in new.values()) == [
        (f"night-{night(2)}", "FAILED"), ("wide", "FAILED")]
