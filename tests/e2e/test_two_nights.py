"""The newcomer's path (`make run`), through the real CLI in its own process: two nights on the
embedded synthetic data, a SQLite MLflow store in a temporary directory, and Prefect's
ephemeral server started on a fresh PREFECT_HOME, exactly as on a fresh clone."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_two_nights_leaves_a_champion_that_predicts_raw_rows(recloop_home, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from feature_store.partitions import read_day
    from tasks import registry

    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # nothing migrated yet: the slow first start
    env["RECLOOP_DRYRUN_ENABLED"] = "true"  # the default (tests/conftest.py turns it off for the others)
    os.makedirs(env["PREFECT_HOME"])
    result = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--rows-per-day", "4000", "--epochs", "2"],
                            env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "night 1" in out and "night 2" in out
    for arch in ("wide", "deep", "wide_deep"):
        assert arch in out
    assert "oracle (true CTR)" in out and "champion v1" in out  # night 2 compares against night 1's champion

    uri = f"sqlite:///{recloop_home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    name = registry.registered_model_name("synthetic_clicks")
    champion = registry.alias_version(client, name, registry.CHAMPION)
    assert champion is not None
    assert champion.tags["gate.passed"] == "true"
    assert champion.tags["approval.by"] == "auto-gate"
    # Served by a real server before it became challenger; the latency is on the version and its run.
    assert champion.tags["dryrun.result"] == "passed" and float(champion.tags["dryrun.p99_ms"]) > 0
    assert {"dryrun_p50_ms", "dryrun_p99_ms", "dryrun_max_abs_diff", "dryrun_seconds"} <= set(
        client.get_run(champion.run_id).data.metrics)

    # One parent run per night, one child per architecture, the same metric keys on every child.
    exp = client.get_experiment_by_name("synthetic_clicks")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 6
    for r in children:
        assert {"val_auc", "val_logloss", "staging_auc", "staging_logloss", "train_samples_per_s"} <= set(r.data.metrics)
        assert {"data_window", "dataset_fingerprint", "code_version"} <= set(r.data.tags)
    night2 = [r for r in children if r.data.tags["run_date"] == "2026-01-11"]
    assert all("champion_staging_auc" in r.data.metrics for r in night2)
    artifacts = {a.path for a in client.list_artifacts(night2[0].info.run_id, "plots")}
    assert {"plots/staging_roc.png", "plots/staging_calibration.png", "plots/training_curve.png"} <= artifacts

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    bundle = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    raw = read_day(recloop_home / "data", "synthetic_clicks", "2026-01-10").head(200)
    p = np.asarray(bundle.predict(raw))
    assert p.shape == (200,) and np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    assert 0.5 < p.mean() / raw["click"].mean() < 2.0

    status = CliRunner().invoke(app, ["status", "--dataset", "synthetic_clicks"], catch_exceptions=False)
    assert status.exit_code == 0 and "champion" in status.output and str(champion.version) in status.output
