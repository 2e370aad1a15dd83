"""What every retriever shares: the interaction matrix it learns from and the module contract.

A retriever scores the whole catalogue for a batch of users:

    scores = retriever(users)                    # int64 (U,) -> float32 (U, n_items)
    items, scores = retriever.recommend(users, k=100, exclude_seen=True)

Users and items are dense indices (`0..n_users-1`, `0..n_items-1`): the night maps the
fitted vocabulary's ids to them. The training interactions travel inside the module as
buffers (`history`), so a saved retriever can exclude what a user already saw and the
history-based models (kNN, AutoRec, TF-IDF) can score without a second input; users with no
history get the popularity order (cold start) unless the model scores them from features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from models.retrieval.search import search


@dataclass(frozen=True)
class Interactions:
    """Positive user-item pairs as a CSR matrix over dense indices (rows = users).

    `indices` are sorted and unique within each row; `data` holds the pair's weight (the
    number of positive events, or 1). Built with `from_pairs`, which checks the ranges."""

    indptr: np.ndarray  # int64 (n_users + 1,)
    indices: np.ndarray  # int64 (nnz,)
    data: np.ndarray  # float32 (nnz,)
    n_users: int
    n_items: int

    @classmethod
    def from_pairs(cls, users, items, n_users: int, n_items: int, weights=None) -> Interactions:
        """Sum duplicate pairs; ValueError on an index out of range or mismatched lengths."""
        u = np.asarray(users, dtype=np.int64).ravel()
        i = np.asarray(items, dtype=np.int64).ravel()
        w = np.ones(u.size, np.float32) if weights is None else np.asarray(weights, np.float32).ravel()
        if not u.size == i.size == w.size:
            raise ValueError(f"users, items and weights differ in length: {u.size}, {i.size}, {w.size}")
        for name, x, n in (("user", u, n_users), ("item", i, n_items)):
            if x.size and (x.min() < 0 or x.max() >= n):
                raise ValueError(f"{name} index out of range [0, {n}): min {x.min()}, max {x.max()}")
        key = u * n_items + i
        uniq, inverse = np.unique(key, return_inverse=True)
        data = np.zeros(uniq.size, np.float32)
        np.add.at(data, inverse, w)
        rows = uniq // n_items
        indptr = np.zeros(n_users + 1, np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), (uniq % n_items).astype(np.int64), data, n_users, n_items)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def rows(self) -> np.ndarray:
        """The user index of every stored pair, int64 (nnz,)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def lists(self, users: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Each user's items, e.g. the relevant items `models.metrics.topk_metrics` reads."""
        return [self.row(int(u)) for u in users]

    def item_counts(self) -> np.ndarray:
        """Users per item (float32 (n_items,)): the popularity of each item."""
        return np.bincount(self.indices, minlength=self.n_items).astype(np.float32)

    def active_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.indptr) > 0)

    def to_torch(self, binary: bool = True) -> torch.Tensor:
        """A sparse CSR tensor (n_users, n_items); `binary` ones instead of the counts."""
        values = torch.ones(self.nnz) if binary else torch.from_numpy(self.data)
        return torch.sparse_csr_tensor(torch.from_numpy(self.indptr), torch.from_numpy(self.indices),
                                       values, (self.n_users, self.n_items))


@dataclass(frozen=True)
class SideInfo:
    """What content- and feature-based retrievers read besides the interactions.

    `item_terms`: an item x term weight matrix (e.g. TF-IDF of titles and tags; rows are items,
    so `n_users` there counts items). `user_features` / `item_features`: the fitted
    vocabulary's categorical ids per user and per item (int64 (n_users, F_u), (n_items, F_i)),
    with the vocabulary sizes in `*_cardinalities`, for the two-tower retriever."""

    item_terms: Interactions | None = None
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    user_cardinalities: tuple[int, ...] = ()
    item_cardinalities: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoopDefaults:
    """A trained retriever's own epochs, batch size and learning rate, used where
    `RetrievalTrainConfig` leaves them None (BPR, AutoRec and two-tower need different ones)."""

    epochs: int
    batch_size: int
    lr: float


class Retriever(nn.Module):
    """Base of every retriever: holds the training history and recommends from `forward`.

    Subclasses implement `forward(users) -> scores (U, n_items)` (higher is better) and set
    `name` and `config_class`; their constructor is `(n_users, n_items, config, side=None)`.
    A user without history (no positive in the training window) gets the popularity order:
    history-based models (kNN, AutoRec, TF-IDF) have nothing to go on, and an id-embedding
    model (MF, LightGCN) would rank by a row no gradient ever touched. `scores_cold_users`:
    the model scores such users from something else (two-tower's user features) itself.

    Fitting has two parts. `fit(train, side)` computes everything that has a closed form (the
    history, similarities, the normalized graph, the catalogue's features); for popularity,
    kNN and TF-IDF that is the whole fit. A model with an `objective` ("bpr",
    "reconstruction", "sampled_softmax") is then trained by `models.retrieval.trainer`'s
    loop of that name, which calls the hooks the objective documents there."""

    name: ClassVar[str]
    config_class: ClassVar[type]  # the frozen Config dataclass next to the subclass
    scores_cold_users: bool = False
    objective: ClassVar[str | None] = None  # a loop in models.retrieval.trainer.OBJECTIVES
    loop_defaults: ClassVar[LoopDefaults | None] = None  # set with `objective`

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        if min(n_users, n_items) < 1:
            raise ValueError(f"need n_users, n_items >= 1, got {n_users}, {n_items}")
        self.n_users, self.n_items = n_users, n_items
        self.register_buffer("history_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("history_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        """The closed-form part of the fit; the base keeps the history only."""
        self.set_history(train)

    def set_history(self, train: Interactions) -> None:
        """Keep the training interactions (for exclusion, history-based scores, cold start)."""
        if (train.n_users, train.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"interactions are {train.n_users} x {train.n_items}, the retriever "
                             f"{self.n_users} x {self.n_items}")
        self.history_indptr = torch.from_numpy(train.indptr.copy())
        self.history_indices = torch.from_numpy(train.indices.copy())
        self.popularity = torch.from_numpy(train.item_counts())

    def history(self) -> Interactions:
        indptr, indices = self.history_indptr.numpy(), self.history_indices.numpy()
        return Interactions(indptr, indices, np.ones(indices.size, np.float32), self.n_users, self.n_items)

    def history_matrix(self, users: torch.Tensor) -> torch.Tensor:
        """The users' history rows as a dense 0/1 float32 (U, n_items)."""
        starts, ends = self.history_indptr[users], self.history_indptr[users + 1]
        counts = ends - starts
        rows = torch.repeat_interleave(torch.arange(users.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        out = torch.zeros(users.numel(), self.n_items)
        out[rows, self.history_indices[torch.repeat_interleave(starts, counts) + offsets]] = 1.0
        return out

    def forward(self, users: torch.Tensor) -> torch.Tensor:  # (U,) -> (U, n_items)
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, users, k: int, exclude_seen: bool = True, chunk: int = 1024,
                  exclude: Interactions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` items per user: int64 (U, k) item indices (-1 where fewer than k remain
        after exclusion) and float32 (U, k) scores, best first. `exclude_seen` leaves out the
        user's training items, or with `exclude` these pairs instead (the night leaves out
        every pair a user had in the window, positive or not)."""
        users = torch.as_tensor(np.asarray(users), dtype=torch.int64)
        if users.numel() and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user index out of range [0, {self.n_users})")
        cold = None if self.scores_cold_users else self.history_indptr[users + 1] == self.history_indptr[users]

        def scores(batch: torch.Tensor, rows: slice) -> torch.Tensor:
            s = self(batch)
            if cold is not None and bool(cold[rows].any()):
                s = s.clone()
                s[cold[rows]] = self.popularity
            return s

        if exclude_seen and exclude is None:
            exclude = self.history()
        was_training = self.training
        self.eval()
        try:
            return search(scores, users, k, exclude if exclude_seen else None, chunk)
        finally:
            self.train(was_training)
