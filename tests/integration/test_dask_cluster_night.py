"""A whole night on an existing Dask cluster: a real `dask scheduler` and two `dask worker`
processes on 127.0.0.1, given to the night by RECLOOP_DASK_ADDRESS, as a team would point it
at its cluster. The preprocessing must run on those workers, and the night must promote."""

from __future__ import annotations

from datetime import date

import distributed
import pytest

from feature_store.cluster import process_cluster
from feature_store.generators.synthetic import generate_synthetic
from tasks import registry, tracking
from tasks.settings import get_settings

pytestmark = pytest.mark.slow
DATASET = "synthetic_clicks"


def _task_prefixes(address: str) -> set[str]:
    with distributed.Client(address, timeout=10) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def test_a_night_runs_its_preprocessing_on_an_external_cluster(recloop_home, prefect_server, monkeypatch, tmp_path):
    from flows.nightly import nightly_retrain

    settings = get_settings()
    generate_synthetic(settings.resolved_data_root, start=date(2026, 1, 1), days=5, rows_per_day=3000, seed=7)
    for key, value in {"RECLOOP_WINDOW_DAYS": "3", "RECLOOP_TRAIN_BATCH_SIZE": "256", "RECLOOP_GATE_MIN_AUC": "0.5",
                       "RECLOOP_GATE_CALIBRATION_BOUNDS": "[0.2, 5.0]"}.items():
        monkeypatch.setenv(key, value)
    with process_cluster(tmp_path / "dask", workers=2) as (address, _):
        monkeypatch.setenv("RECLOOP_DASK_ADDRESS", address)
        summary = nightly_retrain(run_date=date(2026, 1, 5), dataset=DATASET, architectures=["wide"], epochs=2)
        prefixes = _task_prefixes(address)
    # The fit statistics and the transform ran on the scheduler's workers, not in this process.
    assert any("write_transformed" in p for p in prefixes), prefixes
    assert summary.promoted and summary.champion_after == summary.registered_version, summary.notes
    client = tracking.configure(get_settings())
    assert str(registry.alias_version(client, registry.registered_model_name(DATASET), "champion").version) == "1"
    # The night's work directory is gone; nothing is left under RECLOOP_HOME/work.
    assert not any((recloop_home / "work").glob(f"{DATASET}-*"))
