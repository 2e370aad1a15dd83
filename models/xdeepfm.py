"""xDeepFM: a linear model, a Compressed Interaction Network and an MLP over shared field
embeddings (Lian et al. 2018, "xDeepFM: Combining Explicit and Implicit Feature
Interactions for Recommender Systems", arXiv 1803.05170):

    logit = w_linear^T [ids, crosses, cont] + w_cin^T CIN(E) + w_dnn^T MLP(flatten(E)) + b

The CIN builds vector-wise (not bit-wise) interactions of bounded, explicit degree, one
degree per layer; the MLP learns implicit ones. Continuous columns are fields too
(value * vector).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import CIN
from models.layers import MLP, LinearAndFields, check_embedding_args, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    cin_layers: tuple[int, ...] = (64, 64)  # feature maps H_k per CIN layer
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False
    use_crosses: bool = True  # hashed crosses in the linear term

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        if not self.cin_layers or min(self.cin_layers) < 1:
            raise ValueError(f"cin_layers must be a non-empty list of positive widths, got {self.cin_layers}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class XDeepFM(nn.Module):
    """Linear + CIN + MLP over shared field embeddings -> one logit.

    Args:
        schema: input fields and cardinalities (from the fitted preprocessing).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F), "cont": float32 (B, C), "cross": int64 (B, K)}
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        self.base = LinearAndFields(schema, config.embedding_dim, config.embedding_init_std,
                                    config.use_crosses, "XDeepFM")
        n_fields = self.base.num_fields
        self.cin = CIN(n_fields, config.cin_layers)
        self.cin_head = nn.Linear(self.cin.out_dim, 1, bias=False)
        self.mlp = MLP(n_fields * config.embedding_dim, config.hidden, config.dropout,
                       config.activation, config.batch_norm)
        self.mlp_head = nn.Linear(self.mlp.out_dim, 1, bias=False)  # the bias is the linear term's

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y, emb = self.base(batch)  # (B, 1), (B, F + C, D)
        y = y + self.cin_head(self.cin(emb))  # (B, sum H_k) -> (B, 1)
        # (B, (F + C) D) -> (B, 1); the MLP's input as a lookup: its first layer may fold through the table
        y = y + self.mlp(self.base.embedding.lookup(batch["cat"], batch["cont"], emb.flatten(1)),
                         head=self.mlp_head)
        return y.squeeze(1)  # (B,)
