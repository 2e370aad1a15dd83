"""The retrieval stage against a real SQLite MLflow registry: retrievers fitted on the streamed
window, gated on Recall@K against the champion retriever, registered as `<dataset>-retriever`
with the ranker's aliases and rollback, and the two-stage pipeline evaluated."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from feature_store.generators.synthetic import generate_synthetic
from feature_store.spec import RetrieverEntry, load_spec
from models.retrieval import RETRIEVERS
from models.retrieval.base import Retriever
from models.trainer import TrainConfig
from tasks import registry, tracking
from tasks.handoff import Night
from tasks.ingest import load_window
from tasks.preprocess import prepare
from tasks.retrieve import run_retrieval
from tasks.settings import get_settings
from tasks.train import train_candidate

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.retriever_model_name(DATASET)


@pytest.fixture()
def world(recloop_home):
    settings = get_settings(window_days=3, retrieval={"bootstrap_samples": 100})
    generate_synthetic(settings.resolved_data_root, start=date(2026, 3, 1), days=4, rows_per_day=4000, seed=3)
    spec = load_spec(DATASET)
    window = load_window(settings.resolved_data_root, spec, date(2026, 3, 5), settings.window_days)
    train = TrainConfig(epochs=1, batch_size=512, threads=2, seed=0)
    data = prepare(window, spec, recloop_home / "work", settings.stream, train=train)
    client = tracking.configure(settings)
    exp_id, parent = tracking.start_night(client, DATASET, "night-test", {"dataset": DATASET},
                                          tracking.artifact_location(settings))
    night = Night(DATASET, date(2026, 3, 5), {"dataset": DATASET}).started(exp_id, parent)
    ranker = train_candidate("wide", data, spec, train, None, night, log=lambda _: None)
    return settings, spec, window, data, client, night, ranker, recloop_home / "work"


def _stage(world, spec=None, mode="auto"):
    settings, spec0, window, data, client, night, ranker, work = world
    return run_retrieval(client, night, spec or spec0, window, data, work, settings.retrieval, mode,
                         ranker.model_uri, "wide", chunk_rows=settings.stream.chunk_rows, log=lambda _: None)


@dataclass(frozen=True)
class _Config:
    pass


class _Unpopular(Retriever):
    """A planted bad retriever: the least popular items first."""

    name, config_class = "unpopular", _Config

    def __init__(self, n_users, n_items, config=_Config(), side=None):
        super().__init__(n_users, n_items)
        self.config = config

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return (-self.popularity).expand(users.numel(), -1)


def _only(spec, name):
    return spec.model_copy(update={"retrieval": spec.retrieval.model_copy(
        update={"retrievers": [RetrieverEntry(name=name)]})})


def test_stage_registers_the_best_retriever_and_evaluates_the_pipeline(world):
    settings, spec, window, data, client, night, ranker, _ = world
    summary = _stage(world)
    k = settings.retrieval.k
    assert [r.model for r in summary.rows] == ["popularity", "item_knn"]
    assert summary.users > 50 and summary.registered_version == "1" and summary.promoted
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    assert str(champion.version) == "1" and champion.tags["gate.passed"] == "true"
    assert champion.tags["retriever"] == summary.selected and "gate.staging_recall" in champion.tags
    # Every retriever run: the same metric keys, tagged apart from the ranking runs.
    runs = client.search_runs([night.experiment_id], "tags.stage = 'retrieval'")
    assert sorted(r.info.run_name for r in runs) == ["retriever:item_knn", "retriever:popularity"]
    keys = [set(r.data.metrics) for r in runs]
    assert keys[0] == keys[1] and {f"staging_recall_at_{k}", "val_ndcg_at_10", "staging_mrr_at_50",
                                   "staging_coverage_at_100", "gate_passed"} <= keys[0]
    parent = client.get_run(night.parent_run_id).data.metrics
    assert {"pipeline_recall_at_10", "pipeline_ndcg_at_10", "pipeline_retriever_recall_at_10"} <= set(parent)
    assert 0 <= parent["pipeline_recall_at_10"] <= 1

    # The bundle: raw user ids in, raw catalogue item ids out, best first, nothing already seen.
    bundle = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    raw = pd.concat([c for c in window.day(window.val_day).chunks(["user_id", "item_id"])])
    user = raw["user_id"].iloc[0]
    out = bundle.predict(pd.DataFrame({"user_id": [user, "never-seen-user"]}), params={"k": 20})
    mine = out[out["user_id"] == user]
    assert mine["rank"].tolist() == list(range(1, 21)) and mine["score"].is_monotonic_decreasing
    assert set(out["item_id"]) <= registry_items(bundle)
    assert not set(mine["item_id"]) & set(raw.loc[raw["user_id"] == user, "item_id"])
    assert (out["user_id"] == "never-seen-user").sum() == 20  # an unknown user still gets a list


def registry_items(bundle) -> set:
    return set(bundle.unwrap_python_model().ids.items)


def test_worse_retriever_is_not_promoted_and_rollback_restores(world, monkeypatch):
    settings, spec, *_ = world
    client = world[4]
    first = _stage(world, _only(spec, "popularity"))
    assert first.promoted and first.champion_after == "1"

    monkeypatch.setitem(RETRIEVERS, "unpopular", _Unpopular)
    worse = _stage(world, _only(spec, "unpopular"))
    row = worse.rows[0]
    assert row.verdict == "fail (recall_vs_champion)" and row.delta_recall < 0
    assert row.delta_recall_ci[1] < 0  # the interval says so too
    assert worse.registered_version is None and not worse.promoted
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == "1"
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1
    assert worse.rows[-1].model == "champion v1" and worse.rows[-1].verdict == "in production"
    # The pipeline still runs on the champion retriever (not the failed challenger).
    assert "champion v1" in worse.pipeline_models

    # An equal retriever passes within the tolerance: v2, then one command back to v1.
    again = _stage(world, _only(spec, "popularity"))
    assert again.promoted and again.champion_after == "2", [(r.model, r.recall_k, r.verdict, r.delta_recall) for r in again.rows]
    done = registry.rollback(client, NAME, "test", "v2 misbehaves in production")
    assert (done.previous, done.version) == ("2", "1")
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == "1"


def test_manual_mode_leaves_a_challenger(world):
    summary = _stage(world, mode="manual")
    client = world[4]
    assert summary.registered_version and not summary.promoted
    assert str(registry.alias_version(client, NAME, registry.CHALLENGER).version) == summary.registered_version
    assert registry.alias_version(client, NAME, registry.CHAMPION) is None
    assert np.isfinite(summary.pipeline["pipeline_recall_at_10"])
