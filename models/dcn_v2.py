"""DCN-V2: a full-rank, low-rank or mixture-of-experts cross network with an MLP, stacked
or in parallel (Wang et al. 2020, "DCN V2: Improved Deep & Cross Network and Practical
Lessons for Web-scale Learning to Rank Systems", arXiv 2008.13535):

    x_0 = [e_1, ..., e_F, x_cont]
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l            (W_l = U_l V_l^T when low rank)
    stacked:  logit = w^T MLP(x_L) + b
    parallel: logit = w^T [x_L, MLP(x_0)] + b

A matrix W_l instead of DCN's vector w_l makes each layer far more expressive; the
low-rank and mixture forms (`low_rank`, `n_experts`) trade that back for cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import CrossNetV2
from models.layers import (
    CROSS_STRUCTURES,
    CrossDeepHead,
    FlatFeatures,
    check_embedding_args,
    check_mlp_args,
)
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # embed the hashed crosses as extra fields (layers.id_fields)
    n_cross_layers: int = 3
    low_rank: int | None = None  # None: full-rank W_l
    n_experts: int = 1  # > 1: mixture of low-rank experts (needs low_rank)
    structure: str = "stacked"
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        if self.n_cross_layers < 1:
            raise ValueError(f"need n_cross_layers >= 1, got {self.n_cross_layers}")
        if self.structure not in CROSS_STRUCTURES:
            raise ValueError(f"unknown structure {self.structure!r}; valid: {list(CROSS_STRUCTURES)}")
        if (self.low_rank is not None and self.low_rank < 1) or self.n_experts < 1:
            raise ValueError(f"need low_rank >= 1 and n_experts >= 1, got {self.low_rank}, {self.n_experts}")
        if self.n_experts > 1 and self.low_rank is None:
            raise ValueError("a mixture of experts (n_experts > 1) needs low_rank")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class DCNv2(nn.Module):
    """[embeddings, continuous] -> cross network V2 and MLP (stacked or parallel) -> one logit.

    Args:
        schema: input fields and cardinalities (from the fitted preprocessing).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F), "cont": float32 (B, C), "cross": int64 (B, K)}
        ("cross" is read only with use_crosses)
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        self.inputs = FlatFeatures(schema, config.embedding_dim, config.embedding_init_std, config.use_crosses,
                                   "DCNv2")
        width = self.inputs.out_dim  # N
        self.net = CrossDeepHead(CrossNetV2(width, config.n_cross_layers, config.low_rank, config.n_experts), width, config.hidden, config.dropout,
                                 config.activation, config.batch_norm, config.structure)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self.inputs(batch))  # (B, N) -> (B,)
