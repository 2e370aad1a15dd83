"""The cross network of DCN-V1 (`models.interactions.CrossNetV1`), every layer of a row in one
pass, forward and backward in C (`cross_v1.c`):

    x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l

In torch ops each layer is a matrix-vector product and a few elementwise passes over (B, N)
and its backward about eight more, each a fresh (B, N) tensor: 1 ms of a `dcn` training step
on Adult (B 1,024, N 261, 3 layers) on 2 cores; the C kernel takes 0.34 ms at one thread with
AVX-512, 0.42-0.48 ms at two with AVX2. Its sums run in a fixed order (the backward's weight
sums per block of `BLOCK` rows, then over the blocks), so the result is the same at any
thread count, and it agrees with the torch ops (`reference`) to float rounding. Anything but
float32 CPU tensors outside autocast (`native.plain_float32`), or no compiler, runs `reference`.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from models.kernels import native


def reference(x0: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """The layers in torch ops: x0 (B, N), weights and biases (L, N) -> (B, N)."""
    x = x0
    for w, b in zip(weights, biases):
        # x w as a matrix product (B, N) @ (N, 1): w's gradient is then a GEMM, which MKL sums in
        # the same order at any thread count (MKL_CBWR, flows/__init__.py), where a
        # matrix-vector product's is split across the threads.
        x = torch.addcmul(x + b, x0, x @ w.unsqueeze(1))
    return x


_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
SIGNATURES = {"cross_v1_forward": [_PTR] * 6 + [_I64] * 3, "cross_v1_backward": [_PTR] * 10 + [_I64] * 4}
BLOCK = 64  # rows per block of the backward's weight sums: fixed, so their order is too


class _CrossV1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x0: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor, lib: ctypes.CDLL) -> torch.Tensor:
        x0, weights, biases = x0.contiguous(), weights.contiguous(), biases.contiguous()
        (rows, n), layers = x0.shape, weights.shape[0]
        out = torch.empty_like(x0)
        xs = x0.new_empty(max(layers - 1, 0), rows, n)  # x_1 .. x_{L-1}
        s = x0.new_empty(layers, rows)
        lib.cross_v1_forward(x0.data_ptr(), weights.data_ptr(), biases.data_ptr(), out.data_ptr(), xs.data_ptr(),
                             s.data_ptr(), rows, n, layers)
        ctx.save_for_backward(x0, weights, xs, s)
        ctx.lib = lib  # the backward needs the forward's xs and s: the same kernel, whatever the setting by then
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x0, weights, xs, s = ctx.saved_tensors
        g = g.contiguous()
        (rows, n), layers = x0.shape, weights.shape[0]
        dx0 = torch.empty_like(x0)
        dw, db = torch.empty_like(weights), torch.empty_like(weights)
        blocks = -(-rows // BLOCK)
        partial, work = x0.new_empty(blocks, 2, layers, n), x0.new_empty(blocks, n)
        ctx.lib.cross_v1_backward(g.data_ptr(), x0.data_ptr(), weights.data_ptr(), xs.data_ptr(), s.data_ptr(),
                                  dx0.data_ptr(), dw.data_ptr(), db.data_ptr(), partial.data_ptr(), work.data_ptr(),
                                  rows, n, layers, BLOCK)
        return dx0, dw, db, None


def cross_v1(x0: torch.Tensor, weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """x0 (B, N), weights and biases (L, N) -> x_L (B, N)."""
    native_ok = x0.dim() == 2 and x0.shape[0] > 0 and native.plain_float32(x0, weights, biases)
    lib = native.library("cross_v1", SIGNATURES) if native_ok else None
    if lib is not None:
        return _CrossV1.apply(x0, weights, biases, lib)
    return reference(x0, weights, biases)
