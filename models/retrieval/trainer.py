"""Fitting any retriever by name: closed-form ones (popularity, kNN, TF-IDF) compute their
buffers, trained ones (MF-BPR, AutoRec, LightGCN, two-tower) run their objective's loop here,
outside the pure modules.

    result = fit_retriever("mf", train, SideInfo(), {"dim": 64}, RetrievalTrainConfig(epochs=20))
    result.model.recommend(users, k=100)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from models.retrieval import build_retriever
from models.retrieval.base import Interactions, Retriever, SideInfo


@dataclass(frozen=True)
class RetrievalTrainConfig:
    epochs: int = 20
    batch_size: int = 4096
    lr: float = 0.01
    weight_decay: float = 0.0
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's setting


@dataclass
class FitResult:
    model: Retriever
    seconds: float  # wall time of the fit (closed form or training loop)
    epochs: int = 0  # epochs run (0 for closed-form models)
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch


def fit_retriever(name: str, train: Interactions, side: SideInfo, hparams: Mapping[str, Any] | None = None,
                  config: RetrievalTrainConfig = RetrievalTrainConfig()) -> FitResult:
    """Build retriever `name` for `train`'s users and items and fit it; reproducible from
    `config.seed`. The model's history is `train` (exclusion and cold start read it)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    model = build_retriever(name, train.n_users, train.n_items, hparams)
    model.fit(train)
    return FitResult(model=model.eval(), seconds=time.perf_counter() - t0)
