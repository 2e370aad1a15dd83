"""The backward of an embedding lookup, `zeros(rows, D).index_add_(0, index, src)`, in C
(`rows.c`): one pass that zeroes and adds, split across torch's threads by output row, so
each row's sum runs in index order at any thread count. torch's `index_add_` took 120-200 us
per step for `wide_deep`'s 13k looked-up rows of 16 on Adult (2 cores); anything but
float32 CPU tensors with int64 indices, or no compiler, runs `reference`.
"""

from __future__ import annotations

import ctypes

import torch

from models.kernels import native

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {"rows_add": [_PTR] * 3 + [_I64] * 3}


def reference(out_rows: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return src.new_zeros(out_rows, src.shape[1]).index_add_(0, index, src)


def rows_add(out_rows: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(out_rows, D): the sum of the rows of src (N, D) landing on each index (N,) in [0, out_rows)."""
    native_ok = (src.dim() == 2 and src.device.type == "cpu" and src.dtype == torch.float32
                 and index.dtype == torch.int64 and index.dim() == 1)
    lib = native.library("rows", SIGNATURES) if native_ok else None
    if lib is None:
        return reference(out_rows, index, src)
    src, index = src.contiguous(), index.contiguous()
    out = src.new_empty(out_rows, src.shape[1])
    lib.rows_add(src.data_ptr(), index.data_ptr(), out.data_ptr(), index.numel(), src.shape[1], out_rows)
    return out
