"""Every retriever on planted structure, reproducibility, and the closed forms against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.metrics import topk_metrics
from models.retrieval import RETRIEVERS, Interactions, SideInfo
from models.retrieval.similarity import cosine_neighbours
from models.retrieval.trainer import RetrievalTrainConfig, fit_retriever

GROUPS, USERS, ITEMS = 4, 120, 80


def planted(seed: int = 0, p_in: float = 0.5, p_out: float = 0.02, held_out: int = 3):
    """Users in GROUPS groups click mostly the items of their group's block; `held_out`
    in-block clicks per user are the test. Returns train, test, the groups of users and items."""
    rng = np.random.default_rng(seed)
    user_group, item_group = np.arange(USERS) % GROUPS, np.arange(ITEMS) % GROUPS
    p = np.where(user_group[:, None] == item_group[None, :], p_in, p_out)
    p = p * rng.uniform(0.5, 1.5, ITEMS)[None, :]  # some items more popular than others
    clicks = rng.random((USERS, ITEMS)) < p
    test = np.zeros_like(clicks)
    for u in range(USERS):
        own = np.flatnonzero(clicks[u] & (item_group == user_group[u]))
        test[u, rng.choice(own, size=min(held_out, own.size - 1), replace=False)] = True
    train = clicks & ~test

    def csr(m):
        u, i = np.nonzero(m)
        return Interactions.from_pairs(u, i, USERS, ITEMS)

    return csr(train), csr(test), user_group, item_group


def recall_at_10(model, test: Interactions) -> float:
    users = test.active_users()
    items, _ = model.recommend(users, k=10)
    return topk_metrics(items, test.lists(users), test.n_items, ks=(10,))["recall@10"]




def fit(name: str, train: Interactions, side: SideInfo | None = None, hparams=None, seed: int = 0):
    return fit_retriever(name, train, side, hparams, RetrievalTrainConfig(seed=seed, threads=1)).model


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def popularity_recall(data):
    train, test, *_ = data
    return recall_at_10(fit("popularity", train), test)


CF = ["item_knn", "user_knn"]


@pytest.mark.parametrize("name", CF)
def test_recovers_planted_blocks_and_excludes_seen_items_when_asked(name, data, popularity_recall):
    train, test, *_ = data
    model = fit(name, train)
    r = recall_at_10(model, test)
    assert r >= max(2 * popularity_recall, 0.5), (r, popularity_recall)
    users = np.arange(USERS)
    items, _ = model.recommend(users, k=10)
    assert not any(np.isin(items[u], train.row(u)).any() for u in users)
    items, _ = model.recommend(users, k=10, exclude_seen=False)
    assert np.mean([np.isin(items[u], train.row(u)).mean() for u in users]) > 0.3  # ~7 train items in a user's block


@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_same_seed_same_top_k_and_cold_users_get_something(name, data):
    train, *_ = data
    a = fit(name, train, seed=3).recommend(np.arange(USERS), k=10)[0]
    b = fit(name, train, seed=3).recommend(np.arange(USERS), k=10)[0]
    assert np.array_equal(a, b)
    cold = Interactions.from_pairs(train.rows()[train.rows() > 0], train.indices[train.rows() > 0], USERS, ITEMS)
    items, scores = fit(name, cold).recommend([0], k=5)
    assert (items >= 0).all() and np.isfinite(scores).all()


def brute_force_cosine(x: np.ndarray, neighbours: int, shrink: float) -> np.ndarray:
    n = x.shape[1]
    out = np.zeros((n, n))
    for a in range(n):
        sims = [(x[:, a] @ x[:, b]) / (np.linalg.norm(x[:, a]) * np.linalg.norm(x[:, b]) + shrink)
                if b != a else -np.inf for b in range(n)]
        for b in np.argsort(sims)[::-1][:neighbours]:
            out[a, b] = max(sims[b], 0.0)
    return out


@pytest.mark.parametrize("block", [None, 2])
def test_cosine_neighbours_match_brute_force_with_shrink_and_pruning(block):
    rng = np.random.default_rng(1)
    x = (rng.random((9, 7)) < 0.4) * rng.integers(1, 4, (9, 7))  # weighted, some empty columns possible
    expected = brute_force_cosine(x.astype(float), neighbours=3, shrink=0.5)
    indptr, indices, values = cosine_neighbours(torch.tensor(x, dtype=torch.float32).to_sparse_csr(), 3, 0.5, block)
    got = torch.sparse_csr_tensor(indptr, indices, values, (7, 7)).to_dense().numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_item_knn_scores_sum_the_target_items_neighbours_in_the_history(data):
    train, *_ = data
    # binary clicks tie often, so no pruning here (pruning: the test above, on distinct values)
    model = fit("item_knn", train, hparams={"neighbours": ITEMS, "shrink": 2.0})
    x = np.zeros((USERS, ITEMS))
    x[train.rows(), train.indices] = 1.0
    s = brute_force_cosine(x, ITEMS, 2.0)  # s[j] = j's neighbours
    expected = x[:7] @ s.T
    assert np.allclose(model(torch.arange(7)).numpy(), expected, atol=1e-4)


def test_user_knn_scores_sum_the_neighbours_rows(data):
    train, *_ = data
    model = fit("user_knn", train, hparams={"neighbours": USERS, "shrink": 1.0})
    x = np.zeros((USERS, ITEMS))
    x[train.rows(), train.indices] = 1.0
    s = brute_force_cosine(x.T, USERS, 1.0)  # s[u] = u's neighbours
    assert np.allclose(model(torch.tensor([3, 0, 5])).numpy(), s[[3, 0, 5]] @ x, atol=1e-4)
