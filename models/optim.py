"""The trainer's optimizers: Adam on the dense parameters, a row-wise lazy Adam on the
embedding tables, and the split between them.

Embedding tables (`layers.FusedEmbedding`) get sparse gradients, the rows a batch touched.
Dense Adam would read and write every row of every table at every step (moments included:
five passes over a million-row table per step for Criteo), and move rows no batch touched
through their momentum. `RowAdam` updates only the touched rows, the "lazy Adam" of
TensorFlow's LazyAdam and of `torch.optim.SparseAdam`, and what torchrec's fused embedding
optimizers do on GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.optim.optimizer as _torch_optimizer
from torch import nn

from models.layers import FusedEmbedding, WideLinear


class RowAdam(torch.optim.Optimizer):
    """Adam (Kingma and Ba 2015) applied row by row to sparse gradients:

        for every row r in the batch's gradient g (rows absent from g are left untouched):
            m_r <- b1 m_r + (1 - b1) g_r,     v_r <- b2 v_r + (1 - b2) g_r^2
            w_r <- w_r (1 - lr wd) - lr (m_r / (1 - b1^t)) / (sqrt(v_r / (1 - b2^t)) + eps)

    with t the parameter's step count (as `torch.optim.SparseAdam`) and decoupled weight
    decay wd on the touched rows only. A dense gradient updates every row with the same
    formulas (plain AdamW), so a table used outside `FusedEmbedding` still trains.

    Args:
        params: parameters or param groups (each group may set lr and weight_decay).
        lr, betas, eps, weight_decay: as in `torch.optim.AdamW`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"need lr > 0, eps > 0, weight_decay >= 0, betas in [0, 1); got "
                             f"{lr}, {eps}, {weight_decay}, {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        if closure is not None:
            raise ValueError("RowAdam does not take a closure")
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()  # a no-op for FusedEmbedding's; DDP's sum is not coalesced
                    rows, g = grad.indices()[0], grad.values()
                    m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - b1)
                    v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                    state["exp_avg"].index_copy_(0, rows, m)
                    state["exp_avg_sq"].index_copy_(0, rows, v)
                    w = p.index_select(0, rows)
                else:
                    m = state["exp_avg"].lerp_(grad, 1 - b1)
                    v = state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    w = p
                if wd:
                    w.mul_(1 - lr * wd)
                denom = v.div(1 - b2**t).sqrt_().add_(eps)
                w.addcdiv_(m, denom, value=-lr / (1 - b1**t))
                if grad.is_sparse:
                    p.index_copy_(0, rows, w)


class FusedAdamW(torch.optim.AdamW):
    """`torch.optim.AdamW(fused=True)` with less Python per step: each group's tensors go
    straight to the same fused kernel (`torch._fused_adamw_`) with the same arguments, so the
    update is bitwise torch's. torch's `step` also regroups the tensors by device and dtype,
    checks options and runs profiler hooks: 160 us a step for `wide_deep`'s 16 tensors on 2
    cores, the fused kernel itself 90. The step counts of every group are incremented in one
    call, and torch's step wrapper (a profiler record and the step hooks, 30 us a step) runs
    only while something observes the steps (`_step_observed`). The first step (which creates
    the state), a closure, and options this path does not cover (amsgrad, maximize,
    capturable, differentiable, a group without `fused`, tensors off the CPU or not float32)
    run torch's own `step`."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3):
        super().__init__(params, lr=lr, fused=True)

    def _direct_groups(self) -> list[tuple[dict[str, Any], list[torch.Tensor]]] | None:
        """Each group that has parameters with a gradient, with those parameters, or None when
        torch's step is needed."""
        groups = []
        for group in self.param_groups:
            if (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                    or not group["fused"]):
                return None
            params = [p for p in group["params"] if p.grad is not None]
            if not all(p in self.state and p.dtype == torch.float32 and p.device.type == "cpu"
                       and not p.grad.is_sparse for p in params):
                return None
            if params:
                groups.append((group, params))
        return groups

    def step(self, closure: Any = None) -> Any:
        if closure is not None or _step_observed(self):
            return self._observed_step(closure)
        return self._step(closure)

    step.hooked = True  # torch.optim wraps an unhooked `step` in `profile_hook_step` (30 us a step)

    @torch.no_grad()
    def _step(self, closure: Any = None) -> Any:
        groups = self._direct_groups() if closure is None else None
        if groups is None:
            return super().step(closure)
        states = [[self.state[p] for p in params] for _, params in groups]
        if states:
            torch._foreach_add_([s["step"] for group in states for s in group], 1)  # one call for every group
        for (group, params), group_states in zip(groups, states):
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in group_states],
                                [s["exp_avg_sq"] for s in group_states], [], [s["step"] for s in group_states],
                                amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                                weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                                grad_scale=None, found_inf=None)
        return None

    _observed_step = torch.optim.Optimizer.profile_hook_step(_step)


def _step_observed(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step must run torch's wrapper: step hooks registered (the optimizer's or global)
    or the profiler on, which records each step under the optimizer's name."""
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or _torch_optimizer._global_optimizer_pre_hooks or _torch_optimizer._global_optimizer_post_hooks
                or torch.autograd.profiler._is_profiler_enabled)


class Optimizers:
    """The optimizers of one model as one: `zero_grad()` and `step()` on each."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            if not set_to_none:
                o.zero_grad(set_to_none=False)
                continue
            for group in o.param_groups:  # torch's zero_grad: the same, with profiler hooks (60 us a step)
                for p in group["params"]:
                    p.grad = None

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def build_optimizers(model: nn.Module, lr: float, wide_lr: float | None, weight_decay: float) -> Optimizers:
    """AdamW on the dense parameters, RowAdam on the embedding tables with sparse gradients
    (`FusedEmbedding` tables larger than `layers.SPARSE_TABLE_VALUES`; smaller ones get dense
    gradients, for which both give the same update, and join the fused AdamW).

    Groups: weight matrices and embedding tables decay (`weight_decay`), biases and norms do
    not; the wide (`WideLinear`) weights, a linear model over sparse ids, learn at `wide_lr`
    (None: `lr`) without decay. AdamW uses PyTorch's fused CPU kernel (one pass over each
    parameter instead of one per tensor operation)."""
    wide = {id(p) for m in model.modules() if isinstance(m, WideLinear) for p in m.parameters()}
    tables = {id(m.embedding.weight) for m in model.modules() if isinstance(m, FusedEmbedding) and m.embedding.sparse}
    wide_lr = wide_lr if wide_lr is not None else lr
    dense: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "wide": []}
    rows: dict[str, list[nn.Parameter]] = {"decay": [], "wide": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        kind = "wide" if id(p) in wide else "decay" if p.ndim >= 2 else "no_decay"
        (rows if id(p) in tables else dense)[kind].append(p)
    settings = {"decay": (lr, weight_decay), "no_decay": (lr, 0.0), "wide": (wide_lr, 0.0)}

    def groups(by_kind: dict[str, list[nn.Parameter]]) -> list[dict[str, Any]]:
        return [{"params": ps, "lr": settings[k][0], "weight_decay": settings[k][1]}
                for k, ps in by_kind.items() if ps]

    dense_groups, row_groups = groups(dense), groups(rows)
    return Optimizers([
        *([FusedAdamW(dense_groups, lr=lr)] if dense_groups else []),
        *([RowAdam(row_groups, lr=lr)] if row_groups else []),
    ])
