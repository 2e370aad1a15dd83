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

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {
    "fold_forward": [_PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR] + [_I64] * 6,
    "fold_backward": [_PTR, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _PTR] + [_I64] * 6,
}
ROWS_PER_LOOKUP = 4  # fold when the batch looks up at least this many rows per table row


class Lookup(NamedTuple):
    """An MLP's input not written out yet: [table[rows[b F]], ..., table[rows[b F + F - 1]], tail[b]]
    for each batch row b (`layers.FusedEmbedding.lookup`). `flat()` writes it out (B, F D + C)."""

    table: torch.Tensor  # (R, D), the embedding table
    rows: torch.Tensor  # (B F,) int64
    fields: int
    row_field: torch.Tensor | None  # (R,) int64, the field of each table row (None: not kept)
    tail: torch.Tensor | None  # (B, C)
    sparse: bool  # the table's gradient is sparse (large tables)
    flat: Callable[[], torch.Tensor]


def worthwhile(table_rows: int, batch: int, fields: int) -> bool:
    """Whether P (table_rows x H) is cheaper than the product with x (batch x fields rows)."""
    return table_rows * ROWS_PER_LOOKUP <= batch * fields


def _library():
    return native.library("fold", SIGNATURES)


def available(*tensors: torch.Tensor) -> bool:
    """The C kernel is built and on, and the float tensors are float32 on the CPU."""
    return native.plain_float32(*tensors) and _library() is not None


def _pointer(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def forward(table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
            row_field: torch.Tensor, fields: int, tail: torch.Tensor | None) -> torch.Tensor:
    """z (B, H) = weight @ [table[rows[b F]], ..., table[rows[b F + F - 1]], tail[b]] + bias for each
    batch row b. table (R, D), weight (H, F D + C), bias (H,), rows (B F,) int64, row_field (R,)
    int64 the field of each table row, tail (B, C) or None."""
    lib = _library()
    n_rows, dim = table.shape
    width, batch = weight.shape[0], rows.numel() // fields
    n_tail = 0 if tail is None else tail.shape[1]
    table, bias, rows, row_field = table.contiguous(), bias.contiguous(), rows.contiguous(), row_field.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    if tail is not None and tail.stride(1) != 1:
        tail = tail.contiguous()
    wt = table.new_empty(fields * dim + n_tail, width)  # weight transposed, a scratch
    products = table.new_empty(n_rows, width)
    z = table.new_empty(batch, width)
    lib.fold_forward(table.data_ptr(), weight.data_ptr(), weight.stride(0), bias.data_ptr(), rows.data_ptr(),
                     row_field.data_ptr(), _pointer(tail), 0 if tail is None else tail.stride(0), wt.data_ptr(),
                     products.data_ptr(), z.data_ptr(), n_rows, dim, fields, n_tail, width, batch)
    return z


def backward(dz: torch.Tensor, rows: torch.Tensor, row_field: torch.Tensor, fields: int, tail: torch.Tensor | None,
             table: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d table (R, D), d weight (H, F D + C), d bias (H,)) from dz = d z (B, H)."""
    lib = _library()
    n_rows, dim = table.shape
    width, batch = weight.shape[0], rows.numel() // fields
    n_tail = 0 if tail is None else tail.shape[1]
    dz, table, rows, row_field = dz.contiguous(), table.contiguous(), rows.contiguous(), row_field.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    if tail is not None and tail.stride(1) != 1:
        tail = tail.contiguous()
    n = fields * dim + n_tail
    g = table.new_empty(n_rows, width)
    tail_acc = table.new_empty(max(n_tail, 1), width)
    dtable, dweight, dbias = table.new_empty(n_rows, dim), table.new_empty(width, n), table.new_empty(width)
    lib.fold_backward(dz.data_ptr(), rows.data_ptr(), row_field.data_ptr(), _pointer(tail),
                      0 if tail is None else tail.stride(0), table.data_ptr(), weight.data_ptr(), weight.stride(0),
                      g.data_ptr(), tail_acc.data_ptr(), dtable.data_ptr(), dweight.data_ptr(), dbias.data_ptr(),
                      n_rows, dim, fields, n_tail, width, batch)
    return dtable, dweight, dbias


def _flat_input(table: torch.Tensor, rows: torch.Tensor, fields: int, tail: torch.Tensor | None) -> torch.Tensor:
    x = table.index_select(0, rows).view(-1, fields * table.shape[1])
    return x if tail is None else torch.cat([x, tail], dim=1)


def reference_forward(table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
                      fields: int, tail: torch.Tensor | None) -> torch.Tensor:
    x = _flat_input(table, rows, fields, tail)
    return torch.addmm(bias, x, weight[:, : x.shape[1]].t())


def reference_backward(dz: torch.Tensor, rows: torch.Tensor, fields: int, tail: torch.Tensor | None,
                       table: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = _flat_input(table, rows, fields, tail)
    dim = table.shape[1]
    dx = dz.mm(weight[:, : fields * dim]).view(-1, dim)
    dtable = table.new_zeros(table.shape).index_add_(0, rows, dx)
    return dtable, dz.t().mm(x), dz.sum(0)
