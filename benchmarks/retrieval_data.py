"""The data protocol of `make bench-retrieval`: MovieLens-100k positives split at random
80/10/10 per user, the protocol RecBole and most retrieval papers publish (numpy/pandas only).

Protocol `random_80_10_10`, step by step:
  1. Positives: ratings >= 4 (the `click` of recloop's MovieLens partitions); duplicate
     (user, item) pairs kept once (MovieLens-100k has none).
  2. Each user's positives, sorted by item id and then shuffled with one seeded generator,
     are cut 80/10/10 with RecBole's rule (`Dataset._calcu_split_ids`, RecBole 1.2.1): valid
     and test get floor(0.1 n) each, train the rest, then while train still holds more than
     one item a part whose 0.1 n is in (0, 1) takes one item from train (test first). So
     n = 1 -> (1, 0, 0): the user is only trained on, never evaluated;
     n = 2 -> (1, 0, 1); n = 3..9 -> (n-2, 1, 1); n = 10 -> (8, 1, 1); n = 15 -> (13, 1, 1).
     Every user with a positive has at least one train item.
  3. Dense ids 0..n-1 for the users and items that appear in train (sorted by raw id).
     Valid and test pairs whose item never appears in train are dropped (counted in
     `dropped`): no collaborative model can score such an item, and RecBole is fed exactly
     the pairs kept here, so every implementation sees the same item set.
  4. Full ranking: a test user (>= 1 test positive) is ranked over all n_items items minus
     their train AND valid items (RecBole's full-sort test protocol: its test history is
     train + valid); valid ranks all items minus train items.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DATASET = "movielens_100k"
PROTOCOL_RANDOM = "random_80_10_10"
POSITIVE_MIN_RATING = 4
RATIOS = (0.8, 0.1, 0.1)
SEED = 2020  # RecBole's default seed; the split and every peer use it


@dataclass(frozen=True)
class RetrievalSplit:
    """One dataset's positives split into train/valid/test (user, item) pairs of dense ids.

    `train`, `valid`, `test`: int64 arrays (n, 2) of (user, item), sorted by user then item.
    `user_ids[u]` / `item_ids[i]`: the raw id of dense user u / item i.
    """

    dataset: str
    protocol: str
    seed: int
    user_ids: np.ndarray  # (n_users,) raw ids, ascending
    item_ids: np.ndarray  # (n_items,) raw ids, ascending
    train: np.ndarray  # (n_train, 2)
    valid: np.ndarray  # (n_valid, 2)
    test: np.ndarray  # (n_test, 2)
    dropped: dict[str, int] = field(default_factory=dict)  # valid/test pairs whose item is not in train

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def test_users(self) -> np.ndarray:
        """Dense ids of the users with >= 1 test positive, ascending."""
        return np.unique(self.test[:, 0])

    def items_of(self, part: str, users: np.ndarray) -> list[np.ndarray]:
        """Each user's items in `part` ("train", "valid" or "test"), ascending."""
        pairs = getattr(self, part)
        return _group(pairs, users)

    def relevant(self, users: np.ndarray) -> list[np.ndarray]:
        """The test positives of each user: what a top-K list is scored against."""
        return self.items_of("test", users)

    def excluded(self, users: np.ndarray) -> list[np.ndarray]:
        """Items never recommended to each test user: their train and valid items."""
        both = np.concatenate([self.train, self.valid])
        both = both[np.lexsort((both[:, 1], both[:, 0]))]
        return _group(both, users)

    def describe(self) -> str:
        return (f"{self.dataset} {self.protocol} (seed {self.seed}): {self.n_users} users, {self.n_items} items, "
                f"train {len(self.train)} / valid {len(self.valid)} / test {len(self.test)} positives, "
                f"{len(self.test_users())} test users; dropped (item not in train): {self.dropped}")


def _group(pairs: np.ndarray, users: np.ndarray) -> list[np.ndarray]:
    """Items of each user in `users` from (user, item) pairs sorted by user."""
    starts = np.searchsorted(pairs[:, 0], users, side="left")
    ends = np.searchsorted(pairs[:, 0], users, side="right")
    return [pairs[s:e, 1].copy() for s, e in zip(starts, ends, strict=True)]


def split_counts(n: int, ratios: tuple[float, float, float] = RATIOS) -> tuple[int, int, int]:
    """(train, valid, test) sizes of a user's n positives: RecBole 1.2.1's `_calcu_split_ids`."""
    cnt = [int(r * n) for r in ratios]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt[0], cnt[1], cnt[2]


def random_split(positives: pd.DataFrame, *, seed: int = SEED, dataset: str = DATASET,
                 ratios: tuple[float, float, float] = RATIOS) -> RetrievalSplit:
    """Split `positives` (columns user_id, item_id; one row per positive) per user at random.

    Deterministic in `seed` and independent of the row order of `positives`.
    """
    pos = positives[["user_id", "item_id"]].drop_duplicates()
    pos = pos.sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    users = pos["user_id"].to_numpy()
    # Shuffle within each user: sort by (user, random key); the key is drawn in (user, item) order.
    key = np.random.default_rng(seed).random(len(pos))
    order = np.lexsort((key, users))
    pos = pos.iloc[order].reset_index(drop=True)
    users = pos["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, sizes)  # position within the user's shuffle
    counts = np.array([split_counts(int(n), ratios) for n in sizes])  # (n_users, 3)
    n_train = np.repeat(counts[:, 0], sizes)
    n_valid = np.repeat(counts[:, 1], sizes)
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))

    train_raw = pos[part == 0]
    user_ids = np.unique(train_raw["user_id"].to_numpy())
    item_ids = np.unique(train_raw["item_id"].to_numpy())
    dropped: dict[str, int] = {}
    parts = []
    for p, name in enumerate(("train", "valid", "test")):
        raw = pos[part == p]
        keep = raw["item_id"].isin(item_ids).to_numpy() & raw["user_id"].isin(user_ids).to_numpy()
        if name != "train":
            dropped[name] = int((~keep).sum())
        raw = raw[keep]
        dense = np.stack([np.searchsorted(user_ids, raw["user_id"].to_numpy()),
                          np.searchsorted(item_ids, raw["item_id"].to_numpy())], axis=1).astype(np.int64)
        parts.append(dense[np.lexsort((dense[:, 1], dense[:, 0]))] if len(dense) else dense.reshape(0, 2))
    return RetrievalSplit(dataset=dataset, protocol=PROTOCOL_RANDOM, seed=seed, user_ids=user_ids,
                          item_ids=item_ids, train=parts[0], valid=parts[1], test=parts[2], dropped=dropped)


def movielens_root() -> Path:
    """The data root holding `movielens_100k/` (RECLOOP_MOVIELENS_ROOT, else recloop's data root)."""
    env = os.environ.get("RECLOOP_MOVIELENS_ROOT")
    if env:
        return Path(env)
    from tasks.settings import get_settings

    return Path(get_settings().resolved_data_root)


def load_movielens_positives(root: Path, min_rating: int = POSITIVE_MIN_RATING) -> pd.DataFrame:
    """Every rating >= `min_rating` of the fetched day partitions: columns user_id, item_id, ts."""
    from feature_store.partitions import available_days, partition_files, read_part

    days = available_days(root, DATASET)
    if not days:
        raise FileNotFoundError(f"no {DATASET} day partitions under {root}: "
                                f"run `recloop datasets fetch movielens-100k --data-root {root}`")
    frames = [read_part(p)[["user_id", "item_id", "rating", "ts"]]
              for day in days for p in partition_files(root, DATASET, day)]
    ratings = pd.concat(frames, ignore_index=True)
    return ratings[ratings["rating"] >= min_rating].drop(columns="rating").reset_index(drop=True)


def movielens_side_info(split: RetrievalSplit, root: Path | None = None):
    """What the content and feature retrievers read for `split`'s dense users and items: TF-IDF
    of title words and genres (`tfidf_content`), and the user's age bucket, gender and
    occupation and the item's genre flags (`two_tower`)."""
    from feature_store.partitions import available_days, partition_files, read_part
    from feature_store.text import item_term_matrix
    from models.retrieval import Interactions, SideInfo

    root = root or movielens_root()
    frames = [read_part(p) for day in available_days(root, DATASET) for p in partition_files(root, DATASET, day)]
    df = pd.concat(frames, ignore_index=True)
    per_item = df.drop_duplicates("item_id").set_index("item_id").loc[split.item_ids]
    genres = [g.split("|") if isinstance(g, str) else [] for g in per_item["genres"]]
    terms = item_term_matrix([str(t) for t in per_item["title"]], genres)
    item_terms = Interactions(terms.indptr, terms.indices, terms.data, split.n_items, len(terms.vocabulary))
    per_user = df.drop_duplicates("user_id").set_index("user_id").loc[split.user_ids]
    user_cols = [pd.cut(per_user["age"], [0, 18, 25, 35, 45, 50, 56, 200]).cat.codes, per_user["gender"],
                 per_user["occupation"]]
    user_features = np.stack([pd.factorize(c)[0] for c in user_cols], 1).astype(np.int64)
    genre_cols = [c for c in df.columns if c.startswith("genre_")]
    item_features = np.stack([per_item[c].to_numpy() * (j + 1) for j, c in enumerate(genre_cols)], 1).astype(np.int64)
    return SideInfo(item_terms=item_terms, user_features=user_features, item_features=item_features,
                    user_cardinalities=tuple(int(c) for c in user_features.max(0) + 1),
                    item_cardinalities=tuple(len(genre_cols) + 1 for _ in genre_cols))


def movielens_random_split(root: Path | None = None, seed: int = SEED) -> RetrievalSplit:
    return random_split(load_movielens_positives(root or movielens_root()), seed=seed)
