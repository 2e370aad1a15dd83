"""Inverted dropout (Srivastava et al. 2014), optionally fused with the ReLU before it, in one
pass over the activations:

    forward:   y = keep * relu(x) / (1 - p)        (keep * x / (1 - p) without the ReLU)
    backward:  dx = dy * keep * [x > 0] / (1 - p)

The mask is a counter-based random function of a per-call key and the element's index
(`keep_mask`), not a stream from a generator: the backward recomputes it instead of storing
it, it is the same at any thread count, and the key is two 32-bit numbers from torch's
default generator, so `torch.manual_seed` fixes every mask. `relu_dropout.c` computes it in
one pass (tens of microseconds for a (1024, 256) activation, where the torch ops below take
seven passes and a stream of random numbers, about a sixth of a `wide_deep` training step on
2 cores); the torch ops are its reference and the path when no compiler is at hand, with the
same bits (tests/unit/test_kernels.py).

p is rounded to a multiple of 2^-32: an element is kept when its 32-bit hash is at least
round(p 2^32), and kept elements are scaled by 2^32 / (2^32 - round(p 2^32)) in float32.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from models.kernels import native

_M32 = 0xFFFFFFFF
_LEVELS = 1 << 32
_NATIVE_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}


_TAIL = [ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_float, ctypes.c_int]
SIGNATURES = {**{f"relu_dropout_forward_{t}": [ctypes.c_void_p] * 2 + _TAIL for t in _NATIVE_DTYPES.values()},
              **{f"relu_dropout_backward_{t}": [ctypes.c_void_p] * 3 + _TAIL for t in _NATIVE_DTYPES.values()}}


def _library() -> ctypes.CDLL | None:
    return native.library("relu_dropout", SIGNATURES)


def kernel_in_use() -> str:
    """"native" when the C kernel runs float32/bfloat16 CPU tensors, else "torch"."""
    return "native" if _library() is not None else "torch"


def threshold(p: float) -> tuple[int, float]:
    """(drop, scale): keep when hash >= drop; kept elements are multiplied by scale."""
    drop = min(round(p * _LEVELS), _LEVELS - 1)
    return drop, _LEVELS / (_LEVELS - drop)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit values (products wrap; their low bits are exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def keep_mask(shape: torch.Size, k1: int, k2: int, drop: int, device: torch.device | None = None) -> torch.Tensor:
    """bool `shape`: element i (row-major) kept iff mix32(mix32(i ^ k1) ^ k2) >= drop."""
    index = torch.arange(shape.numel(), dtype=torch.int64, device=device) & _M32
    return (_mix32(_mix32(index ^ k1) ^ k2) >= drop).view(shape)


def reference_forward(x: torch.Tensor, k1: int, k2: int, drop: int, scale: float, relu: bool) -> torch.Tensor:
    keep = keep_mask(x.shape, k1, k2, drop, x.device)
    if relu:
        keep &= x > 0
    return torch.where(keep, x * scale, 0)


def reference_backward(dy: torch.Tensor, y: torch.Tensor | None, k1: int, k2: int, drop: int, scale: float,
                       relu: bool) -> torch.Tensor:
    passed = y > 0 if relu else keep_mask(dy.shape, k1, k2, drop, dy.device)
    return torch.where(passed, dy * scale, 0)


def _native(x: torch.Tensor) -> tuple[ctypes.CDLL, str] | None:
    lib = _library() if x.device.type == "cpu" else None
    suffix = _NATIVE_DTYPES.get(x.dtype)
    return (lib, suffix) if lib is not None and suffix is not None else None


def fused_forward(x: torch.Tensor, k1: int, k2: int, drop: int, scale: float, relu: bool) -> torch.Tensor:
    native_fn = _native(x)
    if native_fn is None:
        return reference_forward(x, k1, k2, drop, scale, relu)
    lib, suffix = native_fn
    x = x.contiguous()
    y = torch.empty_like(x)
    getattr(lib, f"relu_dropout_forward_{suffix}")(x.data_ptr(), y.data_ptr(), x.numel(), k1, k2, drop, scale, relu)
    return y


def fused_backward(dy: torch.Tensor, y: torch.Tensor | None, k1: int, k2: int, drop: int, scale: float,
                   relu: bool) -> torch.Tensor:
    native_fn = _native(dy)
    if native_fn is None or (y is not None and y.dtype != dy.dtype):
        return reference_backward(dy, y, k1, k2, drop, scale, relu)
    lib, suffix = native_fn
    dy = dy.contiguous()
    dx = torch.empty_like(dy)
    getattr(lib, f"relu_dropout_backward_{suffix}")(dy.data_ptr(), y.data_ptr() if y is not None else None,
                                                    dx.data_ptr(), dy.numel(), k1, k2, drop, scale, relu)
    return dx


def draw_keys() -> tuple[int, int]:
    """A mask's key: two 32-bit numbers from torch's default generator."""
    k1, k2 = torch.randint(0, _LEVELS, (2,), dtype=torch.int64).tolist()
    return k1, k2


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, relu: bool) -> torch.Tensor:
        drop, scale = threshold(p)
        k1, k2 = draw_keys()
        y = fused_forward(x, k1, k2, drop, scale, relu)
        ctx.params = (k1, k2, drop, scale, relu)
        if relu:
            ctx.save_for_backward(y)  # y > 0 exactly where x > 0 and the element was kept
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        k1, k2, drop, scale, relu = ctx.params
        y = ctx.saved_tensors[0] if relu else None
        return fused_backward(dy, y, k1, k2, drop, scale, relu), None, None


def dropout(x: torch.Tensor, p: float, relu: bool = False) -> torch.Tensor:
    """Training-mode dropout with probability p (0 <= p < 1) of `relu(x)` (relu=True) or `x`."""
    if p == 0.0:
        return torch.relu(x) if relu else x
    return _Dropout.apply(x, p, relu)
