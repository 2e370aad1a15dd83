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
from models.layers import CrossDeepHead, FlatFeatures, check_embedding_args, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # embed the hashed crosses as extra fields (layers.id_fields)
    n_cross_layers: int = 3
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        if self.n_cross_layers < 1:
            raise ValueError(f"need n_cross_layers >= 1, got {self.n_cross_layers}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class DCN(nn.Module):
    """[embeddings, continuous] -> (cross network || MLP) -> concat -> one logit.

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
                                   "DCN")
        width = self.inputs.out_dim  # N
        self.net = CrossDeepHead(CrossNetV1(width, config.n_cross_layers), width, config.hidden, config.dropout,
                                 config.activation, config.batch_norm, "parallel")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self.inputs(batch))  # (B, N) -> (B,)
