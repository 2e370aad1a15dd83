"""DCN: a cross network and an MLP in parallel over the same input (Wang et al. 2017,
"Deep & Cross Network for Ad Click Predictions", arXiv 1708.05123, the V1 cross network):

    x_0 = [e_1, ..., e_F, x_cont]
    x_{l+1} = x_0 * (x_l^T w_l) + b_l + x_l          (cross network, L layers)
    logit = w^T [x_L, MLP(x_0)] + b

Each cross layer raises the polynomial degree by one with only 2N parameters, so bounded
degree feature crosses are learned explicitly; the MLP covers the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import CrossNetV1
from models.layers import MLP, FusedEmbedding, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    n_cross_layers: int = 3
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        if self.embedding_dim < 1 or self.embedding_init_std < 0 or self.n_cross_layers < 1:
            raise ValueError(f"need embedding_dim >= 1, embedding_init_std >= 0 and n_cross_layers "
                             f">= 1, got {self.embedding_dim}, {self.embedding_init_std}, "
                             f"{self.n_cross_layers}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class DCN(nn.Module):
    """[embeddings, continuous] -> (cross network || MLP) -> concat -> one logit.

    Args:
        schema: input fields and cardinalities (from the fitted preprocessing).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F), "cont": float32 (B, C)}  ("cross" is ignored)
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        n_cat, n_cont = len(schema.categorical), len(schema.continuous)
        if n_cat + n_cont == 0:
            raise ValueError("DCN needs at least one categorical or continuous input")
        self.embedding = FusedEmbedding([f.cardinality for f in schema.categorical],
                                        config.embedding_dim, init_std=config.embedding_init_std)
        width = n_cat * config.embedding_dim + n_cont  # N
        self.cross = CrossNetV1(width, config.n_cross_layers)
        self.mlp = MLP(width, config.hidden, config.dropout, config.activation, config.batch_norm)
        self.head = nn.Linear(width + self.mlp.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = torch.cat([self.embedding(batch["cat"]).flatten(1), batch["cont"]], dim=1)  # (B, N)
        x = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, N + H)
        return self.head(x).squeeze(1)  # (B,)
