"""Batches streamed from the transformed parquet files, for `models.trainer.fit`.

`ParquetBatches` is a `models.trainer.BatchSource` over the files the fitted workflow
writes (one column per categorical field, cross, continuous input and the label). It reads
whole row groups with pyarrow (`ParquetFile.read_row_group(i, columns=...)`), turns each
column into numpy and then torch without per-row Python, and yields contiguous slices.

Shuffling is the usual two-level one (as in merlin-dataloader or tf.data's shuffle buffer):
every epoch the row-group order is permuted (seeded by (seed, epoch)), consecutive groups of
`shuffle_row_groups` row groups are concatenated into a buffer, and the buffer's rows are
permuted. A buffer draws its row groups from across all files, so a batch mixes days even
when every file holds one day. Memory is bounded by the buffer, not by the files: at most
two buffers (the one being cut into batches and, with `prefetch`, the next one, read in a
background thread; pyarrow and torch release the GIL while they work).
benchmarks/loader_speed.py measures the speed and how close this shuffle comes to a full
permutation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.schema import InputSchema
from models.trainer import Batch, ChunkCheck, epoch_rng, shard_of

_RESERVED = ("cat", "cont", "cross", "label")


class ParquetBatches:
    """A BatchSource over parquet files in the InputSchema layout.

    Args:
        files: parquet files; their row groups are the unit of reading and of shuffling.
        cat, cont, cross: column names, in the order of the schema's "cat", "cont" and
            "cross" fields (integer columns for cat/cross, read as int64; cont as float32).
        label: the label column (read as float32), or None for unlabelled scoring data.
        batch_size: rows per batch; only the last batch of an epoch may be shorter
            (rows left at the end of a buffer are joined with the next buffer's first rows).
        seed: with the epoch, fixes the row-group order and the in-buffer permutations.
        shuffle_row_groups: row groups per buffer (the memory bound and the shuffle window).
        prefetch: read the next buffer in a background thread while this one is consumed.
        extra: more columns yielded as 1-D tensors under their own names (row ids, days).
    `batches(None)` yields every row once in file order (files in the given order, row
    groups in file order) and never shuffles: predictions line up with the files' rows.

    `shard(rank, world, batch_size)` (DDP, `models.trainer.ShardableSource`): the rank reads
    every world-th row group of each epoch's shuffled row-group order (from `rank`), and of
    the file order for `batches(None)`; ranks never read the same row group.
    """

    rank, world = 0, 1

    def __init__(
        self,
        files: Sequence[str | Path],
        cat: Sequence[str],
        cont: Sequence[str],
        cross: Sequence[str],
        label: str | None,
        batch_size: int = 1024,
        seed: int = 0,
        shuffle_row_groups: int = 8,
        prefetch: bool = True,
        extra: Sequence[str] = (),
    ):
        if batch_size < 1 or shuffle_row_groups < 1:
            raise ValueError(f"need batch_size >= 1 and shuffle_row_groups >= 1, got "
                             f"{batch_size} and {shuffle_row_groups}")
        clash = [c for c in extra if c in _RESERVED]
        if clash:
            raise ValueError(f"extra columns may not be named {clash} (batch keys)")
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("ParquetBatches needs at least one file")
        self.cat, self.cont, self.cross = list(cat), list(cont), list(cross)
        self.label, self.extra = label, list(extra)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle_row_groups, self.prefetch = shuffle_row_groups, prefetch
        self.columns = [*self.cat, *self.cont, *self.cross, *([label] if label else []), *self.extra]
        # (file index, row group index, rows), in file order
        self.row_groups: list[tuple[int, int, int]] = []
        for fi, path in enumerate(self.files):
            pf = pq.ParquetFile(path)
            _check_columns(path, pf.schema_arrow, self)
            for rg in range(pf.metadata.num_row_groups):
                self.row_groups.append((fi, rg, pf.metadata.row_group(rg).num_rows))
        self.rows = sum(r for _, _, r in self.row_groups)

    @classmethod
    def for_schema(cls, files: Sequence[str | Path], schema: InputSchema, label: str | None,
                   **kwargs) -> ParquetBatches:
        """The columns named by the model's schema (as the fitted workflow writes them)."""
        return cls(files, [f.name for f in schema.categorical], list(schema.continuous),
                   [f.name for f in schema.crosses], label, **kwargs)

    def column(self, name: str) -> np.ndarray:
        """One column of every row in file order, the `batches(None)` order (e.g. the labels
        the evaluation scores predictions against); reads only that column."""
        return np.concatenate([pq.read_table(f, columns=[name]).column(name).to_numpy() for f in self.files])

    def plan(self, epoch: int | None) -> list[list[int]]:
        """Indices into `row_groups`, one list per buffer, in the order they are read."""
        order = np.arange(len(self.row_groups))
        if epoch is not None:
            order = epoch_rng(self.seed, epoch).permutation(order)
        order = order[self.rank :: self.world]
        k = self.shuffle_row_groups
        return [order[i : i + k].tolist() for i in range(0, len(order), k)]

    def shard(self, rank: int, world: int, batch_size: int) -> ParquetBatches:
        return shard_of(self, rank, world, batch_size)

    def epoch_rows(self, epoch: int | None) -> int:
        return sum(self.row_groups[g][2] for groups in self.plan(epoch) for g in groups)

    def batches(self, epoch: int | None, check: ChunkCheck | None = None) -> Iterator[Batch]:
        plan = self.plan(epoch)
        pool = ThreadPoolExecutor(1, thread_name_prefix="parquet-batches") if self.prefetch else None

        size = self.batch_size
        carry: Batch | None = None  # rows left from the previous buffer (< batch_size)
        try:
            pending: Future | None = None
            if pool is not None and plan:
                pending = pool.submit(self._load, plan[0], epoch, 0)
            for k in range(len(plan)):
                if pending is None:
                    buf = self._load(plan[k], epoch, k)
                else:
                    buf = pending.result()
                    pending = None
                    if k + 1 < len(plan):  # read the next buffer while this one trains
                        pending = pool.submit(self._load, plan[k + 1], epoch, k + 1)
                if check is not None:
                    # here, not in the prefetch thread: torch's checks would start a second
                    # OpenMP team there, next to the training threads
                    try:
                        check(buf)
                    except ValueError as exc:
                        raise ValueError(f"{exc} ({self._locate(plan[k], check)})") from exc
                n = _rows(buf)
                start = 0
                if carry is not None:
                    start = min(size - _rows(carry), n)
                    carry = {key: torch.cat([carry[key], v[:start]]) for key, v in buf.items()}
                    if _rows(carry) < size:
                        continue  # a tiny buffer: keep collecting
                    yield carry
                    carry = None
                for i in range(start, n, size):
                    if i + size > n:
                        carry = {key: v[i:].clone() for key, v in buf.items()}  # frees buf
                        break
                    yield {key: v[i : i + size] for key, v in buf.items()}
                del buf
            if carry is not None and _rows(carry):
                yield carry
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, groups: list[int], epoch: int | None, k: int) -> Batch:
        """Read row groups `groups` into one buffer of contiguous tensors, shuffled for `epoch`.

        Each row group is written straight to its shuffled rows of the preallocated buffer and
        dropped, so a buffer costs its own bytes plus one decoded row group. Single-threaded
        numpy and pyarrow (`use_threads=False`): on a machine whose cores run the training
        threads, extra reader threads slowed training more than they saved.
        """
        n = sum(self.row_groups[g][2] for g in groups)
        dest = None  # row r of the concatenated row groups goes to buffer row dest[r]
        if epoch is not None:
            dest = np.empty(n, dtype=np.int64)
            shard = (self.rank,) if self.world > 1 else ()  # each rank its own in-buffer stream
            dest[epoch_rng(self.seed, epoch, k, *shard).permutation(n)] = np.arange(n)
        fields = (("cat", self.cat, np.int64), ("cont", self.cont, np.float32), ("cross", self.cross, np.int64))
        out = {key: np.empty((n, len(names)), dtype=dtype) for key, names, dtype in fields}
        vectors = ([(self.label, "label")] if self.label else []) + [(c, c) for c in self.extra]
        handles: dict[int, pq.ParquetFile] = {}
        off = 0
        for g in groups:
            fi, rg, m = self.row_groups[g]
            if fi not in handles:
                handles[fi] = pq.ParquetFile(self.files[fi])
            table = handles[fi].read_row_group(rg, columns=self.columns, use_threads=False)
            rows = slice(off, off + m) if dest is None else dest[off : off + m]
            for key, names, _ in fields:
                for j, name in enumerate(names):
                    out[key][rows, j] = _column(table, name, self.files[fi], rg)
            for name, key in vectors:
                col = _column(table, name, self.files[fi], rg)
                if key not in out:
                    out[key] = np.empty(n, dtype=np.float32 if key == "label" else col.dtype)
                out[key][rows] = col
            off += m
        return {key: torch.from_numpy(v) for key, v in out.items()}

    def _locate(self, groups: list[int], check: ChunkCheck) -> str:
        """The first row group of a failing buffer that fails on its own (re-read; errors only)."""
        for g in groups:
            try:
                check(self._load([g], None, 0))
            except ValueError:
                fi, rg, _ = self.row_groups[g]
                return f"in {self.files[fi]} row group {rg}"
        return "in row groups " + ", ".join(f"{self.files[self.row_groups[g][0]].name}:{self.row_groups[g][1]}"
                                            for g in groups)


def _rows(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def _column(table: pa.Table, name: str, path: Path, rg: int) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"{path} row group {rg}: column '{name}' has {col.null_count} null(s)")
    return col.to_numpy()


def _check_columns(path: Path, schema: pa.Schema, src: ParquetBatches) -> None:
    missing = [c for c in src.columns if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {schema.names}")
    for names, ok, what in ((src.cat + src.cross, pa.types.is_integer, "integer"),
                            (src.cont + ([src.label] if src.label else []),
                             lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "numeric")):
        bad = [f"{c} ({schema.field(c).type})" for c in names if not ok(schema.field(c).type)]
        if bad:
            raise ValueError(f"{path}: column(s) {bad} must be {what}")
