"""The retrieval stage's parts that need no store: the spec's `retrieval` section, the
settings, the Recall@K gate, the aggregation of interactions and the two-stage re-ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from feature_store.errors import ParameterError, SpecError
from feature_store.spec import load_spec, spec_to_yaml
from tasks.retrieval_gate import (
    RetrievalPolicy,
    bootstrap_mean_delta,
    evaluate_retrieval_gate,
    per_user_recall,
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
