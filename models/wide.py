"""Wide: logistic regression over sparse ids and feature crosses.

The wide component of Wide & Deep (Cheng et al. 2016, "Wide & Deep Learning for
Recommender Systems", arXiv 1606.07792), trained on its own: a generalized linear model
y = w^T [x, phi(x)] + b over the raw categorical ids x and the cross-product
transformations phi(x) (hashed crosses from the preprocessing), plus a linear term on the
continuous inputs. It memorises feature co-occurrences but cannot generalise to unseen
pairs; it is the baseline the deep models must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import WideLinear, id_fields, id_inputs
from models.schema import InputSchema


@dataclass(frozen=True)
class Config:
    use_crosses: bool = True  # include the hashed crosses (False: plain LR on raw ids)
    use_continuous: bool = True  # linear weight on each continuous input


class Wide(nn.Module):
    """Logistic regression: logit = b + sum_f w_f[id_f] + sum_k w_k[cross_k] + v^T cont.

    Args:
        schema: input fields and cardinalities (from the fitted preprocessing).
        config: see `Config`.

    Forward:
        batch: {"cat": int64 (B, n_cat), "cross": int64 (B, n_cross), "cont": float32 (B, n_cont)}
        -> logits float32 (B,)
    """

    config_class = Config

    def __init__(self, schema: InputSchema, config: Config = Config()):
        super().__init__()
        self.schema, self.config = schema, config
        fields = id_fields(schema, config.use_crosses)
        n_cont = len(schema.continuous) if config.use_continuous else 0
        if not fields and n_cont == 0:
            raise ValueError("Wide needs at least one categorical, cross or continuous input")
        self.linear = WideLinear([f.cardinality for f in fields], n_continuous=n_cont, names=[f.name for f in fields])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = id_inputs(batch, self.config.use_crosses)  # (B, n_cat) or (B, n_cat + n_cross)
        cont = batch["cont"] if self.config.use_continuous else None  # (B, C)
        return self.linear(ids, cont).squeeze(1)  # (B, 1) -> (B,)
