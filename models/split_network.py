"""Split network (a generalized two-tower): the user and item towers of `two_tower`, their
outputs concatenated and combined by an MLP instead of a dot product, as NCF's MLP path
combines user and item embeddings (He et al. 2017, "Neural Collaborative Filtering", WWW 2017,
arXiv 1708.05031, sec. 3.3; towers as in Yi et al. 2019):

    u = Tower_u([e_f : f in user fields]),   v = Tower_i([e_f : f in item fields])
    logit = w^T MLP([u, v, u * v]) + b

The element-wise product hands the MLP the dot product's terms, which it otherwise learns
slowly (Rendle et al. 2020, "Neural Collaborative Filtering vs. Matrix Factorization
Revisited"), and batch normalization in the towers and the head lets the stack of three MLPs
train in a few epochs: on the zoo's synthetic test (4 epochs) the plain concatenation without
it reached validation AUC 0.643, below a linear model on the same fields (0.647); with both
0.750 (concatenation with batch norm: 0.741).

The MLP can learn interactions a dot product cannot (e.g. a user who likes an item only in
some context of the item's fields), at the price of the towers' separability: the score is
no longer an inner product, so items cannot be served from a nearest-neighbour index and
this is a ranker, not a retriever. Only the schema's user and item fields are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import two_tower
from models.layers import MLP, check_mlp_args
from models.ncf import user_item_indices
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    hidden: tuple[int, ...] = (128, 64)  # each tower's MLP
    output_dim: int = 32  # width of the user and item tower outputs
    head_hidden: tuple[int, ...] = (64, 32)  # the MLP over [u, v]
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = True  # see the module docstring

    def __post_init__(self):
        if min(self.embedding_dim, self.output_dim) < 1 or self.embedding_init_std < 0:
            raise ValueError(f"need embedding_dim, output_dim >= 1 and embedding_init_std >= 0, got "
                             f"{self.embedding_dim}, {self.output_dim}, {self.embedding_init_std}")
        check_mlp_args(self.hidden, self.dropout, self.activation)
        check_mlp_args(self.head_hidden, self.dropout, self.activation)

    def tower(self) -> two_tower.Config:
        return two_tower.Config(embedding_dim=self.embedding_dim, embedding_init_std=self.embedding_init_std,
                                hidden=self.hidden, output_dim=self.output_dim, dropout=self.dropout,
                                activation=self.activation, batch_norm=self.batch_norm)


class SplitNetwork(nn.Module):
    """User tower || item tower -> MLP -> one logit.

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
        users, items = user_item_indices(schema, "SplitNetwork")
        self.register_buffer("users", torch.tensor(users), persistent=False)  # (U,)
        self.register_buffer("items", torch.tensor(items), persistent=False)  # (I,)
        self.user_tower = two_tower.Tower([schema.categorical[i] for i in users], config.tower())
        self.item_tower = two_tower.Tower([schema.categorical[i] for i in items], config.tower())
        self.mlp = MLP(3 * config.output_dim, config.head_hidden, config.dropout, config.activation,
                       config.batch_norm)
        self.head = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u = self.user_tower(batch["cat"][:, self.users])  # (B, O)
        v = self.item_tower(batch["cat"][:, self.items])  # (B, O)
        return self.head(self.mlp(torch.cat([u, v, u * v], dim=1))).squeeze(1)  # (B, 3 O) -> (B,)
