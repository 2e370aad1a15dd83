"""models/kernels: the C dropout kernel against its torch reference (bit for bit), its masks,
its build cache and the fallback without a compiler; the oneDNN linear against F.linear."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from models import kernels
from models.kernels import cross, factorization, fold, native, onednn, rows
from models.kernels import relu_dropout as rd

REPO = Path(__file__).resolve().parents[2]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and `native.load` forgetting what it loaded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    native.load.cache_clear()
    yield tmp_path / "cache" / "recloop" / "kernels"
    native.load.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", [(1024, 256), (7, 13), (1, 1)])
def test_the_c_kernel_and_the_torch_ops_give_the_same_bits(dtype, relu, shape):
    assert native.load("relu_dropout") is not None, "the C kernel did not build on this machine"
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    x.view(-1)[:3] = torch.tensor([0.0, -0.0, float("inf")])[: x.numel()].to(dtype)
    dy = torch.randn(shape).to(dtype)
    drop, scale = rd.threshold(0.3)
    k1, k2 = 0x9E3779B9, 12345
    y = rd.fused_forward(x, k1, k2, drop, scale, relu)
    y_ref = rd.reference_forward(x, k1, k2, drop, scale, relu)
    assert torch.equal(bits(y), bits(y_ref))
    dx = rd.fused_backward(dy, y if relu else None, k1, k2, drop, scale, relu)
    dx_ref = rd.reference_backward(dy, y_ref if relu else None, k1, k2, drop, scale, relu)
    assert torch.equal(bits(dx), bits(dx_ref))
    # a strided input gives what its contiguous copy gives
    wide = torch.randn(shape[0], 2 * shape[1]).to(dtype)
    assert torch.equal(bits(rd.fused_forward(wide[:, ::2], k1, k2, drop, scale, relu)),
                       bits(rd.reference_forward(wide[:, ::2].contiguous(), k1, k2, drop, scale, relu)))


def test_nan_stays_nan_and_is_dropped_by_the_relu():
    x = torch.tensor([[float("nan"), 1.0]])
    drop, scale = rd.threshold(0.0)
    assert torch.isnan(rd.fused_forward(x, 1, 2, drop, scale, False)[0, 0])
    assert rd.fused_forward(x, 1, 2, drop, scale, True)[0, 0] == 0
    xb = x.to(torch.bfloat16)
    assert torch.isnan(rd.fused_forward(xb, 1, 2, drop, scale, False)[0, 0].float())


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_keep_one_minus_p_are_seeded_independent_and_the_same_at_any_thread_count(p):
    x = torch.ones(1000, 1000)
    torch.manual_seed(5)
    first, second = kernels.dropout(x, p), kernels.dropout(x, p)
    for out in (first, second):
        kept = (out != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 0.002  # 1M elements: the standard error is at most 0.0005
        assert abs(out.mean().item() - 1.0) < 0.004
    both = ((first != 0) & (second != 0)).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.002  # two calls' masks are independent, not shifted copies
    rows = (first != 0).float().mean(dim=1)
    assert rows.std().item() < 3 * (p * (1 - p) / 1000) ** 0.5  # no row is favoured
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(5)
            outs.append(kernels.dropout(x, p))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], first) and torch.equal(outs[1], first)


@pytest.mark.parametrize("relu", [True, False])
def test_the_gradient_is_the_masks_scale_where_the_output_passed(relu):
    def fn(x):
        torch.manual_seed(3)  # gradcheck calls it repeatedly: the same mask every time
        return kernels.dropout(x, 0.4, relu)

    x = torch.randn(6, 5, dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, 0.5, x).requires_grad_()  # away from the ReLU's kink
    assert torch.autograd.gradcheck(fn, (x,))
    x32 = x.detach().float().requires_grad_()
    y = fn(x32)
    y.backward(torch.ones_like(y))
    _, scale = rd.threshold(0.4)
    passed = y != 0 if relu else torch.where(x32 != 0, y != 0, True)
    assert torch.equal(x32.grad, torch.where(passed, torch.tensor(scale, dtype=torch.float32), 0.0))


def test_without_a_compiler_the_torch_ops_run_with_the_same_masks(fresh_cache, monkeypatch, caplog):
    x = torch.randn(64, 32)
    native.load.cache_clear()
    torch.manual_seed(9)
    with_c = kernels.dropout(x, 0.2, relu=True)
    assert kernels.kernel_in_use() == "native"
    native.load.cache_clear()
    monkeypatch.setenv("CC", "no-such-cc")
    with caplog.at_level(logging.WARNING, logger="models.kernels.native"):
        assert kernels.kernel_in_use() == "torch"
        torch.manual_seed(9)
        without = kernels.dropout(x, 0.2, relu=True)
    assert torch.equal(bits(with_c), bits(without))
    assert "no-such-cc" in caplog.text and "relu_dropout" in caplog.text
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # warned once, not per call


def test_a_kernel_is_built_once_and_a_broken_source_names_the_file(fresh_cache, monkeypatch, tmp_path):
    first = native.build("relu_dropout")
    assert first.parent == fresh_cache and first.exists()
    stamp = first.stat().st_mtime_ns
    assert native.build("relu_dropout") == first and first.stat().st_mtime_ns == stamp
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "relu_dropout.c").write_text((native.SOURCE_DIR / "relu_dropout.c").read_text() + "\n/* edited */\n")
    for header in native.SOURCE_DIR.glob("*.h"):
        (sources / header.name).write_text(header.read_text())
    (sources / "broken.c").write_text("int f(void) { return undeclared; }\n")
    monkeypatch.setattr(native, "SOURCE_DIR", sources)
    assert native.build("relu_dropout") != first  # another source, another build
    with pytest.raises(native.KernelBuildError, match=r"broken\.c.*undeclared"):
        native.build("broken")
    assert not [p for p in fresh_cache.iterdir() if p.name.startswith(".")]  # no partial files left


def test_the_kernels_run_on_torchs_openmp_and_build_serial_without_one(fresh_cache, monkeypatch):
    for name in ("relu_dropout", "cross_v1"):
        assert native.load(name) is not None
        assert b"GOMP_parallel" in native.build(name).read_bytes()  # its loops are OpenMP's
    with open("/proc/self/maps") as maps:  # libgomp.so.1[.0.0], what the kernels ask for (not scikit-learn's libgomp-<hash>)
        gomp = {line.split()[-1] for line in maps if Path(line.split()[-1]).name.startswith("libgomp.so")}
    torch_lib = (Path(torch.__file__).parent / "lib").resolve()
    assert gomp and all(Path(path).resolve().parent == torch_lib for path in gomp), gomp  # one runtime: torch's
    monkeypatch.setattr(native, "OPENMP", "-fno-such-openmp-flag")  # a compiler without OpenMP
    serial = native.build("relu_dropout")
    assert serial.exists() and "GOMP" not in serial.read_bytes().decode("latin-1")


def test_processes_building_at_once_all_get_a_whole_library(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "models.kernels"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    built = sorted((tmp_path / "recloop" / "kernels").iterdir())
    assert len(built) == len(list(native.SOURCE_DIR.glob("*.c")))  # one whole library per source
    assert all(str(path) in out for path in built for out in outs)


def at_one_and_two_threads(fn, inputs, grad):
    """[(output, *input gradients) with 1 thread, the same with 2 threads]."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = fn(*inputs)
            results.append((y, *torch.autograd.grad(y, inputs, grad)))
    finally:
        torch.set_num_threads(before)
    return results


@pytest.mark.parametrize("shape", [(1024, 213, 256), (1000, 64, 1), (3, 5, 8)])
def test_the_onednn_linear_matches_f_linear_and_not_the_thread_count(shape):
    assert onednn._onednn(), "oneDNN's matmul is not usable in this torch"
    b, k, n = shape
    torch.manual_seed(0)
    w = torch.randn(n, k, requires_grad=True)
    bias = torch.randn(n, requires_grad=True)
    x = torch.randn(b, k, requires_grad=True)
    dy = torch.randn(b, n)
    results = at_one_and_two_threads(onednn._Linear.apply, (x, w, bias), dy)  # whatever this CPU prefers
    assert all(torch.equal(a, c) for a, c in zip(*results))  # what the thread tuner needs
    assert results[0][2].is_contiguous()  # the weight's gradient in its layout: AccumulateGrad copies nothing
    y_ref = F.linear(x, w, bias)
    for got, want in zip(results[0], (y_ref, *torch.autograd.grad(y_ref, (x, w, bias), dy))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("faster", [True, False])
def test_the_linear_runs_onednn_only_on_cpus_where_it_beats_mkl(monkeypatch, faster):
    monkeypatch.setattr(onednn, "faster_than_mkl", lambda: faster)
    torch.manual_seed(0)
    w, bias, x = torch.randn(256, 213, requires_grad=True), torch.randn(256), torch.randn(64, 213)
    y = kernels.linear(x, w, bias)
    assert (y.grad_fn.name() == "_LinearBackward") is faster
    if not faster:
        assert torch.equal(y, F.linear(x, w, bias))


def test_the_linear_falls_back_to_torch_where_onednn_is_not_used(monkeypatch):
    monkeypatch.setattr(onednn, "faster_than_mkl", lambda: True)
    torch.manual_seed(0)
    w, bias, x = torch.randn(8, 5), torch.randn(8), torch.randn(4, 5)
    with kernels.use_native(False):
        assert torch.equal(kernels.linear(x, w, bias), F.linear(x, w, bias))
        assert kernels.kernel_in_use() == "torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear(x, w, bias).dtype == torch.bfloat16
    assert kernels.linear(torch.randn(0, 5), w, bias).shape == (0, 8)
    assert kernels.linear(x.double(), w.double(), bias.double()).dtype == torch.float64


@pytest.mark.parametrize(("out_rows", "n", "dim"), [(12000, 9216, 16), (30000, 9216, 1), (7, 5000, 3), (5, 0, 4)])
def test_row_sums_equal_index_add_at_any_thread_count(out_rows, n, dim):
    assert native.library("rows", rows.SIGNATURES) is not None, "the C kernel did not build on this machine"
    torch.manual_seed(0)
    index, src = torch.randint(0, out_rows, (n,)), torch.randn(n, dim)
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(kernels.rows_add(out_rows, index, src))
    finally:
        torch.set_num_threads(before)
    want = rows.reference(out_rows, index, src)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[0], want, rtol=1e-6, atol=1e-6)  # duplicates summed, other rows 0
    untouched = torch.ones(out_rows, dtype=torch.bool)
    untouched[index] = False
    assert not outs[0][untouched].any()
    with kernels.use_native(False):
        assert torch.equal(kernels.rows_add(out_rows, index, src), want)


def at_thread_counts(f, counts=(1, 2)):
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in counts:
            torch.set_num_threads(threads)
            outs.append(f())
        return outs
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("batch", "fields", "dim", "tail", "broadcast"),
                         [(1024, 13, 16, 5, False), (700, 3, 4, 0, False), (1024, 21, 1, 0, True),
                          (9, 4, 3, 2, True), (6, 1, 2, 3, False)])
def test_row_sums_read_a_flat_gradient_in_place(batch, fields, dim, tail, broadcast):
    """rows_add over a lookup's (B, F D + T) gradient, or one (B, D) row per field (broadcast),
    at any thread count and from a strided view, as the rows copied out and index_add_."""
    assert native.library("rows", rows.SIGNATURES) is not None, "the C kernel did not build on this machine"
    torch.manual_seed(1)
    out_rows = 50
    index = torch.randint(0, out_rows, (batch * fields,))
    width = dim if broadcast else fields * dim + tail
    grad = torch.randn(batch, width + 3)[:, 1 : width + 1]  # a strided view, as autograd may pass
    copied = (grad[:, :dim].unsqueeze(1).expand(-1, fields, -1) if broadcast
              else grad[:, : fields * dim].reshape(batch, fields, dim)).reshape(-1, dim)
    want = torch.zeros(out_rows, dim).index_add_(0, index, copied)
    outs = at_thread_counts(lambda: kernels.rows_add(out_rows, index, grad, fields=fields, dim=dim,
                                                     broadcast=broadcast))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0], kernels.rows_add(out_rows, index, copied))  # in place = copied out
    torch.testing.assert_close(outs[0], want, rtol=1e-6, atol=1e-6)
    with kernels.use_native(False):
        assert torch.equal(kernels.rows_add(out_rows, index, grad, fields=fields, dim=dim, broadcast=broadcast),
                           rows.reference(out_rows, index, grad, fields, dim, broadcast))
    with pytest.raises(ValueError, match="do not fit"):
        kernels.rows_add(out_rows, index[1:], grad, fields=fields, dim=dim, broadcast=broadcast)


@pytest.mark.parametrize(("batch", "fields", "dim", "tail"), [(1024, 13, 16, 5), (3000, 2, 4, 0), (5, 1, 3, 7)])
def test_rows_gather_equals_index_select_and_cat_at_any_thread_count(batch, fields, dim, tail):
    assert native.library("rows", rows.SIGNATURES) is not None, "the C kernel did not build on this machine"
    torch.manual_seed(2)
    weight, index = torch.randn(40, dim), torch.randint(0, 40, (batch * fields,))
    extra = torch.randn(batch, tail + 2)[:, 2:] if tail else None  # strided
    want = weight[index].reshape(batch, fields * dim)
    want = want if extra is None else torch.cat([want, extra], dim=1)
    for out in at_thread_counts(lambda: kernels.rows_gather(weight, index, fields, extra)):
        assert torch.equal(out, want)
    with kernels.use_native(False):
        assert torch.equal(kernels.rows_gather(weight, index, fields, extra), want)
    if extra is not None:  # each tail value times its field's vector
        vectors = torch.randn(tail, 6)
        want = torch.cat([want[:, : fields * dim], (extra.unsqueeze(2) * vectors).flatten(1)], dim=1)
        for out in at_thread_counts(lambda: kernels.rows_gather(weight, index, fields, extra, vectors)):
            assert torch.equal(out, want)


@pytest.mark.parametrize("shape", [(1024, 13, 16), (33, 2, 5), (4, 1, 3)])
def test_the_c_factorization_machine_matches_the_torch_ops_and_not_the_thread_count(shape):
    assert native.library("fm", factorization.SIGNATURES) is not None, "the C kernel did not build on this machine"
    torch.manual_seed(0)
    v = torch.randn(*shape, requires_grad=True)
    g = torch.randn(shape[0], 1)
    results = at_one_and_two_threads(kernels.fm, (v,), g)
    assert all(torch.equal(a, c) for a, c in zip(*results))
    y_ref = factorization.reference(v)
    for got, want in zip(results[0], (y_ref, *torch.autograd.grad(y_ref, (v,), g))):
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-5 * want.abs().max() + 1e-6  # float rounding, other sum orders
    if shape[1] == 1:
        assert not results[0][0].any()  # one field: no pairs
    with kernels.use_native(False):
        assert torch.equal(kernels.fm(v), y_ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.fm(v.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(1024, 261, 3), (33, 17, 2), (5, 3, 1)])
def test_the_c_cross_network_matches_the_torch_ops_and_not_the_thread_count(shape):
    assert native.library("cross_v1", cross.SIGNATURES) is not None, "the C kernel did not build on this machine"
    rows, n, layers = shape
    torch.manual_seed(0)
    x0 = torch.randn(rows, n, requires_grad=True)
    weights = (torch.randn(layers, n) / n ** 0.5).requires_grad_()
    biases = torch.randn(layers, n).requires_grad_()
    g = torch.randn(rows, n)
    results = at_one_and_two_threads(kernels.cross_v1, (x0, weights, biases), g)
    assert all(torch.equal(a, c) for a, c in zip(*results))
    y_ref = cross.reference(x0, weights, biases)
    for got, want in zip(results[0], (y_ref, *torch.autograd.grad(y_ref, (x0, weights, biases), g))):
        assert (got - want).abs().max() <= 2e-6 * want.abs().max()  # float rounding, other sum orders
    with kernels.use_native(False):
        assert torch.equal(kernels.cross_v1(x0, weights, biases), y_ref)
    y = kernels.cross_v1(x0, weights, biases)
    with kernels.use_native(False):  # a C forward's backward runs the C backward, whatever the setting now
        assert all(torch.equal(a, c) for a, c in zip(torch.autograd.grad(y, (x0, weights, biases), g), results[0][1:]))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the torch ops
        assert torch.equal(kernels.cross_v1(x0, weights, biases), cross.reference(x0, weights, biases))


def test_layers_linear_loads_nn_linear_checkpoints_and_takes_any_leading_dimensions():
    from torch import nn

    from models.layers import Linear

    torch.manual_seed(0)
    plain, fast = nn.Linear(6, 4), Linear(6, 4)
    fast.load_state_dict(plain.state_dict())  # same parameter names and shapes
    for shape in [(5, 6), (3, 5, 6), (2, 3, 5, 6)]:
        x = torch.randn(shape, requires_grad=True)
        got, want = fast(x), plain(x)
        assert got.shape == want.shape == (*shape[:-1], 4)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


@pytest.mark.parametrize("dnn", [False, True])
@pytest.mark.parametrize(("in_dim", "hidden", "input_grad", "with_head"),
                         [(213, (256, 128, 64), True, "bias"), (7, (5,), False, ""), (30, (16, 8), True, "no bias")])
def test_the_one_node_mlp_gives_the_module_path_bits(in_dim, hidden, input_grad, with_head, dnn, monkeypatch):
    """kernels.mlp (one autograd node for Linear -> ReLU -> dropout layers, and the output layer
    when given) against the MLP's modules: the same output and gradients, bit for bit, with the
    same dropout keys, with the layers' products by torch (MKL) and by oneDNN."""
    from models.layers import MLP

    assert native.library("relu_dropout", rd.SIGNATURES) is not None, "the C kernel did not build on this machine"
    assert onednn._onednn(), "oneDNN's matmul is not usable in this torch"
    monkeypatch.setattr(onednn, "faster_than_mkl", lambda: dnn)  # where the module path sends its products
    torch.manual_seed(0)
    mlp = MLP(in_dim, hidden, dropout=0.2)
    head = torch.nn.Linear(hidden[-1], 1, bias=with_head == "bias") if with_head else None
    x = torch.randn(300, in_dim)
    g = torch.randn(300, 1 if with_head else hidden[-1])
    params = [*mlp.parameters(), *(head.parameters() if with_head else [])]
    results = []
    for fused in (True, False):
        mlp._fusable = fused
        xs = x.clone().requires_grad_(input_grad)
        torch.manual_seed(7)
        out = mlp(xs, head=head)
        assert (out.grad_fn.name() == "_ReluDropoutMLPBackward") == fused
        grads = torch.autograd.grad(out, [*params, *([xs] if input_grad else [])], g)
        results.append((out, grads))
    (out, grads), (want, want_grads) = results
    assert torch.equal(out, want)
    assert all(torch.equal(a, b) for a, b in zip(grads, want_grads))
    assert all(t.is_contiguous() for t in grads)  # in the parameters' layout: AccumulateGrad copies nothing
    mlp._fusable = True
    with kernels.use_native(False):
        assert mlp(x).grad_fn.name() != "_ReluDropoutMLPBackward"


ADULT_CARDINALITIES = [9, 16, 7, 15, 6, 5, 2, 42, 17, 21, 12, 8, 15]  # Adult's categorical fields


def adult_like_lookup(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids (B, F), rows (B F,) with the fields' offsets, row_field (R,)) over ADULT_CARDINALITIES."""
    gen = torch.Generator().manual_seed(seed)
    cards = torch.tensor(ADULT_CARDINALITIES)
    ids = torch.stack([torch.randint(0, int(c), (batch,), generator=gen) for c in cards], 1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), cards.cumsum(0)[:-1]])
    return ids, (ids + offsets).reshape(-1), torch.repeat_interleave(torch.arange(len(cards)), cards)


@pytest.mark.parametrize(("batch", "n_tail", "vectors"), [(1024, 5, False), (633, 0, False), (3, 2, False),
                                                        (1024, 5, True)])
def test_the_folded_first_layer_equals_the_product_with_the_looked_up_rows(batch, n_tail, vectors):
    """fold.forward / backward (the first layer through the table's rows) against the product
    with the written-out input (the tail as it is, or each value times its vector): equal to float
    rounding, and the same bits at 1 and 2 threads."""
    assert native.library("fold", fold.SIGNATURES) is not None, "the C kernel did not build on this machine"
    _, rows_, row_field = adult_like_lookup(batch)
    fields, dim, width = len(ADULT_CARDINALITIES), 16, 96  # the backward's column blocks: 64, then 32
    torch.manual_seed(0)
    table = torch.randn(sum(ADULT_CARDINALITIES), dim)
    tail_vectors = torch.randn(n_tail, dim) if vectors else None
    weight = torch.randn(width, fields * dim + n_tail * (dim if vectors else 1)) * 0.1
    bias = torch.randn(width)
    tail = torch.randn(batch, n_tail) if n_tail else None
    dz = torch.randn(batch, width)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((fold.forward(table, weight, bias, rows_, row_field, fields, tail, tail_vectors),
                            *fold.backward(dz, rows_, row_field, fields, tail, table, weight, tail_vectors)))
    finally:
        torch.set_num_threads(before)
    assert (results[0][-1] is None) == (not vectors)
    got = [t for t in results[0] if t is not None]
    assert all(torch.equal(a, b) for a, b in zip(got, [t for t in results[1] if t is not None]))
    want = [t for t in (fold.reference_forward(table, weight, bias, rows_, fields, tail, tail_vectors),
                        *fold.reference_backward(dz, rows_, fields, tail, table, weight, tail_vectors)) if t is not None]
    assert len(got) == len(want)
    for a, ref in zip(got, want):
        assert a.shape == ref.shape
        assert (a - ref).abs().max() <= 1e-5 * ref.abs().max()  # float rounding, other sum orders


@pytest.mark.parametrize(("field_vectors", "dnn"), [(False, False), (True, False), (False, True)])
def test_an_mlp_over_a_small_tables_lookup_folds_its_first_layer_and_a_large_ones_does_not(field_vectors, dnn,
                                                                                          monkeypatch):
    """MLP(FusedEmbedding.lookup(ids, cont), head), or with a vector per continuous column
    (FieldEmbedding.lookup, DeepFM's input): in training the first layer goes through the table's
    rows (fold) and gives the written-out input's output and gradients up to float rounding;
    with folding off, its bits; a table too large to keep its rows' fields is never folded, nor
    is a batch too small for it to pay. The other layers' products by torch (MKL) or oneDNN."""
    from torch import nn

    from models.layers import MLP, FieldEmbedding, FusedEmbedding

    monkeypatch.setattr(onednn, "faster_than_mkl", lambda: dnn)
    calls = []
    real_forward = fold.forward
    monkeypatch.setattr(fold, "forward", lambda *a: (calls.append(1), real_forward(*a))[1])
    torch.manual_seed(0)
    fields = len(ADULT_CARDINALITIES)
    if field_vectors:
        emb = FieldEmbedding(ADULT_CARDINALITIES, 5, 16, init_std=0.5)
        written_out = lambda ids, cont: emb(ids, cont).flatten(1)  # noqa: E731
    else:
        emb = FusedEmbedding(ADULT_CARDINALITIES, 16, init_std=0.5)
        written_out = emb.flat
    mlp = MLP(fields * 16 + 5 * (16 if field_vectors else 1), (64, 32), dropout=0.2)
    head = nn.Linear(32, 1)
    ids, _, _ = adult_like_lookup(512)
    cont, g = torch.randn(512, 5), torch.randn(512, 1)
    params = [*emb.parameters(), *mlp.parameters(), *head.parameters()]
    assert len(params) == 7 + field_vectors  # the table (and the vectors), 2 layers and the head

    def run(lookup: bool):
        torch.manual_seed(7)
        out = mlp(emb.lookup(ids, cont) if lookup else written_out(ids, cont), head=head)
        return out, torch.autograd.grad(out, params, g)

    (out, grads), (want, want_grads) = run(True), run(False)
    assert len(calls) == 1
    assert (out - want).abs().max() <= 1e-5 * want.abs().max()
    assert all((a - b).abs().max() <= 1e-5 * b.abs().max() for a, b in zip(grads, want_grads))
    monkeypatch.setattr(fold, "ROWS_PER_LOOKUP", 10**9)  # never pays: the input is written out
    out, grads = run(True)
    assert len(calls) == 1 and torch.equal(out, want) and all(torch.equal(a, b) for a, b in zip(grads, want_grads))
    monkeypatch.setattr(fold, "ROWS_PER_LOOKUP", 4)
    assert mlp(emb.lookup(ids[:8], cont[:8]), head=head).shape == (8, 1) and len(calls) == 1  # 104 rows for 177
    with pytest.raises(RuntimeError):  # an MLP of the wrong width: the product (MKL or oneDNN) says so
        MLP(fields * 16, (64,), dropout=0.2)(emb.lookup(ids, cont))
    big = FusedEmbedding([70_000], 4)
    assert big.row_field is None
    MLP(4, (8,), dropout=0.2)(big.lookup(torch.randint(0, 70_000, (20_000, 1))))
    assert len(calls) == 1
    assert mlp.eval()(emb.lookup(ids, cont), head=head).shape == (512, 1) and len(calls) == 1  # eval: written out
