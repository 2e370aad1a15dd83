"""Both sides of an embedding lookup in C (`rows.c`), float32 CPU tensors with int64 indices;
anything else, or no compiler, runs the torch reference (the same bits: the gather copies, and
each row's sum runs in index order in both).

- `rows_add`: the backward, `zeros(rows, D).index_add_(0, index, src)`, split across torch's
  threads by output row, so each row's sum runs in index order at any thread count. torch's
  `index_add_` took 120-200 us per step for `wide_deep`'s 13k looked-up rows of 16 on Adult
  (2 cores). It reads the rows in place from a lookup's flat (B, F D + T) gradient
  (`fields`), or one row per batch row for every field (`broadcast`: the gradient of a sum
  over the fields), where torch first copied them out.
- `rows_gather`: the forward, the F looked-up rows of each batch row and a tail of T values (the
  continuous inputs, or each one times its field's vector) written straight into one
  (B, F D + T) matrix, where index_select, view and cat made three passes and two autograd nodes.
"""

from __future__ import annotations

import ctypes

import torch

from models.kernels import native

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {"rows_add": [_PTR] * 3 + [_I64] * 6, "rows_gather": [_PTR] * 5 + [_I64] * 5}


def _library(index: torch.Tensor, *tensors: torch.Tensor):
    ok = index.dtype == torch.int64 and index.dim() == 1 and native.plain_float32(*tensors)
    return native.library("rows", SIGNATURES) if ok else None


def field_rows(src: torch.Tensor, fields: int, dim: int, broadcast: bool) -> torch.Tensor:
    """The (B F, D) rows `rows_add` reads from a flat (B, L) gradient (a copy)."""
    if broadcast:
        return src[:, :dim].unsqueeze(1).expand(-1, fields, -1).reshape(-1, dim)
    return src[:, : fields * dim].reshape(-1, dim)


def reference(out_rows: int, index: torch.Tensor, src: torch.Tensor, fields: int = 1, dim: int | None = None,
              broadcast: bool = False) -> torch.Tensor:
    if dim is not None:
        src = field_rows(src, fields, dim, broadcast)
    return src.new_zeros(out_rows, src.shape[1]).index_add_(0, index, src)


def rows_add(out_rows: int, index: torch.Tensor, src: torch.Tensor, fields: int = 1, dim: int | None = None,
             broadcast: bool = False) -> torch.Tensor:
    """(out_rows, D): the sum of the rows landing on each index (N,) in [0, out_rows).

    Without `dim`, src is (N, D), one row per index. With `dim` = D, src is a (B, L) gradient
    of B = N / fields batch rows, and index i = b F + f reads src[b, f D : (f + 1) D] (L >= F D),
    or with `broadcast` src[b, :D] for every f."""
    flat = dim is not None
    if flat and (index.numel() != src.shape[0] * fields or src.shape[1] < (dim if broadcast else fields * dim)):
        raise ValueError(f"{index.numel()} indices, {fields} fields of {dim} do not fit a gradient of "
                         f"shape {tuple(src.shape)}")
    lib = _library(index, src) if src.dim() == 2 else None
    if lib is None:
        return reference(out_rows, index, src, fields, dim, broadcast)
    dim = dim if flat else src.shape[1]
    if src.stride(1) != 1:
        src = src.contiguous()
    index = index.contiguous()
    out = src.new_empty(out_rows, dim)
    lib.rows_add(src.data_ptr(), index.data_ptr(), out.data_ptr(), index.numel(), dim, out_rows,
                 fields if flat else 1, src.stride(0), dim if flat and not broadcast else 0)
    return out


def scaled_tail(tail: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
    """(B, T V): tail value c times vector c (vectors (T, V)), or the tail itself (B, T)."""
    return tail if vectors is None else (tail.unsqueeze(2) * vectors).flatten(1)


def reference_gather(weight: torch.Tensor, index: torch.Tensor, fields: int, tail: torch.Tensor | None = None,
                     vectors: torch.Tensor | None = None) -> torch.Tensor:
    rows = weight.index_select(0, index).view(-1, fields * weight.shape[1])
    return rows if tail is None else torch.cat([rows, scaled_tail(tail, vectors)], dim=1)


def rows_gather(weight: torch.Tensor, index: torch.Tensor, fields: int, tail: torch.Tensor | None = None,
                vectors: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F D + T): row b holds weight[index[b F + f]] for f < F, then tail[b] (B, T), if given;
    with `vectors` (T, V), tail[b, c] * vectors[c] for each c instead (B, F D + T V).
    Not differentiable (see `layers.FusedEmbedding.flat`)."""
    extra = () if tail is None else (tail,) if vectors is None else (tail, vectors)
    lib = _library(index, weight, *extra)
    if lib is None or fields < 1:
        return reference_gather(weight, index, fields, tail, vectors)
    batch, dim = index.numel() // fields, weight.shape[1]
    weight, index = weight.contiguous(), index.contiguous()
    tail = None if tail is None else tail.contiguous()
    vectors = None if vectors is None else vectors.contiguous()
    tail_width = 0 if tail is None else tail.shape[1]
    vector_dim = 1 if vectors is None else vectors.shape[1]
    out = weight.new_empty(batch, fields * dim + tail_width * vector_dim)
    lib.rows_gather(weight.data_ptr(), index.data_ptr(), 0 if tail is None else tail.data_ptr(),
                    0 if vectors is None else vectors.data_ptr(), out.data_ptr(), batch, fields, dim, tail_width,
                    vector_dim)
    return out
