"""The night's work directory: the transformed splits, the vocabularies and Dask's spill
files live under `<RECLOOP_HOME>/work/<dataset>-<run date>-<pid>/` while the night runs,
and are removed when it ends (kept, with a `KEEP` marker, when asked for debugging).

A night killed before it could clean up leaves its directory behind; the next night of the
dataset, holding the dataset lock, removes every unmarked directory of that dataset (no
other night of it can be running)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

KEEP_MARKER = "KEEP"


def work_root(home: Path) -> Path:
    return home / "work"


@contextmanager
def night_workdir(home: Path, dataset: str, run_date: date, keep: bool = False,
                  log: Callable[[str], None] = print) -> Iterator[Path]:
    """Create the night's directory, yield it, remove it at the end unless `keep`. Enter it
    holding the dataset's lock: it first removes what earlier nights of the dataset left."""
    for stale in remove_stale(home, dataset):
        log(f"removed the work directory {stale} an earlier night left behind")
    path = work_root(home) / f"{dataset}-{run_date}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)  # a pid reused by an earlier, killed night
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if keep:
            (path / KEEP_MARKER).write_text("kept on request (RECLOOP_STREAM_KEEP_WORKDIR)\n")
            log(f"kept the night's work directory {path} (RECLOOP_STREAM_KEEP_WORKDIR)")
        else:
            shutil.rmtree(path, ignore_errors=True)


def remove_stale(home: Path, dataset: str) -> list[Path]:
    """Remove the work directories earlier nights of `dataset` left (call holding its lock)."""
    root = work_root(home)
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.glob(f"{dataset}-*")):
        rest = path.name[len(dataset) + 1:]
        # <YYYY-MM-DD>-<pid>: not a directory of a dataset whose name extends this one
        if not path.is_dir() or len(rest.split("-")) != 4 or (path / KEEP_MARKER).exists():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
