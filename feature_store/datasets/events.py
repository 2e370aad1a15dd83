"""Your own event log (CSV or parquet, one row per impression, a timestamp column) as day
partitions of the dataset a spec describes: `recloop datasets import-events FILE --spec PATH`.

The day of a row is the calendar day of its timestamp in a time zone (default UTC):
- epoch numbers in seconds, milliseconds, microseconds or nanoseconds (`unit` s/ms/us/ns);
- ISO 8601 strings (`unit="iso"`): with an offset (`Z`, `+02:00`) the instant is converted to
  the time zone; without one it is read as wall time there, so its date is the day;
- a parquet timestamp column is used as it is (with a zone: converted; without: wall time).
Every other column is written as it is; the day goes to the spec's `day_column` (a column of
that name in the file is replaced). Rows keep their file order within a day.

The file is streamed in chunks (`pd.read_csv(chunksize=...)`, `ParquetFile.iter_batches`):
memory is bounded by the chunk size, not the file. Every chunk must carry the spec's required
columns and the timestamp column, and every row a timestamp that parses: the first violation
stops the import with a DataError naming the file, the row (and for CSV the line), the column
and the rule; no row is dropped silently. A CSV column whose type differs between chunks (a
number column with empty cells reads as float in one chunk, int in another) is written with
one type across the dataset, the type reading the whole file at once gives. Partitions are
staged and swapped in at the end with their manifest (feature_store/datasets/store.py), so a
failed import leaves the data root as it was.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.datasets import store
from feature_store.errors import DataError, ParameterError
from feature_store.spec import DatasetSpec

CHUNK_ROWS = 200_000
EPOCH_UNITS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
UNITS = (*EPOCH_UNITS, "iso")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
_ISO = re.compile(  # a date, optionally a time, and only after a time an offset
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?P<offset>Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)


@dataclass(frozen=True)
class EventsImport:
    """What an import wrote: rows in all, rows per day (ISO date -> rows), the manifest."""

    dataset: str
    rows: int
    days: dict[str, int]
    manifest: dict


@dataclass(frozen=True)
class _Chunk:
    first: int  # 0-based index of the chunk's first data row in the file
    table: pa.Table


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise DataError(
        path, f"an event log file ({', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})", detail="unknown type"
    )


def _rows(path: Path, kind: str, first: int, n: int = 1) -> str:
    """`file: row R` (1-based data rows) or a range; CSV also names the line (header = line 1)."""
    if n == 1:
        where = f"{path}: row {first + 1}"
        return where + (f" (line {first + 2})" if kind == "csv" else "")
    return f"{path}: rows {first + 1}-{first + n}"


def read_chunks(path: Path, chunk_rows: int, text_columns: tuple[str, ...] = ()) -> Iterator[_Chunk]:
    """The file's rows as Arrow tables of at most `chunk_rows` rows, streamed. CSV `text_columns`
    are read as strings (ISO timestamps are parsed here, not by pandas' guessing)."""
    kind = _file_kind(path)
    first = 0
    if kind == "parquet":
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
            for batch in batches:
                yield _Chunk(first, pa.Table.from_batches([batch]))
                first += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc
        return
    try:
        # low_memory=False: each chunk is typed as a whole, never column pieces of mixed types.
        reader = pd.read_csv(path, chunksize=chunk_rows, low_memory=False,
                             dtype={c: "string" for c in text_columns})
        for frame in reader:
            try:
                table = pa.Table.from_pandas(frame, preserve_index=False)
            except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
                raise DataError(_rows(path, kind, first, len(frame)), "one type per column",
                                detail=str(exc)) from exc
            yield _Chunk(first, table.replace_schema_metadata(None))
            first += len(frame)
    except pd.errors.EmptyDataError:
        return
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(path, "readable csv", detail=f"{type(exc).__name__}: {exc}") from exc


def check_columns(table: pa.Table, where: str, spec: DatasetSpec, timestamp: str) -> None:
    """The timestamp column and the spec's required columns (features, label) are present."""
    present = set(table.column_names)
    for column in dict.fromkeys([timestamp, *spec.required_columns]):
        if column not in present:
            rule = "timestamp column present" if column == timestamp else "required column present"
            raise DataError(where, rule, column=column, detail=f"columns found: {sorted(present)}")


def _epoch_rule(unit: str) -> str:
    return f"{EPOCH_UNITS[unit]} since 1970-01-01 UTC (--unit {unit})"


ISO_RULE = "ISO 8601 timestamp (--unit iso), e.g. 2026-01-31T12:00:00Z"


def _local_days(instants: pd.Series, timezone: str) -> np.ndarray:
    """Calendar days (datetime64[D]) of tz-aware instants in `timezone`."""
    return instants.dt.tz_convert(timezone).dt.tz_localize(None).to_numpy().astype("datetime64[D]")


def parse_days(raw: pd.Series, unit: str, timezone: str) -> tuple[np.ndarray, int | None, str]:
    """(day of each row as datetime64[D], position of the first row without a valid
    timestamp or None, the rule that row breaks)."""
    days = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[D]")
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):  # a parquet timestamp column
        if getattr(raw.dt, "tz", None) is not None:
            ok = raw.notna().to_numpy()
            days[ok] = _local_days(raw[ok], timezone)
        else:
            days = raw.to_numpy().astype("datetime64[D]")
        rule = "timestamp present (not null)"
    elif unit in EPOCH_UNITS:
        numbers = pd.to_numeric(raw, errors="coerce")  # text that is not a number -> NaN
        instants = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")  # out of range -> NaT
        ok = instants.notna().to_numpy()
        days[ok] = _local_days(instants[ok], timezone)
        rule = _epoch_rule(unit)
    else:
        text = raw.astype("string").str.strip()
        parts = text.str.extract(_ISO)
        valid = parts["date"].notna().to_numpy()
        aware = parts["offset"].notna().to_numpy()
        naive = valid & ~aware
        if aware.any():
            instants = pd.to_datetime(text[aware], utc=True, errors="coerce")
            days[aware] = _local_days(instants, timezone)  # NaT stays NaT
        if naive.any():  # wall time in the time zone: its date is the day
            days[naive] = pd.to_datetime(text[naive], errors="coerce").to_numpy().astype("datetime64[D]")
        rule = ISO_RULE
    bad = np.isnat(days)
    if not bad.any():
        return days, None, rule
    row = int(np.argmax(bad))
    if pd.isna(raw.iat[row]):
        rule = "timestamp present (not null)"
    return days, row, rule


def _promote(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """One type for a column typed differently by two chunks: what one read of the whole file
    infers (int and float -> float; numbers and text -> text)."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return pa.float64() if pa.types.is_floating(a) or pa.types.is_floating(b) else pa.int64()
    return pa.string()


def _unify(schema: pa.Schema | None, table: pa.Table, where: str) -> pa.Schema:
    if schema is None:
        return table.schema
    if table.schema.names != schema.names:
        raise DataError(where, "the same columns in every chunk",
                        detail=f"{table.schema.names} after {schema.names}")
    return pa.schema([pa.field(f.name, _promote(f.type, t)) for f, t in zip(schema, table.schema.types)])


def _retype(paths: list[Path], schema: pa.Schema) -> None:
    """Rewrite the staged parts written before a column's type widened (one part at a time)."""
    for path in paths:
        table = pq.read_table(path)
        if table.schema != schema:
            pq.write_table(table.cast(schema), path)


def import_events(
    path: Path,
    spec: DatasetSpec,
    root: Path,
    timestamp: str | None = None,
    unit: str = "s",
    timezone: str = "UTC",
    force: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int], None] | None = None,
) -> EventsImport:
    """Stream an event log into `root/<spec.name>/day=YYYY-MM-DD/part-N.parquet`, the day of
    each row taken from its `timestamp` column (default: the spec's `timestamp_column`)."""
    path = Path(path)
    timestamp = timestamp or spec.timestamp_column
    if timestamp is None:
        raise ParameterError(
            f"dataset '{spec.name}': its spec declares no timestamp_column; name the column with --timestamp"
        )
    if unit not in UNITS:
        raise ParameterError(f"unknown timestamp unit '{unit}' (one of: {', '.join(UNITS)})")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ParameterError(f"unknown time zone '{timezone}' (an IANA name: UTC, Europe/Berlin, ...)") from None
    if chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if not path.is_file():
        raise DataError(path, "file exists", detail="no such file")
    kind = _file_kind(path)
    dataset = spec.name
    store.refuse_existing(root, dataset, force)
    per_day: dict[str, int] = {}
    parts: dict[str, int] = {}
    written: list[Path] = []
    schema: pa.Schema | None = None
    with store.staged_dataset(root, dataset, force) as staging:
        text = (timestamp,) if unit == "iso" else ()
        for chunk in read_chunks(path, chunk_rows, text_columns=text):
            table, n = chunk.table, chunk.table.num_rows
            check_columns(table, _rows(path, kind, chunk.first, n), spec, timestamp)
            days, bad, rule = parse_days(table.column(timestamp).to_pandas(), unit, timezone)
            if bad is not None:
                found = table.column(timestamp)[bad].as_py()
                raise DataError(_rows(path, kind, chunk.first + bad), rule, column=timestamp,
                                detail="found null" if found is None else f"found {found!r}")
            if spec.day_column in table.column_names:
                table = table.drop([spec.day_column])
            order = np.argsort(days, kind="stable")  # rows of a day together, in file order
            ordered, sorted_days = table.take(pa.array(order)), days[order]
            starts = np.flatnonzero(np.r_[True, sorted_days[1:] != sorted_days[:-1]])
            for start, stop in zip(starts, [*starts[1:], n]):
                day = str(sorted_days[start])
                rows = ordered.slice(start, stop - start)
                rows = rows.append_column(spec.day_column, pa.array([day] * len(rows), pa.string()))
                schema = _unify(schema, rows, _rows(path, kind, chunk.first, n))
                written.append(store.write_table(staging, dataset, day, rows, part=parts.get(day, 0)))
                parts[day] = parts.get(day, 0) + 1
                per_day[day] = per_day.get(day, 0) + len(rows)
            if on_chunk is not None:
                on_chunk(n)
        if not per_day:
            raise DataError(path, "non-empty file", detail="no rows")
        _retype(written, schema)
        manifest = store.write_manifest(
            staging,
            dataset,
            source=f"event log {path.resolve()}",
            rows=sum(per_day.values()),
            timestamp_column=timestamp,
            timestamp_unit=unit,
            timezone=timezone,
            rows_by_day=dict(sorted(per_day.items())),
        )
    return EventsImport(dataset, sum(per_day.values()), dict(sorted(per_day.items())), manifest)
