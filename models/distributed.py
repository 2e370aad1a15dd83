"""Distributed data-parallel training: the trainer's epochs in N processes (PyTorch DDP).

Launching. `fit` calls `fit_distributed` when `TrainConfig.processes > 1`. It writes the
job (model, sources, config) to a temporary file, hosts the rendezvous store the way
torchrun's agent does (a TCPStore on 127.0.0.1 and a free port, or on MASTER_ADDR /
MASTER_PORT when they are set), starts the ranks with torch.multiprocessing (spawn) and
supervises them: rank 0's epoch rows and progress come back over a queue and reach
`on_epoch` / `on_progress` in the calling process (so MLflow logging and progress bars stay
where they were); rank 0 writes the trained weights and the history for the caller to
load. A rank that fails (an exception, a signal, an exit) stops the others and raises one
`DistributedTrainingError` naming the rank and the cause; a rank that hangs makes its peers'
collectives fail after `TrainConfig.ddp_timeout_s`. The same rank code runs under torchrun,
on one machine or several: `python -m models.distributed JOB --out RESULT` (see README,
Scale), with a job written by `save_job`.

One rank. The model comes from the job (the same weights on every rank; DDP also
broadcasts rank 0's parameters and buffers when it wraps the model), wrapped in
`DistributedDataParallel` (gloo on CPU, NCCL with CUDA). Each epoch the rank reads its
share of the training source (`ShardableSource.shard`: for parquet, every N-th row group of
the epoch's shuffled row-group order, so ranks never read the same rows) in batches of
`batch_size // N` rows, so a step still consumes `batch_size` rows over all ranks. Shares
differ by up to a row group, so every rank takes the smallest share's number of full
batches and drops the rest of its share for that epoch (DistributedSampler's drop_last; the
order is reshuffled every epoch, so different rows are dropped each time): equal step
counts are what keep the collectives from waiting for a rank that has finished. Validation
is sharded the same way; the predictions are gathered on every rank, so every rank computes
the same exact AUC and logloss and takes the same early-stopping decision. Threads per rank:
`threads // local ranks`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from queue import Empty

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.trainer import (
    PREDICT_BATCH_SIZE,
    Batch,
    BatchSource,
    Progress,
    ShardableSource,
    TrainConfig,
    TrainResult,
    _predict,
    as_source,
    check_sizes,
    chunk_check,
    train_loop,
)

_POLL_S = 0.2  # how often the supervisor looks at the ranks between events
_STOP_S = 10.0  # SIGTERM, then SIGKILL after this long


class DistributedTrainingError(RuntimeError):
    """A training process failed; the message names the rank and why."""


@dataclass
class TrainJob:
    """What every rank needs, pickled into one file (torch.save): the model with its initial
    weights, the two sources (they must have `shard`), the config, and an optional hook
    called in every rank after each epoch as `on_rank_epoch(rank, epoch)`."""

    model: nn.Module
    train: ShardableSource
    val: ShardableSource
    config: TrainConfig
    on_rank_epoch: Callable[[int, int], None] | None = None


def save_job(path: str | Path, job: TrainJob) -> Path:
    for name, source in (("train", job.train), ("val", job.val)):
        _shardable(source, name)
    path = Path(path)
    torch.save(job, path)
    return path


def load_job(path: str | Path) -> TrainJob:
    # the job pickles a model and sources: only load jobs you wrote (like a model bundle)
    return torch.load(path, weights_only=False)


def load_result(path: str | Path, model: nn.Module) -> TrainResult:
    """Load rank 0's trained weights into `model` (eval mode); return the history."""
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return saved["result"]


def weights_digest(model: nn.Module) -> str:
    """A fingerprint of every parameter and buffer (bitwise), to compare ranks."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def fit_distributed(
    model: nn.Module,
    train: BatchSource | Mapping[str, torch.Tensor],
    val: BatchSource | Mapping[str, torch.Tensor],
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_rank_epoch: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """`models.trainer.fit` in `config.processes` local processes; `model` is trained in place.

    Raises DistributedTrainingError naming the rank when a rank fails, after the other
    ranks have been stopped (no process is left behind), or when the ranks ended with
    different weights (a DDP bug; never seen).
    """
    world = config.processes
    train = _shardable(as_source(train, config.batch_size, config.seed), "train")
    val = _shardable(as_source(val, PREDICT_BATCH_SIZE), "val")
    check_sizes(train.rows, val.rows)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="recloop-ddp-") as tmp:
        job = save_job(Path(tmp) / "job.pt", TrainJob(model, train, val, config, on_rank_epoch))
        result_path = Path(tmp) / "result.pt"
        store, addr, port = _host_store(world, config.ddp_timeout_s)
        env = {"MASTER_ADDR": addr, "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "TORCHELASTIC_USE_AGENT_STORE": "True"}
        events = ctx.Queue()
        procs = [ctx.Process(target=_spawned, args=(r, str(job), str(result_path), env, events, tmp),
                             name=f"recloop-ddp-rank{r}", daemon=True) for r in range(world)]
        try:
            for p in procs:
                p.start()
            _supervise(procs, events, on_epoch, on_progress, Path(tmp))
        finally:
            _stop(procs)
            events.close()
            del store
        result = load_result(result_path, model)
    if len(result.rank_digests) != world or len(set(result.rank_digests)) != 1:
        raise DistributedTrainingError(f"the {world} ranks ended with different weights: {result.rank_digests}")
    return result


def run_rank(job: TrainJob, result_path: str | Path | None, events=None) -> TrainResult:
    """One DDP rank, configured by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); rank 0 writes `result_path`. `events`: a
    queue for rank 0's epoch rows and progress (None: epoch rows are printed)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    config = job.config
    per_rank = config.batch_size // world
    if per_rank < 2:
        raise ValueError(f"batch_size {config.batch_size} gives {per_rank} rows per rank over {world} ranks; "
                         f"need >= 2")
    torch.set_num_threads(max(1, config.threads // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else None
    if device is not None:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=config.ddp_timeout_s))
    try:
        model = job.model if device is None else job.model.to(device)
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
        train = _shardable(job.train, "train").shard(rank, world, per_rank)
        val = _shardable(job.val, "val").shard(rank, world, PREDICT_BATCH_SIZE)
        check_train, check_val = chunk_check(model.schema, "train"), chunk_check(model.schema, "val")

        def all_sum(values: list[float]) -> list[float]:
            t = torch.tensor(values, dtype=torch.float64, device=device)
            dist.all_reduce(t)
            return t.tolist()

        def epoch_batches(epoch: int) -> Iterator[Batch]:
            t = torch.tensor([train.epoch_rows(epoch) // per_rank], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            steps = int(t.item())
            if steps == 0:  # the same on every rank, so all of them stop here
                raise ValueError(f"epoch {epoch}: some of the {world} ranks' shares of the {job.train.rows} training "
                                 f"rows hold fewer than {per_rank} rows (one batch); use fewer processes or "
                                 f"smaller row groups")
            return _take(train.batches(epoch, check=check_train), steps)

        def validate() -> tuple[np.ndarray, np.ndarray]:
            for buffer in model.buffers():  # BatchNorm statistics: rank 0's, as DDP's forward uses
                dist.broadcast(buffer, 0)
            p, y = _predict(model, val, check_val, with_labels=True, device=device)
            parts: list = [None] * world
            dist.all_gather_object(parts, (p, y))
            return np.concatenate([q for q, _ in parts]), np.concatenate([lab for _, lab in parts])

        def after_epoch(epoch: int) -> None:
            if job.on_rank_epoch is not None:
                job.on_rank_epoch(rank, epoch)

        progress = Progress(None, config.epochs * (job.train.rows // world))
        on_epoch = None
        if rank == 0:
            if events is not None:
                progress.callback = lambda done, total: events.put(("progress", done * world, total * world))
                on_epoch = lambda row: events.put(("epoch", row))  # noqa: E731
            else:
                on_epoch = lambda row: print(f"epoch {row['epoch']}: {row}", flush=True)  # noqa: E731
        result = train_loop(model, ddp, epoch_batches, validate, config, progress, on_epoch, after_epoch,
                            all_sum=all_sum, device=device)
        digests: list = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
        result.rank_digests = tuple(digests)
        if rank == 0 and result_path is not None:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            tmp = Path(f"{result_path}.tmp")
            torch.save({"state_dict": state, "result": result}, tmp)
            tmp.replace(result_path)
        return result
    finally:
        dist.destroy_process_group()


def _shardable(source, name: str) -> ShardableSource:
    if not (callable(getattr(source, "shard", None)) and callable(getattr(source, "epoch_rows", None))):
        raise TypeError(f"training in several processes needs a {name} source with shard() and epoch_rows() "
                        f"(ParquetBatches, TensorBatches or a dict of tensors); got {type(source).__name__}")
    return source


def _take(batches: Iterator[Batch], steps: int) -> Iterator[Batch]:
    """The first `steps` batches; the source is closed after them (its prefetch stops)."""
    try:
        for _ in range(steps):
            batch = next(batches, None)
            if batch is None:
                raise ValueError(f"the source ended before its {steps} batches")
            yield batch
    finally:
        batches.close()


def _host_store(world: int, timeout_s: float) -> tuple[dist.TCPStore, str, int]:
    """The rendezvous store, hosted here as torchrun's agent hosts it (the ranks connect as
    clients): MASTER_ADDR / MASTER_PORT when set, else 127.0.0.1 and a port the OS picks
    (no probe-then-bind race)."""
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", 0))
    store = dist.TCPStore(addr, port, world, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s))
    return store, addr, store.port


def _spawned(rank: int, job_path: str, result_path: str, env: dict[str, str], events, err_dir: str) -> None:
    """A spawned rank: die with the parent, run, and on failure leave a record for it."""
    with contextlib.suppress(Exception):  # Linux: SIGKILL this rank when the parent dies
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    try:
        run_rank(load_job(job_path), result_path, events)
    except BaseException as exc:
        traceback.print_exc()
        peer = isinstance(exc, dist.DistError) or any(w in str(exc) for w in ("gloo", "NCCL", "Connection closed"))
        cause = f"raised {type(exc).__name__}: {exc}".splitlines()[0]
        record = {"cause": cause, "peer": peer, "traceback": traceback.format_exc()}
        torch.save(record, Path(err_dir) / f"rank{rank}.err")
        _exit_now(1, events)
    _exit_now(0, events)


def _exit_now(code: int, events=None) -> None:
    """Leave without the interpreter's teardown. After `destroy_process_group` a C++ thread of
    torch.distributed can still be joinable when static destructors run, and the rank then
    dies of SIGABRT ("terminate called without an active exception") after finishing its
    work: one run in five of tests/unit/test_distributed.py on a 2-core AMD machine."""
    if events is not None:
        events.close()
        events.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _supervise(procs, events, on_epoch, on_progress, err_dir: Path) -> None:
    """Relay rank 0's events until every rank has exited 0; raise on the first failure."""
    while True:
        _relay(events, on_epoch, on_progress, _POLL_S)
        codes = [p.exitcode for p in procs]
        if any(c not in (None, 0) for c in codes):
            raise _failure(procs, err_dir)
        if all(c == 0 for c in codes):
            _relay(events, on_epoch, on_progress, 0)
            return


def _relay(events, on_epoch, on_progress, timeout: float) -> None:
    try:
        item = events.get(timeout=timeout) if timeout else events.get_nowait()
        while True:
            if item[0] == "epoch" and on_epoch is not None:
                on_epoch(item[1])
            elif item[0] == "progress" and on_progress is not None:
                on_progress(item[1], item[2])
            item = events.get_nowait()
    except Empty:
        return


def _failure(procs, err_dir: Path) -> DistributedTrainingError:
    """The error for the first failure: the rank that failed on its own (killed, or an
    exception of its own), rather than the peers whose collectives broke because it left."""
    time.sleep(_POLL_S)  # peers that fail because of it usually exit within this
    failed = []
    for rank, p in enumerate(procs):
        code = p.exitcode
        if code in (None, 0):
            continue
        path = err_dir / f"rank{rank}.err"
        if path.exists():
            rec = torch.load(path, weights_only=False)
            failed.append((rec["peer"], rank, rec["cause"], rec["traceback"]))
        elif code < 0:
            failed.append((False, rank, f"was killed by {signal.Signals(-code).name}", ""))
        else:
            failed.append((False, rank, f"exited with code {code}", ""))
    failed.sort()
    _, rank, cause, tb = failed[0]
    others = [r for _, r, _, _ in failed[1:]]
    also = f" (then rank(s) {others} failed too)" if others else ""
    err = DistributedTrainingError(f"distributed training failed: rank {rank} of {len(procs)} {cause}{also}")
    if tb:
        err.add_note(f"rank {rank}'s traceback:\n{tb}")
    return err


def _stop(procs) -> None:
    """Stop every rank still running: SIGTERM, then SIGKILL."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + _STOP_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def main(argv: list[str] | None = None) -> int:
    """The torchrun entry point: `torchrun [...] -m models.distributed JOB --out RESULT`."""
    parser = argparse.ArgumentParser(prog="python -m models.distributed",
                                     description="Train one job (models.distributed.save_job) as one DDP rank.")
    parser.add_argument("job", help="a job file written by models.distributed.save_job")
    parser.add_argument("--out", required=True, help="where rank 0 writes the weights and history "
                        "(load with models.distributed.load_result)")
    args = parser.parse_args(argv)
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        parser.error(f"run under torchrun (or set {', '.join(missing)})")
    from torch.distributed.elastic.multiprocessing.errors import record

    record(run_rank)(load_job(args.job), args.out)
    return 0


if __name__ == "__main__":
    _exit_now(main())
