"""The Dask cluster a night runs its preprocessing on, and the lazy raw datasets it reads.

`dask_client(config)` either starts a `distributed.LocalCluster` for the night and stops it
afterwards, or connects to a running scheduler (`tcp://host:8786`) and leaves that cluster
running. Inside the block the client is the default Dask scheduler and merlin's global
client (`merlin.core.utils.set_dask_client`), so `Workflow.fit` and
`Preprocessor.transform_to_parquet` run on it.

Remote workers must import the same `feature_store` (the workflow's ops are pickled by
reference) and read the raw parquet paths: give them a shared filesystem. The fitted
vocabularies travel inside the pickled workflow, so workers never read the fit host's files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from feature_store.errors import DataError

if TYPE_CHECKING:  # imported where used: the settings import DaskConfig, and must stay light
    import distributed
    import pyarrow as pa
    from merlin.io import Dataset

CONNECT_TIMEOUT_S = 5
_POLL_S = 0.05  # how often compute_tracked looks at its futures


class ClusterUnreachable(ConnectionError):
    """No Dask scheduler answers at the configured address."""


@dataclass(frozen=True)
class DaskConfig:
    """Where the preprocessing runs. `address` set: an existing scheduler (the other fields
    are ignored); else a LocalCluster of `workers` x `threads_per_worker`, each worker limited
    to `memory_limit` and spilling to `local_directory` (Dask's temp dir when None).

    Threads, not processes, by default: measured on the 2-core box (benchmarks/
    preprocess_speed.py, 1M rows x 4 days) one worker with 2 threads fitted at 367k rows/s
    and transformed at 396k rows/s, two single-thread worker processes at 353k and 281k,
    plus 8.5 s to start (each process imports NVTabular) and the pickling of every sampled
    partition and of the workflow between processes. Processes pay off only when the GIL is
    the limit on more cores."""

    address: str | None = None
    workers: int = 1
    threads_per_worker: int = 2
    memory_limit: str = "4GiB"
    processes: bool = False
    local_directory: Path | None = None


@contextmanager
def dask_client(config: DaskConfig) -> Iterator[distributed.Client]:
    """A client on the configured cluster, set as Dask's and merlin's default for the block."""
    import distributed
    from merlin.core.utils import set_dask_client

    # distributed logs every worker start, comm and plugin at INFO: a night shows warnings only.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if config.address:
        try:
            client = distributed.Client(config.address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ClusterUnreachable(
                f"no Dask scheduler answers at {config.address} within {CONNECT_TIMEOUT_S}s "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    else:
        cluster = distributed.LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit,
            processes=config.processes,
            local_directory=str(config.local_directory) if config.local_directory else None,
            dashboard_address=":0",  # a free port: several nights or helpers may share a host
        )
        client = distributed.Client(cluster)
    set_dask_client(client)
    try:
        yield client
    finally:
        set_dask_client("auto")
        client.close()
        if cluster is not None:
            cluster.close()


def _pandas_dtype(types: list[pa.DataType], maybe_null: bool, column: str, files: list[Path]) -> Any:
    """One pandas dtype for a column over every part: what `pd.concat` of the parts gives.
    A part where the column is all null has parquet type `null`: it fits any other type."""
    import pyarrow as pa

    if any(pa.types.is_null(t) for t in types):
        maybe_null = True
        types = [t for t in types if not pa.types.is_null(t)]
        if not types:
            return None
    if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
        return None  # object in every part already
    if all(pa.types.is_integer(t) for t in types):
        # pyarrow gives float64 for an int column with nulls; use it for every part.
        return "float64" if maybe_null else "int64"
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return "float64"
    if len({str(t) for t in types}) == 1:
        return None
    raise DataError(
        str(files[0].parent),
        "one type per column",
        column=column,
        detail=f"part files disagree: {sorted({str(t) for t in types})}",
    )


def _column_types(files: list[Path], columns: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(pandas dtype per column where parts need a cast, the string columns: string in every part
    where the column is not all null, i.e. of parquet type null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[str, list[pa.DataType]] = {c: [] for c in columns}
    maybe_null = {c: False for c in columns}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
        for column in columns:
            idx = schema.get_field_index(column)
            if idx < 0:
                raise DataError(str(path), "required column present", column=column)
            types[column].append(schema.field(idx).type)
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(idx).statistics
                if stats is None or not stats.has_null_count or stats.null_count > 0:
                    maybe_null[column] = True
    dtypes = {c: _pandas_dtype(types[c], maybe_null[c], c, files) for c in columns}
    strings = [c for c in columns if types[c] and all(pa.types.is_string(t) or pa.types.is_large_string(t)
                                                      or pa.types.is_null(t) for t in types[c])
               and not all(pa.types.is_null(t) for t in types[c])]
    return {c: d for c, d in dtypes.items() if d is not None}, strings


def _cast(part: pd.DataFrame, dtypes: dict[str, Any]) -> pd.DataFrame:
    differ = {c: d for c, d in dtypes.items() if c in part and str(part[c].dtype) != d}
    return part.astype(differ) if differ else part


def raw_dataset(files: list[Path], columns: list[str], part_size: str | int) -> Dataset:
    """A lazy `merlin.io.Dataset` over parquet part files, in partitions of about `part_size`
    (bytes in memory, e.g. "128MB") made of whole row groups, with `columns` only.

    Every partition gets the same dtypes, decided from the files' parquet metadata: an integer
    column with a null in any part is float64 everywhere (`pd.concat` of the parts would do
    the same), so the dtypes recorded at fit hold for every partition."""
    from merlin.io import Dataset

    files = [Path(f) for f in files]
    if not files:
        raise DataError("raw dataset", "at least one part file")
    dtypes = _column_types(files, columns)[0]
    ddf = Dataset([str(f) for f in files], engine="parquet", part_size=part_size, cpu=True).to_ddf(
        columns=list(columns)
    )
    if dtypes:
        ddf = ddf.map_partitions(_cast, dtypes, meta=ddf._meta.astype(dtypes))
    return Dataset(ddf, cpu=True)


@dataclass(frozen=True)
class RawChunk:
    """Whole row groups of one part file: the unit one Dask task reads."""

    path: Path
    row_groups: tuple[int, ...]
    rows: int


@dataclass(frozen=True)
class RawFiles:
    """Raw parquet part files as chunks of whole row groups of about `part_size` bytes each,
    with `columns` only and one dtype per column over every part (see `raw_dataset`).

    `parts()` gives one lazy frame per chunk, read with pyarrow, string columns
    dictionary-encoded (pandas categoricals): turning a parquet string column into Python
    string objects is most of the cost of reading it (152 ms per million synthetic rows
    against 31 ms), and the statistics and the compiled transform work once per distinct value
    of a categorical, never building an object per row. `sample()` gives the dtypes a
    `merlin.io.Dataset` over the same files would have (object strings), from one row group."""

    files: list[Path]
    columns: list[str]
    part_size: str | int
    dtypes: dict[str, Any]
    strings: list[str]
    chunks: list[RawChunk]

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def sample(self, rows: int = 1000) -> pd.DataFrame:
        """The first `rows` rows (at most one row group) with object strings and the dtypes of
        the whole: what a `merlin.io.Dataset` over the files would report, from one read."""
        import pyarrow.parquet as pq

        first = self.chunks[0]
        with pq.ParquetFile(first.path) as f:
            table = f.read_row_group(first.row_groups[0], columns=self.columns).slice(0, rows)
        frame = _cast(table.to_pandas(), self.dtypes)
        # A string column of nulls only (parquet type null) is object, like a string column.
        return frame.astype({c: object for c in self.strings if frame[c].dtype != object})

    def read(self, chunk: RawChunk) -> pd.DataFrame:
        """One chunk, read here (not on the cluster)."""
        return read_chunk(chunk, self.columns, self.dtypes, [c for c in self.strings if c in self.columns])

    def parts(self) -> list[Any]:
        import dask

        strings = [c for c in self.strings if c in self.columns]
        return [dask.delayed(read_chunk)(c, self.columns, self.dtypes, strings) for c in self.chunks]


def raw_files(files: list[Path], columns: list[str], part_size: str | int) -> RawFiles:
    """Plan the chunks of `files` from their parquet footers (nothing is read)."""
    import pyarrow.parquet as pq
    from dask.utils import parse_bytes

    files = [Path(f) for f in files]
    if not files:
        raise DataError("raw dataset", "at least one part file")
    dtypes, strings = _column_types(files, columns)
    budget = parse_bytes(part_size) if isinstance(part_size, str) else int(part_size)
    chunks = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        group: list[int] = []
        rows = size = 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            # In memory: at least 8 bytes a value (a string column's codes and dictionary are less).
            rg_size = max(rg.total_byte_size, rg.num_rows * len(columns) * 8)
            if group and size + rg_size > budget:
                chunks.append(RawChunk(path, tuple(group), rows))
                group, rows, size = [], 0, 0
            group.append(g)
            rows += rg.num_rows
            size += rg_size
        if group and rows:
            chunks.append(RawChunk(path, tuple(group), rows))
    return RawFiles(files, list(columns), part_size, dtypes, strings, chunks)


def read_chunk(chunk: RawChunk, columns: list[str], dtypes: dict[str, Any], strings: list[str]) -> pd.DataFrame:
    """One chunk as a pandas frame: strings as categoricals, the other columns cast to the
    dataset's dtypes (an int column with nulls anywhere is float64 in every chunk)."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(chunk.path, read_dictionary=strings).read_row_groups(list(chunk.row_groups), columns=columns)
    return _cast(table.to_pandas(), dtypes)


def compute_tracked(tracked: list[Any], weights: list[int], results: list[Any] | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> tuple[Any, ...]:
    """Compute `results` (default: `tracked`) on the global Dask client, calling
    `on_progress(done, total)` with the summed `weights` of the `tracked` tasks finished so far
    (rows per chunk, say). Without a client or a callback: plain `dask.compute`."""
    import dask
    from merlin.core.utils import global_dask_client

    results = tracked if results is None else results
    client = global_dask_client()
    if client is None or on_progress is None:
        return dask.compute(*results)
    futures = client.compute([*tracked, *results])
    pending = dict(zip(futures[: len(tracked)], weights))
    total, done = sum(weights), 0
    on_progress(0, total)
    # Polled, not `distributed.as_completed`: that iterates on the loop of whatever client is
    # the default when it starts (dask/distributed 4357), and a night hung there once in CI.
    while pending:
        finished = [f for f in pending if f.done()]
        for future in finished:
            done += pending.pop(future)
        if finished:
            on_progress(done, total)
        else:
            time.sleep(_POLL_S)
    return tuple(client.gather(futures[len(tracked):]))


@contextmanager
def process_cluster(logs: Path, workers: int = 2, threads: int = 1, memory_limit: str = "3GiB",
                    env: dict[str, str] | None = None) -> Iterator[tuple[str, list[int]]]:
    """A real cluster on this host: `dask scheduler` and `workers` `dask worker` processes on
    127.0.0.1 (logs and spill under `logs`), stopped on exit. Yields (address, pids). For tests
    and benchmarks; a production cluster is started by its own tooling and given by address."""
    import socket
    import subprocess
    import sys

    import distributed

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).parent / "dask"
    dask_cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dask"]
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [*dask_cmd, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env, stdout=(logs / "dask-scheduler.log").open("w"), stderr=subprocess.STDOUT))
        for k in range(workers):
            procs.append(subprocess.Popen(
                [*dask_cmd, "worker", address, "--nworkers", "1", "--nthreads", str(threads),
                 "--memory-limit", memory_limit, "--no-dashboard", "--local-directory", str(logs / f"worker-{k}")],
                env=env, stdout=(logs / f"dask-worker-{k}.log").open("w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:  # the scheduler needs a moment to listen
            try:
                with distributed.Client(address, timeout=5) as probe:
                    probe.wait_for_workers(workers, timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.5)
        yield address, [p.pid for p in procs]
    finally:
        for proc in reversed(procs):  # workers first, then the scheduler
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
