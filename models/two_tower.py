"""Two-tower: a user tower and an item tower, scored by the dot product of their outputs
(Yi et al. 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019; Covington et al. 2016 for the YouTube retrieval towers):

    u = W_u MLP_u([e_f : f in user fields]),   v = W_i MLP_i([e_f : f in item fields])
    logit = <u / |u|, v / |v|> / tau + b            (normalized, temperature tau)

The towers never see each other's inputs, so item vectors can be computed once
(`item_embedding`) and served from a nearest-neighbour index. Only the schema's user and
item fields are read (continuous inputs, other fields and crosses are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import MLP, FusedEmbedding, check_mlp_args
from models.ncf import user_item_indices
from models.schema import Field, InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    hidden: tuple[int, ...] = (128, 64)  # each tower's MLP
    output_dim: int = 32  # width of the user and item vectors
    temperature: float = 0.05  # tau: logits of normalized vectors lie in [-1/tau, 1/tau] + b
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        if min(self.embedding_dim, self.output_dim) < 1 or self.embedding_init_std < 0:
            raise ValueError(f"need embedding_dim, output_dim >= 1 and embedding_init_std >= 0, got "
                             f"{self.embedding_dim}, {self.output_dim}, {self.embedding_init_std}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


class Tower(nn.Module):
    """Embeddings of some categorical fields -> MLP -> linear projection.

    Forward:
        ids: int64 (B, n_fields) -> (B, output_dim)
    """

    def __init__(self, fields: list[Field], config: Config):
        super().__init__()
        c = config
        self.embedding = FusedEmbedding([f.cardinality for f in fields], c.embedding_dim,
                                        init_std=c.embedding_init_std, names=[f.name for f in fields])
        self.mlp = MLP(len(fields) * c.embedding_dim, c.hidden, c.dropout, c.activation,
                       c.batch_norm)
        self.proj = nn.Linear(self.mlp.out_dim, c.output_dim)  # no ReLU: vectors of any sign

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.mlp(self.embedding(ids).flatten(1)))  # (B, n D) -> (B, output_dim)


class TwoTower(nn.Module):
    """User tower . item tower -> one logit.

    Args:
        schema: input fields and cardinalities; `user_fields` and `item_fields` must name
            categorical fields (ValueError otherwise).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F)}  (only the user and item columns are read)
        -> logits float32 (B,)
    `user_embedding(batch)` and `item_embedding(batch)` return unit vectors (B, output_dim);
    each reads only its own tower's columns of batch["cat"], so the other columns may hold
    any id.
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        users, items = user_item_indices(schema, "TwoTower")
        self.register_buffer("users", torch.tensor(users), persistent=False)  # (U,)
        self.register_buffer("items", torch.tensor(items), persistent=False)  # (I,)
        self.user_tower = Tower([schema.categorical[i] for i in users], config)
        self.item_tower = Tower([schema.categorical[i] for i in items], config)
        self.bias = nn.Parameter(torch.zeros(1))

    def user_embedding(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self.user_tower(batch["cat"][:, self.users])  # (B, output_dim)
        return nn.functional.normalize(u, dim=1)

    def item_embedding(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.item_tower(batch["cat"][:, self.items])  # (B, output_dim)
        return nn.functional.normalize(v, dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u, v = self.user_embedding(batch), self.item_embedding(batch)  # (B, O) each, unit norm
        return (u * v).sum(dim=1) / self.config.temperature + self.bias  # (B,)
