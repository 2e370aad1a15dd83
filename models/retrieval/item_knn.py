"""Item-based kNN: an item scores by its similarity to the items the user already has
(Sarwar, Karypis, Konstan, Riedl 2001, "Item-based collaborative filtering recommendation
algorithms", WWW 2001; top-N variant of Deshpande and Karypis 2004):

    s(i, j)   = <r_i, r_j> / (|r_i| |r_j| + shrink)     r_i: item i's 0/1 column of users
    N(j)      = the `neighbours` items i != j with the largest s(j, i)
    score(u, j) = sum_{i in N(j), i in I_u} s(j, i)

The similarity is pruned to N(j) per item, so the buffers hold at most n_items x neighbours
values; the unnormalized sum (no division by sum |s|) ranks well for top-N (Deshpande 2004).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.retrieval.base import Interactions, Retriever, SideInfo
from models.retrieval.similarity import cosine_neighbours, csr_tensor


@dataclass(frozen=True)
class Config:
    neighbours: int = 100
    shrink: float = 10.0

    def __post_init__(self):
        if self.neighbours < 1 or self.shrink < 0:
            raise ValueError(f"need neighbours >= 1 and shrink >= 0, got {self.neighbours}, {self.shrink}")


class ItemKNN(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), their history times the pruned
    item-item similarity, `H (U, n_items) @ S^T` with S[j] = j's neighbours."""

    name = "item_knn"
    config_class = Config

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.register_buffer("sim_indptr", torch.zeros(n_items + 1, dtype=torch.int64))
        self.register_buffer("sim_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("sim_values", torch.zeros(0))

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        self.set_history(train)
        self.sim_indptr, self.sim_indices, self.sim_values = cosine_neighbours(
            train.to_torch(), self.config.neighbours, self.config.shrink)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        s = csr_tensor(self.sim_indptr, self.sim_indices, self.sim_values, (self.n_items, self.n_items))
        return (s @ self.history_matrix(users).t()).t()  # (n, n) @ (n, U) -> (U, n)
