"""Wide & Deep: a linear model over ids and crosses, jointly trained with an MLP over
embeddings (Cheng et al. 2016, "Wide & Deep Learning for Recommender Systems",
arXiv 1606.07792, eq. 3):

    P(y=1 | x) = sigmoid( w_wide^T [x, phi(x)] + w_deep^T a_L + b )

The wide part memorises sparse co-occurrences through the cross-product transformations
phi(x); the deep part generalises through dense embeddings. Both are trained together on
one loss (joint training, not an ensemble), so the wide part only needs to correct the
deep part's mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import deep
from models.deep import Deep
from models.layers import WideLinear, id_fields, id_inputs
from models.schema import InputSchema


@dataclass(frozen=True)
class Config(deep.Config):
    """The deep tower's hyper-parameters (models/deep.py) are the whole config; the wide part
    has no knobs. As in the paper the crosses feed the wide part only, so the deep tower
    embeds the base features (use_crosses=True also embeds them there)."""

    use_crosses: bool = False


class WideDeep(nn.Module):
    """logit = WideLinear(cat ++ cross) + Deep(emb(cat), cont).

    Args:
        schema: input fields and cardinalities (from the fitted preprocessing).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, F), "cross": int64 (B, K), "cont": float32 (B, C)}
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        fields = id_fields(schema, use_crosses=True)
        self.wide = WideLinear([f.cardinality for f in fields], names=[f.name for f in fields])
        self.deep = Deep(schema, config)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = id_inputs(batch, use_crosses=True)  # (B, F + K)
        return self.wide(ids).squeeze(1) + self.deep(batch)  # (B,) + (B,)
