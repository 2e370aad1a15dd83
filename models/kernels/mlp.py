"""A stack of Linear -> ReLU -> dropout layers, and the model's output layer after it, trained
as one autograd node (`mlp`).

Per layer, autograd ran four nodes (the product, the weight's transpose, the fused ReLU +
dropout, and each parameter's accumulation) and the modules' Python around them; here one
forward computes every layer (`torch.addmm`, then `relu_dropout`'s C kernel) and one backward
every gradient, with the same products in the same order (`dz^T h` for the weight, in the weight's
layout, `dz W` for the input, `dz` summed over rows for the bias) and the same dropout keys drawn in
the same order: bitwise the module path's result (tests/unit/test_kernels.py). On the Intel
Xeon of the stop that added it, 0.1 ms of a 4.2 ms step of Adult's 213-256-128-64 MLP.

When the input is a `Lookup` (embeddings not written out yet) of a small table, the first layer
runs through the table's rows instead (`fold`): equal to the product with the written-out input
up to float rounding, and 20% of Adult's `wide_deep` step.

The layers' products are the ones the module path runs: oneDNN's where `layers.Linear` sends
them there (`onednn.in_use()`), torch's otherwise; the output layer's are torch's (an
`nn.Linear`). For other dtypes, under autocast, without the C kernel or outside autograd, `mlp`
returns None and the caller runs its modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from models.kernels import fold, native, onednn
from models.kernels import relu_dropout as rd
from models.kernels.fold import Lookup


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dnn: bool) -> torch.Tensor:
    """h W^T + b, by oneDNN when `dnn` (as `layers.Linear` runs it there), else torch's addmm."""
    if dnn:
        return onednn._matmul(h, weight, bias)
    return h.mm(weight.t()) if bias is None else torch.addmm(bias, h, weight.t())


def _weight_grad(dz: torch.Tensor, h: torch.Tensor, dnn: bool) -> torch.Tensor:
    """dz^T h, laid out as the weight (as autograd's addmm and the oneDNN linear's backward)."""
    return onednn._matmul(dz.t(), h.t()) if dnn else dz.t().mm(h)


def _input_grad(dz: torch.Tensor, weight: torch.Tensor, dnn: bool) -> torch.Tensor:
    return onednn._matmul(dz, weight.t()) if dnn else dz.mm(weight)


class _ReluDropoutMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, tail_vectors: torch.Tensor | None, p: float, head: bool, lookup: tuple | None,
                dnn: bool, *params: torch.Tensor) -> torch.Tensor:
        """params: (weight, bias) of each layer, then of the head when `head` (its bias may be
        None). With `lookup` = (rows, row_field, fields, tail), x is an embedding table and the
        first layer's input is [x[rows[b F]], ..., x[rows[b F + F - 1]], tail[b]] (tail[b, c] *
        tail_vectors[c] for each c when given), folded through the table (`fold`). `dnn`: the
        layers' products by oneDNN (the head's are torch's, an `nn.Linear`'s)."""
        drop, scale = rd.threshold(p)
        weights, biases = params[::2], params[1::2]
        h, outputs, keys = x, [], []
        for i, (weight, bias) in enumerate(zip(weights[: len(weights) - head], biases)):
            k1, k2 = rd.draw_keys()
            if i == 0 and lookup is not None:
                z = fold.forward(x, weight, bias, *lookup, tail_vectors)
            else:
                z = _linear(h, weight, bias, dnn)
            h = rd.fused_forward(z, k1, k2, drop, scale, True)
            outputs.append(h)
            keys.append((k1, k2))
        rows, row_field, fields, tail = lookup if lookup is not None else (None, None, 0, None)
        ctx.save_for_backward(x, *outputs, *weights, rows, row_field, tail, tail_vectors)
        ctx.keys, ctx.drop, ctx.scale, ctx.head, ctx.fields, ctx.dnn = keys, drop, scale, head, fields, dnn
        ctx.head_bias = head and biases[-1] is not None
        return _linear(h, weights[-1], biases[-1], False) if head else h

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        saved, layers = ctx.saved_tensors, len(ctx.keys)
        rows, row_field, tail, tail_vectors = saved[-4:]
        saved, dvectors = saved[:-4], None
        inputs, outputs, weights = saved[:layers], saved[1 : layers + 1], saved[layers + 1 :]
        grads: list[torch.Tensor | None] = [None] * (2 * len(weights))
        dh = dy
        if ctx.head:  # as autograd's addmm: dy^T h for the weight, dy summed over rows for the bias
            grads[-2:] = [_weight_grad(dy, outputs[-1], False), dy.sum(0) if ctx.head_bias else None]
            dh = _input_grad(dy, weights[-1], False)
        for i in reversed(range(layers)):
            k1, k2 = ctx.keys[i]
            dz = rd.fused_backward(dh, outputs[i], k1, k2, ctx.drop, ctx.scale, True)
            if i == 0 and rows is not None:
                dh, grads[0], grads[1], dvectors = fold.backward(dz, rows, row_field, ctx.fields, tail, inputs[0],
                                                                 weights[0], tail_vectors)
                break
            grads[2 * i] = _weight_grad(dz, inputs[i], ctx.dnn)
            grads[2 * i + 1] = dz.sum(0)
            dh = _input_grad(dz, weights[i], ctx.dnn) if i > 0 or ctx.needs_input_grad[0] else None
        return (dh, dvectors, None, None, None, None, *grads)


def mlp(x: torch.Tensor | Lookup, linears: Sequence[torch.nn.Linear], p: float,
        head: torch.nn.Linear | None = None) -> torch.Tensor | None:
    """dropout(relu(linear_L(... dropout(relu(linear_1(x))) ...))) in training (0 < p < 1, every
    linear with a bias), then `head(...)` when given (a Linear, no activation), or
    None where this path does not apply (see the module docstring). x: the input (B, N), or a
    `Lookup` of it, whose first layer is folded through the table where that pays (`fold`)."""
    layers = [*linears, *([head] if head is not None else [])]
    params = [t for layer in layers for t in (layer.weight, layer.bias)]
    given = params if head is None or head.bias is not None else params[:-1]
    if not (0.0 < p < 1.0 and torch.is_grad_enabled() and all(t is not None for t in given)
            and native.plain_float32(*given) and rd.kernel_in_use() == "native"):
        return None
    lookup = vectors = None
    if isinstance(x, Lookup):
        tail = [t for t in (x.tail, x.tail_vectors) if t is not None]
        if (x.row_field is not None and not x.sparse and (x.tail is None or not x.tail.requires_grad)
                and fold.fits(x, linears[0].weight)
                and fold.worthwhile(x.table.shape[0], x.rows.numel() // x.fields, x.fields)
                and fold.available(x.table, *tail)):
            lookup, vectors, x = (x.rows, x.row_field, x.fields, x.tail), x.tail_vectors, x.table
        else:
            x = x.flat()
    if not (native.plain_float32(x) and (lookup is not None or (x.dim() == 2 and x.shape[0] > 0))):
        return None
    return _ReluDropoutMLP.apply(x, vectors, p, head is not None, lookup, onednn.in_use(), *params)
