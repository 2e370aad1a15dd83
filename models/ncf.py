"""NCF / NeuMF: generalized matrix factorization and an MLP over user and item embeddings,
fused by one output layer (He et al. 2017, "Neural Collaborative Filtering", WWW 2017,
arXiv 1708.05031, sec. 3.4):

    phi_GMF = p_u * q_i                                  (element-wise, own embeddings)
    phi_MLP = MLP([p'_u, q'_i])                          (separate embeddings)
    logit = h^T [phi_GMF, phi_MLP] + b

Pure collaborative filtering: only the schema's user and item fields are read (continuous
inputs, other fields and crosses are ignored). With several user (or item) fields, p_u is
the sum of their GMF embeddings and the MLP sees all of them concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import MLP, FusedEmbedding, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    gmf_dim: int = 16
    mlp_embedding_dim: int = 16
    embedding_init_std: float = 0.1
    hidden: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False

    def __post_init__(self):
        if min(self.gmf_dim, self.mlp_embedding_dim) < 1 or self.embedding_init_std < 0:
            raise ValueError(f"need gmf_dim, mlp_embedding_dim >= 1 and embedding_init_std >= 0, got "
                             f"{self.gmf_dim}, {self.mlp_embedding_dim}, {self.embedding_init_std}")
        check_mlp_args(self.hidden, self.dropout, self.activation)


def user_item_indices(schema: InputSchema, arch: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Positions in "cat" of the user and item fields; ValueError if either set is empty."""
    if not schema.user_fields or not schema.item_fields:
        raise ValueError(f"{arch} needs at least one user field and one item field, got "
                         f"user_fields={list(schema.user_fields)}, item_fields={list(schema.item_fields)}")
    return schema.categorical_indices(schema.user_fields), schema.categorical_indices(schema.item_fields)


class NCF(nn.Module):
    """NeuMF: GMF (p_u * q_i) and MLP([p'_u, q'_i]) towers -> one logit.

    Args:
        schema: input fields and cardinalities; `user_fields` and `item_fields` must name
            categorical fields (ValueError otherwise).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F)}  (only the user and item columns are read)
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        users, items = user_item_indices(schema, "NCF")
        self.register_buffer("users", torch.tensor(users), persistent=False)  # (U,)
        self.register_buffer("items", torch.tensor(items), persistent=False)  # (I,)
        fields = [schema.categorical[i] for i in (*users, *items)]
        cards, names = [f.cardinality for f in fields], [f.name for f in fields]
        self.gmf_embedding = FusedEmbedding(cards, config.gmf_dim, init_std=config.embedding_init_std, names=names)
        self.mlp_embedding = FusedEmbedding(cards, config.mlp_embedding_dim,
                                            init_std=config.embedding_init_std, names=names)
        self.mlp = MLP(len(cards) * config.mlp_embedding_dim, config.hidden, config.dropout,
                       config.activation, config.batch_norm)
        self.head = nn.Linear(config.gmf_dim + self.mlp.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = torch.cat([batch["cat"][:, self.users], batch["cat"][:, self.items]], dim=1)  # (B, U + I)
        gmf = self.gmf_embedding(ids)  # (B, U + I, D_gmf)
        n_users = len(self.users)
        phi_gmf = gmf[:, :n_users].sum(1) * gmf[:, n_users:].sum(1)  # (B, D_gmf)
        phi_mlp = self.mlp(self.mlp_embedding(ids).flatten(1))  # (B, (U + I) D_mlp) -> (B, H)
        return self.head(torch.cat([phi_gmf, phi_mlp], dim=1)).squeeze(1)  # (B,)
