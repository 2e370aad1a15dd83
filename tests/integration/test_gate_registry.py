"""The staging gate against a real SQLite MLflow registry with real trained bundles:
a better challenger takes the `champion` alias, a worse one leaves it where it was."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pytest
import torch

from feature_store.generators.synthetic import generate_synthetic
from feature_store.spec import load_spec
from models.trainer import TrainConfig
from tasks import registry, tracking
from tasks.handoff import Night
from tasks.ingest import load_window
from tasks.preprocess import prepare
from tasks.settings import get_settings
from tasks.stage import approve_and_promote, run_staging
from tasks.train import train_candidate

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)


@pytest.fixture()
def world(recloop_home):
    settings = get_settings(window_days=3)
    generate_synthetic(settings.resolved_data_root, start=date(2026, 3, 1), days=4, rows_per_day=4000, seed=3)
    spec = load_spec(DATASET)
    window = load_window(settings.resolved_data_root, spec, date(2026, 3, 5), settings.window_days)
    train = TrainConfig(epochs=2, batch_size=512, threads=2, seed=0)
    data = prepare(window, spec, recloop_home / "work", settings.stream, train=train)
    client = tracking.configure(settings)
    exp_id, parent = tracking.start_night(client, DATASET, "night-test", {}, tracking.artifact_location(settings))
    night = Night(DATASET, date(2026, 3, 5), {"dataset": DATASET}).started(exp_id, parent)
    return settings, spec, data, client, night


class _ShuffledLabels:
    """A batch source with the labels permuted inside every batch: same features, no signal."""

    def __init__(self, source, seed):
        self.source, self.seed, self.rows = source, seed, source.rows

    def batches(self, epoch, check=None):
        g = torch.Generator().manual_seed(self.seed * 1000 + (epoch or 0))
        for batch in self.source.batches(epoch, check=check):
            yield {**batch, "label": batch["label"][torch.randperm(len(batch["label"]), generator=g)]}


def _shuffled(data, seed=0):
    """Same features, labels permuted: a model trained on this has learned nothing."""
    return dataclasses.replace(data, train=_ShuffledLabels(data.train, seed), val=_ShuffledLabels(data.val, seed))


def _train(world, arch, data, epochs):
    settings, spec, _, _, night = world
    cfg = TrainConfig(epochs=epochs, batch_size=512, threads=2, seed=0)
    return train_candidate(arch, data, spec, cfg, None, night, log=lambda _: None)


def test_better_challenger_is_promoted_and_worse_one_is_not(world):
    settings, spec, data, client, night = world
    policy = settings.gate
    y = data.holdout_labels

    # An old, poor champion (trained on shuffled labels), put in production by hand.
    poor = _train(world, "wide", _shuffled(data), epochs=1)
    mv = registry.register_version(client, NAME, DATASET, poor.model_uri, poor.run_id, {"arch": "wide"})
    registry.promote(client, NAME, mv.version, approved_by="test", reason="seed a weak champion")
    poor_version = str(mv.version)

    # A real model beats it: registered, gated, promoted.
    good = _train(world, "wide_deep", data, epochs=2)
    outcome = run_staging(client, night, [good], data.holdout_raw, y, policy, log=lambda _: None)
    assert outcome.champion.version == poor_version
    assert outcome.version_gate.passed, outcome.version_gate.verdict
    assert outcome.version_gate.delta_auc > 0.05
    promotion = approve_and_promote(client, night, outcome, "auto")
    assert promotion is not None and promotion.previous == poor_version
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    assert str(champion.version) == outcome.version
    assert champion.tags["previous_champion"] == poor_version
    assert champion.tags["gate.passed"] == "true"
    assert {c.name for c in outcome.version_gate.checks} >= {"finite", "calibration", "auc_vs_champion",
                                                             "logloss_vs_champion", "bundle_reload"}

    # A worse challenger: the gate fails, nothing is registered, the champion stays.
    versions_before = len(client.search_model_versions(f"name='{NAME}'"))
    worse = _train(world, "deep", _shuffled(data, seed=1), epochs=1)
    outcome2 = run_staging(client, night, [worse], data.holdout_raw, y, policy, log=lambda _: None)
    assert not outcome2.gates["deep"].passed
    assert outcome2.version is None
    assert approve_and_promote(client, night, outcome2, "auto") is None
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == str(champion.version)
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions_before
    # The worse run still carries its comparison numbers for the MLflow compare view.
    metrics = client.get_run(worse.run_id).data.metrics
    assert metrics["gate_passed"] == 0.0 and metrics["delta_auc"] < 0


def test_manual_mode_leaves_a_challenger_waiting(world):
    settings, spec, data, client, night = world
    good = _train(world, "wide_deep", data, epochs=2)
    outcome = run_staging(client, night, [good], data.holdout_raw, data.holdout_labels,
                          settings.gate, log=lambda _: None)
    assert outcome.version_gate is not None and outcome.version_gate.passed, outcome.gates["wide_deep"].explanation
    assert approve_and_promote(client, night, outcome, "manual") is None
    assert str(registry.alias_version(client, NAME, registry.CHALLENGER).version) == outcome.version
    assert registry.alias_version(client, NAME, registry.CHAMPION) is None


def test_champion_bundle_predicts_raw_rows_with_its_own_preprocessing(world):
    import mlflow

    settings, spec, data, client, night = world
    good = _train(world, "wide_deep", data, epochs=2)
    outcome = run_staging(client, night, [good], data.holdout_raw, data.holdout_labels,
                          settings.gate, log=lambda _: None)
    approve_and_promote(client, night, outcome, "auto")
    bundle = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    raw = data.holdout_raw.head(50).copy()
    raw["user_id"] = "never-seen-user"  # unseen ids go to the out-of-vocabulary slot, not an error
    p = np.asarray(bundle.predict(raw))
    assert p.shape == (50,) and np.all((p > 0) & (p < 1))
