"""The row-wise embedding gradients and optimizer, and the cheaper dropout mask."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from models.interactions import _Outer
from models.layers import MLP, SPARSE_TABLE_VALUES, Dropout, FusedEmbedding
from models.optim import RowAdam, build_optimizers


@pytest.mark.parametrize("rows", [5, 400_000])  # a small table gets a dense gradient, a large one sparse rows
def test_fused_embedding_gradient_equals_nn_embedding(rows):
    torch.manual_seed(0)
    table = FusedEmbedding([rows, 7], dim=3, init_std=1.0)
    reference = nn.Embedding(rows + 7, 3)
    reference.weight.data.copy_(table.embedding.weight.data)
    ids = torch.stack([torch.randint(0, rows, (40,)), torch.randint(0, 7, (40,))], dim=1)
    upstream = torch.randn(40, 2, 3)
    table(ids).backward(upstream)
    reference(ids + table.offsets).backward(upstream)
    assert table.embedding.weight.grad.is_sparse == (rows * 3 > SPARSE_TABLE_VALUES)
    torch.testing.assert_close(table.embedding.weight.grad.to_dense(), reference.weight.grad)


def test_row_adam_updates_only_the_rows_a_batch_touched_and_equals_adamw_on_them():
    torch.manual_seed(0)
    table = FusedEmbedding([300_000], dim=4, init_std=1.0)  # 1.2M values: sparse rows
    dense = nn.Parameter(table.embedding.weight.detach().clone())
    rows_opt = RowAdam(table.parameters(), lr=0.1, weight_decay=0.01)
    dense_opt = torch.optim.AdamW([dense], lr=0.1, weight_decay=0.01)
    ids = torch.tensor([[3], [17], [3], [999]])
    before = table.embedding.weight.detach().clone()
    for _ in range(3):  # the same rows every step: lazy Adam and Adam agree on them
        upstream = torch.randn(4, 1, 4)
        table(ids).backward(upstream)
        nn.functional.embedding(ids, dense).backward(upstream)
        rows_opt.step()
        dense_opt.step()
        rows_opt.zero_grad()
        dense_opt.zero_grad()
    after = table.embedding.weight.detach()
    touched = torch.tensor([3, 17, 999])
    torch.testing.assert_close(after[touched], dense.detach()[touched])
    untouched = torch.ones(300_000, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(after[untouched], before[untouched])  # no decay, no momentum drift


def test_the_trainer_splits_tables_from_dense_parameters_and_gives_the_wide_part_its_rate():
    from models import build_model
    from models.schema import Field, InputSchema

    schema = InputSchema((Field("a", 50), Field("b", 9)), ("x",), (Field("a_x_b", 1 << 20),))
    model = build_model("wide_deep", schema, {"use_crosses": True})  # both tables sparse
    opts = build_optimizers(model, lr=1e-3, wide_lr=1e-2, weight_decay=0.1)
    adamw, rows = opts.optimizers
    tables = {id(model.wide.weights.embedding.weight), id(model.deep.inputs.embedding.embedding.weight)}
    assert {id(p) for g in rows.param_groups for p in g["params"]} == tables
    wide_group = next(g for g in rows.param_groups if any(p is model.wide.weights.embedding.weight
                                                         for p in g["params"]))
    assert wide_group["lr"] == 1e-2 and wide_group["weight_decay"] == 0.0
    assert not tables & {id(p) for g in adamw.param_groups for p in g["params"]}
    n_params = sum(len(g["params"]) for o in opts.optimizers for g in o.param_groups)
    assert n_params == len(list(model.parameters()))
    small = build_model("wide_deep", dataclasses.replace(schema, crosses=(Field("a_x_b", 100),)))
    (dense_only,) = build_optimizers(small, lr=1e-3, wide_lr=1e-2, weight_decay=0.1).optimizers
    assert isinstance(dense_only, torch.optim.AdamW)  # small tables: dense gradients, the fused AdamW


def test_dropout_keeps_one_minus_p_of_the_elements_preserves_the_mean_and_is_seeded():
    drop = Dropout(0.1)
    x = torch.ones(1000, 1000)
    torch.manual_seed(5)
    out = drop(x)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.9) < 0.002  # 1M elements: the standard error is 0.0003
    assert abs(out.mean().item() - 1.0) < 0.003
    torch.manual_seed(5)
    assert torch.equal(drop(x), out)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_mlp_fuses_relu_and_dropout_into_the_same_function_and_gradient():
    torch.manual_seed(0)
    mlp = MLP(6, (8, 8), dropout=0.3)
    x = torch.randn(32, 6, requires_grad=True)
    torch.manual_seed(1)
    fused = mlp(x)
    fused.sum().backward()
    g_fused = x.grad.clone()
    x.grad = None
    torch.manual_seed(1)  # the same masks, applied one module at a time (no fusion)
    h = x
    for layer in mlp.layers:
        h = layer(h)
    h.sum().backward()
    torch.testing.assert_close(fused, h)
    torch.testing.assert_close(g_fused, x.grad)


def test_outer_product_gradients_equal_autograds():
    torch.manual_seed(0)
    x = torch.randn(10, 4, requires_grad=True)
    e = torch.randn(10, 3, requires_grad=True)
    upstream = torch.randn(10, 4, 3)
    _Outer.apply(x, e).backward(upstream)
    gx, ge = x.grad, e.grad
    x.grad = e.grad = None
    (x.unsqueeze(2) * e.unsqueeze(1)).backward(upstream)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(ge, e.grad)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_adamw_updates_bitwise_as_torchs_fused_adamw(amsgrad, monkeypatch):
    """The direct kernel call (and, with amsgrad, torch's own step) against torch.optim.AdamW(fused=True),
    over steps where one parameter has no gradient at first and groups differ in lr and decay."""
    from models.optim import FusedAdamW

    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4)]
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]

    def groups(ps):
        return [{"params": ps[:2], "lr": 2e-3, "weight_decay": 0.1}, {"params": ps[2:], "lr": 1e-2, "weight_decay": 0.0}]

    opt = FusedAdamW(groups(ours), lr=1e-3)
    ref = torch.optim.AdamW(groups(theirs), lr=1e-3, fused=True)
    for g in (*opt.param_groups, *ref.param_groups):
        g["amsgrad"] = amsgrad
    torchs_steps = []
    torch_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step",
                        lambda self, closure=None: (torchs_steps.append(self is opt), torch_step(self, closure))[1])
    for step in range(6):
        grads = [torch.randn(s) for s in shapes]
        for ps in (ours, theirs):
            for i, (p, g) in enumerate(zip(ps, grads)):
                p.grad = None if (i == 2 and step < 2) else g.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert opt.state_dict()["state"].keys() == ref.state_dict()["state"].keys()
    # torch's step: the first (it creates the state), the third (a parameter's first gradient), or all with amsgrad
    assert sum(torchs_steps) == (6 if amsgrad else 2)


def test_fused_adamw_steps_still_run_step_hooks_and_show_in_the_profiler():
    """Its step skips torch's profiling wrapper only while nothing observes it: a registered step
    hook (its own or global) and the profiler still see every step."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from models.optim import FusedAdamW

    p = nn.Parameter(torch.randn(4, 3))
    opt = FusedAdamW([p], lr=1e-2)
    seen, now = [], {"step": 0}
    for step in range(4):
        now["step"] = step
        p.grad = torch.randn(4, 3)
        if step == 1:
            pre = opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", now["step"])))
            post = opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", now["step"])))
        if step == 2:
            pre.remove(), post.remove()
            handle = register_optimizer_step_post_hook(lambda o, a, k: seen.append(("global", now["step"])))
        if step == 3:
            handle.remove()
        opt.step()
    assert seen == [("pre", 1), ("post", 1), ("global", 2)]
    p.grad = torch.randn(4, 3)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#FusedAdamW.step" in {e.name for e in prof.events()}
    assert opt.state[p]["step"].item() == 5
