"""The trained-model check: on the embedded synthetic data (memorization + generalization
signal planted), Wide & Deep beats both of its halves on validation AUC, and all three beat
chance. Data, preprocessing and trainer are the real ones; seeds are fixed."""

from __future__ import annotations

from datetime import date

import pytest

from feature_store.generators.synthetic import generate_synthetic
from feature_store.spec import load_spec
from models import build_model
from models.metrics import roc_auc
from models.trainer import TrainConfig, fit
from tasks.ingest import load_window
from tasks.preprocess import prepare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root, start=date(2026, 1, 1), days=8, rows_per_day=20_000, seed=7)
    spec = load_spec("synthetic_clicks")
    window = load_window(root, spec, date(2026, 1, 9), window_days=7)
    val = window.day(window.val_day)
    oracle = roc_auc(val.column("click"), val.column("true_ctr"))
    # The streamed path: transformed parquet in small row groups, read back in shuffled buffers.
    return prepare(window, spec, tmp_path_factory.mktemp("work"), train=TrainConfig(epochs=4, seed=0, threads=2)), oracle


@pytest.fixture(scope="module")
def val_auc(data):
    prepared, _ = data
    out = {}
    # The halves of wide_deep: its wide part alone, and its deep tower alone, which embeds the
    # base features only (the `deep` architecture's default also embeds the crosses, which gives
    # it the memorization this test wants to see come from the wide part).
    halves = {"wide": None, "deep": {"use_crosses": False}, "wide_deep": None}
    for arch, hparams in halves.items():
        model = build_model(arch, prepared.schema, hparams, seed=0)
        out[arch] = fit(model, prepared.train, prepared.val, TrainConfig(epochs=4, seed=0, threads=2)).best_val_auc
    return out


def test_every_architecture_learns_the_planted_signal(val_auc, data):
    _, oracle = data
    for arch, auc in val_auc.items():
        assert 0.70 < auc < oracle, (arch, auc, oracle)


def test_wide_and_deep_beats_wide_and_deep_alone(val_auc):
    # Measured on this data over model seeds 0-2 (4 epochs): wide_deep 0.787-0.791,
    # wide 0.776-0.777, the deep tower alone 0.766-0.774; the smallest margins were 0.010 and
    # 0.015. (`deep` with the crosses embedded reaches 0.792: see test_zoo_on_synthetic.py.)
    assert val_auc["wide_deep"] > val_auc["wide"] + 0.005, val_auc
    assert val_auc["wide_deep"] > val_auc["deep"] + 0.008, val_auc
