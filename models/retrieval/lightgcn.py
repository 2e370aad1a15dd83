"""LightGCN: embeddings smoothed over the user-item graph, no feature transform or
non-linearity (He, Deng, Wang, Li, Zhang, Wang 2020, "LightGCN: Simplifying and Powering
Graph Convolution Network for Recommendation", SIGIR 2020, arXiv 2002.02126, eq. 7-9):

    A   = [[0, R], [R^T, 0]]               (n_users + n_items) square, R the 0/1 clicks
    Â   = D^-1/2 A D^-1/2                  D the degrees (a degree 0 node keeps a zero row)
    E_0 = the free embeddings, E_k = Â E_{k-1},  E = mean_{k=0..K} E_k
    x(u, i) = <E_u, E_{n_users + i}>

trained with BPR, L2 on the batch's layer-0 embeddings (the paper's eq. 15):
    loss = -log sigmoid(x_ui - x_uj) + l2 (|e0_u|^2 + |e0_i|^2 + |e0_j|^2) / 2

Written here with one `torch.sparse.mm` per layer rather than taken from PyTorch Geometric
(`torch_geometric.nn.models.LightGCN` installs on our torch, but `models/` imports only torch
and numpy, and PyG's message passing adds nothing over a sparse product at this size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.retrieval.base import Interactions, LoopDefaults, Retriever, SideInfo


@dataclass(frozen=True)
class Config:
    dim: int = 64
    layers: int = 3
    init_std: float = 0.1
    l2: float = 1e-3  # measured on MovieLens-100k: 1e-4 (the paper's, with lr 1e-3 and ~1000 epochs) overfits in 40

    def __post_init__(self):
        if self.dim < 1 or self.layers < 0 or self.init_std < 0 or self.l2 < 0:
            raise ValueError(f"need dim >= 1, layers >= 0, init_std >= 0, l2 >= 0, got "
                             f"{self.dim}, {self.layers}, {self.init_std}, {self.l2}")


def normalized_adjacency(train: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
    """Â of the bipartite graph as COO (indices int64 (2, 2 nnz), values float32 (2 nnz,))."""
    u, i = train.rows(), train.indices + train.n_users
    rows, cols = np.r_[u, i], np.r_[i, u]
    degree = np.bincount(rows, minlength=train.n_users + train.n_items).astype(np.float64)
    values = 1.0 / np.sqrt(degree[rows] * degree[cols])
    return torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values.astype(np.float32))


class LightGCN(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), the propagated user vectors times
    all propagated item vectors. `propagate()` returns E (n_users + n_items, dim)."""

    name = "lightgcn"
    config_class = Config
    objective = "bpr"
    loop_defaults = LoopDefaults(epochs=40, batch_size=4096, lr=0.01)

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.embedding = nn.Parameter(torch.randn(n_users + n_items, config.dim) * config.init_std)  # E_0
        self.register_buffer("adj_indices", torch.zeros(2, 0, dtype=torch.int64))
        self.register_buffer("adj_values", torch.zeros(0))

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        self.set_history(train)
        self.adj_indices, self.adj_values = normalized_adjacency(train)

    def propagate(self) -> torch.Tensor:
        n = self.n_users + self.n_items
        adj = torch.sparse_coo_tensor(self.adj_indices, self.adj_values, (n, n), is_coalesced=False)
        e, total = self.embedding, self.embedding
        for _ in range(self.config.layers):
            e = torch.sparse.mm(adj, e)  # (n, n) (n, D) -> (n, D)
            total = total + e
        return total / (self.config.layers + 1)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        e = self.propagate()
        return e[users] @ e[self.n_users:].t()  # (U, D) (D, n_items)

    def bpr_terms(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x(u, i), x(u, j) (B,) each, and the batch's L2 term on the layer-0 rows."""
        e = self.propagate()
        eu, ei, ej = e[users], e[self.n_users + pos], e[self.n_users + neg]  # (B, D) each
        e0 = self.embedding
        reg = (e0[users].square().sum(1) + e0[self.n_users + pos].square().sum(1)
               + e0[self.n_users + neg].square().sum(1)).mean() / 2
        return (eu * ei).sum(1), (eu * ej).sum(1), self.config.l2 * reg
