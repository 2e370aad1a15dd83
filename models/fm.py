"""FM: a factorization machine over fields (Rendle 2010, "Factorization Machines", ICDM).

    logit = b + sum_f w_f[id_f] + sum_k w_k[cross_k] + v^T cont + sum_{i < j} <v_i, v_j>

Every id field and every continuous column is a field with a D-dim latent vector (a
continuous column contributes value * vector), and every pair of fields interacts through
the dot product of their vectors, so a pair never seen together still gets a weight. The
pairwise sum runs over fields in O(F D) (`interactions.FactorizationMachine`); the linear
term also covers the hashed crosses, as in `wide`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import FactorizationMachine
from models.layers import LinearAndFields, check_embedding_args
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # hashed crosses in the linear term

    def __post_init__(self):
        check_embedding_args(self.embedding_dim, self.embedding_init_std)


class FM(nn.Module):
    """Linear term + pairwise field interactions -> one logit.

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
                                    config.use_crosses, "FM")
        self.fm = FactorizationMachine()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        linear, emb = self.base(batch)  # (B, 1), (B, F + C, D)
        return (linear + self.fm(emb)).squeeze(1)  # (B,)
