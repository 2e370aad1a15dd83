"""Every retriever on planted structure, reproducibility, and the closed forms against brute force."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from feature_store.text import item_term_matrix
from models.metrics import topk_metrics
from models.retrieval import RETRIEVERS, Interactions, SideInfo
from models.retrieval.lightgcn import normalized_adjacency
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




def planted_side(user_group: np.ndarray, item_group: np.ndarray, seed: int = 0) -> SideInfo:
    """Items of a block share title words and a tag; users carry their group and a noise field."""
    rng = np.random.default_rng(seed)
    titles = [" ".join(f"word{g}x{w}" for w in rng.choice(6, 2, replace=False)) + f" filler{n % 7}"
              for n, g in enumerate(item_group)]
    terms = item_term_matrix(titles, [[f"tag{g}"] for g in item_group])
    item_terms = Interactions(terms.indptr, terms.indices, terms.data, ITEMS, len(terms.vocabulary))
    noise = rng.integers(0, 5, USERS)
    return SideInfo(item_terms=item_terms, user_features=np.stack([user_group, noise], 1),
                    item_features=item_group[:, None], user_cardinalities=(GROUPS, 5), item_cardinalities=(GROUPS,))


# Small data: more, smaller steps than the MovieLens defaults.
TEST_LOOPS = {"mf": dict(epochs=25, batch_size=256, lr=0.05), "lightgcn": dict(epochs=30, batch_size=256, lr=0.02),
              "two_tower": dict(epochs=30, batch_size=128, lr=0.01), "autorec": dict(epochs=60, batch_size=16, lr=0.01)}


# AutoRec's penalty is once per catalogue: MovieLens' 100 would drown 80 items' errors.
TEST_HPARAMS = {"autorec": {"l2": 1.0}}


def fit(name: str, train: Interactions, side: SideInfo | None = None, hparams=None, seed: int = 0):
    config = RetrievalTrainConfig(seed=seed, threads=1, **TEST_LOOPS.get(name, {}))
    return fit_retriever(name, train, side, {**TEST_HPARAMS.get(name, {}), **(hparams or {})}, config).model


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def side(data):
    return planted_side(data[2], data[3])


@pytest.fixture(scope="module")
def popularity_recall(data):
    train, test, *_ = data
    return recall_at_10(fit("popularity", train), test)


CF = ["item_knn", "user_knn", "mf", "lightgcn", "autorec", "two_tower"]


@pytest.mark.parametrize("name", CF)
def test_recovers_planted_blocks_and_excludes_seen_items_when_asked(name, data, popularity_recall):
    train, test, *_ = data
    model = fit(name, train)  # no side info: two_tower is id-only here
    r = recall_at_10(model, test)
    assert r >= max(2 * popularity_recall, 0.5), (r, popularity_recall)
    users = np.arange(USERS)
    items, _ = model.recommend(users, k=10)
    assert not any(np.isin(items[u], train.row(u)).any() for u in users)
    items, _ = model.recommend(users, k=10, exclude_seen=False)
    assert np.mean([np.isin(items[u], train.row(u)).mean() for u in users]) > 0.3  # ~7 train items in a user's block


@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_same_seed_same_top_k_and_cold_users_get_something(name, data, side):
    train, *_ = data
    quick = RetrievalTrainConfig(seed=3, threads=1, epochs=2, batch_size=256)
    a = fit_retriever(name, train, side, None, quick).model.recommend(np.arange(USERS), k=10)[0]
    b = fit_retriever(name, train, side, None, quick).model.recommend(np.arange(USERS), k=10)[0]
    assert np.array_equal(a, b)
    keep = train.rows() > 0  # user 0 has no history
    cold = Interactions.from_pairs(train.rows()[keep], train.indices[keep], USERS, ITEMS)
    model = fit_retriever(name, cold, side, None, quick).model
    items, scores = model.recommend([0], k=5)
    assert (items >= 0).all() and np.isfinite(scores).all()
    if not model.scores_cold_users:  # an untrained embedding row must not rank anything
        popular = np.argsort(-cold.item_counts(), kind="stable")[:5]
        assert items[0].tolist() == popular.tolist()


@pytest.mark.parametrize("name", ["tfidf_content", "two_tower"])
def test_side_information_alone_recovers_the_blocks(name, data, side, popularity_recall):
    train, test, user_group, item_group = data
    hparams = {"id_features": False} if name == "two_tower" else None  # only the planted features
    model = fit(name, train, side, hparams)
    r = recall_at_10(model, test)
    assert r >= max(2 * popularity_recall, 0.4), (r, popularity_recall)
    items, _ = model.recommend(np.arange(USERS), k=5)
    assert (item_group[items] == user_group[:, None]).mean() > 0.9  # recommendations stay in the block


def test_tfidf_scores_are_the_cosine_of_the_mean_profile(data, side):
    train, *_ = data
    model = fit("tfidf_content", train, side)
    t = np.zeros((ITEMS, side.item_terms.n_items))
    t[side.item_terms.rows(), side.item_terms.indices] = side.item_terms.data
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    for u in (1, 7):
        profile = t[train.row(u)].mean(0)
        expected = t @ profile / np.linalg.norm(profile)
        assert np.allclose(model(torch.tensor([u]))[0].numpy(), expected, atol=1e-5)


def test_lightgcn_propagation_matches_a_dense_reference():
    train = Interactions.from_pairs([0, 0, 1, 2, 2, 2], [0, 1, 1, 0, 2, 3], n_users=4, n_items=5)  # user 3, item 4 alone
    model = fit("lightgcn", train, hparams={"dim": 3, "layers": 2}, seed=1)
    a = np.zeros((9, 9))
    a[train.rows(), 4 + train.indices] = a[4 + train.indices, train.rows()] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0.0)
    norm = inv[:, None] * a * inv[None, :]
    e0 = model.embedding.detach().numpy().astype(np.float64)
    expected = (e0 + norm @ e0 + norm @ norm @ e0) / 3
    assert np.allclose(model.propagate().detach().numpy(), expected, atol=1e-5)
    indices, values = normalized_adjacency(train)
    assert np.allclose(norm[indices[0].numpy(), indices[1].numpy()], values.numpy())
    assert np.allclose(model(torch.tensor([2])).detach().numpy(), expected[[2]] @ expected[4:].T, atol=1e-5)


def test_autorec_reads_user_u_from_every_items_reconstruction(data):
    train, *_ = data
    model = fit("autorec", train, hparams={"hidden": 8})
    columns = np.zeros((ITEMS, USERS), np.float32)
    columns[train.indices, train.rows()] = 1.0
    with torch.no_grad():
        recon = model.reconstruct(torch.from_numpy(columns))  # (n_items, n_users)
        assert torch.allclose(model(torch.tensor([4, 9])), recon[:, [4, 9]].t(), atol=1e-5)


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


PAPERS = {"popularity": "Cremonesi", "item_knn": "Sarwar", "user_knn": "Herlocker", "mf": "Rendle",
          "lightgcn": "2002.02126", "tfidf_content": "TF-IDF", "two_tower": "Yi", "autorec": "Sedhain"}


def test_every_retriever_has_a_frozen_config_its_paper_and_a_forward_doc():
    assert set(PAPERS) == set(RETRIEVERS)
    for name, cls in RETRIEVERS.items():
        assert cls.name == name and "Forward" in cls.__doc__
        assert PAPERS[name] in sys.modules[cls.__module__].__doc__, name
        assert dataclasses.is_dataclass(cls.config_class) and cls.config_class.__dataclass_params__.frozen
        assert (cls.objective is None) == (cls.loop_defaults is None), name


def test_fit_retriever_leaves_the_global_rng_alone(data):
    train, *_ = data
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_retriever("mf", train, None, None, RetrievalTrainConfig(epochs=1))
    assert torch.equal(torch.rand(3), expected)
