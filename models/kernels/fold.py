"""An MLP's first layer over looked-up embeddings, computed through the table's rows (`fold.c`).

An MLP over embeddings starts with z = W x + b, x = [e(r_1), ..., e(r_F), tail]: a product of
B F D H multiply-adds (and two more of that size in the backward), 57% of the arithmetic of
Adult's `wide_deep` step. When the table has few rows next to the B F rows a batch looks up
(Adult's 13 categorical fields have 175 rows; a batch of 1,024 looks up 13,312), the same z
is the sum of F rows of P = (W_field(r) e(r)) over the table's rows r, which costs R D H,
and the backward's products shrink the same way (`fold.c` has the formulas). The result
equals the product with x up to float rounding (other sum orders), the same bits at any
thread count.

`forward` and `backward` run the C kernel; `worthwhile` says when the table is small enough
for this to pay; `reference_forward` and `reference_backward` are the same in torch ops (the
tests' reference).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import NamedTuple

import torch

from models.kernels import native
from models.kernels.rows import reference_gather

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {
    "fold_forward": [_PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR] + [_I64] * 6,
    "fold_backward": [_PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _PTR]
    + [_I64] * 6,
}
ROWS_PER_LOOKUP = 4  # fold when the batch looks up at least this many rows per table row


class Lookup(NamedTuple):
    """An MLP's input not written out yet: [table[rows[b F]], ..., table[rows[b F + F - 1]], tail[b]]
    for each batch row b (`layers.FusedEmbedding.lookup`). `flat()` writes it out (B, F D + C),
    or (B, F D + C V) with `tail_vectors`."""

    table: torch.Tensor  # (R, D), the embedding table
    rows: torch.Tensor  # (B F,) int64
    fields: int
    row_field: torch.Tensor | None  # (R,) int64, the field of each table row (None: not kept)
    tail: torch.Tensor | None  # (B, C)
    tail_vectors: torch.Tensor | None  # (C, V): the input has tail[b, c] * tail_vectors[c] for each c
    sparse: bool  # the table's gradient is sparse (large tables)
    flat: Callable[[], torch.Tensor]


def worthwhile(table_rows: int, batch: int, fields: int) -> bool:
    """Whether P (table_rows x H) is cheaper than the product with x (batch x fields rows)."""
    return table_rows * ROWS_PER_LOOKUP <= batch * fields


def fits(lookup: Lookup, weight: torch.Tensor) -> bool:
    """Whether `weight` (H, N) takes `lookup`'s rows as they are laid out: N = F D + C (C V with
    tail vectors), one tail row per batch row, 2-D tensors. Anything else is written out, and the
    product says what does not match."""
    batch, dim = lookup.rows.numel() // lookup.fields, lookup.table.shape[1]
    tail, vectors = lookup.tail, lookup.tail_vectors
    width = 0 if tail is None else tail.shape[-1] * (1 if vectors is None else vectors.shape[-1])
    return (weight.dim() == 2 and weight.shape[1] == lookup.fields * dim + width
            and lookup.rows.numel() == batch * lookup.fields
            and (tail is None or (tail.dim() == 2 and tail.shape[0] == batch))
            and (vectors is None or (tail is not None and vectors.dim() == 2 and vectors.shape[0] == tail.shape[1])))


def _library():
    return native.library("fold", SIGNATURES)


def available(*tensors: torch.Tensor) -> bool:
    """The C kernel is built and on, and the float tensors are float32 on the CPU."""
    return native.plain_float32(*tensors) and _library() is not None


def _unit_stride(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _tail_weight(weight: torch.Tensor, width: int, n_tail: int, vectors: torch.Tensor | None) -> torch.Tensor:
    """(C, H): what each tail value multiplies, from W's tail columns (H, C), or (H, C V) with a
    vector per tail value (the value times its vector is the input)."""
    if vectors is None:
        return weight.t().contiguous()
    return (weight.view(width, n_tail, -1) * vectors).sum(2).t().contiguous()


def forward(table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
            row_field: torch.Tensor, fields: int, tail: torch.Tensor | None,
            tail_vectors: torch.Tensor | None = None) -> torch.Tensor:
    """z (B, H) = weight @ x[b] + bias for each batch row b, x[b] = [table[rows[b F]], ...,
    table[rows[b F + F - 1]], tail[b]] (with `tail_vectors` (C, V): tail[b, c] * tail_vectors[c]
    for each c). table (R, D), weight (H, F D + C or C V), bias (H,), rows (B F,) int64,
    row_field (R,) int64 the field of each table row, tail (B, C) or None."""
    n_rows, dim = table.shape
    width, batch, n_tail = weight.shape[0], rows.numel() // fields, 0 if tail is None else tail.shape[1]
    table, bias, rows, row_field = table.contiguous(), bias.contiguous(), rows.contiguous(), row_field.contiguous()
    weight, tail = _unit_stride(weight), _unit_stride(tail)
    tail_w = None if tail is None else _tail_weight(weight[:, fields * dim:], width, n_tail, tail_vectors)
    wt = table.new_empty(fields * dim, width)  # W's embedding columns transposed: a scratch
    products = table.new_empty(n_rows, width)
    z = table.new_empty(batch, width)
    _library().fold_forward(table.data_ptr(), weight.data_ptr(), weight.stride(0), bias.data_ptr(), rows.data_ptr(),
                            row_field.data_ptr(), _pointer(tail), 0 if tail is None else tail.stride(0),
                            _pointer(tail_w), wt.data_ptr(), products.data_ptr(), z.data_ptr(), n_rows, dim, fields,
                            n_tail, width, batch)
    return z


def backward(dz: torch.Tensor, rows: torch.Tensor, row_field: torch.Tensor, fields: int, tail: torch.Tensor | None,
             table: torch.Tensor, weight: torch.Tensor, tail_vectors: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(d table (R, D), d weight, d bias (H,), d tail_vectors or None) from dz = d z (B, H)."""
    n_rows, dim = table.shape
    width, batch, n_tail = weight.shape[0], rows.numel() // fields, 0 if tail is None else tail.shape[1]
    dz, table, rows, row_field = dz.contiguous(), table.contiguous(), rows.contiguous(), row_field.contiguous()
    weight, tail = _unit_stride(weight), _unit_stride(tail)
    g = table.new_empty(n_rows, width)
    tail_acc = table.new_empty(n_tail, width)  # A[c] = sum_b tail[b, c] dz[b]
    dtable, dweight, dbias = table.new_empty(n_rows, dim), table.new_empty(weight.shape), table.new_empty(width)
    _library().fold_backward(dz.data_ptr(), rows.data_ptr(), row_field.data_ptr(), _pointer(tail),
                             0 if tail is None else tail.stride(0), table.data_ptr(), weight.data_ptr(),
                             weight.stride(0), g.data_ptr(), _pointer(tail_acc), dtable.data_ptr(), dweight.data_ptr(),
                             dweight.stride(0), dbias.data_ptr(), n_rows, dim, fields, n_tail, width, batch)
    dvectors = None
    if tail is not None:
        if tail_vectors is None:
            dweight[:, fields * dim:] = tail_acc.t()
        else:  # W_c u_c took tail[b, c]: d W_c = A[c] u_c^T, d u_c = W_c^T A[c]
            dweight[:, fields * dim:] = (tail_acc.t().unsqueeze(2) * tail_vectors).flatten(1)
            dvectors = (weight[:, fields * dim:].view(width, n_tail, -1) * tail_acc.t().unsqueeze(2)).sum(0)
    return dtable, dweight, dbias, dvectors


def _pointer(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def reference_forward(table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
                      fields: int, tail: torch.Tensor | None, tail_vectors: torch.Tensor | None = None) -> torch.Tensor:
    return torch.addmm(bias, reference_gather(table, rows, fields, tail, tail_vectors), weight.t())


def reference_backward(dz: torch.Tensor, rows: torch.Tensor, fields: int, tail: torch.Tensor | None,
                       table: torch.Tensor, weight: torch.Tensor, tail_vectors: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    dim = table.shape[1]
    dx = dz.mm(weight)
    dtable = table.new_zeros(table.shape).index_add_(0, rows, dx[:, : fields * dim].reshape(-1, dim))
    dvectors = None
    if tail_vectors is not None:
        dvectors = (dx[:, fields * dim:].view(len(dz), *tail_vectors.shape) * tail.unsqueeze(2)).sum(0)
    return dtable, dz.t().mm(reference_gather(table, rows, fields, tail, tail_vectors)), dz.sum(0), dvectors
