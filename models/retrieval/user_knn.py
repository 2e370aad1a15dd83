"""User-based kNN: an item scores by how many of the user's most similar users have it
(Herlocker, Konstan, Borchers, Riedl 1999, "An algorithmic framework for performing
collaborative filtering", SIGIR 1999; cosine on implicit 0/1 rows):

    s(u, v)   = <r_u, r_v> / (|r_u| |r_v| + shrink)     r_u: user u's 0/1 row of items
    N(u)      = the `neighbours` users v != u with the largest s(u, v)
    score(u, i) = sum_{v in N(u)} s(u, v) r_{v,i}

The user-user similarity is pruned to N(u), so the buffers hold at most n_users x neighbours
values; a user with no history has no neighbours and gets the popularity order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.retrieval.base import Interactions, Retriever, SideInfo
from models.retrieval.similarity import cosine_neighbours, dense_rows


@dataclass(frozen=True)
class Config:
    neighbours: int = 100
    shrink: float = 10.0

    def __post_init__(self):
        if self.neighbours < 1 or self.shrink < 0:
            raise ValueError(f"need neighbours >= 1 and shrink >= 0, got {self.neighbours}, {self.shrink}")


class UserKNN(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), the users' pruned similarity rows
    times the interaction matrix, `S[users] (U, n_users) @ R (n_users, n_items)`."""

    name = "user_knn"
    config_class = Config

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.register_buffer("sim_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("sim_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("sim_values", torch.zeros(0))
        # R^T, derived from the history buffers: built once, not state (pickling and state dicts skip it)
        self._items_by_users: torch.Tensor | None = None

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        self.set_history(train)
        self.sim_indptr, self.sim_indices, self.sim_values = cosine_neighbours(
            self.items_by_users(), self.config.neighbours, self.config.shrink)  # columns = users

    def set_history(self, train: Interactions) -> None:
        super().set_history(train)
        self._items_by_users = None

    def items_by_users(self) -> torch.Tensor:
        """The history transposed, sparse CSR float32 (n_items, n_users) of 0/1: every chunk of
        users `forward` scores multiplies it, so it is built once per history."""
        if self._items_by_users is None:
            self._items_by_users = self.history().to_torch().to_sparse_coo().t().coalesce().to_sparse_csr()
        return self._items_by_users

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # copies into the history buffers in place
        self._items_by_users = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_items_by_users": None}

    def __setstate__(self, state: dict) -> None:  # also retrievers pickled before the cache existed
        super().__setstate__({"_items_by_users": None, **state})

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        rows = dense_rows(self.sim_indptr, self.sim_indices, self.sim_values, users, self.n_users)  # (U, n_users)
        return (self.items_by_users() @ rows.t()).t()  # (n_items, n_users) @ (n_users, U) -> (U, n_items)
