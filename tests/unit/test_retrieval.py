"""Retrieval basics: the interaction matrix, the catalogue search, popularity, top-K metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.metrics import topk_metric_keys, topk_metrics
from models.retrieval import Interactions, build_retriever, search


def test_interactions_sum_duplicates_sort_items_and_reject_out_of_range():
    m = Interactions.from_pairs([2, 0, 2, 0], [1, 3, 1, 0], n_users=3, n_items=4)
    assert m.indptr.tolist() == [0, 2, 2, 3]
    assert m.indices.tolist() == [0, 3, 1]
    assert m.data.tolist() == [1.0, 1.0, 2.0]
    assert m.item_counts().tolist() == [1, 1, 0, 1]
    assert m.rows().tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match=r"item index out of range \[0, 4\)"):
        Interactions.from_pairs([0], [4], n_users=1, n_items=4)


def test_search_excludes_seen_items_pads_short_lists_and_orders_ties_by_index():
    seen = Interactions.from_pairs([0, 0, 1], [0, 2, 1], n_users=2, n_items=3)
    scores = torch.tensor([[5.0, 1.0, 9.0], [1.0, 1.0, 1.0]])
    items, values = search(lambda users, rows: scores[users], torch.tensor([0, 1]), k=3, exclude=seen)
    assert items.tolist() == [[1, -1, -1], [0, 2, -1]]
    assert values[0, 0] == 1.0 and np.isneginf(values[0, 1:]).all()
    items, _ = search(lambda users, rows: scores[users], torch.tensor([1]), k=2)
    assert items.tolist() == [[0, 1]]


def test_popularity_recommends_the_most_clicked_unseen_items():
    train = Interactions.from_pairs([0, 1, 2, 2, 3, 3], [5, 5, 5, 4, 4, 1], n_users=5, n_items=6)
    model = build_retriever("popularity", 5, 6)
    model.fit(train)
    items, scores = model.recommend([0, 4], k=2)
    assert items.tolist() == [[4, 1], [5, 4]]  # user 0 saw item 5; user 4 saw nothing
    assert scores[1].tolist() == [3.0, 2.0]
    items, _ = model.recommend([0], k=1, exclude_seen=False)
    assert items.tolist() == [[5]]
    with pytest.raises(ValueError, match="unknown retriever 'nope'; valid:"):
        build_retriever("nope", 1, 1)
    with pytest.raises(ValueError, match="unknown"):
        build_retriever("popularity", 5, 6, {"alpha": 1})


def test_topk_metrics_against_hand_computed_values():
    # user 0: relevant {3, 7}; list 3, 1, 7 -> hits at ranks 1 and 3
    # user 1: relevant {2};    list 5, 2, -1 -> hit at rank 2
    # user 2: relevant {};     skipped (its list still counts for coverage)
    # user 3: relevant {9};    list 0, 1, 4 -> no hit
    rec = np.array([[3, 1, 7], [5, 2, -1], [8, 8, 8], [0, 1, 4]])
    rel = [np.array([3, 7]), np.array([2]), np.array([], dtype=np.int64), np.array([9])]
    m = topk_metrics(rec, rel, n_items=10, ks=(1, 3))
    assert list(m) == topk_metric_keys((1, 3))
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    assert m["recall@1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert m["recall@3"] == pytest.approx((1.0 + 1.0 + 0) / 3)
    assert m["hit@1"] == pytest.approx(1 / 3)
    assert m["hit@3"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx((1.0 + 0 + 0) / 3)
    assert m["ndcg@3"] == pytest.approx(((d[0] + d[2]) / (d[0] + d[1]) + d[1] / d[0] + 0) / 3)
    assert m["mrr@1"] == pytest.approx(1 / 3)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["coverage@1"] == pytest.approx(4 / 10)  # 3, 5, 8, 0
    assert m["coverage@3"] == pytest.approx(8 / 10)  # 0, 1, 2, 3, 4, 5, 7, 8


def test_history_matrix_holds_each_users_training_items():
    train = Interactions.from_pairs([0, 0, 2], [1, 3, 0], n_users=3, n_items=4)
    model = build_retriever("popularity", 3, 4)
    model.fit(train)
    assert model.history_matrix(torch.tensor([2, 1, 0])).tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    assert model.history().indices.tolist() == train.indices.tolist()
