"""FinalMLP: two MLP streams, each with its own feature gating, fused by a multi-head
bilinear layer (Mao et al. 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR
Prediction", AAAI 2023, arXiv 2304.00902):

    x = [e_1, ..., e_F, x_cont]
    o_1 = MLP_1(g_1 * x),   o_2 = MLP_2(g_2 * x),   g_s = 2 sigmoid(gate_MLP_s(ctx_s))
    logit = b + w_1^T o_1 + w_2^T o_2 + sum_h o_1h^T W_3h o_2h

Two plain MLPs that see differently weighted inputs and interact only through the
bilinear fusion match or beat models with explicit interaction layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import BilinearFusion, FeatureGating
from models.layers import MLP, FlatFeatures, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # embed the hashed crosses as extra fields (layers.id_fields)
    hidden1: tuple[int, ...] = (256, 128, 64)  # stream 1
    hidden2: tuple[int, ...] = (128, 64)  # stream 2
    gate_hidden: int = 64  # width of each feature-gating MLP
    n_heads: int = 2  # bilinear fusion heads; must divide hidden1[-1] and hidden2[-1]
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        if self.embedding_dim < 1 or self.embedding_init_std < 0 or self.gate_hidden < 1:
            raise ValueError(f"need embedding_dim >= 1, embedding_init_std >= 0 and gate_hidden >= 1, "
                             f"got {self.embedding_dim}, {self.embedding_init_std}, {self.gate_hidden}")
        check_mlp_args(self.hidden1, self.dropout, self.activation)
        check_mlp_args(self.hidden2, self.dropout, self.activation)
        if self.n_heads < 1 or self.hidden1[-1] % self.n_heads or self.hidden2[-1] % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide hidden1[-1]={self.hidden1[-1]} "
                             f"and hidden2[-1]={self.hidden2[-1]}")


class FinalMLP(nn.Module):
    """[embeddings, continuous] -> two gated MLP streams -> bilinear fusion -> one logit.

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
        c = config
        self.inputs = FlatFeatures(schema, c.embedding_dim, c.embedding_init_std, c.use_crosses, "FinalMLP")
        width = self.inputs.out_dim  # N
        self.gate1 = FeatureGating(width, c.embedding_dim, c.gate_hidden)
        self.gate2 = FeatureGating(width, c.embedding_dim, c.gate_hidden)
        self.stream1 = MLP(width, c.hidden1, c.dropout, c.activation, c.batch_norm)
        self.stream2 = MLP(width, c.hidden2, c.dropout, c.activation, c.batch_norm)
        self.fusion = BilinearFusion(self.stream1.out_dim, self.stream2.out_dim, c.n_heads)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.inputs(batch)  # (B, N)
        o1 = self.stream1(self.gate1(x))  # (B, H1)
        o2 = self.stream2(self.gate2(x))  # (B, H2)
        return self.fusion(o1, o2).squeeze(1)  # (B, 1) -> (B,)
