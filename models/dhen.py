"""DHEN: a hierarchy of layers, each an ensemble of different interaction modules over the
same field vectors (Zhang et al. 2022, "DHEN: A Deep and Hierarchical Ensemble Network for
Large-Scale Click-Through Rate Prediction", arXiv 2203.11014):

    X^0 = [e_1, ..., e_{F+C}]                                   (B, n, D)
    X^{l+1} = LayerNorm( W_l [M_1(X^l), ..., M_m(X^l)] + X^l )   (concat per field, D*m -> D)
    logit = w^T flatten(X^L) + b

with the modules M chosen from: "dot" (DLRM dot products, projected back to (n, D)),
"self_attention" (AutoInt's interacting layer), "linear" (one dense layer over all
fields) and "cross" (one DCN-V2 cross layer over all fields). Stacking the ensembles lets
each layer interact the previous layer's interactions of every kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.interactions import CrossNetV2, DotInteraction, InteractingLayer
from models.layers import FieldEmbedding, Linear, id_fields, id_inputs
from models.schema import InputSchema

MODULES = ("dot", "self_attention", "linear", "cross")


@dataclass(frozen=True)
class Config:
    embedding_dim: int = 16
    embedding_init_std: float = 0.1
    use_crosses: bool = True  # embed the hashed crosses as extra fields (layers.id_fields)
    n_layers: int = 2
    modules: tuple[str, ...] = MODULES
    n_heads: int = 2  # self-attention heads; must divide embedding_dim

    def __post_init__(self):
        if self.embedding_dim < 1 or self.embedding_init_std < 0 or self.n_layers < 1:
            raise ValueError(f"need embedding_dim >= 1, embedding_init_std >= 0 and n_layers >= 1, "
                             f"got {self.embedding_dim}, {self.embedding_init_std}, {self.n_layers}")
        unknown = [m for m in self.modules if m not in MODULES]
        if not self.modules or unknown or len(set(self.modules)) != len(self.modules):
            raise ValueError(f"modules must be distinct names from {list(MODULES)}, got {list(self.modules)}")
        if self.n_heads < 1 or self.embedding_dim % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide embedding_dim={self.embedding_dim}")


class DHENLayer(nn.Module):
    """One DHEN layer: an ensemble of interaction modules, merged, with a shortcut and a norm.

    Args:
        n_fields: n; dim: D; modules: names from `MODULES`; n_heads: for "self_attention".

    Forward:
        x: (B, n, D) -> (B, n, D)
    """

    def __init__(self, n_fields: int, dim: int, modules: tuple[str, ...], n_heads: int):
        super().__init__()
        n, d = n_fields, dim
        if "dot" in modules and n < 2:
            raise ValueError(f"the 'dot' module needs at least two fields, got {n}")
        self.shape = (n, d)
        blocks = {
            "dot": lambda: nn.Sequential(DotInteraction(), Linear(n * (n - 1) // 2, n * d)),
            "self_attention": lambda: InteractingLayer(d, n_heads, d // n_heads),
            "linear": lambda: Linear(n * d, n * d),
            "cross": lambda: CrossNetV2(n * d, n_layers=1),
        }
        self.ensemble = nn.ModuleDict({name: blocks[name]() for name in modules})
        self.merge = Linear(len(modules) * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        outs = []
        for name, module in self.ensemble.items():
            if name == "self_attention":
                outs.append(module(x))  # (B, n, D) -> (B, n, D)
            elif name == "dot":
                outs.append(module(x).view(b, *self.shape))  # (B, n(n-1)/2) -> (B, n, D)
            else:
                outs.append(module(x.flatten(1)).view(b, *self.shape))  # (B, n D) -> (B, n, D)
        return self.norm(self.merge(torch.cat(outs, dim=2)) + x)  # (B, n, m D) -> (B, n, D)


class DHEN(nn.Module):
    """Field embeddings -> L DHEN layers -> linear head -> one logit.

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
            raise ValueError("DHEN needs at least one categorical or continuous input")
        c = config
        fields = id_fields(schema, config.use_crosses)
        self.embedding = FieldEmbedding([f.cardinality for f in fields], n_cont, c.embedding_dim,
                                        c.embedding_init_std, names=[f.name for f in fields])
        n = self.embedding.num_fields
        self.layers = nn.Sequential(*(DHENLayer(n, c.embedding_dim, c.modules, c.n_heads)
                                      for _ in range(c.n_layers)))
        self.head = nn.Linear(n * c.embedding_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(id_inputs(batch, self.config.use_crosses), batch["cont"])  # (B, n, D)
        return self.head(self.layers(x).flatten(1)).squeeze(1)  # (B, n, D) -> (B,)
