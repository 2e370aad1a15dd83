"""Blocks the memory-based and content retrievers share: a pruned cosine similarity and
sparse matrices kept as buffers.

    s(a, b) = <x_a, x_b> / (|x_a| |x_b| + shrink)          (rows of a 0/1 or weighted matrix)

Only each row's `neighbours` largest similarities are kept, so the result has at most
`n * neighbours` entries. It is computed `block` columns at a time: one sparse x dense
product `X^T X[:, block]` of (n, block) floats, never the dense n x n matrix (unless the
catalogue fits in one block).
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK_FLOATS = 1 << 24  # a similarity block holds at most this many floats (64 MB)


def csr_tensor(indptr, indices, values, shape: tuple[int, int]) -> torch.Tensor:
    return torch.sparse_csr_tensor(torch.as_tensor(indptr, dtype=torch.int64),
                                   torch.as_tensor(indices, dtype=torch.int64),
                                   torch.as_tensor(values, dtype=torch.float32), shape)


def cosine_neighbours(x: torch.Tensor, neighbours: int, shrink: float, block: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pruned cosine similarity between the columns of `x`.

    Args:
        x: a sparse CSR (m, n) float32 matrix; its n columns are compared.
        neighbours: how many similarities to keep per column (its own column excluded).
        shrink: added to the denominator, so pairs with little support score lower.
        block: columns per block (default: as many as fit in BLOCK_FLOATS).
    Returns the CSR (n, n) as (indptr, indices, values): row a holds a's neighbours b with
    s(a, b) > 0, columns sorted."""
    n = x.shape[1]
    k = min(neighbours, n - 1)
    xt = x.to_sparse_coo().t().coalesce().to_sparse_csr()  # (n, m)
    dense_cols = x.to_sparse_coo()
    norms = torch.zeros(n).index_add_(0, dense_cols.indices()[1], dense_cols.values() ** 2).sqrt()
    block = block or max(1, BLOCK_FLOATS // max(n, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        cols_block = _dense_columns(dense_cols, start, stop)  # (m, b)
        dots = (xt @ cols_block).t()  # (b, n): row a = <x_a, x_c> for every c
        sim = dots / (norms[start:stop, None] * norms[None, :] + shrink)
        sim[torch.arange(stop - start), torch.arange(start, stop)] = 0.0  # no self-similarity
        if k < 1:
            continue
        top_v, top_i = torch.topk(sim, k, dim=1)  # (b, k); which of equal values wins a tie at the cut is torch's
        keep = top_v > 0
        rows.append(torch.arange(start, stop).unsqueeze(1).expand(-1, k)[keep])
        cols.append(top_i[keep])
        vals.append(top_v[keep])
    if not rows:
        return torch.zeros(n + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals), (n, n))
    csr = coo.coalesce().to_sparse_csr()
    return csr.crow_indices(), csr.col_indices(), csr.values()


def dense_rows(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, rows: torch.Tensor,
               n_cols: int) -> torch.Tensor:
    """Rows `rows` of a CSR matrix given by its three arrays, as a dense (len(rows), n_cols)."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    out_rows = torch.repeat_interleave(torch.arange(rows.numel()), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    at = torch.repeat_interleave(starts, counts) + offsets
    out = torch.zeros(rows.numel(), n_cols)
    out[out_rows, indices[at]] = values[at]
    return out


def _dense_columns(coo: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Columns [start, stop) of a coalesced sparse COO (m, n) matrix as a dense (m, stop - start)."""
    r, c = coo.indices()
    mask = (c >= start) & (c < stop)
    out = torch.zeros(coo.shape[0], stop - start)
    out[r[mask], c[mask] - start] = coo.values()[mask]
    return out


def row_normalize(indptr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """`data` with every CSR row scaled to unit L2 norm (all-zero rows stay zero)."""
    counts = np.diff(indptr)
    rows = np.repeat(np.arange(counts.size), counts)
    norms = np.sqrt(np.bincount(rows, weights=np.asarray(data, np.float64) ** 2, minlength=counts.size))[rows]
    return np.divide(data, norms, out=np.zeros(len(data), np.float32), where=norms > 0).astype(np.float32)
