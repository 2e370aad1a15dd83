"""GDCN: a gated cross network with an MLP, stacked or in parallel (Wang et al. 2023,
"Towards Deeper, Lighter and Interpretable Cross Network for CTR Prediction", CIKM 2023,
arXiv 2311.04635):

    c_0 = [e_1, ..., e_F, x_cont]
    c_{l+1} = c_0 * (W_l c_l + b_l) * sigmoid(W_g,l c_l + b_g,l) + c_l
    stacked (GDCN-S):  logit = w^T MLP(c_L) + b
    parallel (GDCN-P): logit = w^T [c_L, MLP(c_0)] + b

DCN-V2's cross layer with an information gate that filters out noisy high-order crosses,
so deeper cross networks keep improving instead of degrading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import GatedCrossNet
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
        check_mlp_args(self.hidden, self.dropout, self.activation)


class GDCN(nn.Module):
    """[embeddings, continuous] -> gated cross network and MLP (stacked or parallel) -> one logit.

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
                                   "GDCN")
        width = self.inputs.out_dim  # N
        self.net = CrossDeepHead(GatedCrossNet(width, config.n_cross_layers), width, config.hidden, config.dropout,
                                 config.activation, config.batch_norm, config.structure)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self.inputs(batch))  # (B, N) -> (B,)
