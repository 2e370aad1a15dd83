"""The training loop: mini-batches from a `BatchSource`, early stopping on validation
logloss, and batched prediction.

The trainer owns everything the models must not: the optimizer, the RNG, the thread count.
Data arrive through a `BatchSource`: an object that yields batch dicts (the `InputSchema`
layout) for an epoch, so no stage needs a whole split in memory. `TensorBatches` wraps
whole-split tensor dicts (tests, small data); `tasks.loader.ParquetBatches` streams the
transformed parquet files. A plain dict passed to `fit`/`predict_proba` is wrapped in
`TensorBatches`, so older callers keep working.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from models import kernels
from models._config import config_from_dict
from models.metrics import log_loss, roc_auc
from models.optim import build_optimizers

FEATURE_KEYS = ("cat", "cont", "cross")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # TrainConfig.precision -> autocast dtype
_DTYPES = {"cat": torch.int64, "cont": torch.float32, "cross": torch.int64, "label": torch.float32}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the same for every architecture).

    Adam on the deep parameters (AdamW-style decoupled decay on weight matrices and
    embeddings when weight_decay > 0), applied row-wise to embedding tables of more than 2^20
    values: only the rows a batch touched move (`models.optim.RowAdam`). The wide (`WideLinear`) weights are a linear model
    over sparse ids: each id gets a gradient only in the few batches it occurs in, so they
    learn at `wide_lr` (None: `lr`). Cheng et al. used FTRL for the wide part and AdaGrad for
    the deep part; Adam with a larger wide step plays the same role here. On the
    synthetic_clicks dataset (140k rows) the wide model reaches val AUC 0.763 after 5 epochs
    at 2e-3, 0.781 at 1e-2, and at 3e-2 peaks after one epoch at 0.778 then overfits.
    """

    epochs: int = 4
    batch_size: int = 1024
    lr: float = 2e-3
    wide_lr: float | None = 1e-2
    weight_decay: float = 0.0
    patience: int = 2  # epochs without a better val logloss before stopping
    seed: int = 0
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # the cores this process may use
    # > 1: DistributedDataParallel in that many processes (models/distributed.py); each gets
    # threads // processes threads and batch_size // processes rows per step (batch_size
    # stays the global batch, so lr and the number of steps mean what they mean at 1).
    processes: int = 1
    ddp_timeout_s: float = 900.0  # a collective waiting longer than this fails its rank (a hung peer)
    # "bf16": the training forward under bfloat16 autocast (matmuls in bfloat16, weights,
    # optimizer and predictions in float32). 1.4x the samples/s of "fp32" for wide_deep on a
    # CPU with AVX512-BF16, the same test AUC (benchmarks/results/train_levers.md); slower
    # on a CPU without native bfloat16, so not the default.
    precision: str = "fp32"
    # Between `threads` and 1, use whichever trains faster right now (`ThreadTuner`): on cores
    # other processes keep busy, one thread outran two by 1.5-4x (benchmarks/results/train_levers.md).
    adapt_threads: bool = True
    # The native paths of models/kernels: ReLU + dropout, DCN's cross network, the FM term and the
    # embedding gradients' row sums in C, float32 products by oneDNN on CPUs where it beats MKL
    # (wide_deep 1.5x the samples/s on a 2-core AMD Zen 3, 2.0x with AVX-512). False: plain
    # torch ops, the same dropout masks and row sums, the rest equal up to float rounding; also
    # the path when no C compiler is at hand.
    native_kernels: bool = True

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2 or self.threads < 1 or self.patience < 0:
            raise ValueError("need epochs >= 1, batch_size >= 2, threads >= 1, patience >= 0")
        if self.processes < 1 or self.batch_size // self.processes < 2 or self.ddp_timeout_s <= 0:
            raise ValueError("need processes >= 1, batch_size >= 2 * processes and ddp_timeout_s > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        bad_wide_lr = self.wide_lr is not None and self.wide_lr <= 0
        if self.lr <= 0 or bad_wide_lr or self.weight_decay < 0:
            raise ValueError("need lr > 0, wide_lr > 0 (or None) and weight_decay >= 0")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> TrainConfig:
        """Strict: unknown keys or wrong types raise ValueError listing the valid keys."""
        return config_from_dict(cls, params, what="training config")


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float = float("nan")
    best_val_logloss: float = float("inf")
    train_samples_per_s: float = 0.0
    # training steps taken with each torch thread count ({2: 281, 1: 9}): where `ThreadTuner`
    # left the thread count (on busy cores, mostly at 1); this process's steps under DDP
    steps_by_threads: dict[int, int] = field(default_factory=dict)
    # one fingerprint of the final weights per training process, computed by each process
    # itself (models/distributed.py): all equal, or the run fails
    rank_digests: tuple[str, ...] = ()


def check_batch(schema, batch: Mapping[str, torch.Tensor], *, need_label: bool, where: str) -> int:
    """Validate a chunk of rows against the model's schema; return its row count.

    Checks keys, dtypes, shapes and id ranges once per loaded chunk (a whole split, or a
    loader's buffer of row groups), so the per-step loop does not have to (an out-of-range
    id would silently read a neighbouring field's embedding rows).
    """
    widths = {
        "cat": len(schema.categorical),
        "cont": len(schema.continuous),
        "cross": len(schema.crosses),
    }
    keys = FEATURE_KEYS + (("label",) if need_label else ())
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"{where}: batch is missing {missing}")
    n = batch["cat"].shape[0]
    for k in keys:
        t = batch[k]
        if t.dtype != _DTYPES[k]:
            raise ValueError(f"{where}: '{k}' must be {_DTYPES[k]}, got {t.dtype}")
        want = (n,) if k == "label" else (n, widths[k])
        if tuple(t.shape) != want:
            raise ValueError(f"{where}: '{k}' has shape {tuple(t.shape)}, expected {want}")
    for key, fields in (("cat", schema.categorical), ("cross", schema.crosses)):
        if n and fields:
            ids = batch[key]
            cards = torch.tensor([f.cardinality for f in fields])
            bad = ((ids < 0) | (ids >= cards)).any(dim=0)
            if bad.any():
                f = fields[int(bad.nonzero()[0])]
                raise ValueError(
                    f"{where}: '{key}' field '{f.name}' has ids outside [0, {f.cardinality})"
                )
    if not torch.isfinite(batch["cont"]).all():
        raise ValueError(f"{where}: 'cont' contains NaN or infinite values")
    if need_label and not ((batch["label"] == 0) | (batch["label"] == 1)).all():
        raise ValueError(f"{where}: 'label' must be 0 or 1")
    return n


Batch = dict[str, torch.Tensor]
ChunkCheck = Callable[[Mapping[str, torch.Tensor]], object]


def chunk_check(schema, where: str) -> ChunkCheck:
    """What a source runs on every chunk it loads for `where` ("train", "val" or "predict"):
    `check_batch` against the model's schema, labels required except for "predict"."""
    return functools.partial(check_batch, schema, need_label=where != "predict", where=where)


PREDICT_BATCH_SIZE = 8192
_PROGRESS_INTERVAL_S = 0.5  # on_progress at most twice a second (plus a final call)


class BatchSource(Protocol):
    """Where batches come from: `rows` rows, yielded as batch dicts in the InputSchema layout
    ({"cat", "cont", "cross"[, "label"]}; extra keys are ignored by the trainer).

    `batches(epoch)`: epoch None yields every row once, in order, unshuffled (scoring);
    epoch k >= 1 yields every row once in an order that depends only on the source's seed
    and k (so runs are reproducible and an epoch can be replayed). The source owns the
    batch size. `check`, when given, is called on every chunk of rows the source loads
    (the whole split, or a buffer of row groups) before it is cut into batches; it raises
    ValueError on bad data, which the source may extend with where the chunk came from.
    """

    rows: int

    def batches(self, epoch: int | None, check: ChunkCheck | None = None) -> Iterator[Batch]: ...


class ShardableSource(BatchSource, Protocol):
    """A BatchSource that DDP can split (`models.distributed`): `shard(rank, world,
    batch_size)` is a BatchSource of `batch_size`-row batches over rank's share of every
    epoch, disjoint from the other ranks' shares and together covering every row;
    `epoch_rows(epoch)` is how many rows that share has in `epoch` (shares may differ by
    a few rows; the trainer then drops the excess so every rank takes the same steps).
    A shard's `rows` is its share of `batches(None)`."""

    def shard(self, rank: int, world: int, batch_size: int) -> BatchSource: ...

    def epoch_rows(self, epoch: int | None) -> int: ...


def shard_of(source: Any, rank: int, world: int, batch_size: int) -> Any:
    """A copy of a source with `rank`, `world` and `batch_size` attributes that reads rank's share
    (the source's `epoch_rows` and `batches` honour them); what both sources' `shard` return."""
    if not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank {rank} of {world}")
    out = copy.copy(source)
    out.rank, out.world, out.batch_size = rank, world, batch_size
    out.rows = out.epoch_rows(None)
    return out


GATHER_ROWS = 1 << 16  # rows of a shuffled epoch TensorBatches gathers at once


class TensorBatches:
    """A `BatchSource` over whole-split tensors already in memory (tests, small data).

    Args:
        data: {"cat", "cont", "cross"[, "label"]} tensors with the same number of rows.
        batch_size: rows per batch (the last batch of an epoch may be shorter).
        seed: with the epoch, fixes the epoch's permutation.
    A shuffled batch is `tensor[perm[i:i + B]]`, gathered `GATHER_ROWS` rows at a time (one
    gather per tensor, then views): between training steps the split has left the caches,
    and a batch's own gather cost 0.3 ms of a 7.5 ms `deepfm` step on Adult, against 2.5 ms
    for a whole 29k-row epoch at once. An in-order batch is a view. `shard(rank, world, B)`:
    every world-th row of each epoch's permutation (from `rank`), and in order the rank's
    contiguous block of rows. The whole split is one chunk, loaded once: each `check` runs on it
    once (the first epoch), not every epoch (1.6 ms an epoch of 29 steps on Adult).
    """

    rank, world = 0, 1

    def __init__(self, data: Mapping[str, torch.Tensor], batch_size: int = 1024, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "cat" not in data:
            raise ValueError(f"batch is missing ['cat'] (keys: {sorted(data)})")
        self.data = {k: v.contiguous() for k, v in data.items()}
        self.batch_size, self.seed = batch_size, seed
        self.rows = int(self.data["cat"].shape[0])
        self._passed: list[ChunkCheck] = []  # the checks the data passed (kept: their ids stay theirs)

    def shard(self, rank: int, world: int, batch_size: int) -> TensorBatches:
        return shard_of(self, rank, world, batch_size)

    def epoch_rows(self, epoch: int | None) -> int:
        lo, hi = self._block()
        return hi - lo if epoch is None else len(range(self.rank, self._all_rows, self.world))

    @property
    def _all_rows(self) -> int:
        return int(self.data["cat"].shape[0])

    def _block(self) -> tuple[int, int]:
        n = self._all_rows
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def batches(self, epoch: int | None, check: ChunkCheck | None = None) -> Iterator[Batch]:
        if check is not None and not any(c is check for c in self._passed):
            check(self.data)  # the whole split is one chunk
            self._passed.append(check)
        size = self.batch_size
        if epoch is None:
            lo, hi = self._block()
            for i in range(lo, hi, size):
                yield {k: v[i : min(i + size, hi)] for k, v in self.data.items()}
            return
        perm = torch.from_numpy(epoch_rng(self.seed, epoch).permutation(self._all_rows))[self.rank :: self.world]
        block = max(1, GATHER_ROWS // size) * size
        for start in range(0, len(perm), block):
            idx = perm[start : start + block]
            gathered = {k: v.index_select(0, idx) for k, v in self.data.items()}
            for i in range(0, len(idx), size):
                yield {k: v[i : i + size] for k, v in gathered.items()}


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The RNG of one epoch (and sub-stream): independent streams for every (seed, epoch),
    unlike `seed + epoch`, where seed 0 epoch 2 would replay seed 1 epoch 1."""
    return np.random.default_rng((seed, epoch, *more))


def as_source(data: BatchSource | Mapping[str, torch.Tensor], batch_size: int, seed: int = 0) -> BatchSource:
    """`data` itself when it is a BatchSource; a plain tensor dict wrapped in TensorBatches."""
    if isinstance(data, Mapping):
        return TensorBatches(data, batch_size=batch_size, seed=seed)
    if not (hasattr(data, "rows") and callable(getattr(data, "batches", None))):
        raise TypeError(f"expected a BatchSource or a dict of tensors, got {type(data).__name__}")
    return data


class Progress:
    """Calls `on_progress(rows_done, rows_total)` at most every _PROGRESS_INTERVAL_S."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int):
        self.callback, self.total, self.done = callback, total, 0
        self.last = -math.inf

    def add(self, rows: int) -> None:
        self.done += rows
        if self.callback is not None:
            now = time.monotonic()
            if now - self.last >= _PROGRESS_INTERVAL_S:
                self.last = now
                self.callback(self.done, self.total)

    def finish(self) -> None:
        """A last call; after an early stop the total shrinks to the rows done (bar at 100%)."""
        if self.callback is not None:
            self.callback(self.done, self.done)


def fit(
    model: nn.Module,
    train: BatchSource | Mapping[str, torch.Tensor],
    val: BatchSource | Mapping[str, torch.Tensor],
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_rank_epoch: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train `model` in place with Adam (`models.optim.build_optimizers`) on binary cross-entropy;
    return the history.

    Args:
        model: a model from `models.build_model` (it must carry `.schema`).
        train, val: BatchSources with labels (e.g. `tasks.loader.ParquetBatches`), or dicts
            of whole-split tensors {"cat", "cont", "cross", "label"}, which are wrapped in
            `TensorBatches(d, config.batch_size, config.seed)`. A source's own batch size
            and seed decide the batches; pass `config.batch_size` and `config.seed` to it.
        config: see `TrainConfig`. `config.processes > 1` trains with DDP in that many
            worker processes (`models.distributed.fit_distributed`; the sources must be
            picklable and have `shard`); the callbacks below still run in this process.
        on_epoch: called after each epoch with that epoch's history row
            {epoch, train_loss, val_logloss, val_auc, seconds}.
        on_progress: called as `on_progress(rows_done, rows_total)` with the training rows
            done so far out of `epochs * train.rows`, at most twice a second, and once at
            the end with `rows_total == rows_done` (so an early stop closes a bar at 100%).
        on_rank_epoch: called as `on_rank_epoch(rank, epoch)` in every training process
            after each epoch (rank 0 here when `processes == 1`); a picklable function
            (fault drills use it, `tasks.faults.rank_epoch`).
    Every chunk the sources load is checked against `model.schema` (`check_batch`); a
    1-row batch is skipped (BatchNorm cannot train on it). Validation AUC and logloss are
    exact over all validation rows. Early stopping: after `patience` epochs without a lower
    validation logloss, training stops; the weights of the best epoch are restored before
    returning. Runs are deterministic for a given seed and source order (the global RNG is
    left untouched); with `config.adapt_threads` the thread count follows the machine's load
    (`ThreadTuner`), which changes the weights' last bits only for `autoint` and `dhen`.
    Sets torch's intra-op thread count to `config.threads` (process-wide, left set).
    """
    if config.processes > 1:
        from models.distributed import fit_distributed

        return fit_distributed(model, train, val, config, on_epoch, on_progress, on_rank_epoch)
    torch.set_num_threads(config.threads)
    train = as_source(train, config.batch_size, config.seed)
    val = as_source(val, PREDICT_BATCH_SIZE)
    check_sizes(train.rows, val.rows)
    check_train, check_val = chunk_check(model.schema, "train"), chunk_check(model.schema, "val")

    def hook(epoch: int) -> None:
        if on_rank_epoch is not None:
            on_rank_epoch(0, epoch)

    return train_loop(
        model, model, lambda epoch: train.batches(epoch, check=check_train),
        lambda: _predict(model, val, check_val, with_labels=True), config,
        Progress(on_progress, config.epochs * train.rows), on_epoch, hook,
    )


def check_sizes(train_rows: int, val_rows: int) -> None:
    if train_rows < 2 or val_rows == 0:
        raise ValueError(f"need at least 2 training rows and 1 validation row, got {train_rows} and {val_rows}")


class OtherLoad:
    """The cores' worth of CPU time that other processes took, since the previous call (or the
    construction), on the CPUs this process may run on: their busy time in /proc/stat (steal
    included: a hypervisor running someone else) minus this process's own. None where
    /proc/stat cannot be read (not Linux)."""

    def __init__(self):
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and (self.cpus is None or int(name[3:]) in self.cpus):
                v = [int(x) for x in values] + [0] * 8
                busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
        own = os.times()
        return busy / self.tick, own.user + own.system, time.monotonic()

    def __call__(self) -> float | None:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[2] <= last[2]:
            return None
        return max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2])


class ThreadTuner:
    """Picks the torch thread count that trains fastest right now, between `threads` and 1.

    Two threads of one process meet at the end of every parallel kernel; when another
    process holds the core the partner thread runs on, the first one waits out the
    partner's descheduled time slice, every kernel. On 2 cores with one CPU-bound process per
    core, `wide_deep` trained at 28% of its quiet samples/s with 2 threads and 44% with 1;
    on a quiet machine 2 threads are 1.7x faster. So the trainer measures: after
    `warmup_steps` steps it times `probe_steps` real training steps with each count, taking
    turns (the steps train as usual), and keeps the one with the lower median time per row,
    where more threads must be `margin` times faster than one (a count that is not clearly
    faster also takes cores from the machine's other processes), until the next probe:
    `reprobe_s / 4` after the first probe (a wrong first pick would otherwise hold for the
    whole of a short training), every `reprobe_s` after that. Each turn is two steps with the
    same count, only the second timed: a step right after a switch pays for the switch (the
    idle OpenMP thread still spinning out its wait beside a one-thread step, cold caches).
    On busy cores the two counts' medians came out close, and without the margin a probe kept
    two threads in 3 of 4 runs of `wide_deep` (16-38% of the quiet samples/s; with it, one
    thread in 8 of 8 runs, 36-50%; two threads quiet in all of them).

    The thread count changes the floating-point summation order only in a few kernels: 12 of
    the 14 architectures train to bitwise the same weights with 1 and 2 threads (tested);
    `autoint` and `dhen` (attention and their norms) may differ in the last bits between runs
    on differently loaded machines. That needs MKL's strict reproducibility mode for its
    matrix products (`MKL_CBWR=AUTO,STRICT`, which `flows/__init__.py`, the Makefile and the
    Dockerfile set): without it, on some CPUs MKL splits a product's inner sum across threads.
    `TrainConfig.adapt_threads=False` keeps `threads` fixed.

    A probe costs a few steps at the slower count (six one-thread steps on a quiet machine,
    where two threads are 1.3-1.7x faster). With `others` (the trainer passes `OtherLoad`),
    the first probe waits until `first_window_s` have passed and runs only if other processes
    used at least `quiet_cores` of the process's CPUs meanwhile: the early probe is there so
    that a busy machine does not train for `reprobe_s / 4` at the wrong count; on a quiet one
    the later probes still check the pick. Beside busy processes (at least `quiet_cores`),
    more threads must be `busy_margin` times faster: a probe's few steps time two threads too
    kindly there (a partner descheduled for a whole time slice hits some steps, not all), and
    in the benchmark's busy runs probes with margin 1.15 still kept two threads in about a
    third of the runs (17-20% of the quiet samples/s, against 31-45% with one thread).
    Without `others`, the first probe follows the warm-up steps.

    Use: `threads()` before a step (sets torch's count when it changes), `done(rows)` after it.
    `adapt=False`: always `threads`. `clock` is injectable for tests. `steps`: the steps
    taken with each count; `skipped_first`: whether the first probe was left out.
    """

    def __init__(self, threads: int, adapt: bool = True, probe_steps: int = 3, reprobe_s: float = 20.0,
                 warmup_steps: int = 3, margin: float = 1.15, clock: Callable[[], float] = time.perf_counter,
                 others: Callable[[], float | None] | None = None, first_window_s: float = 0.2,
                 quiet_cores: float = 0.25, busy_margin: float = 1.5):
        self.options = (threads, 1) if adapt and threads > 1 else (threads,)
        self.probe_steps, self.reprobe_s, self.margin, self.clock = probe_steps, reprobe_s, margin, clock
        self.current = self.options[0]
        self._probe: list[tuple[int, float]] | None = None  # (threads, seconds per row) per timed step
        self._probe_step = 0  # steps into the current probe
        self._probes = 0  # probes finished
        self._warmup = warmup_steps  # the first steps build kernels and caches: not timed
        self._next_probe = -math.inf
        self._t0 = 0.0
        self.others, self.first_window_s, self.quiet_cores = others, first_window_s, quiet_cores
        self.busy_margin, self._probe_margin = busy_margin, margin
        self._created = clock()
        self.skipped_first = False
        self.steps: dict[int, int] = {}  # steps taken per thread count

    @property
    def probing(self) -> bool:
        """True between the first and the last step of a probe."""
        return self._probe is not None

    def threads(self) -> int:
        if (len(self.options) > 1 and self._probe is None and self._warmup <= 0 and self.clock() >= self._next_probe
                and self._probe_wanted()):
            self._probe, self._probe_step = [], 0
        if self._probe is not None:  # the counts take turns of two steps, so a passing burst of load hits both
            self._set(self.options[self._probe_step // 2 % len(self.options)])
        self._t0 = self.clock()
        return self.current

    def done(self, rows: int) -> None:
        self._warmup -= 1
        self.steps[self.current] = self.steps.get(self.current, 0) + 1
        if self._probe is None:
            return
        if self._probe_step % 2:  # the second step of a turn: timed
            self._probe.append((self.current, (self.clock() - self._t0) / max(rows, 1)))
        self._probe_step += 1
        if len(self._probe) == self.probe_steps * len(self.options):
            median = {t: float(np.median([s for u, s in self._probe if u == t])) for t in self.options}
            self._set(min(self.options, key=lambda t: (median[t] * (self._probe_margin if t > 1 else 1.0), t)))
            self._probe = None
            self._schedule_next_probe()

    def _schedule_next_probe(self) -> None:
        """After a probe (run or skipped): the next one `reprobe_s / 4` after the first, then
        every `reprobe_s`."""
        self._probes += 1
        self._next_probe = self.clock() + (self.reprobe_s / 4 if self._probes == 1 else self.reprobe_s)

    def _probe_wanted(self) -> bool:
        """True for every probe but a first one that `others` says the machine does not need
        (then scheduled past as if it had run).
        Sets the probe's margin: `busy_margin` when other processes keep the CPUs busy."""
        if self.others is None:
            return True
        if not self._probes and self.clock() - self._created < self.first_window_s:
            return False
        load = self.others()
        quiet = load is not None and load < self.quiet_cores
        self._probe_margin = self.margin if quiet or load is None else self.busy_margin
        if self._probes or not quiet:
            return True
        self.skipped_first = True
        self._schedule_next_probe()
        return False

    def _set(self, threads: int) -> None:
        if threads != self.current or torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.current = threads


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc's malloc keep freed blocks for the next step instead of handing them back.

    By default a block of over 128 KB is mmap'ed and every step's activations (1 MB each at
    batch 1,024 and width 256) came back as fresh pages: 150-200 page faults per `dcn` step,
    1.2 us each here, and four 1 MB tensors made and dropped in a loop took 1.5 ms instead of
    0.07. With blocks up to 32 MB taken from the heap and up to 256 MB of free heap kept,
    wide_deep and dcn trained 10-15% faster (1-3 faults per step). A no-op without glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass


def train_loop(
    model: nn.Module,
    step_module: nn.Module,
    epoch_batches: Callable[[int], Iterator[Batch]],
    validate: Callable[[], tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
    progress: Progress,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
    all_sum: Callable[[list[float]], list[float]] | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """The epochs of `fit`, shared with every DDP rank (models/distributed.py).

    `model` owns the parameters (its state is what is kept and restored); `step_module`
    runs the training forward (the model, or its DistributedDataParallel wrapper).
    `epoch_batches(epoch)` yields this process's batches; `validate()` returns every
    validation row's (probabilities, labels), the same on every rank. `all_sum` sums
    floats over the ranks (None: one process), so the train loss, the divergence check
    and hence every early-stopping decision are the same on all ranks. `device`: where
    batches go (None: they stay on the CPU).
    """
    _keep_freed_memory()
    optimizer = build_optimizers(model, config.lr, config.wide_lr, config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    autocast_dtype, autocast_device = PRECISIONS[config.precision], device.type if device is not None else "cpu"
    result = TrainResult()
    threads = torch.get_num_threads()
    tuner = ThreadTuner(threads, adapt=config.adapt_threads, others=OtherLoad() if config.adapt_threads else None)
    progress.add(0)
    best_state = None
    bad_epochs, train_seconds, samples = 0, 0.0, 0
    with torch.random.fork_rng(devices=[]), kernels.use_native(config.native_kernels):
        torch.manual_seed(config.seed)  # dropout masks
        for epoch in range(1, config.epochs + 1):
            step_module.train()
            start = time.perf_counter()
            loss_sum, seen = torch.zeros((), dtype=torch.float64), 0  # summed without a host sync per step
            for batch in epoch_batches(epoch):
                b = batch["label"].shape[0]
                if b < 2:  # a 1-row tail batch would break BatchNorm; skip it
                    progress.add(b)
                    continue
                if device is not None:
                    batch = {k: batch[k].to(device, non_blocking=True) for k in (*FEATURE_KEYS, "label")}
                tuner.threads()
                with torch.autocast(autocast_device, dtype=autocast_dtype or torch.bfloat16,
                                    enabled=autocast_dtype is not None):
                    logits = step_module({k: batch[k] for k in FEATURE_KEYS})
                loss = loss_fn(logits.float(), batch["label"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                tuner.done(b)
                loss_sum += loss.detach() * b
                seen += b
                progress.add(b)
            total_loss = float(loss_sum)
            epoch_train_s = time.perf_counter() - start
            if all_sum is not None:
                total_loss, seen_all = all_sum([total_loss, float(seen)])
                seen_all = int(seen_all)
            else:
                seen_all = seen
            train_seconds += epoch_train_s
            samples += seen_all
            p_val, y_val = validate()
            row = {
                "epoch": epoch,
                "train_loss": total_loss / max(seen_all, 1),
                "val_logloss": log_loss(y_val, p_val),
                "val_auc": roc_auc(y_val, p_val),
                "seconds": time.perf_counter() - start,
            }
            result.history.append(row)
            if on_epoch is not None:
                on_epoch(dict(row))
            if after_epoch is not None:
                after_epoch(epoch)
            if not math.isfinite(row["train_loss"]):
                break  # diverged; keep the best finite epoch
            if row["val_logloss"] < result.best_val_logloss:
                result.best_epoch = epoch
                result.best_val_logloss = row["val_logloss"]
                result.best_val_auc = row["val_auc"]
                best_state = copy.deepcopy(model.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
                if bad_epochs >= config.patience:
                    break
    progress.finish()
    torch.set_num_threads(threads)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.train_samples_per_s = samples / train_seconds if train_seconds > 0 else 0.0
    result.steps_by_threads = dict(sorted(tuner.steps.items(), reverse=True))
    return result


def predict_proba(
    model: nn.Module,
    source: BatchSource | Mapping[str, torch.Tensor],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
    """Click probabilities for every row of `source`, in its order (a "label" is ignored).

    Args:
        source: a BatchSource (read with `batches(None)`: every row once, in order; its own
            batch size applies) or a dict of whole-split tensors, scored `batch_size` rows
            at a time.
    Runs in eval mode under `torch.inference_mode`; every loaded chunk is checked against
    `model.schema` first (one cheap pass over the ids). Returns float64 (rows,), clipped
    into the open interval (0, 1).
    """
    p, _ = _predict(model, as_source(source, batch_size), chunk_check(model.schema, "predict"), with_labels=False)
    return p


def evaluate(
    model: nn.Module,
    source: BatchSource | Mapping[str, torch.Tensor],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> tuple[float, float]:
    """(logloss, AUC) of `model` over every row of a labelled source, computed as `fit`
    validates after each epoch (e.g. where a warm-started model starts, before its first step)."""
    p, y = _predict(model, as_source(source, batch_size), chunk_check(model.schema, "val"), with_labels=True)
    return log_loss(y, p), roc_auc(y, p)


def _predict(
    model: nn.Module, source: BatchSource, check: ChunkCheck, *, with_labels: bool,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (and labels, when asked) of every row of `source`, in order (batches
    moved to `device` when given)."""
    model.eval()
    n = source.rows
    out = np.empty(n, dtype=np.float64)
    labels = np.empty(n, dtype=np.float32) if with_labels else None
    i = 0
    with torch.inference_mode():
        for batch in source.batches(None, check=check):
            b = batch["cat"].shape[0]
            if i + b > n:
                raise ValueError(f"source yielded more than its {n} rows")
            feats = {k: batch[k] if device is None else batch[k].to(device) for k in FEATURE_KEYS}
            out[i : i + b] = torch.sigmoid(model(feats).double()).cpu().numpy()
            if labels is not None:
                labels[i : i + b] = batch["label"].numpy()
            i += b
    if i != n:
        raise ValueError(f"source yielded {i} rows, expected {n}")
    eps = np.finfo(np.float64).eps
    return np.clip(out, eps, 1.0 - eps), labels
