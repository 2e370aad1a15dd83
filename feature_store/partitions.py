"""The raw-data contract: `<data_root>/<dataset>/day=YYYY-MM-DD/*.parquet` (or *.csv).

Everything that reads raw events goes through here, so a missing day, an unreadable file
or a missing column is reported once, the same way, naming the directory or file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd

from feature_store.errors import DataError
from feature_store.spec import DatasetSpec

_DAY_DIR = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
_SUFFIXES = (".parquet", ".csv")


def _as_date(day: date | str) -> date:
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(str(day))


def day_dir(root: Path | str, dataset: str, day: date | str) -> Path:
    """Directory of one day partition (it may not exist)."""
    return Path(root) / dataset / f"day={_as_date(day).isoformat()}"


def partition_files(root: Path | str, dataset: str, day: date | str) -> list[Path]:
    """The data files of one partition, sorted by name; hidden and temp files are skipped
    (an atomic writer's half-written temp file must never be read)."""
    directory = day_dir(root, dataset, day)
    if not directory.is_dir():
        raise DataError(directory, "day partition exists", detail="no such directory")
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in _SUFFIXES and not p.name.startswith((".", "_"))
    )


def available_days(root: Path | str, dataset: str) -> list[date]:
    """Days that have a partition directory, sorted; other entries are ignored."""
    base = Path(root) / dataset
    if not base.is_dir():
        return []
    days = []
    for entry in base.iterdir():
        match = _DAY_DIR.match(entry.name)
        if not (match and entry.is_dir()):
            continue
        try:
            days.append(date.fromisoformat(match.group(1)))
        except ValueError:  # e.g. day=2026-13-45
            continue
    return sorted(days)


def _read_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a zero-byte CSV is an empty table, not corruption
            return pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
            raise DataError(path, "readable csv", detail=f"{type(exc).__name__}: {exc}") from exc
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... for bad bytes
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc


def read_day(
    root: Path | str, dataset: str, day: date | str, spec: DatasetSpec | None = None
) -> pd.DataFrame:
    """Read every file of one day partition into one frame (files in name order).

    With a spec, every file must carry the spec's required columns; nothing is cast here
    (validation and preprocessing own types).
    """
    directory = day_dir(root, dataset, day)
    files = partition_files(root, dataset, day)
    if not files:
        raise DataError(directory, "non-empty day", detail="no *.parquet or *.csv files")
    frames = []
    for path in files:
        frame = _read_file(path)
        if spec is not None:
            present = set(frame.columns)
            for column in spec.required_columns:
                if column not in present:
                    raise DataError(
                        path,
                        "required column present",
                        column=column,
                        detail=f"columns found: {sorted(map(str, present))}",
                    )
        frames.append(frame)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if len(frame) == 0:
        raise DataError(directory, "non-empty day", detail=f"{len(files)} file(s), zero rows")
    return frame


def read_days(
    root: Path | str, dataset: str, days: Iterable[date | str], spec: DatasetSpec | None = None
) -> pd.DataFrame:
    """Concatenate several days, oldest first, with a fresh 0..N-1 index."""
    ordered = sorted({_as_date(d) for d in days})
    if not ordered:
        raise DataError(Path(root) / dataset, "non-empty day", detail="no days requested")
    return pd.concat([read_day(root, dataset, d, spec) for d in ordered], ignore_index=True)


def training_window(
    root: Path | str, dataset: str, run_date: date | str, window_days: int
) -> tuple[list[date], date]:
    """Days to train on and the staging holdout for a nightly run on `run_date` (D).

    The holdout is D-1 (neither champion nor challenger trained on it); the training window
    is the calendar range [D-1-window_days, D-2], keeping the days that exist, so a gap in
    the data shrinks the window instead of silently reaching back to staler days.
    """
    if window_days < 2:
        raise ValueError(f"window_days must be >= 2, got {window_days}")
    run = _as_date(run_date)
    holdout = run - dt.timedelta(days=1)
    present = available_days(root, dataset)
    if holdout not in present:
        span = f"{present[0]}..{present[-1]}" if present else "none"
        raise DataError(
            day_dir(root, dataset, holdout),
            "holdout day present",
            detail=f"run date {run} needs day {holdout} as the staging holdout; "
            f"available days: {span}",
        )
    first = holdout - dt.timedelta(days=window_days)
    train = [d for d in present if first <= d < holdout]
    if len(train) < 2:
        raise DataError(
            Path(root) / dataset,
            "at least 2 training days",
            detail=f"found {len(train)} day(s) in {first}..{holdout - dt.timedelta(days=1)}: "
            f"{[d.isoformat() for d in train]}",
        )
    return train, holdout


def fingerprint(root: Path | str, dataset: str, days: Iterable[date | str]) -> str:
    """Short sha256 over the partition files (relative path, size, content hash) of `days`:
    the same data gives the same fingerprint on any machine and any absolute data root."""
    base = Path(root) / dataset
    digest = hashlib.sha256()
    for day in sorted({_as_date(d) for d in days}):
        for path in partition_files(root, dataset, day):
            content = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    content.update(block)
            rel = path.relative_to(base).as_posix()
            digest.update(f"{rel}\0{path.stat().st_size}\0{content.hexdigest()}\n".encode())
    return digest.hexdigest()[:16]
