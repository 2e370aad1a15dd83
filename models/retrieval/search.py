"""The one place where a catalogue is searched: exact top-k over full score rows.

At the sizes recloop meets (thousands to a few hundred thousand items) an exact search over
`(chunk, n_items)` score blocks is fast and has no recall loss. For millions of items the
function to replace is this one, with an approximate index (FAISS `IndexHNSWFlat` or
`IndexIVFPQ` over the item vectors of the factor models); its callers do not change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

ScoreFn = Callable[[torch.Tensor, slice], torch.Tensor]  # (users (C,), their rows) -> (C, n_items)


def search(score: ScoreFn, users: torch.Tensor, k: int, exclude=None, chunk: int = 1024
           ) -> tuple[np.ndarray, np.ndarray]:
    """Top `k` items per user by `score`, skipping each user's items in `exclude` (an
    `Interactions` or None). Returns int64 (U, k) indices (-1 pads a row with fewer than k
    candidates left) and float32 (U, k) scores (-inf at the pads), best first; equal scores
    in the result are ordered by item index."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = users.numel()
    items = np.full((n, k), -1, dtype=np.int64)
    values = np.full((n, k), -np.inf, dtype=np.float32)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        batch = users[rows]
        s = score(batch, rows).float()  # (C, N)
        if s.dim() != 2 or s.shape[0] != batch.numel():
            raise ValueError(f"score returned shape {tuple(s.shape)} for {batch.numel()} users")
        if exclude is not None:
            s = s.clone()
            u = batch.numpy()
            starts, ends = exclude.indptr[u], exclude.indptr[u + 1]
            counts = ends - starts
            r = np.repeat(np.arange(u.size), counts)
            cols = exclude.indices[np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
                                   if counts.sum() else np.zeros(0, np.int64)]
            s[torch.from_numpy(r), torch.from_numpy(cols)] = -torch.inf
        kk = min(k, s.shape[1])
        # torch.topk leaves equal scores in no particular order: re-sort (score desc, index asc).
        top_v, top_i = torch.topk(s, kk, dim=1)
        # A cut through a group of equal scores: torch.topk keeps arbitrary members of it. Keep
        # the lowest indices instead, so a top-k is a prefix of every longer top-k (a champion
        # asked for 2k and truncated lists what it would list for k).
        kth = top_v[:, -1:]
        split = torch.nonzero((s == kth).sum(1) > (top_v == kth).sum(1)).ravel()
        if split.numel():
            sv, si = torch.sort(s[split], dim=1, descending=True, stable=True)
            top_v[split], top_i[split] = sv[:, :kk], si[:, :kk]
        order = np.lexsort((top_i.numpy(), -top_v.numpy()), axis=1)
        top_i = np.take_along_axis(top_i.numpy(), order, 1)
        top_v = np.take_along_axis(top_v.numpy(), order, 1)
        finite = np.isfinite(top_v)
        items[rows, :kk] = np.where(finite, top_i, -1)
        values[rows, :kk] = np.where(finite, top_v, -np.inf)
    return items, values
