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
from models.layers import MLP, FusedEmbedding, check_mlp_args
from models.schema import InputSchema

STRUCTURES = ("stacked", "parallel")


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    n_cross_layers: int = 3
    structure: str = "stacked"
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        if self.embedding_dim < 1 or self.embedding_init_std < 0 or self.n_cross_layers < 1:
            raise ValueError(f"need embedding_dim >= 1, embedding_init_std >= 0 and n_cross_layers "
                             f">= 1, got {self.embedding_dim}, {self.embedding_init_std}, "
                             f"{self.n_cross_layers}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"unknown structure {self.structure!r}; valid: {list(STRUCTURES)}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class GDCN(nn.Module):
    """[embeddings, continuous] -> gated cross network and MLP (stacked or parallel) -> one logit.

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
            raise ValueError("GDCN needs at least one categorical or continuous input")
        self.embedding = FusedEmbedding([f.cardinality for f in schema.categorical],
                                        config.embedding_dim, init_std=config.embedding_init_std)
        width = n_cat * config.embedding_dim + n_cont  # N
        self.cross = GatedCrossNet(width, config.n_cross_layers)
        self.mlp = MLP(width, config.hidden, config.dropout, config.activation, config.batch_norm)
        stacked = config.structure == "stacked"
        self.head = nn.Linear(self.mlp.out_dim + (0 if stacked else width), 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c0 = torch.cat([self.embedding(batch["cat"]).flatten(1), batch["cont"]], dim=1)  # (B, N)
        if self.config.structure == "stacked":
            x = self.mlp(self.cross(c0))  # (B, N) -> (B, H)
        else:
            x = torch.cat([self.cross(c0), self.mlp(c0)], dim=1)  # (B, N + H)
        return self.head(x).squeeze(1)  # (B,)
