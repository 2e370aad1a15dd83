"""y = x W^T + b in float32 through oneDNN's matmul rather than MKL's sgemm, where that is faster.

torch sends float32 `nn.Linear` products to MKL; on AMD processors with AVX-512 MKL takes its
AVX2 code path, and oneDNN (the library torch already uses for bfloat16 products and
convolutions) ran the MLP's products 2.2x faster there (AMD EPYC with AVX-512, 1,024 x 213 x
256 on 2 cores: 505 vs 226 GFLOP/s; the backward's two products alike). On a CPU without
AVX-512 (AMD EPYC Zen 3) both libraries run AVX2 code and MKL was as fast or faster (forward
646 vs 686 us, dx 734 vs 720, dW 754 vs 963: oneDNN's weight gradient needs both operands
transposed), so there, and on Intel CPUs (where MKL uses all the CPU has; not measured here),
`linear` is torch's own `F.linear`: `faster_than_mkl()` decides, from the CPU.

Where oneDNN runs, the forward and both backward products go through
`torch.ops.mkldnn._linear_pointwise` on plain dense tensors (what inductor emits for CPU
linears), with the bias fused; its results were bitwise the same at 1 and 2 threads for every
shape tried, which the thread tuner needs (tests/unit/test_kernels.py checks it here).

Anything else (autocast, other dtypes, other devices, or a torch without the op) goes to
`torch.nn.functional.linear`.
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from models.kernels import native


@functools.cache
def faster_than_mkl() -> bool:
    """True on CPUs where MKL does not use the AVX-512 they have: non-Intel ones with AVX-512."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512") and _cpu_vendor() != "GenuineIntel"


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def _onednn() -> bool:
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        return torch.equal(_matmul(x, w, torch.zeros(4)), torch.full((2, 4), 3.0))
    except RuntimeError:
        return False


def _matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) @ w (N, K)^T + b, by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _matmul(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        dx = _matmul(dy, weight.t()) if need_x else None  # (B, N) @ (N, K)
        dw = _matmul(dy.t(), x.t()) if need_w else None  # (N, B) @ (B, K): laid out as the weight
        db = dy.sum(0) if need_b and ctx.has_bias else None
        return dx, dw, db


def in_use() -> bool:
    """Whether `linear` sends float32 CPU products to oneDNN (native paths on, where faster)."""
    return native.enabled() and faster_than_mkl() and _onednn()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for x (B, K); float32 CPU products by oneDNN where `faster_than_mkl()`."""
    if x.dim() == 2 and x.shape[0] > 0 and native.plain_float32(x, weight) and in_use():
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
