"""I-AutoRec: an autoencoder that reconstructs each item's column of users (Sedhain, Menon,
Sanner, Xie 2015, "AutoRec: Autoencoders Meet Collaborative Filtering", WWW 2015, eq. 2):

    r_i       = item i's 0/1 column over the n_users users (the training clicks)
    h_i       = sigmoid(V r_i + mu)                      V (hidden, n_users)
    r^_i      = W h_i + b                                W (n_users, hidden), identity output
    loss      = sum_i |r_i - r^_i|^2 + l2 / 2 (|W|^2 + |V|^2)

On implicit clicks the error runs over the whole column, the unclicked zeros included (the
paper's observed-only error would be minimized by predicting 1 everywhere).

Top-K readout for user u: the model reconstructs items, not users, so u's score for item i
is u's entry in the reconstruction of i's column, score(u, i) = r^_i[u] = W_u . h_i + b_u:
the item codes h_i of the whole catalogue (computed once from the training columns) times
the user's output row W_u. A user without clicks gets the popularity order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.retrieval.base import Interactions, LoopDefaults, Retriever, SideInfo


@dataclass(frozen=True)
class Config:
    hidden: int = 500
    l2: float = 100.0  # MovieLens-100k validation recall@10: 0.146 at 1, 0.182 at 10, 0.230 at 30, 0.234 at 100

    def __post_init__(self):
        if self.hidden < 1 or self.l2 < 0:
            raise ValueError(f"need hidden >= 1 and l2 >= 0, got {self.hidden}, {self.l2}")


class AutoRec(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), `W[users] H^T + b[users]` with
    H (n_items, hidden) the codes of every item's training column.
    `reconstruct(columns (B, n_users)) -> (B, n_users)` is the autoencoder itself."""

    name = "autorec"
    config_class = Config
    objective = "reconstruction"
    loop_defaults = LoopDefaults(epochs=40, batch_size=128, lr=0.005)

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.encoder = nn.Linear(n_users, config.hidden)  # V, mu
        self.decoder = nn.Linear(config.hidden, n_users)  # W, b

    def reconstruct(self, columns: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.sigmoid(self.encoder(columns)))  # (B, n_users) -> (B, H) -> (B, n_users)

    def regularization(self) -> torch.Tensor:
        return self.config.l2 / 2 * (self.encoder.weight.square().sum() + self.decoder.weight.square().sum())

    def item_codes(self) -> torch.Tensor:
        """h_i of every item from the training columns: (n_items, hidden)."""
        by_item = self.history().to_torch().to_sparse_coo().t().coalesce()  # (n_items, n_users)
        return torch.sigmoid(torch.sparse.mm(by_item, self.encoder.weight.t()) + self.encoder.bias)

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        self.set_history(train)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        w, b = self.decoder.weight[users], self.decoder.bias[users]  # (U, H), (U,)
        return w @ self.item_codes().t() + b[:, None]  # (U, H) (H, n_items) + (U, 1)
