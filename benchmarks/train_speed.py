"""Training speed: what each lever bought, every architecture before and after, the roofline,
and training on a busy machine (a benchmark, not a test).

    python -m benchmarks.train_speed [--epochs 5] [--before REV] [--out DIR] [--skip-zoo]

Writes `benchmarks/results/train_levers.{json,md}`. Three tables, side by side in one run:

  * Levers, in the order they were applied, on Adult `wide_deep` (embedding 16, MLP
    256-128-64, dropout 0.1, batch 1024, 2 threads; the DeepCTR comparison's setup): each
    row adds one lever to the row above and reports training samples/s and test AUC. The
    rows before the last run the trainer's inner loop here with the old pieces patched back
    in (`nn.functional.dropout`, `nn.Embedding`'s dense gradient, one AdamW over everything,
    `loss.item()` per step); the last row is `models.trainer.fit` itself. Levers tried and
    not adopted (a larger batch, `torch.compile`, bfloat16 autocast) follow, measured the same way.
  * The zoo: every architecture's training samples/s on the synthetic_clicks split of the
    zoo benchmark (160k rows, nightly `TrainConfig` defaults, 2 epochs), with this checkout
    and with the code at REV (default: the last commit before this issue's changes), each in
    its own process on the same saved tensors.
  * The OpenMP spin count (GOMP_SPINCOUNT, read by libgomp when torch loads): wide_deep's
    samples/s quiet and with one CPU-bound process per core (`CompetingLoad`), per value.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
BEFORE = "261b974"  # main before issue 10's training levers
LIBGOMP_DEFAULT_SPIN = "300000"  # libgomp's spin count when OMP_WAIT_POLICY and GOMP_SPINCOUNT are unset
ADULT_HPARAMS = {"embedding_dim": 16, "hidden": (256, 128, 64), "dropout": 0.1}


# --- the roofline -------------------------------------------------------------------------

def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo): MKL and oneDNN pick their code by it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every `nn.Linear` of a model: its matmuls."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def roofline(model: nn.Module, batch_size: int, dtype: torch.dtype = torch.float32,
             repeats: int = 30) -> dict[str, float]:
    """A plain forward + backward of the model's matmuls at `batch_size`, nothing else:

        y = x W^T;  dx = dy W;  dW = dy^T x     for every Linear (in, out) of the model

    6 in out FLOPs per sample and layer, in `dtype`, by torch's own product (`x @ W^T`: MKL's
    sgemm in float32, oneDNN in bfloat16) and by `models.kernels.linear` (oneDNN in float32),
    whichever is faster. Returns the FLOPs per sample, the GFLOP/s reached and the samples/s it
    implies (the roofline a training step of the model can approach: embeddings, activations,
    dropout, interactions and the optimizer come on top), and the samples/s of each product."""
    from models import kernels

    shapes = linear_shapes(model)
    tensors = [(torch.randn(batch_size, i, dtype=dtype, requires_grad=True),
                torch.randn(o, i, dtype=dtype, requires_grad=True), torch.randn(batch_size, o, dtype=dtype))
               for i, o in shapes]
    products = {"torch": lambda x, w: x @ w.t(), "recloop": kernels.linear}

    def once(product) -> None:
        for x, w, g in tensors:
            product(x, w).backward(g)

    for product in products.values():
        for _ in range(3):
            once(product)
    best = dict.fromkeys(products, float("inf"))
    for _ in range(3):  # best of three blocks, interleaved: a roofline is what the hardware can do
        for name, product in products.items():
            t0 = time.perf_counter()
            for _ in range(repeats):
                once(product)
            best[name] = min(best[name], (time.perf_counter() - t0) / repeats)
    flops = sum(6 * i * o for i, o in shapes)
    fastest = min(best.values())
    return {"matmul_flops_per_sample": flops, "gflops": flops * batch_size / fastest / 1e9,
            "samples_per_s": batch_size / fastest, "batch_size": batch_size,
            **{f"{name}_product_samples_per_s": batch_size / t for name, t in best.items()}}


# --- a busy machine -----------------------------------------------------------------------

@contextlib.contextmanager
def competing_load(processes: int, max_seconds: float = 900.0) -> Iterator[list[int]]:
    """`processes` CPU-bound Python loops beside the benchmark, started here and stopped on
    exit; each also stops by itself after `max_seconds` (bounded even if this process dies)."""
    code = f"import time\nend = time.monotonic() + {max_seconds}\nwhile time.monotonic() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # running before the measurement starts
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# One training run in a fresh process (libgomp reads GOMP_SPINCOUNT when torch loads), on
# tensors saved by the parent; only models.* is used, so the same code runs against an older
# checkout (PYTHONPATH) for the before/after table.
RUN_ONE = r"""
import json, sys, time, torch
from models import build_model
from models.trainer import TrainConfig, fit, predict_proba
from models.metrics import roc_auc
payload = torch.load(sys.argv[1], weights_only=False)
arch, hp, cfg = payload["arch"], payload["hparams"], payload["config"]
model = build_model(arch, payload["schema"], hp, seed=0)
result = fit(model, payload["train"], payload["val"], TrainConfig(**cfg))
p = predict_proba(model, payload["test"])
print(json.dumps({"train_samples_per_s": result.train_samples_per_s,
                  "test_auc": roc_auc(payload["test"]["label"].numpy(), p),
                  "epochs_run": len(result.history),
                  "steps_by_threads": getattr(result, "steps_by_threads", {})}))
"""


def run_one(payload: Path, pythonpath: Path = REPO, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Train in a child process (`RUN_ONE`) with `pythonpath` first on its path; its JSON line."""
    child_env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONWARNINGS": "ignore", **(env or {})}
    out = subprocess.run([sys.executable, "-c", RUN_ONE, str(payload)], env=child_env, cwd=pythonpath,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"training run failed ({pythonpath}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_payload(path: Path, arch: str, data: Any, hparams: dict | None, config: dict) -> Path:
    torch.save({"arch": arch, "hparams": hparams, "config": config, "schema": data.schema,
                "train": data.train, "val": data.val, "test": data.holdout}, path)
    return path


def quiet_and_busy(payload: Path, spin: str, competitors: int) -> dict[str, Any]:
    """One training run (`run_one`) quiet, then one beside `competitors` CPU-bound processes
    (`competing_load`), both with GOMP_SPINCOUNT=`spin`; samples/s, test AUC and load of each."""
    env = {"GOMP_SPINCOUNT": spin}
    quiet_load = os.getloadavg()[0]
    quiet = run_one(payload, env=env)
    with competing_load(competitors):
        busy_load = os.getloadavg()[0]
        busy = run_one(payload, env=env)
    return {"gomp_spincount": spin, "competing_processes": competitors,
            "quiet_samples_per_s": quiet["train_samples_per_s"], "busy_samples_per_s": busy["train_samples_per_s"],
            "busy_share": busy["train_samples_per_s"] / quiet["train_samples_per_s"],
            "quiet_test_auc": quiet["test_auc"], "busy_test_auc": busy["test_auc"],
            "quiet_steps_by_threads": quiet.get("steps_by_threads", {}),
            "busy_steps_by_threads": busy.get("steps_by_threads", {}),
            "load_at_quiet_start": quiet_load, "load_at_busy_start": busy_load}


def one_thread_steps(steps_by_threads: dict | None) -> str:
    """"281 of 290": how many of a run's training steps the ThreadTuner took with one thread."""
    if not steps_by_threads:
        return "n/a"
    steps = {int(k): v for k, v in steps_by_threads.items()}  # JSON keys are strings
    return f"{steps.get(1, 0)} of {sum(steps.values())}"


def spin_rows(payload: Path, values: list[str], threads: int) -> list[dict[str, Any]]:
    """wide_deep quiet and beside one CPU-bound process per core, per GOMP_SPINCOUNT value."""
    rows = []
    for value in values:
        rows.append(quiet_and_busy(payload, value, threads))
        r = rows[-1]
        print(f"GOMP_SPINCOUNT={value:>7s}: quiet {r['quiet_samples_per_s']:,.0f}  busy {r['busy_samples_per_s']:,.0f} "
              f"({r['busy_share']:.0%})", flush=True)
    return rows


# --- the levers -----------------------------------------------------------------------------

class _IndexSelect(torch.autograd.Function):
    """The lookup before its rows were gathered into one matrix: index_select, whose output
    view and cat are autograd's, the row sums by `kernels.rows_add` over a copied gradient."""

    @staticmethod
    def forward(ctx, weight, rows, sparse):
        ctx.save_for_backward(rows)
        ctx.table_shape, ctx.sparse = weight.shape, sparse
        return weight.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad):
        from models import kernels, layers

        (rows,) = ctx.saved_tensors
        def sums(n, index):
            return kernels.rows_add(n, index, grad.contiguous())
        return layers._table_gradient(ctx.table_shape, ctx.sparse, rows, sums), None, None


@contextlib.contextmanager
def old_pieces(dropout: bool, embedding: bool, linear: bool = False, row_sums: bool = False,
               lookups: bool = False, mlp_modules: bool = False, unfolded: bool = False) -> Iterator[None]:
    """Patch the pre-issue implementations back in: `nn.functional.dropout` (bernoulli_ mask)
    after a separate ReLU, `nn.Embedding`'s dense gradient, torch's own float32 products
    (`F.linear`: MKL's sgemm) in the MLPs, torch's `index_add_` for the embedding gradients' row
    sums, lookups as index_select, view and cat (or sum) in autograd, the MLPs' layers as
    modules (autograd nodes per layer) instead of one node, and their first layer as a product
    with the written-out lookups instead of folded through the table."""
    from models import kernels, layers
    from models.kernels import fold, rows

    saved = (layers.Dropout.forward, layers._RowLookup.apply, layers._RowSum.apply, kernels.linear,
             kernels.rows_add, kernels.mlp, fold.ROWS_PER_LOOKUP)
    if dropout:
        def forward(self, x, relu=False):
            return nn.functional.dropout(torch.relu(x) if relu else x, self.p, self.training)
        layers.Dropout.forward = forward
    if embedding or lookups:
        def select(weight, index, sparse):
            return nn.functional.embedding(index, weight) if embedding else _IndexSelect.apply(weight, index, sparse)

        def lookup(weight, index, fields, tail, vectors, sparse):
            out = select(weight, index, sparse).view(-1, fields * weight.shape[1])
            return out if tail is None else torch.cat([out, rows.scaled_tail(tail, vectors)], dim=1)

        def row_sum(weight, index, fields, sparse):
            return select(weight, index, sparse).view(-1, fields, weight.shape[1]).sum(dim=1)
        layers._RowLookup.apply, layers._RowSum.apply = staticmethod(lookup), staticmethod(row_sum)
    if linear:
        kernels.linear = nn.functional.linear
    if row_sums:
        kernels.rows_add = rows.reference
    if mlp_modules or dropout:  # the one-node MLP runs the C dropout
        kernels.mlp = lambda x, linears, p, head=None: None
    if unfolded:
        fold.ROWS_PER_LOOKUP = 1 << 62
    try:
        yield
    finally:
        (layers.Dropout.forward, layers._RowLookup.apply, layers._RowSum.apply, kernels.linear,
         kernels.rows_add, kernels.mlp, fold.ROWS_PER_LOOKUP) = saved


def one_adamw(model: nn.Module, lr: float, wide_lr: float) -> torch.optim.Optimizer:
    """The pre-issue optimizer: one AdamW (foreach) over every parameter, wide weights at wide_lr."""
    from models.layers import WideLinear

    wide = {id(p) for m in model.modules() if isinstance(m, WideLinear) for p in m.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in wide]},
              {"params": [p for p in model.parameters() if id(p) in wide], "lr": wide_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=0.0)


def loop_samples_per_s(model: nn.Module, data: Any, config: Any, optimizer: Any, item_per_step: bool,
                       autocast: bool = False, compiled: bool = False) -> float:
    """The trainer's inner loop (models.trainer.train_loop), timed over `config.epochs` epochs."""
    from models.trainer import FEATURE_KEYS, TensorBatches

    source = TensorBatches(data.train, config.batch_size, config.seed)
    loss_fn = nn.BCEWithLogitsLoss()
    forward = torch.compile(model, dynamic=False) if compiled else model
    seconds, samples = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1 + compiled):  # compiled: one more epoch, untimed
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64)
            start = time.perf_counter()
            for batch in source.batches(epoch):
                b = batch["label"].shape[0]
                if compiled and b != config.batch_size:
                    continue  # one static shape (the tail would recompile)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = forward({k: batch[k] for k in FEATURE_KEYS})
                loss = loss_fn(logits.float(), batch["label"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if item_per_step:
                    loss.item()
                else:
                    loss_sum += loss.detach() * b
                samples += b
            float(loss_sum)
            if not (compiled and epoch == 1):  # compiling is not training
                seconds += time.perf_counter() - start
            else:
                samples = 0
    model.eval()
    return samples / seconds


def lever_rows(data: Any, epochs: int, threads: int) -> list[dict[str, Any]]:
    from dataclasses import replace

    from models import build_model, kernels
    from models.kernels import onednn
    from models.metrics import roc_auc
    from models.optim import build_optimizers
    from models.trainer import TrainConfig, fit, predict_proba

    config = TrainConfig(epochs=epochs, threads=threads, patience=epochs)
    y = data.holdout_labels

    def row(name, adopted, build_opt, *, dropout=False, embedding=False, linear=False, row_sums=False,
            lookups=False, mlp_modules=False, unfolded=False, item=False, batch=None, autocast=False, compiled=False,
            native=True):
        cfg = replace(config, batch_size=batch or config.batch_size, lr=config.lr * (1.5 if batch else 1),
                      wide_lr=config.wide_lr * (1.5 if batch else 1))
        model = build_model("wide_deep", data.schema, ADULT_HPARAMS, seed=0)
        load = os.getloadavg()[0]
        with old_pieces(dropout, embedding, linear, row_sums, lookups, mlp_modules, unfolded), \
                kernels.use_native(native):
            sps = loop_samples_per_s(model, data, cfg, build_opt(model, cfg), item, autocast, compiled)
        auc = roc_auc(y, predict_proba(model, data.holdout))
        print(f"{name:58s} {sps:>9,.0f} samples/s  test AUC {auc:.4f}", flush=True)
        return {"lever": name, "adopted": adopted, "train_samples_per_s": sps, "test_auc": auc,
                "batch_size": cfg.batch_size, "load_at_start": load}

    def old_opt(model, cfg):
        return one_adamw(model, cfg.lr, cfg.wide_lr)

    def new_opt(model, cfg):
        return build_optimizers(model, cfg.lr, cfg.wide_lr, cfg.weight_decay)

    def new_unfused(model, cfg):  # AdamW's default multi-tensor (foreach) implementation
        opts = new_opt(model, cfg)
        for group in opts.optimizers[0].param_groups:
            group["fused"] = None
        return opts

    torch.set_num_threads(threads)
    rows = [
        row("before: nn.Dropout, dense embedding gradients, one AdamW", True, old_opt,
            dropout=True, embedding=True, linear=True, item=True),
        row("+ row-wise embedding gradients, RowAdam on the tables", True, new_unfused, dropout=True,
            linear=True, row_sums=True, item=True),
        row("+ fused AdamW on the dense parameters", True, new_opt, dropout=True, linear=True, row_sums=True,
            item=True),
        row("+ loss summed on the device (no loss.item() per step)", True, new_opt, dropout=True, linear=True,
            row_sums=True),
        row("+ ReLU and dropout in one C pass (models/kernels)", True, new_opt, linear=True, row_sums=True,
            lookups=True, mlp_modules=True),
        row(f"+ float32 products by oneDNN instead of MKL{'' if onednn.faster_than_mkl() else ' (not on this CPU)'}",
            True, new_opt, row_sums=True, lookups=True, mlp_modules=True),
        row("+ embedding gradients' row sums in C (models/kernels)", True, new_opt, lookups=True, mlp_modules=True),
        row("+ lookups gathered into one matrix, their row sums read in place (C)", True, new_opt,
            mlp_modules=True),
        row("+ the MLP's Linear-ReLU-dropout layers (and its output layer) as one autograd node", True, new_opt,
            unfolded=True),
        row("+ the MLP's first layer folded through the embedding table's rows (C)", True, new_opt),
    ]
    model = build_model("wide_deep", data.schema, ADULT_HPARAMS, seed=0)
    load = os.getloadavg()[0]
    result = fit(model, data.train, data.val, config)
    auc = roc_auc(y, predict_proba(model, data.holdout))
    print(f"{'= models.trainer.fit (the trainer itself)':58s} {result.train_samples_per_s:>9,.0f} samples/s  "
          f"test AUC {auc:.4f}", flush=True)
    rows.append({"lever": "= models.trainer.fit (the trainer itself)", "adopted": True,
                 "train_samples_per_s": result.train_samples_per_s, "test_auc": auc,
                 "batch_size": config.batch_size, "load_at_start": load})
    rows += [
        row("not adopted: batch 2048, lr x1.5", False, new_opt, batch=2048),
        row("opt-in: bfloat16 autocast (TrainConfig precision bf16)", False, new_opt, autocast=True),
        # inductor cannot lower oneDNN's linear op nor trace the C kernels: it compiles the torch ops
        row("not adopted: torch.compile of the torch ops (after the first epoch)", False, new_opt, compiled=True,
            native=False),
    ]
    return rows


# --- the zoo before and after --------------------------------------------------------------

@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A temporary git worktree of `rev` (removed on exit)."""
    path = Path(tempfile.mkdtemp(prefix="recloop-before-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def zoo_line(r: dict[str, Any], sep: str = "  ") -> str:
    """One zoo row: model, samples/s before and after, speed-up, AUC before and after (an
    architecture added since the before revision has no before)."""
    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    return sep.join([r["model"], num(r["before_samples_per_s"], ",.0f"), num(r["after_samples_per_s"], ",.0f"),
                     "n/a" if r["speedup"] is None else f"x{r['speedup']:.2f}",
                     num(r["before_test_auc"], ".4f"), num(r["after_test_auc"], ".4f")])


def architectures_at(checkout_path: Path) -> set[str]:
    """The architecture names registered by the code at `checkout_path`."""
    code = "import json; from models import ARCHITECTURES; print(json.dumps(sorted(ARCHITECTURES)))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(checkout_path)},
                         cwd=checkout_path, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def zoo_rows(before: str, epochs: int, threads: int, work: Path) -> list[dict[str, Any]]:
    from benchmarks.zoo_benchmark import synthetic_split
    from feature_store.spec import load_spec
    from models import ARCHITECTURES
    from tasks.preprocess import prepare_frames

    split = synthetic_split(work / "synthetic")
    data = prepare_frames(load_spec(split.spec_name), split.train, split.val, split.test)
    config = {"epochs": epochs, "threads": threads, "patience": epochs}
    rows = []
    with checkout(before) as old:
        for arch in ARCHITECTURES:
            payload = save_payload(work / f"{arch}.pt", arch, data, None, config)
            load = os.getloadavg()[0]
            was = run_one(payload, old) if arch in architectures_at(old) else None  # added since
            now = run_one(payload)
            rows.append({"model": arch, "before_samples_per_s": was and was["train_samples_per_s"],
                         "after_samples_per_s": now["train_samples_per_s"],
                         "speedup": was and now["train_samples_per_s"] / was["train_samples_per_s"],
                         "before_test_auc": was and was["test_auc"], "after_test_auc": now["test_auc"],
                         "load_at_start": load})
            print(zoo_line(rows[-1]), flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# Training speed: levers, the zoo before and after, the OpenMP spin count", "",
             f"torch {m['torch']}, {result['threads']} threads, {m['cpus']} CPUs ({m.get('cpu', '?')}, "
             f"{m['platform']}); "
             f"1-min load average at the start of each row in the JSON.", "",
             "## Levers, in order (Adult wide_deep, embedding 16, MLP 256-128-64, dropout 0.1, "
             f"batch 1024, {result['epochs']} epochs)", "",
             "| lever | training samples/s | test AUC |", "|---|---|---|"]
    for r in result["levers"]:
        lines.append(f"| {r['lever']} | {r['train_samples_per_s']:,.0f} | {r['test_auc']:.4f} |")
    lines += ["", f"Roofline (a plain forward + backward of wide_deep's matmuls at batch 1024): "
              f"{result['roofline']['samples_per_s']:,.0f} samples/s "
              f"({result['roofline']['gflops']:.0f} GFLOP/s, "
              f"{result['roofline']['matmul_flops_per_sample'] / 1e6:.2f} MFLOP per sample)."]
    if result.get("zoo"):
        lines += ["", f"## Every architecture, before ({result['before']}) and after "
                  f"(synthetic_clicks 160k rows, nightly defaults, {result['zoo_epochs']} epochs)", "",
                  "| model | before samples/s | after samples/s | speed-up | AUC before | AUC after |",
                  "|---|---|---|---|---|---|"]
        for r in result["zoo"]:
            lines.append("| " + zoo_line(r, " | ") + " |")
    lines += ["", "## OpenMP spin count (wide_deep on Adult; busy: one CPU-bound process per core)", "",
              "| GOMP_SPINCOUNT | quiet samples/s | busy samples/s | busy / quiet | busy steps at 1 thread |",
              "|---|---|---|---|---|"]
    for r in result["spin"]:
        lines.append(f"| {r['gomp_spincount']} | {r['quiet_samples_per_s']:,.0f} | {r['busy_samples_per_s']:,.0f} "
                     f"| {r['busy_share']:.0%} | {one_thread_steps(r.get('busy_steps_by_threads'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", default=BEFORE, help="the git revision of the 'before' zoo column")
    ap.add_argument("--zoo-epochs", type=int, default=2)
    ap.add_argument("--spin", nargs="+", default=[LIBGOMP_DEFAULT_SPIN, "30000", "10000", "3000", "1000"])
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from benchmarks.deepctr_compare import SETUP, split_adult
    from feature_store.spec import load_spec
    from flows.cli import _quiet_libraries
    from models import build_model
    from tasks.preprocess import prepare_frames

    _quiet_libraries()
    torch.set_num_threads(args.threads)
    data = prepare_frames(load_spec("adult"), *split_adult(SETUP["val_fraction"], SETUP["seed"], None))
    result: dict[str, Any] = {
        "benchmark": "training speed levers", "epochs": args.epochs, "threads": args.threads,
        "before": args.before, "zoo_epochs": args.zoo_epochs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"), "cpu": cpu_model()},
    }
    result["roofline"] = roofline(build_model("wide_deep", data.schema, ADULT_HPARAMS, seed=0), 1024)
    result["levers"] = lever_rows(data, args.epochs, args.threads)
    with tempfile.TemporaryDirectory(prefix="recloop-train-speed-") as tmp:
        work = Path(tmp)
        payload = save_payload(work / "adult_wide_deep.pt", "wide_deep", data, ADULT_HPARAMS,
                               {"epochs": args.epochs, "threads": args.threads, "patience": args.epochs})
        result["spin"] = spin_rows(payload, args.spin, args.threads)
        result["zoo"] = [] if args.skip_zoo else zoo_rows(args.before, args.zoo_epochs, args.threads, work)
    write_results(args.out, "train_levers", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
