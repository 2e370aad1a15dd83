"""Two-tower retrieval: a user tower and an item tower whose unit vectors are compared by
inner product, trained with an in-batch sampled softmax corrected for item frequency (Yi,
Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi 2019, "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations", RecSys 2019, eq. 3 and 7):

    u = normalize(Tower_u(user features)),  v = normalize(Tower_i(item features))
    s(u, i) = <u, v_i> / tau
    loss    = -log softmax_B(s(u, i) - log q_i)          over the batch's items, q_i = count_i / nnz

The towers are `models.two_tower.Tower` (embeddings -> MLP -> projection). Features are
`SideInfo.user_features` / `item_features` (the fitted vocabulary's ids) plus, with
`id_features`, the user / item index itself as one more field; without side info the towers
are id-only. At `recommend` the item tower embeds the catalogue once and the search is an
exact maximum inner product over those vectors (`search.search`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models import two_tower
from models.retrieval.base import Interactions, LoopDefaults, Retriever, SideInfo
from models.schema import Field


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 64
    hidden: tuple[int, ...] = (128,)
    output_dim: int = 64
    temperature: float = 0.1
    dropout: float = 0.0
    activation: str = "relu"
    id_features: bool = True  # the user / item index as a field next to the side features

    def tower(self) -> two_tower.Config:
        return two_tower.Config(embedding_dim=self.embedding_dim, hidden=self.hidden, output_dim=self.output_dim,
                                temperature=self.temperature, dropout=self.dropout, activation=self.activation)

    def __post_init__(self):
        self.tower()  # the ranking tower's checks


def _features(n: int, ids: np.ndarray | None, cards: tuple[int, ...], with_index: bool, what: str
              ) -> tuple[torch.Tensor, list[Field]]:
    """The (n, F) id matrix one tower reads and its fields."""
    cols, fields = [], []
    if ids is not None:
        ids = np.asarray(ids, np.int64)
        if ids.shape != (n, len(cards)):
            raise ValueError(f"{what}_features is {ids.shape}, expected ({n}, {len(cards)}) for its cardinalities")
        cols += [ids[:, f] for f in range(ids.shape[1])]
        fields += [Field(f"{what}_feature_{f}", c) for f, c in enumerate(cards)]
    if with_index or not cols:
        cols.append(np.arange(n, dtype=np.int64))
        fields.append(Field(f"{what}_index", n))
    return torch.from_numpy(np.stack(cols, 1)), fields


class TwoTowerRetriever(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), `<u, v_i> / tau` for every item.
    `user_vectors(users)` (U, O) and `item_vectors(items)` (I, O) are unit vectors."""

    name = "two_tower"
    config_class = Config
    objective = "sampled_softmax"
    loop_defaults = LoopDefaults(epochs=20, batch_size=1024, lr=0.005)

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        side = side or SideInfo()
        user_ids, user_fields = _features(n_users, side.user_features, side.user_cardinalities,
                                          config.id_features, "user")
        item_ids, item_fields = _features(n_items, side.item_features, side.item_cardinalities,
                                          config.id_features, "item")
        self.register_buffer("user_ids", user_ids)  # (n_users, F_u)
        self.register_buffer("item_ids", item_ids)  # (n_items, F_i)
        self.user_tower = two_tower.Tower(user_fields, config.tower())
        self.item_tower = two_tower.Tower(item_fields, config.tower())
        self._catalogue: torch.Tensor | None = None  # item vectors while `recommend` runs
        self.scores_cold_users = side.user_features is not None  # the user tower reads features

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.user_tower(self.user_ids[users]), dim=1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.item_tower(self.item_ids[items]), dim=1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        v = self._catalogue if self._catalogue is not None else self.item_vectors(torch.arange(self.n_items))
        return self.user_vectors(users) @ v.t() / self.config.temperature  # (U, O) (O, n_items)

    @torch.no_grad()
    def recommend(self, users, k: int, exclude_seen: bool = True, chunk: int = 1024,
                  exclude: Interactions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As `Retriever.recommend`, the catalogue's vectors computed once for all users."""
        was_training = self.training
        self.eval()
        self._catalogue = self.item_vectors(torch.arange(self.n_items))  # (n_items, O)
        try:
            return super().recommend(users, k, exclude_seen, chunk, exclude)
        finally:
            self._catalogue = None
            self.train(was_training)
