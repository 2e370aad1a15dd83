"""Writing a whole dataset into the data root atomically, and reading back what was written.

Every converter (Adult, MovieLens, Criteo, a user's event log) writes its day partitions into a hidden staging
directory under the data root; only when all of them are written does one rename put the
dataset at `<data_root>/<dataset>`. A failed or interrupted run leaves the previous dataset
(or nothing) there, never half a dataset. Each dataset directory carries a manifest
(`_dataset.json`: source, licence, rows, days) written last, so "present" means complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.errors import DataError
from feature_store.partitions import available_days, day_dir

MANIFEST = "_dataset.json"  # leading "_": never read as a partition file


def dataset_dir(root: Path | str, dataset: str) -> Path:
    return Path(root) / dataset


def read_manifest(root: Path | str, dataset: str) -> dict[str, Any] | None:
    """The manifest of a completely written dataset, or None when it is absent."""
    path = dataset_dir(root, dataset) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_present(root: Path | str, dataset: str) -> bool:
    return read_manifest(root, dataset) is not None


def refuse_existing(root: Path | str, dataset: str, force: bool) -> None:
    """Stop before any work when the dataset exists and the caller did not ask to replace it."""
    target = dataset_dir(root, dataset)
    if target.exists() and not force:
        raise DataError(
            target,
            "dataset absent (or --force)",
            detail="it exists already; pass --force to replace it",
        )


@contextmanager
def staged_dataset(root: Path | str, dataset: str, force: bool = False) -> Iterator[Path]:
    """Yield a staging data root; write `<staging>/<dataset>/day=...` into it. On a clean exit
    the staged dataset replaces `<root>/<dataset>` (old copy removed only after the swap);
    on any error the staging directory is removed and `<root>/<dataset>` is untouched."""
    root = Path(root)
    refuse_existing(root, dataset, force)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{dataset}-", dir=root))
    try:
        yield staging
        built = dataset_dir(staging, dataset)
        if not (built / MANIFEST).is_file():
            raise RuntimeError(
                f"staged dataset {built} has no {MANIFEST}: write_manifest was not called"
            )
        _swap_in(built, dataset_dir(root, dataset))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(built: Path, target: Path) -> None:
    if not target.exists():
        os.replace(built, target)
        return
    retired = target.with_name(f".retired-{target.name}-{uuid.uuid4().hex[:8]}")
    os.replace(target, retired)
    os.replace(built, target)
    shutil.rmtree(retired, ignore_errors=True)


def write_part(
    staging: Path,
    dataset: str,
    day: date | str,
    frame: pd.DataFrame,
    part: int = 0,
    schema: pa.Schema | None = None,
) -> Path:
    """One parquet file of one day partition in the staging root. Names are zero-padded so
    that reading in name order is writing order (part-00002 before part-00010)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    return write_table(staging, dataset, day, table, part)


def write_table(staging: Path, dataset: str, day: date | str, table: pa.Table, part: int = 0) -> Path:
    """`write_part` for rows already in Arrow (their types are kept as they are)."""
    directory = day_dir(staging, dataset, day)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"part-{part:05d}.parquet"
    pq.write_table(table, path)
    return path


def write_days(
    staging: Path, dataset: str, frame: pd.DataFrame, day_column: str = "day"
) -> list[str]:
    """One file per value of `day_column` (ISO dates), rows in their frame order."""
    days = []
    for day, rows in frame.groupby(day_column, sort=True):
        write_part(staging, dataset, str(day), rows)
        days.append(str(day))
    return days


def write_manifest(staging: Path, dataset: str, **info: Any) -> dict[str, Any]:
    """Record what was written (called last: its presence marks a complete dataset)."""
    days = available_days(staging, dataset)
    manifest = {
        "dataset": dataset,
        "days": len(days),
        "first_day": days[0].isoformat() if days else None,
        "last_day": days[-1].isoformat() if days else None,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **info,
    }
    path = dataset_dir(staging, dataset) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest
