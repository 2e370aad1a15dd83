"""A stack of Linear -> ReLU -> dropout layers, trained as one autograd node (`mlp`).

Per layer, autograd ran four nodes (the product, the weight's transpose, the fused ReLU +
dropout, and each parameter's accumulation) and the modules' Python around them; here one
forward computes every layer (`torch.addmm`, then `relu_dropout`'s C kernel) and one backward
every gradient, with the same products in the same order (`dz^T h` for the weight, in the weight's
layout, `dz W` for the input, `dz` summed over rows for the bias) and the same dropout keys drawn in
the same order: bitwise the module path's result (tests/unit/test_kernels.py). On the Intel
Xeon of the stop that added it, 0.1 ms of a 4.2 ms step of Adult's 213-256-128-64 MLP.

Where the module path would not run these products (oneDNN's, `onednn.faster_than_mkl()`),
for other dtypes, under autocast, without the C kernel or outside autograd, `mlp` returns
None and the caller runs its modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from models.kernels import native, onednn
from models.kernels import relu_dropout as rd


class _ReluDropoutMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, *params: torch.Tensor) -> torch.Tensor:
        drop, scale = rd.threshold(p)
        h, outputs, keys = x, [], []
        for weight, bias in zip(params[::2], params[1::2]):
            k1, k2 = rd.draw_keys()
            h = rd.fused_forward(torch.addmm(bias, h, weight.t()), k1, k2, drop, scale, True)
            outputs.append(h)
            keys.append((k1, k2))
        ctx.save_for_backward(x, *outputs, *params[::2])
        ctx.keys, ctx.drop, ctx.scale = keys, drop, scale
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh: torch.Tensor):
        saved, layers = ctx.saved_tensors, len(ctx.keys)
        inputs, outputs, weights = saved[:layers], saved[1 : layers + 1], saved[layers + 1 :]
        grads: list[torch.Tensor | None] = [None] * (2 * layers)
        for i in reversed(range(layers)):
            k1, k2 = ctx.keys[i]
            dz = rd.fused_backward(dh, outputs[i], k1, k2, ctx.drop, ctx.scale, True)
            grads[2 * i] = dz.t().mm(inputs[i])  # as autograd's addmm: dz^T x, laid out as the weight
            grads[2 * i + 1] = dz.sum(0)
            dh = dz.mm(weights[i]) if i > 0 or ctx.needs_input_grad[0] else None
        return (dh, None, *grads)


def mlp(x: torch.Tensor, linears: Sequence[torch.nn.Linear], p: float) -> torch.Tensor | None:
    """dropout(relu(linear_L(... dropout(relu(linear_1(x))) ...))) in training (0 < p < 1, every
    linear with a bias), or None where this path does not apply (see the module docstring)."""
    params = [t for layer in linears for t in (layer.weight, layer.bias)]
    if not (0.0 < p < 1.0 and x.dim() == 2 and x.shape[0] > 0 and torch.is_grad_enabled()
            and all(t is not None for t in params) and native.plain_float32(x, *params)
            and rd.kernel_in_use() == "native" and not onednn.in_use()):
        return None
    return _ReluDropoutMLP.apply(x, p, *params)
