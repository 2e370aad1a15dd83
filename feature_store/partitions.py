"""The raw-data contract: `<data_root>/<dataset>/day=YYYY-MM-DD/*.parquet` (or *.csv).

Everything that reads raw events goes through here, so a missing day, a day written twice,
an unreadable file or a missing column is reported once, the same way, naming the directory
or file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PartFile:
    """One data file of a day partition, hashed once: the hash serves the duplicate check and
    the dataset fingerprint."""

    day: date
    path: Path
    rel: str  # relative to <data_root>/<dataset>, so fingerprints do not depend on the root
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def _sha256(path: Path) -> str:
    content = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            content.update(block)
    return content.hexdigest()


def scan_day(root: Path | str, dataset: str, day: date | str) -> list[PartFile]:
    """The day's data files, in name order, each hashed. A day without files, or with two files
    of the same content (a day written twice, e.g. `part-0 (copy).parquet`), is an error."""
    day = _as_date(day)
    base = Path(root) / dataset
    paths = partition_files(root, dataset, day)
    if not paths:
        raise DataError(day_dir(root, dataset, day), "non-empty day", detail="no *.parquet or *.csv files")
    parts = [PartFile(day, p, p.relative_to(base).as_posix(), p.stat().st_size, _sha256(p)) for p in paths]
    seen: dict[str, PartFile] = {}
    for part in parts:
        first = seen.setdefault(part.sha256, part)
        if first is not part:
            raise DataError(
                part.path,
                "no two part files with the same content",
                detail=f"same bytes (sha256 {part.sha256[:12]}) as {first.path}: the day was written twice",
            )
    return parts


def read_part(path: Path) -> pd.DataFrame:
    """One data file as written (nothing cast; validation and preprocessing own types)."""
    return _read_file(path)


def count_rows(path: Path) -> int:
    """Rows of one part file: from the parquet footer (nothing else read), or by parsing a CSV."""
    if path.suffix == ".csv":
        return len(_read_file(path))
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... for bad bytes
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc


def file_columns(path: Path) -> list[str]:
    """Column names of one part file without reading its rows: the parquet schema (footer), or
    a CSV's header line."""
    if path.suffix == ".csv":
        try:
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        except pd.errors.EmptyDataError:
            return []
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
            raise DataError(path, "readable csv", detail=f"{type(exc).__name__}: {exc}") from exc
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... for bad bytes
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc


def frame_chunks(frame: pd.DataFrame, columns: list[str] | None, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """An in-memory frame as `iter_chunks` yields a file: the columns asked for that it has, at
    most `chunk_rows` rows at a time, each chunk indexed 0..n-1."""
    frame = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start:start + chunk_rows].reset_index(drop=True)


def iter_chunks(path: Path, columns: list[str] | None = None, chunk_rows: int = 262_144) -> Iterator[pd.DataFrame]:
    """The rows of one part file in order, at most `chunk_rows` at a time (parquet: record
    batches of the columns asked for; a CSV is parsed whole, its size bounds it)."""
    if path.suffix == ".csv":
        yield from frame_chunks(_read_file(path), columns, chunk_rows)
        return
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        present = set(handle.schema_arrow.names)
        wanted = None if columns is None else [c for c in columns if c in present]
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=wanted):
            yield batch.to_pandas()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc


def read_parts(root: Path | str, dataset: str, day: date | str) -> list[tuple[PartFile, pd.DataFrame]]:
    """Every file of one day partition with its rows, in name order; a day with zero rows in
    all its files is an error."""
    parts = scan_day(root, dataset, day)
    frames = [(part, read_part(part.path)) for part in parts]
    if sum(len(frame) for _, frame in frames) == 0:
        raise DataError(day_dir(root, dataset, day), "non-empty day", detail=f"{len(parts)} file(s), zero rows")
    return frames


def describe_days(days: Iterable[date], limit: int = 10) -> str:
    """Days as runs of consecutive days, then the calendar days between them that are absent:
    `2026-01-01..2026-01-04, 2026-01-06..2026-01-09 (missing 2026-01-05)`. Each list shows at
    most `limit` entries (first and last halves), so a sparse history stays one readable line."""
    ordered = sorted(set(days))
    if not ordered:
        return "none"
    runs: list[list[date]] = [[ordered[0], ordered[0]]]
    for day in ordered[1:]:
        if day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    text = ", ".join(_clip([f"{a}..{b}" if a != b else f"{a}" for a, b in runs], limit))
    present = set(ordered)
    span = (ordered[-1] - ordered[0]).days + 1
    missing = [d for d in (ordered[0] + dt.timedelta(days=i) for i in range(span)) if d not in present]
    if missing:
        count = f"{len(missing)} days: " if len(missing) > 1 else ""
        text += f" (missing {count}{', '.join(_clip([str(d) for d in missing], limit))})"
    return text


def _clip(items: list[str], limit: int) -> list[str]:
    if len(items) <= limit:
        return items
    half = limit // 2
    return [*items[:half], f"... ({len(items) - 2 * half} more)", *items[-half:]]


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
    """Read every file of one day partition into one frame (files in name order), for tools and
    tests on small data; the nightly loop never does this (it streams the files, `iter_chunks`).

    With a spec, every file must carry the spec's required columns; nothing is cast here
    (validation and preprocessing own types).
    """
    frames = []
    for part, frame in read_parts(root, dataset, day):
        if spec is not None:
            present = set(frame.columns)
            for column in spec.required_columns:
                if column not in present:
                    raise DataError(
                        part.path,
                        "required column present",
                        column=column,
                        detail=f"columns found: {sorted(map(str, present))}",
                    )
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_days(
    root: Path | str, dataset: str, days: Iterable[date | str], spec: DatasetSpec | None = None
) -> pd.DataFrame:
    """Concatenate several days, oldest first, with a fresh 0..N-1 index."""
    ordered = sorted({_as_date(d) for d in days})
    if not ordered:
        raise DataError(Path(root) / dataset, "non-empty day", detail="no days requested")
    return pd.concat([read_day(root, dataset, d, spec) for d in ordered], ignore_index=True)


def training_window(
    root: Path | str,
    dataset: str,
    run_date: date | str,
    window_days: int,
    allow_missing_days: bool = False,
) -> tuple[list[date], date]:
    """Days to train on and the staging holdout for a nightly run on `run_date` (D).

    The holdout is D-1 (neither champion nor challenger trained on it); the training window
    is the calendar range [D-1-window_days, D-2]. A day missing inside it is an error naming
    the missing days, unless `allow_missing_days` (a spec's opt-in for sources that have days
    without events): then the window keeps the days that exist, and never reaches back to
    staler days to make up for a gap.
    """
    if window_days < 2:
        raise ValueError(f"window_days must be >= 2, got {window_days}")
    run = _as_date(run_date)
    holdout = run - dt.timedelta(days=1)
    present = available_days(root, dataset)
    if holdout not in present:
        raise DataError(
            day_dir(root, dataset, holdout),
            "holdout day present",
            detail=f"run date {run} needs day {holdout} as the staging holdout; "
            f"available days: {describe_days(present)}",
        )
    first = holdout - dt.timedelta(days=window_days)
    calendar = [first + dt.timedelta(days=i) for i in range(window_days)]
    have = set(present)
    train = [d for d in calendar if d in have]
    missing = [d for d in calendar if d not in have]
    if missing and not allow_missing_days:
        where = day_dir(root, dataset, missing[0]) if len(missing) == 1 else Path(root) / dataset
        raise DataError(
            where,
            "every day of the training window present",
            detail=f"window {calendar[0]}..{calendar[-1]} misses {', '.join(map(str, missing))}; "
            f"available days: {describe_days(present)} (a source with days without events "
            "says so in its spec: expectations.allow_missing_days: true)",
        )
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
    return fingerprint_parts(
        part for day in sorted({_as_date(d) for d in days}) for part in scan_day(root, dataset, day)
    )


def fingerprint_parts(parts: Iterable[PartFile]) -> str:
    """`fingerprint` of files already scanned (hashed once), taken in day, then name order."""
    digest = hashlib.sha256()
    for part in sorted(parts, key=lambda p: (p.day, p.path.name)):
        digest.update(f"{part.rel}\0{part.size}\0{part.sha256}\n".encode())
    return digest.hexdigest()[:16]
