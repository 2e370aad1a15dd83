"""MovieLens-100k through the loop with the retrieval stage on: the last days of the data are
the staging days of two nights; the first registers and promotes a retriever, the second gates
tonight's retrievers against that champion, and both evaluate the retriever -> ranker pipeline."""

from __future__ import annotations

from datetime import date

import pytest

from tasks import registry

pytestmark = pytest.mark.slow


def test_movielens_nights_retrieve_gate_and_rerank(movielens_root, recloop_home, prefect_server, monkeypatch):
    from mlflow import MlflowClient

    from flows.nightly import nightly_retrain
    from tasks.settings import get_settings

    monkeypatch.setenv("RECLOOP_DATA_ROOT", str(movielens_root))
    monkeypatch.setenv("RECLOOP_WINDOW_DAYS", "30")
    monkeypatch.setenv("RECLOOP_RETRIEVAL_ENABLED", "true")  # tests/conftest.py turns it off for other nights
    monkeypatch.setenv("RECLOOP_RETRIEVAL_BOOTSTRAP_SAMPLES", "100")
    monkeypatch.setenv("RECLOOP_RETRIEVAL_EPOCHS", "5")  # mf: small epochs, CI seconds
    first = nightly_retrain(run_date=date(1998, 4, 22), dataset="movielens_100k", architectures=["wide"], epochs=1)
    second = nightly_retrain(run_date=date(1998, 4, 23), dataset="movielens_100k", architectures=["wide"], epochs=1)

    r1, r2 = first.retrieval, second.retrieval
    assert r1 is not None and r2 is not None and r1.k == r2.k == 100
    assert [row.model for row in r1.rows] == ["popularity", "item_knn", "user_knn", "tfidf_content", "mf"]
    assert r1.promoted and r1.champion_after == "1" and r2.champion_before == "1"
    assert r2.rows[-1].model == "champion v1"  # scored through its own bundle on the same users
    for summary in (r1, r2):
        assert summary.users > 0 and 0 <= summary.pipeline["pipeline_recall_at_10"] <= 1
        assert "ranker" in summary.pipeline_models
        assert all(row.verdict for row in summary.rows)
    assert second.stage_seconds["retrieval"] > 0

    settings = get_settings()
    client = MlflowClient(settings.resolved_tracking_uri)
    exp = client.get_experiment_by_name("movielens_100k")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'retrieval'")
    assert len(runs) == 10
    # One set of keys on every retriever run of both nights (`train_loss`, a curve, only where
    # there is a training loop; the champion comparison only on the night that had a champion).
    keys = {frozenset(k for k in r.data.metrics if not k.startswith(("champion_", "delta_", "train_loss")))
            for r in runs}
    assert len(keys) == 1
    tonight = [r for r in runs if r.data.tags.get("staging_day") == "1998-04-22"]
    assert len({frozenset(k for k in r.data.metrics if k != "train_loss") for r in tonight}) == 1
    assert "delta_recall_at_100" in tonight[0].data.metrics  # the second night had a champion
    mv = registry.alias_version(client, registry.retriever_model_name("movielens_100k"), registry.CHAMPION)
    assert mv.tags["gate.passed"] == "true" and mv.tags["staging_day"] in {"1998-04-21", "1998-04-22"}
