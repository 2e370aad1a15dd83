"""Popularity: every user gets the items most users interacted with in the training window.

    score(u, i) = |{v : (v, i) in train}|

The baseline every top-K table starts with (e.g. Cremonesi, Koren, Turrin 2010, "Performance
of recommender algorithms on top-N recommendation tasks"): a retriever that does not beat it
has learned nothing about the user.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.retrieval.base import Retriever, SideInfo


@dataclass(frozen=True)
class Config:
    pass


class Popularity(Retriever):
    """Forward: users int64 (U,) -> the item counts, float32 (U, n_items)."""

    name = "popularity"
    scores_cold_users = True  # the same list for everyone
    config_class = Config

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config  # closed form: `fit` (the base's) keeps the history, whose counts are the scores

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(users.numel(), -1)
