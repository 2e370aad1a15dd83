"""Drift on real day partitions: shifts planted on the staging day are flagged exactly where they
were planted, through the night's own path (the window's profile from the workflow fit, the
staging day's streamed in chunks); a night in block mode promotes nothing and names the reason,
one in warn mode promotes anyway."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_store import drift
from feature_store.generators.synthetic import generate_synthetic
from feature_store.partitions import day_dir
from feature_store.spec import load_spec
from models.trainer import TrainConfig
from tasks import registry
from tasks.ingest import load_window
from tasks.preprocess import prepare
from tasks.settings import StreamConfig

DATASET = "synthetic_clicks"
SPEC = load_spec(DATASET)
START = date(2026, 3, 1)
RUN_DATE = START + timedelta(days=5)  # window of 4: fit on 03-01..03-03, validate on 03-04, stage on 03-05
STAGING = RUN_DATE - timedelta(days=1)
SWAP = {"mobile": "tablet", "tablet": "mobile", "desktop": "desktop"}


def _plant(root, full: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shift the staging day in place; returns (original, planted). Always: price doubled (a mean
    shift of one standard deviation of log price) and device's two ends swapped (mobile 55% <->
    tablet 10%); with `full` also 10% of user segments never seen in training and 10% of item
    categories null."""
    path = day_dir(root, DATASET, STAGING) / "part-0.parquet"
    original = pd.read_parquet(path)
    planted = original.copy()
    planted["price"] = planted["price"] * 2
    planted["device"] = planted["device"].map(SWAP)
    if full:
        planted.loc[planted.index[::10], "user_segment"] = "seg99"
        planted.loc[planted.index[5::10], "item_category"] = None
    planted.to_parquet(path, index=False, row_group_size=4096)
    return original, planted


def test_planted_shifts_are_flagged_and_nothing_else(tmp_path):
    root = tmp_path / "data"
    # 20k rows a day: on 3 fitted days the share of staging users never seen is ~1.5%, under
    # the 5% threshold (at 2.5k rows a day it is ~15%: new users are real drift on small data).
    generate_synthetic(root, start=START, days=5, rows_per_day=20_000, seed=3)
    original, planted = _plant(root)
    window = load_window(root, SPEC, RUN_DATE, 4)
    policy = drift.DriftPolicy()
    data = prepare(window, SPEC, tmp_path / "work", StreamConfig(part_size="256KB", row_group_rows=8192),
                   train=TrainConfig(batch_size=1024), log=lambda _: None, drift=policy)

    report = drift.compare(data.train_profile, data.staging_profile, policy)
    flagged = {(f.feature, f.measure) for f in report.flags}
    assert flagged == {("price", "js"), ("device", "psi"), ("device", "linf"), ("user_segment", "unseen_share"),
                       ("user_segment", "psi"), ("item_category", "null_rate_change")}, report.reason
    assert report.value("device", "linf") == pytest.approx(0.45, abs=0.02)
    assert report.value("user_segment", "unseen_share") == pytest.approx(0.1, abs=1e-9)
    assert report.value("item_category", "null_rate_change") == pytest.approx(0.1, abs=1e-9)
    assert report.train_rows == 60_000 and report.staging_rows == 20_000
    assert {f.feature for f in report.features} == set(SPEC.feature_columns)
    assert report.mode == "warn" and not report.blocks

    # The staging profile streamed in chunks on the cluster is the in-memory one, exactly.
    bins = data.train_profile.bins(policy.bins)
    whole = drift.profile_frame(planted, drift.FeatureColumns.from_spec(SPEC), bins)
    for column, summary in whole.columns.items():
        streamed = data.staging_profile.columns[column]
        if isinstance(summary, drift.Binned):
            assert np.array_equal(streamed.counts, summary.counts) and streamed.outside == summary.outside
        else:
            pd.testing.assert_series_equal(streamed.counts.sort_index(), summary.counts.sort_index(),
                                           check_names=False)
        assert streamed.nulls == summary.nulls

    # The same day unshifted: nothing is flagged, every measure well under its threshold.
    unshifted = drift.compare(data.train_profile, drift.profile_frame(original, drift.FeatureColumns.from_spec(SPEC),
                                                                      bins), policy)
    assert unshifted.flags == [], unshifted.reason
    for feature in unshifted.features:
        for measure, value in feature.measures.items():
            assert abs(value) < policy.thresholds[measure] / 2, (feature.feature, measure, value)


@pytest.mark.slow
def test_block_mode_keeps_the_champion_and_names_the_reason_warn_mode_promotes(tmp_path, prefect_server,
                                                                              monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RECLOOP_HOME", str(home))
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("RECLOOP_WINDOW_DAYS", "4")
    monkeypatch.setenv("RECLOOP_TRAIN_BATCH_SIZE", "256")
    monkeypatch.setenv("RECLOOP_GATE_BOOTSTRAP_SAMPLES", "50")
    monkeypatch.setenv("RECLOOP_RETRIEVAL_ENABLED", "true")  # a blocking report fails the retrievers too
    monkeypatch.setenv("RECLOOP_RETRIEVAL_BOOTSTRAP_SAMPLES", "50")
    for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_DRIFT_MODE"):
        monkeypatch.delenv(var, raising=False)
    from flows.nightly import nightly_retrain
    from tasks import tracking
    from tasks.settings import get_settings

    generate_synthetic(home / "data", start=START, days=5, rows_per_day=2500, seed=11)
    _plant(home / "data", full=False)
    planted = {("price", "js"), ("device", "psi"), ("device", "linf")}

    # Warn (the default): flagged, logged on the parent run, and promoted all the same.
    warned = nightly_retrain(run_date=RUN_DATE, dataset=DATASET, architectures=["wide"], epochs=2,
                             approval_mode="auto")
    assert warned.promoted, warned.rows
    assert planted <= {(f.feature, f.measure) for f in warned.drift.flags}
    assert any(n.startswith("drift: ") and "not gated in mode warn" in n for n in warned.notes), warned.notes
    client = tracking.configure(get_settings())
    parent = client.get_run(warned.parent_run_id)
    assert parent.data.metrics["drift.js.price"] > 0.04 and parent.data.metrics["drift.psi.device"] > 0.2
    assert {"drift.psi.user_id", "drift.linf.hour", "drift.unseen_share.price",
            "drift.null_rate_change.device"} <= set(parent.data.metrics)
    assert "js:price" in parent.data.tags["drift.flagged"] and parent.data.tags["drift.mode"] == "warn"
    logged = {a.path for a in client.list_artifacts(warned.parent_run_id, "plots")}
    assert "plots/drift.png" in logged
    assert client.list_artifacts(warned.parent_run_id, "drift")[0].path == "drift/report.json"
    champion = warned.champion_after
    versions = len(client.search_model_versions(f"name='{registry.registered_model_name(DATASET)}'"))

    # Block: the same night again (force: it made the champion), every candidate fails the gate
    # on drift, nothing is registered, the champion stays, and the notes say why.
    monkeypatch.setenv("RECLOOP_DRIFT_MODE", "block")
    blocked = nightly_retrain(run_date=RUN_DATE, dataset=DATASET, architectures=["wide"], epochs=2,
                              approval_mode="auto", force=True)
    assert not blocked.promoted and blocked.registered_version is None
    assert blocked.champion_before == blocked.champion_after == champion
    assert str(registry.alias_version(client, registry.registered_model_name(DATASET), registry.CHAMPION).version) \
        == champion
    assert len(client.search_model_versions(f"name='{registry.registered_model_name(DATASET)}'")) == versions
    note = next(n for n in blocked.notes if n.startswith("no candidate passed the gate (drift: "))
    assert "js of 'price' is" in note and "psi of 'device' is" in note and note.endswith("champion unchanged")
    wide = next(r for r in blocked.rows if r.model == "wide")
    assert "drift" in wide.verdict
    child = client.search_runs([blocked.experiment_id], f"tags.mlflow.parentRunId = '{blocked.parent_run_id}'")
    assert child and all("drift" in run.data.tags["gate.verdict"] for run in child)
    assert client.get_run(blocked.parent_run_id).data.tags["drift.mode"] == "block"
    assert blocked.retrieval.registered_version is None and not blocked.retrieval.promoted
    assert blocked.retrieval.champion_after == warned.retrieval.champion_after
    assert all("drift" in row.verdict for row in blocked.retrieval.rows if not row.model.startswith("champion"))
