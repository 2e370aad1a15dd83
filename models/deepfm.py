"""DeepFM: a factorization machine and an MLP sharing one set of field embeddings (Guo et
al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction",
arXiv 1703.04247, eq. 1):

    logit = y_FM + y_DNN
    y_FM  = b + sum_f w_f[id_f] + sum_k w_k[cross_k] + v^T cont + sum_{i < j} <e_i, e_j>
    y_DNN = MLP([e_1, ..., e_{F+C}])

The FM part captures low-order interactions, the MLP high-order ones; unlike Wide & Deep
no cross features need to be engineered, and both parts train the same embeddings.
Continuous columns are fields too (value * vector), as in `fm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import FactorizationMachine
from models.layers import MLP, LinearAndFields, check_embedding_args, check_mlp_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.1
    activation: str = "relu"
    batch_norm: bool = False
    use_crosses: bool = True  # hashed crosses in the linear term

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)
        check_mlp_args(self.hidden, self.dropout, self.activation)


class DeepFM(nn.Module):
    """Shared field embeddings -> FM (linear + pairwise) + MLP -> one logit.

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
                                    config.use_crosses, "DeepFM")
        self.fm = FactorizationMachine()
        self.mlp = MLP(self.base.num_fields * config.embedding_dim, config.hidden,
                       config.dropout, config.activation, config.batch_norm)
        self.head = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        linear, emb = self.base(batch)  # (B, 1), (B, F + C, D)
        y_fm = linear + self.fm(emb)  # (B, 1)
        # (B, (F + C) D) -> (B, 1); the MLP's input as a lookup: its first layer may fold through the table
        y_dnn = self.mlp(self.base.embedding.lookup(batch["cat"], batch["cont"], emb.flatten(1)), head=self.head)
        return (y_fm + y_dnn).squeeze(1)  # (B,)
