"""What retrievers learn from and are judged on, aggregated from the night's raw day files a
chunk at a time (never a whole window in one frame): positive user-item pairs, every pair a
user interacted with (to exclude), the item catalogue, and per day the users to evaluate with
the items they clicked.

Ids are the fitted vocabulary's, so serving maps raw ids through the same vocabulary:

    user index = the user column's Categorify id (0 padding, 1 null, 2 unknown user, 3.. known)
    item index = the item column's Categorify id - 3 (the catalogue: known items only)

Rows 0-2 of the users exist but hold no interactions: an unknown user is user 2, whom the
retrievers treat as a user without history. Items outside the vocabulary (new, or too rare
for its frequency threshold) are not in the catalogue: they cannot be recommended, and when a
user clicks one on an evaluated day it still counts in that user's relevant set (a miss for
every retriever), so recall is not flattered by dropping what nobody could have found.

Numpy and pandas only (no torch): `tasks/retrieve.py` builds the `Interactions` from these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import partitions
from feature_store.categorify import FIRST_ID, NULL_ID, OOV_ID
from feature_store.errors import DataError
from feature_store.spec import DatasetSpec, RatingPositive


def _comparable(index: pd.Index, values: np.ndarray) -> tuple[pd.Index, np.ndarray]:
    """An int id column may be float in another file (it had nulls): compare numbers as floats."""
    values = np.asarray(values)
    kinds = {index.dtype.kind, values.dtype.kind}
    if kinds <= set("iuf") and len(kinds) > 1:
        return pd.Index(index.to_numpy(np.float64)), values.astype(np.float64)
    if index.dtype.kind == "O" and values.dtype.kind != "O":
        return index, values.astype(object)
    return index, values


@dataclass(frozen=True)
class IdSpace:
    """Raw user / item ids <-> the dense indices retrievers use (see the module docstring).
    `users` and `items` are the vocabularies' values in id order (id = 3 + position)."""

    user_column: str
    item_column: str
    users: pd.Index
    items: pd.Index

    @classmethod
    def from_vocabularies(cls, spec: DatasetSpec, vocabularies: dict[str, pd.Index]) -> IdSpace:
        user, item = spec.user_columns[0], spec.item_columns[0]
        missing = [c for c in (user, item) if c not in vocabularies]
        if missing:
            raise DataError("fitted vocabularies", "user and item id columns have a vocabulary", column=missing[0])
        return cls(user, item, vocabularies[user], vocabularies[item])

    @property
    def n_users(self) -> int:
        return FIRST_ID + len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_index(self, values) -> np.ndarray:
        """int64: known users 3.., unknown 2, null 1."""
        values = np.asarray(values)
        index, probe = _comparable(self.users, values)
        pos = index.get_indexer(probe)
        out = np.where(pos >= 0, FIRST_ID + pos, OOV_ID).astype(np.int64)
        out[pd.isna(values)] = NULL_ID
        return out

    def item_index(self, values) -> np.ndarray:
        """int64: the catalogue index, -1 outside the catalogue (unknown or null)."""
        values = np.asarray(values)
        index, probe = _comparable(self.items, values)
        return index.get_indexer(probe).astype(np.int64)

    def item_values(self, indices) -> np.ndarray:
        """Raw item ids of catalogue indices (object array; None at -1 pads)."""
        indices = np.asarray(indices)
        out = np.full(indices.shape, None, dtype=object)
        ok = indices >= 0
        out[ok] = self.items.to_numpy(object)[indices[ok]]
        return out


def positive_mask(chunk: pd.DataFrame, spec: DatasetSpec, source: str | Path) -> np.ndarray:
    """Rows that count as positive: the label is 1, or the spec's rating column >= its minimum."""
    rule = spec.retrieval.positive if spec.retrieval else "label"
    column = rule.column if isinstance(rule, RatingPositive) else spec.label
    if column not in chunk.columns:
        raise DataError(source, f"retrieval.positive column present (spec {spec.name})", column=column)
    values = pd.to_numeric(chunk[column], errors="coerce").to_numpy(np.float64)
    return values >= rule.min if isinstance(rule, RatingPositive) else values == 1


def _positive_column(spec: DatasetSpec) -> str:
    rule = spec.retrieval.positive if spec.retrieval else "label"
    return rule.column if isinstance(rule, RatingPositive) else spec.label


def content_columns(spec: DatasetSpec) -> list[str]:
    """The item columns of the catalogue: the item features, then the text and tag columns."""
    section = spec.retrieval
    extra = [*section.text_columns, *(t.name for t in section.tag_columns)] if section else []
    return list(dict.fromkeys([*spec.item_columns, *extra]))


class _PairCounts:
    """Distinct (user, item) keys with their counts, merged as chunks arrive: memory is bounded
    by the distinct pairs, not by the rows."""

    def __init__(self, n_items: int):
        self.n_items = n_items
        self.keys = np.empty(0, np.int64)
        self.counts = np.empty(0, np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        keys, counts = np.unique(users * self.n_items + items, return_counts=True)
        self._pending.append((keys, counts.astype(np.float32)))
        self._pending_rows += keys.size
        if self._pending_rows > 4 * max(self.keys.size, 1_000_000):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c for _, c in self._pending)])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.zeros(self.keys.size, np.float32)
        np.add.at(self.counts, inverse, counts)
        self._pending, self._pending_rows = [], 0

    def pairs(self) -> Pairs:
        self._merge()
        return Pairs(self.keys // self.n_items, self.keys % self.n_items, self.counts.copy())


@dataclass(frozen=True)
class Pairs:
    """Distinct (user, item) index pairs and how many events each had."""

    users: np.ndarray
    items: np.ndarray
    counts: np.ndarray

    @classmethod
    def union(cls, *parts: Pairs) -> Pairs:
        users = np.concatenate([p.users for p in parts])
        items = np.concatenate([p.items for p in parts])
        counts = np.concatenate([p.counts for p in parts])
        n = int(items.max()) + 1 if items.size else 1
        keys, inverse = np.unique(users * n + items, return_inverse=True)
        total = np.zeros(keys.size, np.float32)
        np.add.at(total, inverse, counts)
        return cls(keys // n, keys % n, total)

    def __len__(self) -> int:
        return int(self.users.size)


@dataclass(frozen=True)
class WindowInteractions:
    """A span of training days: positive pairs, every pair seen, the catalogue (one row per
    catalogue index, in index order: the item columns, text and tags as first seen) and the
    user table (one row per user index: the user columns as first seen; rows 0-2 empty)."""

    positives: Pairs
    seen: Pairs
    catalogue: pd.DataFrame
    user_table: pd.DataFrame
    rows: int


class _FirstRows:
    """The first row of each index, kept as chunks arrive (bounded by the number of indices)."""

    def __init__(self, columns: list[str], n: int):
        self.columns, self.n, self.parts = columns, n, []

    def add(self, chunk: pd.DataFrame, index: np.ndarray, keep: np.ndarray) -> None:
        if not self.columns:
            return
        present = [c for c in self.columns if c in chunk.columns]
        self.parts.append(chunk.loc[keep, present].assign(_index=index[keep]).drop_duplicates("_index"))
        if len(self.parts) > 64:
            self.parts = [pd.concat(self.parts).drop_duplicates("_index")]

    def table(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(index=np.arange(self.n))
        out = pd.concat(self.parts).drop_duplicates("_index").set_index("_index").reindex(np.arange(self.n))
        out.index.name = None
        return out


def aggregate_window(files: Iterable[Path], spec: DatasetSpec, ids: IdSpace, chunk_rows: int = 262_144,
                     catalogue: bool = True) -> WindowInteractions:
    """Stream `files` (a column subset, `chunk_rows` at a time) into pairs over `ids`. Events of
    unknown users or items outside the catalogue are skipped (they have no index)."""
    positive = _positive_column(spec)
    content = content_columns(spec) if catalogue else []
    people = list(spec.user_columns) if catalogue else []
    columns = list(dict.fromkeys([ids.user_column, ids.item_column, positive, *content, *people]))
    pos, seen = _PairCounts(ids.n_items), _PairCounts(ids.n_items)
    item_rows, user_rows = _FirstRows(content, ids.n_items), _FirstRows(people, ids.n_users)
    rows = 0
    for path in files:
        for chunk in partitions.iter_chunks(Path(path), columns, chunk_rows):
            rows += len(chunk)
            users, items = ids.user_index(chunk[ids.user_column]), ids.item_index(chunk[ids.item_column])
            known = (users >= FIRST_ID) & (items >= 0)
            seen.add(users[known], items[known])
            hit = known & positive_mask(chunk, spec, path)
            pos.add(users[hit], items[hit])
            item_rows.add(chunk, items, items >= 0)
            user_rows.add(chunk, users, users >= FIRST_ID)
    return WindowInteractions(pos.pairs(), seen.pairs(), item_rows.table(), user_rows.table(), rows)


@dataclass(frozen=True)
class EvalDay:
    """One evaluated day (validation or staging): every user active that day, with the
    catalogue indices of the items they clicked. Items clicked outside the catalogue get
    indices from `n_items` on (`outside`, their raw ids): misses for every retriever.
    `user_rows`: each user's first row of the day (all raw columns read), for the two-stage
    pipeline, which builds the ranker's rows from the user's and the candidate items' features."""

    raw_users: np.ndarray  # (U,) raw ids, in order of first appearance
    users: np.ndarray  # (U,) int64 user indices (2 = unknown user)
    relevant: list[np.ndarray]  # U arrays of item indices
    outside: np.ndarray  # raw ids of clicked items outside the catalogue
    user_rows: pd.DataFrame = field(repr=False)
    rows: int = 0

    @property
    def n_evaluated(self) -> int:
        """Users with at least one positive: the ones the metrics average over."""
        return int(sum(len(r) > 0 for r in self.relevant))


def aggregate_day(files: Iterable[Path], spec: DatasetSpec, ids: IdSpace, chunk_rows: int = 262_144,
                  row_columns: Sequence[str] = ()) -> EvalDay:
    """A day's users and their positives (streamed); `row_columns`: raw columns kept for each
    user's first row (the ranker's feature columns, for the pipeline)."""
    positive = _positive_column(spec)
    columns = list(dict.fromkeys([ids.user_column, ids.item_column, positive, *row_columns]))
    firsts: list[pd.DataFrame] = []
    clicked: list[pd.DataFrame] = []
    rows = 0
    for path in files:
        for chunk in partitions.iter_chunks(Path(path), columns, chunk_rows):
            rows += len(chunk)
            firsts.append(chunk.drop_duplicates(ids.user_column))
            hit = positive_mask(chunk, spec, path)
            clicked.append(chunk.loc[hit, [ids.user_column, ids.item_column]])
    user_rows = pd.concat(firsts).drop_duplicates(ids.user_column).reset_index(drop=True) if firsts else \
        pd.DataFrame(columns=columns)
    user_rows = user_rows[user_rows[ids.user_column].notna()].reset_index(drop=True)
    raw_users = user_rows[ids.user_column].to_numpy()
    pairs = pd.concat(clicked) if clicked else pd.DataFrame(columns=[ids.user_column, ids.item_column])
    pairs = pairs[pairs[ids.user_column].notna() & pairs[ids.item_column].notna()]
    items = ids.item_index(pairs[ids.item_column].to_numpy())
    outside_raw = pd.unique(pairs[ids.item_column].to_numpy()[items < 0])
    if len(outside_raw):
        extra = pd.Index(outside_raw).get_indexer(pairs[ids.item_column].to_numpy()[items < 0])
        items[items < 0] = ids.n_items + extra
    row_of = pd.Index(raw_users).get_indexer(pairs[ids.user_column].to_numpy())
    relevant = [np.empty(0, np.int64) for _ in range(len(raw_users))]
    order = np.argsort(row_of, kind="stable")
    bounds = np.searchsorted(row_of[order], np.arange(len(raw_users) + 1))
    for u in range(len(raw_users)):
        relevant[u] = np.unique(items[order[bounds[u]:bounds[u + 1]]])
    return EvalDay(raw_users, ids.user_index(raw_users), relevant, np.asarray(outside_raw, dtype=object),
                   user_rows, rows)
