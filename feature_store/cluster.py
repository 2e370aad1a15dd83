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
from collections.abc import Iterator
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


def _schema_dtypes(files: list[Path], columns: list[str]) -> dict[str, Any]:
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
    return {c: d for c, d in dtypes.items() if d is not None}


def shared_partitions(ddf: Any) -> Any:
    """`ddf` with each partition computed by one task of its own, which every consumer shares.

    merlin's executor fuses each statistic's input transform into the tasks that produce its
    input partitions (`ensure_optimize_dataframe_graph`), so a fit read, cast and column-selected
    every partition once per statistic: 14 times for Criteo (13 Normalize and one FastCategorify),
    the 26 string columns converted to Python objects and copied each time. A delayed partition is
    not blockwise, so nothing fuses into it: one read per partition per fit phase. The scheduler
    keeps a partition until its consumers have run (they are scheduled next to each other)."""
    import dask.dataframe as dd

    return dd.from_delayed(ddf.to_delayed(), meta=ddf._meta, divisions=ddf.divisions, verify_meta=False)


def _cast(part: pd.DataFrame, dtypes: dict[str, Any]) -> pd.DataFrame:
    differ = {c: d for c, d in dtypes.items() if str(part[c].dtype) != d}
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
    dtypes = _schema_dtypes(files, columns)
    ddf = Dataset([str(f) for f in files], engine="parquet", part_size=part_size, cpu=True).to_ddf(
        columns=list(columns)
    )
    if dtypes:
        ddf = ddf.map_partitions(_cast, dtypes, meta=ddf._meta.astype(dtypes))
    return Dataset(ddf, cpu=True)


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
