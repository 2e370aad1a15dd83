"""The retrieval stage's parts that need no store: the spec's `retrieval` section, the
settings, the Recall@K gate, the aggregation of interactions and the two-stage re-ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from feature_store.errors import ParameterError, SpecError
from feature_store.spec import load_spec, spec_to_yaml
from models.metrics import per_user_recall
from tasks.retrieval_gate import (
    RetrievalPolicy,
    bootstrap_mean_delta,
    evaluate_retrieval_gate,
)
from tasks.settings import get_settings

BASE = {
    "name": "tiny",
    "label": "click",
    "categorical": [{"name": "user_id"}, {"name": "item_id"}, {"name": "device"}],
    "continuous": [{"name": "price"}],
    "user_columns": ["user_id"],
    "item_columns": ["item_id", "price"],
    "retrieval": {"retrievers": ["popularity", {"name": "mf", "hparams": {"dim": 8}}],
                  "positive": {"column": "rating", "min": 4}, "text_columns": ["title"],
                  "tag_columns": [{"name": "genres", "separator": "|"}, "studio"]},
}


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_retrieval_section_short_forms_and_round_trip(tmp_path):
    spec = load_spec(_write(tmp_path, BASE))
    r = spec.retrieval
    assert [e.name for e in r.retrievers] == ["popularity", "mf"] and r.retrievers[1].hparams == {"dim": 8}
    assert r.positive.column == "rating" and r.positive.min == 4
    assert [(t.name, t.separator) for t in r.tag_columns] == [("genres", "|"), ("studio", None)]
    assert load_spec(_write(tmp_path, yaml.safe_load(spec_to_yaml(spec)))) == spec


@pytest.mark.parametrize("change, fragment", [
    ({"retrievers": []}, "retrieval.retrievers"),
    ({"retrievers": ["popularity", "popularity"]}, "listed twice"),
    ({"positive": "clicks"}, "retrieval.positive"),
    ({"positive": {"column": "rating"}}, "retrieval.positive"),
    ({"k": 0}, "retrieval.k"),
    ({"text_columns": ["user_id"]}, "retrieval.text_columns"),
    ({"ranking": True}, "retrieval.ranking"),
])
def test_bad_retrieval_section_names_file_and_key(tmp_path, change, fragment):
    path = _write(tmp_path, {**BASE, "retrieval": {**BASE["retrieval"], **change}})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_retrieval_needs_vocabulary_ids(tmp_path):
    hashed = {**BASE, "categorical": [{"name": "user_id", "hash_buckets": 100}, {"name": "item_id"},
                                      {"name": "device"}]}
    with pytest.raises(SpecError, match=r"user_columns\[0\] 'user_id' must be a categorical column with a vocabulary"):
        load_spec(_write(tmp_path, hashed))
    with pytest.raises(SpecError, match="needs user_columns and item_columns"):
        load_spec(_write(tmp_path, {**BASE, "item_columns": []}))


def test_bundled_specs_declare_retrieval():
    ml = load_spec("movielens_100k").retrieval
    assert ml.positive.column == "rating" and ml.text_columns == ["title"] and ml.tag_columns[0].separator == "|"
    assert load_spec("synthetic_clicks").retrieval.positive == "label"


def test_settings_section(monkeypatch, tmp_path):
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("RECLOOP_RETRIEVAL_K", "50")
    monkeypatch.setenv("RECLOOP_RETRIEVAL_EXCLUDE_SEEN", "false")
    monkeypatch.delenv("RECLOOP_RETRIEVAL_ENABLED", raising=False)  # tests/conftest.py sets it
    got = get_settings().retrieval
    assert (got.k, got.exclude_seen, got.top_n, got.enabled) == (50, False, 10, True)
    with pytest.raises(ParameterError, match="top_n"):
        get_settings(retrieval={"top_n": 80})


def test_per_user_recall_and_gate():
    rec = np.array([[1, 2, 3], [4, 5, -1], [7, 8, 9]])
    relevant = [np.array([2, 9]), np.array([]), np.array([9])]
    # user 0: 1 of 2 in the top 3; user 1 has nothing relevant (skipped); user 2: 1 of 1
    assert per_user_recall(rec, relevant, 3).tolist() == [0.5, 1.0]
    assert per_user_recall(rec, relevant, 2).tolist() == [0.5, 0.0]
    policy = RetrievalPolicy(recall_tolerance=0.01, bootstrap_samples=200)
    new, old = np.array([0.5, 0.6, 0.7, 0.2]), np.array([0.5, 0.6, 0.7, 0.4])
    worse = evaluate_retrieval_gate(new, old, 100, policy)
    assert not worse.passed and worse.verdict == "fail (recall_vs_champion)"
    assert worse.delta == pytest.approx(-0.05) and worse.delta_low <= -0.05 <= worse.delta_high
    assert evaluate_retrieval_gate(old, new, 100, policy).passed
    floor = evaluate_retrieval_gate(new, None, 100, RetrievalPolicy(min_recall=0.6))
    assert not floor.passed and "recall_floor" in floor.verdict and floor.metrics() == {"gate_passed": 0.0}
    assert set(worse.metrics()) == {"gate_passed", "champion_staging_recall_at_100", "delta_recall_at_100",
                                    "delta_recall_ci_low", "delta_recall_ci_high"}


def test_bootstrap_of_identical_samples_is_zero():
    x = np.random.default_rng(0).random(50)
    assert bootstrap_mean_delta(x, x) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------- aggregation and re-ranking

def _spec(tmp_path, positive="label"):
    spec = {**BASE, "retrieval": {"retrievers": ["popularity"], "positive": positive}}
    return load_spec(_write(tmp_path, spec))


def _ids():
    import pandas as pd

    from feature_store.interactions import IdSpace

    return IdSpace("user_id", "item_id", pd.Index(["u1", "u2"]), pd.Index(["a", "b", "c"]))


def test_id_space_maps_raw_ids_through_the_vocabulary():
    ids = _ids()
    assert (ids.n_users, ids.n_items) == (5, 3)
    assert ids.user_index(np.array(["u2", "new", None], dtype=object)).tolist() == [4, 2, 1]
    assert ids.item_index(np.array(["c", "zzz"], dtype=object)).tolist() == [2, -1]
    assert ids.item_values(np.array([1, -1])).tolist() == ["b", None]


def test_aggregation_streams_positives_seen_pairs_and_an_evaluated_day(tmp_path):
    import pandas as pd

    from feature_store.interactions import aggregate_day, aggregate_window

    ids = _ids()
    window = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u1", "x"], "item_id": ["a", "b", "a", "a", "zz", "c"],
                           "click": [1, 0, 1, 1, 1, 1], "rating": [5, 2, 4, 3, 5, 5], "price": [1.0, 2, 1, 1, 9, 3],
                           "device": ["m"] * 6})
    path = tmp_path / "window.parquet"
    window.to_parquet(path)
    got = aggregate_window([path], _spec(tmp_path), ids, chunk_rows=2)  # chunks of 2: the streamed path
    # positives: (u1, a), (u2, a) twice; unknown user x and item zz skipped; (u1, b) seen, not positive
    assert list(zip(got.positives.users, got.positives.items, got.positives.counts)) == [(3, 0, 1), (4, 0, 2)]
    assert list(zip(got.seen.users, got.seen.items)) == [(3, 0), (3, 1), (4, 0)]
    assert got.catalogue["price"].tolist() == [1.0, 2.0, 3.0]  # first seen, whoever the user
    rated = aggregate_window([path], _spec(tmp_path, {"column": "rating", "min": 4}), ids, chunk_rows=4)
    assert list(zip(rated.positives.users, rated.positives.items, rated.positives.counts)) == [(3, 0, 1), (4, 0, 1)]

    day = pd.DataFrame({"user_id": ["u2", "new", "u2", "u1"], "item_id": ["c", "b", "unseen", "a"],
                        "click": [1, 1, 1, 0], "rating": [5, 5, 5, 1], "price": [3.0, 2, 5, 1], "device": ["t"] * 4})
    day.to_parquet(tmp_path / "day.parquet")
    ev = aggregate_day([tmp_path / "day.parquet"], _spec(tmp_path), ids, chunk_rows=3, row_columns=["device"])
    assert ev.raw_users.tolist() == ["u2", "new", "u1"] and ev.users.tolist() == [4, 2, 3]
    # u2 clicked c and an item outside the catalogue (index n_items + 0: a miss for everyone)
    assert [r.tolist() for r in ev.relevant] == [[2, 3], [1], []] and ev.outside.tolist() == ["unseen"]
    assert ev.n_evaluated == 2 and ev.user_rows["device"].tolist() == ["t"] * 3


def test_rerank_orders_the_retrieved_items_as_the_ranker_scores_them():
    """The pipeline's second stage: a planted ranker that scores an item by its price puts each
    user's retrieved items in price order, whatever order the retriever gave."""
    from types import SimpleNamespace

    import pandas as pd

    from tasks.retrieve import candidate_rows, rerank

    catalogue = pd.DataFrame({"item_id": list("abcdef"), "price": [5.0, 1.0, 4.0, 2.0, 6.0, 3.0]})
    data = SimpleNamespace(catalogue=catalogue, ids=SimpleNamespace(n_items=6))
    users = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["z", "z"], "price": [0.0, 0.0], "device": ["m", "t"]})
    retrieved = np.array([[1, 3, 0, 2], [5, 4, -1, -1]])  # retriever order; -1 pads a short list
    rows, u_pos, r_pos = candidate_rows(users, retrieved, data, ["item_id", "price"])
    assert rows["item_id"].tolist() == ["b", "d", "a", "c", "f", "e"] and rows["device"].tolist()[-1] == "t"
    assert u_pos.tolist() == [0, 0, 0, 0, 1, 1] and r_pos.tolist() == [0, 1, 2, 3, 0, 1]
    seen_rows = []

    def planted(frame):
        seen_rows.append(frame)
        return frame["price"].to_numpy()

    top = rerank(retrieved, users, data, ["item_id", "price"], planted, top_n=3)
    assert top.tolist() == [[0, 2, 3], [4, 5, -1]]  # prices 5, 4, 2 / 6, 3
    assert sum(len(f) for f in seen_rows) == 6  # every valid candidate scored once, pads never
    reverse = rerank(retrieved, users, data, ["item_id", "price"], lambda f: -f["price"].to_numpy(), top_n=3)
    assert reverse.tolist() == [[1, 3, 2], [5, 4, -1]]
    # Ties keep the retriever's order.
    assert rerank(retrieved, users, data, ["item_id", "price"], lambda f: np.zeros(len(f)), 2).tolist() == [[1, 3], [5, 4]]


def test_stage_runs_only_for_specs_with_a_section_and_the_setting_on(tmp_path):
    from tasks.retrieve import check_retrievers, enabled, evaluation_ks, top_k_of

    spec = load_spec(_write(tmp_path, {**BASE, "retrieval": {"retrievers": ["popularity"], "k": 20}}))
    assert enabled(spec, RetrievalPolicy()) and not enabled(spec, RetrievalPolicy(enabled=False))
    assert not enabled(load_spec("adult"), RetrievalPolicy())
    assert top_k_of(spec, RetrievalPolicy()) == 20 and evaluation_ks(20) == (10, 20) and evaluation_ks(100) == (10, 50, 100)
    check_retrievers(spec)
    bad = load_spec(_write(tmp_path, {**BASE, "retrieval": {"retrievers": ["popularity", "nope"]}}))
    with pytest.raises(ParameterError, match=r"retrieval.retrievers.1: unknown retriever 'nope'; valid: .*item_knn"):
        check_retrievers(bad)
    wrong = load_spec(_write(tmp_path, {**BASE, "retrieval": {"retrievers": [{"name": "item_knn",
                                                                              "hparams": {"neighbors": 5}}]}}))
    with pytest.raises(ParameterError, match="neighbors"):
        check_retrievers(wrong)
