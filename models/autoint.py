"""AutoInt: stacked multi-head self-attention over field embeddings (Song et al. 2019,
"AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks",
arXiv 1810.11921):

    E^0 = [e_1, ..., e_{F+C}]                 (continuous columns as value * vector)
    E^{l+1} = InteractingLayer(E^l)           (attention across fields + residual, ReLU)
    logit = w^T flatten(E^L) + v^T MLP(flatten(E^0)) + b

Each interacting layer lets every field attend to all others, so layer l models
interactions of order up to 2^l, with attention weights that show which pairs matter.
The default is the paper's AutoInt+ (sec. 5.6: jointly trained with a feed-forward network
over the same embeddings); `hidden=()` gives plain AutoInt. On synthetic_clicks plain AutoInt
(with the crosses embedded) reached val AUC 0.776, no better than `wide` (0.777); AutoInt+
reached 0.789 (tests/integration/test_zoo_on_synthetic.py, seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import InteractingLayer
from models.layers import (
    MLP,
    FieldEmbedding,
    check_embedding_args,
    check_mlp_args,
    id_fields,
    id_inputs,
)
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # embed the hashed crosses as extra fields (layers.id_fields)
    n_layers: int = 3
    n_heads: int = 2
    head_dim: int = 16  # d' per head; the layers' width is n_heads * head_dim
    hidden: tuple[int, ...] = (256, 128, 64)  # AutoInt+'s MLP; () for plain AutoInt
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        if min(self.n_layers, self.n_heads, self.head_dim) < 1:
            raise ValueError(f"need n_layers, n_heads and head_dim >= 1, got "
                             f"{self.n_layers}, {self.n_heads}, {self.head_dim}")
        if self.hidden:
            check_mlp_args(self.hidden, self.dropout, self.activation)


class AutoInt(nn.Module):
    """Field embeddings -> L interacting layers -> linear head (+ MLP head) -> one logit.

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
        n_cont = len(schema.continuous)
        if len(schema.categorical) + n_cont == 0:
            raise ValueError("AutoInt needs at least one categorical or continuous input")
        fields = id_fields(schema, config.use_crosses)
        self.embedding = FieldEmbedding([f.cardinality for f in fields], n_cont, config.embedding_dim,
                                        config.embedding_init_std, names=[f.name for f in fields])
        layers, width = [], config.embedding_dim
        for _ in range(config.n_layers):
            layers.append(InteractingLayer(width, config.n_heads, config.head_dim))
            width = layers[-1].out_dim
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(self.embedding.num_fields * width, 1)
        flat = self.embedding.num_fields * config.embedding_dim
        self.mlp = (MLP(flat, config.hidden, config.dropout, config.activation, config.batch_norm)
                    if config.hidden else None)
        self.mlp_head = nn.Linear(self.mlp.out_dim, 1, bias=False) if self.mlp is not None else None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = id_inputs(batch, self.config.use_crosses)
        emb = self.embedding(ids, batch["cont"])  # (B, F + C, D)
        y = self.head(self.layers(emb).flatten(1))  # (B, F + C, H d') -> (B, 1)
        if self.mlp is not None:  # (B, (F + C) D) -> (B, 1), its first layer maybe folded through the table
            y = y + self.mlp(self.embedding.lookup(ids, batch["cont"], emb.flatten(1)), head=self.mlp_head)
        return y.squeeze(1)  # (B,)
