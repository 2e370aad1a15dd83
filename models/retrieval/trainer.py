"""Fitting any retriever by name: closed-form ones (popularity, kNN, TF-IDF) compute their
buffers, trained ones (MF-BPR, AutoRec, LightGCN, two-tower) run their objective's loop here,
outside the pure modules.

    result = fit_retriever("mf", train, SideInfo(), {"dim": 64}, RetrievalTrainConfig(epochs=20))
    result.model.recommend(users, k=100)

The objectives and the hooks each calls on the model:

    bpr              -log sigmoid(x_ui - x_uj) + reg       model.bpr_terms(users, pos, neg)
                     (Rendle 2009; j uniform over the items u has not clicked)
    reconstruction   |r_i - r^_i|^2 + reg / n_items         model.reconstruct(rows), model.regularization()
                     (r_i: item i's 0/1 column of users)
    sampled_softmax  in-batch softmax over the batch's      model.user_vectors(users), model.item_vectors(items),
                     items, logits u.v / tau - log q_j      model.config.temperature
                     (Yi 2019, q_j = item j's share of the positives)

Every epoch is vectorized: one permutation of the positives and one draw of all negatives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.optim import RowAdam
from models.retrieval import build_retriever
from models.retrieval.base import Interactions, Retriever, SideInfo
from models.retrieval.similarity import dense_rows


@dataclass(frozen=True)
class RetrievalTrainConfig:
    epochs: int | None = None  # None: the retriever's `loop_defaults`
    batch_size: int | None = None  # None: the retriever's `loop_defaults`
    lr: float | None = None  # None: the retriever's `loop_defaults`
    weight_decay: float = 0.0  # decoupled, on top of the model's own L2 term
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's setting


@dataclass
class FitResult:
    model: Retriever
    seconds: float  # wall time of the fit (closed form or training loop)
    epochs: int = 0  # epochs run (0 for closed-form models)
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch


def fit_retriever(name: str, train: Interactions, side: SideInfo | None = None,
                  hparams: Mapping[str, Any] | None = None,
                  config: RetrievalTrainConfig = RetrievalTrainConfig()) -> FitResult:
    """Build retriever `name` for `train`'s users and items and fit it; reproducible from
    `config.seed` (the global RNG is left as it was). The model's history is `train`
    (exclusion and cold start read it)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_retriever(name, train.n_users, train.n_items, hparams, side)
        model.fit(train, side)
        losses = _train(model, train, config) if model.objective else []
    return FitResult(model=model.eval(), seconds=time.perf_counter() - t0, epochs=len(losses), losses=losses)


def _train(model: Retriever, train: Interactions, config: RetrievalTrainConfig) -> list[float]:
    defaults = model.loop_defaults
    epochs = defaults.epochs if config.epochs is None else config.epochs
    batch = defaults.batch_size if config.batch_size is None else config.batch_size
    lr = defaults.lr if config.lr is None else config.lr
    epoch_fn = OBJECTIVES[model.objective]
    opt = RowAdam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(config.seed)
    model.train()
    return [epoch_fn(model, train, opt, batch, g) for _ in range(epochs)]


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def sample_negatives(train: Interactions, users: torch.Tensor, g: torch.Generator, rounds: int = 10) -> torch.Tensor:
    """One item per user drawn uniformly from the items the user has not clicked (redrawn up
    to `rounds` times; a user who clicked nearly everything may keep a positive)."""
    keys = torch.from_numpy(train.rows() * train.n_items + train.indices)  # sorted: CSR order
    neg = torch.randint(0, train.n_items, (users.numel(),), generator=g)
    for _ in range(rounds):
        k = users * train.n_items + neg
        at = torch.searchsorted(keys, k).clamp_(max=max(keys.numel() - 1, 0))
        clash = (keys[at] == k) if keys.numel() else torch.zeros_like(k, dtype=torch.bool)
        if not bool(clash.any()):
            break
        neg[clash] = torch.randint(0, train.n_items, (int(clash.sum()),), generator=g)
    return neg


def bpr_epoch(model, train: Interactions, opt, batch: int, g: torch.Generator) -> float:
    users, items = torch.from_numpy(train.rows()), torch.from_numpy(train.indices)
    order = torch.randperm(train.nnz, generator=g)
    users, items = users[order], items[order]
    negs = sample_negatives(train, users, g)
    losses = []
    for s in range(0, train.nnz, batch):
        pos, neg, reg = model.bpr_terms(users[s:s + batch], items[s:s + batch], negs[s:s + batch])
        losses.append(_step(opt, -F.logsigmoid(pos - neg).mean() + reg))
    return float(np.mean(losses))


def reconstruction_epoch(model, train: Interactions, opt, batch: int, g: torch.Generator) -> float:
    by_item = train.to_torch().to_sparse_coo().t().coalesce().to_sparse_csr()  # (n_items, n_users)
    indptr, indices, ones = by_item.crow_indices(), by_item.col_indices(), by_item.values()
    order = torch.randperm(train.n_items, generator=g)
    losses = []
    for s in range(0, train.n_items, batch):
        x = dense_rows(indptr, indices, ones, order[s:s + batch], train.n_users)  # (B, n_users)
        err = ((model.reconstruct(x) - x) ** 2).sum(1).mean()
        # the penalty is once per catalogue (Sedhain eq. 2), the error a mean over the batch's items
        losses.append(_step(opt, err + model.regularization() / train.n_items))
    return float(np.mean(losses))


def sampled_softmax_epoch(model, train: Interactions, opt, batch: int, g: torch.Generator) -> float:
    log_q = torch.from_numpy(np.log(np.maximum(train.item_counts(), 1.0) / max(train.nnz, 1)))
    users, items = torch.from_numpy(train.rows()), torch.from_numpy(train.indices)
    order = torch.randperm(train.nnz, generator=g)
    users, items = users[order], items[order]
    losses = []
    for s in range(0, train.nnz, batch):
        u, i = users[s:s + batch], items[s:s + batch]
        logits = model.user_vectors(u) @ model.item_vectors(i).t() / model.config.temperature  # (B, B)
        logits = logits - log_q[i].float()[None, :]  # Yi 2019: popular items are sampled more often
        same = (i[None, :] == i[:, None]) & ~torch.eye(i.numel(), dtype=torch.bool)
        logits = logits.masked_fill(same, -torch.inf)  # a repeated item is not a negative of itself
        losses.append(_step(opt, F.cross_entropy(logits, torch.arange(i.numel()))))
    return float(np.mean(losses))


OBJECTIVES: dict[str, Callable[..., float]] = {
    "bpr": bpr_epoch,
    "reconstruction": reconstruction_epoch,
    "sampled_softmax": sampled_softmax_epoch,
}
