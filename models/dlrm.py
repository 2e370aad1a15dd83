"""DLRM: a bottom MLP maps the continuous inputs to one embedding-sized vector, every pair
of vectors interacts by a dot product, and a top MLP scores the result (Naumov et al. 2019,
"Deep Learning Recommendation Model for Personalization and Recommendation Systems",
arXiv 1906.00091):

    z = bottom_MLP(x_cont)                                   (B, D)
    V = [z, e_1, ..., e_F]                                   (B, F + 1, D)
    p = (<V_i, V_j>)_{i < j}                                 (B, (F + 1) F / 2)
    logit = w^T top_MLP([z, p]) + b

Only second-order interactions are formed explicitly (as in factorization machines); the
top MLP learns the rest. Without continuous inputs there is no z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import DotInteraction
from models.layers import (
    MLP,
    FusedEmbedding,
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
    bottom_hidden: tuple[int, ...] = (64,)  # before the bottom MLP's last layer, of width D
    hidden: tuple[int, ...] = (256, 128, 64)  # the top MLP
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        check_mlp_args((*self.bottom_hidden, self.embedding_dim), self.dropout, self.activation)
        check_mlp_args(self.hidden, self.dropout, self.activation)


class DLRM(nn.Module):
    """bottom MLP(cont) + embeddings -> pairwise dot products -> top MLP -> one logit.

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
        fields = id_fields(schema, config.use_crosses)
        n_cat, n_cont, d = len(fields), len(schema.continuous), config.embedding_dim
        n_vectors = n_cat + (1 if n_cont else 0)
        top_in = (d if n_cont else 0) + n_vectors * (n_vectors - 1) // 2
        if top_in == 0:
            raise ValueError("DLRM needs at least one continuous input or two categorical fields")
        self.embedding = FusedEmbedding([f.cardinality for f in fields], d,
                                        init_std=config.embedding_init_std, names=[f.name for f in fields])
        self.bottom = (MLP(n_cont, (*config.bottom_hidden, d), config.dropout, config.activation,
                           config.batch_norm) if n_cont else None)
        self.interaction = DotInteraction()
        self.top = MLP(top_in, config.hidden, config.dropout, config.activation, config.batch_norm)
        self.head = nn.Linear(self.top.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = self.embedding(id_inputs(batch, self.config.use_crosses))  # (B, F', D)
        if self.bottom is None:
            x = self.interaction(vectors)  # (B, F (F - 1) / 2)
        else:
            z = self.bottom(batch["cont"])  # (B, C) -> (B, D)
            vectors = torch.cat([z.unsqueeze(1), vectors], dim=1)  # (B, F + 1, D)
            x = torch.cat([z, self.interaction(vectors)], dim=1)  # (B, D + (F + 1) F / 2)
        return self.head(self.top(x)).squeeze(1)  # (B,)
