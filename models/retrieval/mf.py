"""Biased matrix factorization (Koren, Bell, Volinsky 2009, "Matrix factorization techniques
for recommender systems", IEEE Computer) trained with BPR on implicit clicks (Rendle,
Freudenthaler, Gantner, Schmidt-Thieme 2009, "BPR: Bayesian personalized ranking from
implicit feedback", UAI 2009):

    x(u, i) = b_i + <p_u, q_i>                                   p_u, q_i in R^dim
    loss    = -log sigmoid(x(u, i) - x(u, j))                   (u, i) clicked, j uniform unclicked
              + l2 (|p_u|^2 + |q_i|^2 + |q_j|^2 + b_i^2 + b_j^2)   per triple, averaged over the batch

Koren's global mean and user bias b_u are left out: they add the same amount to every item
of a user, so they change no user's ranking (and BPR's difference x_ui - x_uj cancels them).
The tables are `nn.Embedding(sparse=True)`: a batch updates only its rows (RowAdam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.retrieval.base import LoopDefaults, Retriever, SideInfo


@dataclass(frozen=True)
class Config:
    dim: int = 64
    init_std: float = 0.1
    l2: float = 0.01

    def __post_init__(self):
        if self.dim < 1 or self.init_std < 0 or self.l2 < 0:
            raise ValueError(f"need dim >= 1, init_std >= 0, l2 >= 0, got {self.dim}, {self.init_std}, {self.l2}")


class MF(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), `P[users] Q^T + b`."""

    name = "mf"
    config_class = Config
    objective = "bpr"
    loop_defaults = LoopDefaults(epochs=100, batch_size=1024, lr=0.003)

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.user = nn.Embedding(n_users, config.dim, sparse=True)
        self.item = nn.Embedding(n_items, config.dim, sparse=True)
        self.item_bias = nn.Embedding(n_items, 1, sparse=True)
        nn.init.normal_(self.user.weight, std=config.init_std)
        nn.init.normal_(self.item.weight, std=config.init_std)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.user(users) @ self.item.weight.t() + self.item_bias.weight.t()  # (U, D) (D, N) + (1, N)

    def bpr_terms(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x(u, i), x(u, j) (B,) each, and the batch's L2 term (a scalar)."""
        p, qi, qj = self.user(users), self.item(pos), self.item(neg)  # (B, D) each
        bi, bj = self.item_bias(pos).squeeze(1), self.item_bias(neg).squeeze(1)  # (B,)
        reg = (p.square().sum(1) + qi.square().sum(1) + qj.square().sum(1) + bi.square() + bj.square()).mean()
        return (p * qi).sum(1) + bi, (p * qj).sum(1) + bj, self.config.l2 * reg
