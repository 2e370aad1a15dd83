"""Training in several processes (DDP on CPU, gloo): disjoint shares of the row groups, the
same weights on every rank, the single-process AUC, and a rank that dies failing the fit
with its rank named. The ranks are real spawned processes (a few seconds each to start)."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_loader import ROW_GROUP, SCHEMA, write_days

from models import build_model
from models.distributed import (
    DistributedTrainingError,
    TrainJob,
    load_result,
    save_job,
    weights_digest,
)
from models.trainer import TensorBatches, TrainConfig, fit
from tasks import faults
from tasks.loader import ParquetBatches

REPO = Path(__file__).resolve().parents[2]
TRAIN_DAYS = (3000, 2950, 3020)  # uneven: the ranks' shares differ by a row group
BATCH = 256
CONFIG = TrainConfig(epochs=3, batch_size=BATCH, threads=2, seed=0, patience=3)


def source(files, **kwargs):
    return ParquetBatches.for_schema(files, SCHEMA, "click", batch_size=BATCH, seed=0, shuffle_row_groups=4,
                                     extra=["row_id"], **kwargs)


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    files = write_days(root, rows=(*TRAIN_DAYS, 3000), seed=1)
    return files[:-1], files[-1:]


class Recording:
    """A training source whose shards save the row ids of every batch the trainer takes,
    one file per (rank, epoch, batch), from inside the rank's process."""

    def __init__(self, inner: ParquetBatches, out: Path):
        self.inner, self.out, self.rows = inner, str(out), inner.rows

    def batches(self, epoch, check=None):
        return self.inner.batches(epoch, check)

    def epoch_rows(self, epoch):
        return self.inner.epoch_rows(epoch)

    def shard(self, rank, world, batch_size):
        return RecordingShard(self.inner.shard(rank, world, batch_size), self.out, rank)


class RecordingShard:
    def __init__(self, inner, out, rank):
        self.inner, self.out, self.rank, self.rows = inner, out, rank, inner.rows

    def epoch_rows(self, epoch):
        return self.inner.epoch_rows(epoch)

    def batches(self, epoch, check=None):
        with contextlib.closing(self.inner.batches(epoch, check)) as batches:
            for i, batch in enumerate(batches):
                np.save(Path(self.out) / f"rank{self.rank}_epoch{epoch}_{i:04d}.npy", batch["row_id"].numpy())
                yield batch


def seen(out: Path, rank: int, epoch: int) -> list[np.ndarray]:
    return [np.load(p) for p in sorted(out.glob(f"rank{rank}_epoch{epoch}_*.npy"))]


def test_shards_split_the_row_groups_of_every_epoch_disjointly(days):
    train, _ = days
    full = source(train)
    group_of = {}  # row id -> global row-group index
    for g, (fi, rg, n) in enumerate(full.row_groups):
        first = sum(TRAIN_DAYS[:fi]) + rg * ROW_GROUP
        group_of.update({r: g for r in range(first, first + n)})
    for epoch in (1, 2, None):
        shards = [full.shard(r, 2, BATCH // 2) for r in range(2)]
        ids = [np.concatenate([b["row_id"].numpy() for b in s.batches(epoch)]) for s in shards]
        assert [len(i) for i in ids] == [s.epoch_rows(epoch) for s in shards]
        assert not set(ids[0]) & set(ids[1])
        assert sorted(np.concatenate(ids)) == list(range(full.rows))
        groups = [{group_of[r] for r in i} for i in ids]
        assert not groups[0] & groups[1] and abs(len(groups[0]) - len(groups[1])) <= 1
    data = {k: torch.arange(10)[:, None] for k in ("cat", "cont", "cross")}
    for epoch in (1, None):
        parts = [torch.cat([b["cat"] for b in TensorBatches(data, 3).shard(r, 3, 2).batches(epoch)]) for r in range(3)]
        assert sorted(torch.cat(parts).flatten().tolist()) == list(range(10))


def test_two_processes_read_disjoint_rows_end_equal_and_match_one_process(days, tmp_path):
    train, val = days
    one = build_model("wide_deep", SCHEMA, {"embedding_dim": 8, "hidden": [32, 16]}, seed=0)
    single = fit(one, source(train), source(val), CONFIG)

    model = build_model("wide_deep", SCHEMA, {"embedding_dim": 8, "hidden": [32, 16]}, seed=0)
    epochs, progress = [], []
    result = fit(model, Recording(source(train), tmp_path), source(val), dataclasses.replace(CONFIG, processes=2),
                 on_epoch=epochs.append, on_progress=lambda done, total: progress.append((done, total)))

    # Rank 0's epochs and progress reached this process; the history matches them.
    assert [row["epoch"] for row in epochs] == [1, 2, 3] and epochs == result.history
    assert progress[-1][0] == progress[-1][1] > 0
    full = source(train)
    for epoch in (1, 2, 3):
        ranks = [seen(tmp_path, r, epoch) for r in range(2)]
        # the same number of full per-rank batches on both ranks (the collectives' contract)
        assert len(ranks[0]) == len(ranks[1]) > 0
        assert all(len(b) == BATCH // 2 for r in ranks for b in r)
        ids = [np.concatenate(r) for r in ranks]
        assert not set(ids[0]) & set(ids[1]), f"epoch {epoch}: a row was read by both ranks"
        assert len(set(ids[0])) == len(ids[0])
        # what was dropped to equalise the steps is less than a row group plus a batch per rank
        assert full.rows - sum(len(i) for i in ids) < 2 * (ROW_GROUP + BATCH // 2)
    # identical weights on both ranks (each rank hashed its own), and they are what came back
    assert len(result.rank_digests) == 2 and len(set(result.rank_digests)) == 1
    assert weights_digest(model) == result.rank_digests[0]
    assert abs(result.best_val_auc - single.best_val_auc) < 0.005, (result.best_val_auc, single.best_val_auc)


def test_tables_with_sparse_row_gradients_train_identically_on_both_ranks(days):
    """A cross with 2^20 buckets makes both of wide_deep's tables large enough for sparse row
    gradients (`layers.SPARSE_TABLE_VALUES`): DDP all-reduces them as sparse tensors."""
    train, val = days
    big = dataclasses.replace(SCHEMA, crosses=(dataclasses.replace(SCHEMA.crosses[0], cardinality=1 << 20),))
    hparams = {"embedding_dim": 8, "hidden": [32, 16], "use_crosses": True}
    model = build_model("wide_deep", big, hparams, seed=0)
    assert model.wide.weights.embedding.sparse and model.deep.inputs.embedding.embedding.sparse
    single = fit(build_model("wide_deep", big, hparams, seed=0), source(train), source(val), CONFIG)
    result = fit(model, source(train), source(val), dataclasses.replace(CONFIG, processes=2))
    assert len(result.rank_digests) == 2 and len(set(result.rank_digests)) == 1
    assert abs(result.best_val_auc - single.best_val_auc) < 0.005, (result.best_val_auc, single.best_val_auc)


def test_a_rank_that_raises_fails_the_fit_naming_the_rank_and_the_cause(days, tmp_path):
    train, val = days
    # a bad id in the first row group rank 1 reads in epoch 1
    g = source(train).shard(1, 2, BATCH // 2).plan(1)[0][0]
    fi, rg, _ = source(train).row_groups[g]
    bad = write_days(tmp_path, rows=(*TRAIN_DAYS, 3000), seed=1,
                     bad_user_at=sum(TRAIN_DAYS[:fi]) + rg * ROW_GROUP)
    model = build_model("wide", SCHEMA, None, seed=0)
    config = TrainConfig(epochs=1, batch_size=BATCH, threads=2, processes=2)
    with pytest.raises(DistributedTrainingError,
                       match=rf"rank 1 of 2 raised ValueError: train: 'cat' field 'user' has ids outside "
                             rf"\[0, 40\) \(in .*part_0{fi}.parquet row group {rg}\)"):
        fit(model, source(bad[:-1]), source(bad[-1:]), config)
    assert multiprocessing.active_children() == []


def test_a_killed_rank_fails_the_fit_naming_the_rank(days, monkeypatch):
    train, val = days
    monkeypatch.setenv(faults.ENV, faults.RANK_POINT.format(rank=1))
    model = build_model("wide", SCHEMA, None, seed=0)
    before = weights_digest(model)
    config = TrainConfig(epochs=3, batch_size=BATCH, threads=2, processes=2)
    with pytest.raises(DistributedTrainingError, match=r"rank 1 of 2 was killed by SIGKILL"):
        fit(model, source(train), source(val), config, on_rank_epoch=faults.rank_epoch)
    assert multiprocessing.active_children() == []
    assert weights_digest(model) == before  # nothing half-trained came back


def test_torchrun_runs_a_saved_job(days, tmp_path):
    train, val = days
    model = build_model("wide", SCHEMA, None, seed=0)
    job = save_job(tmp_path / "job.pt", TrainJob(model, source(train), source(val), CONFIG))
    out = tmp_path / "result.pt"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "models.distributed", str(job), "--out", str(out)],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{Path(__file__).parent}"},
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    result = load_result(out, model)
    assert len(result.rank_digests) == 2 and len(set(result.rank_digests)) == 1
    assert weights_digest(model) == result.rank_digests[0] and result.best_val_auc > 0.7


def test_processes_is_a_train_setting_with_a_clear_error(monkeypatch, tmp_path):
    from feature_store.errors import ParameterError
    from tasks.settings import get_settings

    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("RECLOOP_TRAIN_PROCESSES", "2")
    assert get_settings().train.processes == 2 and TrainConfig().processes == 1
    monkeypatch.setenv("RECLOOP_TRAIN_PROCESSES", "0")
    with pytest.raises(ParameterError, match="RECLOOP_TRAIN_PROCESSES='0'.*need processes >= 1"):
        get_settings()
