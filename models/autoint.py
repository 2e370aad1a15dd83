"""AutoInt: stacked multi-head self-attention over field embeddings (Song et al. 2019,
"AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks",
arXiv 1810.11921):

    E^0 = [e_1, ..., e_{F+C}]                 (continuous columns as value * vector)
    E^{l+1} = InteractingLayer(E^l)           (attention across fields + residual, ReLU)
    logit = w^T flatten(E^L) + b

Each interacting layer lets every field attend to all others, so layer l models
interactions of order up to 2^l, with attention weights that show which pairs matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import InteractingLayer
from models.layers import FieldEmbedding, check_embedding_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    n_layers: int = 3
    n_heads: int = 2
    head_dim: int = 16  # d' per head; the layers' width is n_heads * head_dim

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        if min(self.n_layers, self.n_heads, self.head_dim) < 1:
            raise ValueError(f"need n_layers, n_heads and head_dim >= 1, got "
                             f"{self.n_layers}, {self.n_heads}, {self.head_dim}")


class AutoInt(nn.Module):
    """Field embeddings -> L interacting layers -> linear head -> one logit.

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
        n_cont = len(schema.continuous)
        if len(schema.categorical) + n_cont == 0:
            raise ValueError("AutoInt needs at least one categorical or continuous input")
        self.embedding = FieldEmbedding([f.cardinality for f in schema.categorical], n_cont,
                                        config.embedding_dim, config.embedding_init_std)
        layers, width = [], config.embedding_dim
        for _ in range(config.n_layers):
            layers.append(InteractingLayer(width, config.n_heads, config.head_dim))
            width = layers[-1].out_dim
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(self.embedding.num_fields * width, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(batch["cat"], batch["cont"])  # (B, F + C, D)
        x = self.layers(emb)  # (B, F + C, H d')
        return self.head(x.flatten(1)).squeeze(1)  # (B,)
