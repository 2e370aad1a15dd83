"""PyTorch ranking architectures: a name -> class registry, checkpoints and the trainer.

    model = build_model("wide_deep", schema, {"hidden": [128, 64]})
    save_checkpoint(path, model);  model = load_checkpoint(path)

Every architecture is a pure `nn.Module` with `forward(batch) -> logits (B,)`, built from an
`InputSchema` and a frozen `Config` dataclass that lives next to it (`<module>.Config`).
Importing this package has no side effects.

The zoo, one file per architecture (`models/<name>.py`):

    wide        logistic regression over ids and crosses      Cheng 2016, 1606.07792
    deep        embeddings + MLP                               Cheng 2016, 1606.07792
    wide_deep   wide + deep, jointly trained                   Cheng 2016, 1606.07792
    fm          factorization machine over fields              Rendle 2010
    deepfm      FM + MLP on shared embeddings                  Guo 2017, 1703.04247
    dcn         cross network V1 || MLP                        Wang 2017, 1708.05123
    dcn_v2      cross network V2 (full / low rank / MoE)       Wang 2020, 2008.13535
    dlrm        bottom MLP, pairwise dots, top MLP             Naumov 2019, 1906.00091
    autoint     multi-head self-attention over fields          Song 2019, 1810.11921
    xdeepfm     linear + CIN + MLP                             Lian 2018, 1803.05170
    final_mlp   two gated MLP streams, bilinear fusion         Mao 2023, 2304.00902
    gdcn        gated cross network + MLP                      Wang 2023, 2311.04635
    ncf         NeuMF: GMF + MLP over user/item fields         He 2017, 1708.05031
    two_tower   user tower . item tower                        Yi 2019 (RecSys)
    split_network  user tower || item tower -> MLP             He 2017, 1708.05031 (NCF's MLP)
    dhen        stacked ensembles of interaction modules       Zhang 2022, 2203.11014

Building blocks: `layers.py` (embeddings, MLP, linear) and `interactions.py` (FM, cross
networks, dot products, attention, CIN, gating, bilinear fusion). `ncf`, `two_tower` and
`split_network` need `schema.user_fields` and `schema.item_fields`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models._config import ConfigError, config_from_dict
from models.autoint import AutoInt
from models.dcn import DCN
from models.dcn_v2 import DCNv2
from models.deep import Deep
from models.deepfm import DeepFM
from models.dhen import DHEN
from models.dlrm import DLRM
from models.final_mlp import FinalMLP
from models.fm import FM
from models.gdcn import GDCN
from models.ncf import NCF
from models.schema import Field, InputSchema
from models.split_network import SplitNetwork
from models.two_tower import TwoTower
from models.wide import Wide
from models.wide_deep import WideDeep
from models.xdeepfm import XDeepFM

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "wide": Wide,
    "deep": Deep,
    "wide_deep": WideDeep,
    "fm": FM,
    "deepfm": DeepFM,
    "dcn": DCN,
    "dcn_v2": DCNv2,
    "dlrm": DLRM,
    "autoint": AutoInt,
    "xdeepfm": XDeepFM,
    "final_mlp": FinalMLP,
    "gdcn": GDCN,
    "ncf": NCF,
    "two_tower": TwoTower,
    "split_network": SplitNetwork,
    "dhen": DHEN,
}

CHECKPOINT_FORMAT = 1

__all__ = [
    "ARCHITECTURES",
    "ConfigError",
    "Field",
    "InputSchema",
    "build_model",
    "load_checkpoint",
    "model_config",
    "save_checkpoint",
]


def _architecture(name: str) -> type[nn.Module]:
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; valid: {sorted(ARCHITECTURES)}") from None


def model_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The frozen `Config` of architecture `name` with `params` overriding its defaults.

    Raises ValueError (`ConfigError`) on an unknown name, an unknown key (listing the
    architecture's valid keys) or a value of the wrong type or range.
    """
    cls = _architecture(name)
    return config_from_dict(cls.config_class, params, what=f"architecture {name!r}")


def build_model(
    name: str,
    schema: InputSchema,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
) -> nn.Module:
    """Build architecture `name` for `schema`, in train mode, on the CPU.

    Args:
        name: a key of `ARCHITECTURES`.
        schema: the fitted preprocessing's output schema.
        params: hyper-parameters overriding the architecture's `Config` defaults.
        seed: if given, the initial weights are drawn from this seed (without touching
            the global RNG), so two builds with the same seed are identical.
    The model carries `.arch_name`, `.config` and `.schema`.
    """
    cls = _architecture(name)
    if not isinstance(schema, InputSchema):
        raise TypeError(f"schema must be an InputSchema, got {type(schema).__name__}")
    config = model_config(name, params)
    if seed is None:
        model = cls(schema, config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(schema, config)
    model.arch_name = name
    return model


def save_checkpoint(path: str | os.PathLike, model: nn.Module) -> Path:
    """Write everything needed to rebuild `model` (arch name, config, schema, weights)."""
    for attr in ("arch_name", "config", "schema"):
        if not hasattr(model, attr):
            raise ValueError(f"model has no .{attr}: build it with models.build_model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": model.arch_name,
            "config": asdict(model.config),
            "schema": model.schema.to_layout(),
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by `save_checkpoint`, on the CPU, in eval mode."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a recloop model checkpoint (format {CHECKPOINT_FORMAT})")
    model = build_model(ckpt["arch"], InputSchema.from_layout(ckpt["schema"]), ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
