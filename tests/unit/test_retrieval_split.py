"""The random 80/10/10 retrieval protocol (benchmarks/retrieval_data.py) on generated positives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.retrieval_data import random_split, split_counts


def _positives(seed: int = 0, n_users: int = 60, n_items: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 30))  # includes users with 1 and 2 positives
        for i in rng.choice(n_items, size=n, replace=False):
            rows.append((1000 + 7 * u, 50 + 3 * int(i)))  # raw ids: sparse, not 0..n-1
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _pairs(split, part: str) -> set[tuple[int, int]]:
    return {(int(split.user_ids[u]), int(split.item_ids[i])) for u, i in getattr(split, part)}


@pytest.mark.parametrize("n, expected", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (9, (7, 1, 1)),
                                         (10, (8, 1, 1)), (15, (13, 1, 1)), (20, (16, 2, 2))])
def test_split_counts_follow_recbole(n, expected):
    assert split_counts(n) == expected


def test_split_is_deterministic_in_the_seed_and_row_order():
    pos = _positives()
    a = random_split(pos, seed=3)
    b = random_split(pos.sample(frac=1.0, random_state=1), seed=3)  # same rows, other order
    c = random_split(pos, seed=4)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert _pairs(a, "test") != _pairs(c, "test")


def test_parts_are_disjoint_and_sized_per_user():
    pos = _positives()
    split = random_split(pos, seed=3)
    train, valid, test = (_pairs(split, p) for p in ("train", "valid", "test"))
    assert not (train & valid) and not (train & test) and not (valid & test)
    # Every positive lands somewhere, except valid/test pairs whose item has no train positive.
    lost = {tuple(r) for r in pos.itertuples(index=False)} - train - valid - test
    assert len(lost) == sum(split.dropped.values())
    assert all(raw_i not in set(split.item_ids) for _, raw_i in lost)
    for raw_u, group in pos.groupby("user_id"):
        n_tr, n_va, n_te = split_counts(len(group))
        assert sum(u == raw_u for u, _ in train) == n_tr
        assert sum(u == raw_u for u, _ in valid) <= n_va and sum(u == raw_u for u, _ in test) <= n_te
    # Dense ids are exactly the users and items with a train positive.
    assert split.n_items == len({i for _, i in train}) and split.n_users == len({u for u, _ in train})
    assert split.train[:, 1].max() == split.n_items - 1


def test_test_users_and_exclusion_sets():
    split = random_split(_positives(), seed=3)
    users = split.test_users()
    assert set(users) == set(split.test[:, 0]) and np.all(np.diff(users) > 0)
    relevant, excluded = split.relevant(users), split.excluded(users)
    for u, rel, exc in zip(users, relevant, excluded, strict=True):
        tr = set(split.train[split.train[:, 0] == u, 1])
        va = set(split.valid[split.valid[:, 0] == u, 1])
        assert set(exc) == tr | va and len(exc) == len(tr) + len(va)
        assert set(rel) == set(split.test[split.test[:, 0] == u, 1]) and not set(rel) & set(exc)
    # a user with a single positive is trained on and never tested
    one = random_split(pd.DataFrame({"user_id": [1, 3, 2, 2], "item_id": [5, 6, 5, 6]}), seed=0)
    assert one.test_users().tolist() == [1] and one.train[:, 0].tolist() == [0, 1, 2]


def test_benchmark_rejects_lists_that_break_the_protocol():
    from benchmarks.retrieval import KMAX, RankedLists, check_lists, drop_valid

    split = random_split(_positives(), seed=3)
    users = split.test_users()
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(split.n_items) for _ in users])  # every item, train ones included
    clean = drop_valid(ranked, split.excluded(users), KMAX)  # the peers' post-filter, here with train + valid
    check_lists(split, RankedLists(users, clean, 0.0, 0.0), "clean")
    leaky = clean.copy()
    leaky[0, 0] = split.excluded(users[:1])[0][0]
    with pytest.raises(ValueError, match="train/valid item"):
        check_lists(split, RankedLists(users, leaky, 0.0, 0.0), "leaky")
    with pytest.raises(ValueError, match="test users"):
        check_lists(split, RankedLists(users[1:], clean[1:], 0.0, 0.0), "missing a user")
