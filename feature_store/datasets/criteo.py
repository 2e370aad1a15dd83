"""Criteo display-advertising logs (the Kaggle challenge / Criteo 1TB text format).

Source: Criteo AI Lab, https://ailab.criteo.com/ressources/ (Kaggle Display Advertising
Challenge 2014: `train.txt`, 45,840,617 lines over 7 days in time order; the 1TB logs:
`day_0` .. `day_23`). Licence: the Criteo terms for each release (research use, no
redistribution), so recloop ships no Criteo data; `recloop datasets import-criteo FILE`
converts a file you obtained yourself.

Format: one impression per line, 40 tab-separated fields: the label (0/1), I1..I13 (integer
counts, may be empty, may be negative: I2 goes down to -3) and C1..C26 (32-bit hashes as
8 hex digits, may be empty). The file has no timestamps, but its lines are in time order, so
lines are cut into consecutive day partitions in file order: `rows_per_day` lines per day, or
`days` days of equal size. Columns: label (int64), I1..I13 (float64, NaN when empty; float
holds every count exactly and keeps the nulls), C1..C26 (string, null when empty), day.

The file is streamed in chunks (never loaded whole); every line is checked (40 fields, label
0/1, integers in I columns), and the first bad line stops the import with a DataError naming
the file, the line number and the rule. Partitions are staged and swapped in at the end, so
a failed import leaves the data root as it was.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_store.datasets import store
from feature_store.errors import DataError

DATASET = "criteo"
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *INT_COLUMNS, *CAT_COLUMNS]
FIELDS = len(COLUMNS)  # 40
CHUNK_LINES = 200_000
SOURCE = "Criteo display-ads TSV (label, I1-I13, C1-C26), imported from a local file"
LICENCE = (
    "Criteo dataset terms (research use, no redistribution): https://ailab.criteo.com/ressources/"
)
SCHEMA = pa.schema(
    [("label", pa.int64())]
    + [(c, pa.float64()) for c in INT_COLUMNS]
    + [(c, pa.string()) for c in CAT_COLUMNS]
    + [("day", pa.string())]
)


@dataclass(frozen=True)
class DayPlan:
    """Line i (0-based) of the file goes to day start + i // rows_per_day."""

    start: date
    rows_per_day: int

    def day_offsets(self, first_line: int, n: int) -> np.ndarray:
        return (np.arange(first_line, first_line + n) // self.rows_per_day).astype(np.int64)

    def day(self, offset: int) -> str:
        return (self.start + dt.timedelta(days=int(offset))).isoformat()


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def count_lines(path: Path) -> int:
    """Lines in the file (a last line without a newline counts), in 1 MiB blocks."""
    lines, last = 0, b"\n"
    with _open_binary(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def plan_days(path: Path, start: date, rows_per_day: int | None, days: int | None) -> DayPlan:
    """Exactly one of rows_per_day (N lines a day) or days (K equal days: one counting pass)."""
    if (rows_per_day is None) == (days is None):
        raise ValueError("give exactly one of rows_per_day and days")
    if rows_per_day is not None:
        if rows_per_day < 1:
            raise ValueError(f"rows_per_day must be >= 1, got {rows_per_day}")
        return DayPlan(start, rows_per_day)
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    total = count_lines(path)
    if total == 0:
        raise DataError(path, "non-empty file", detail="no lines")
    return DayPlan(start, math.ceil(total / days))


def read_line_chunks(path: Path, chunk_lines: int = CHUNK_LINES) -> Iterator[tuple[int, list[str]]]:
    """(0-based number of the chunk's first line, its lines without newlines), streamed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        first = 0
        while True:
            lines = [line.rstrip("\r\n") for line in itertools.islice(fh, chunk_lines)]
            if not lines:
                return
            yield first, lines
            first += len(lines)


def _where(path: Path, line_index: int) -> str:
    return f"{path}:{line_index + 1}"  # 1-based, as editors and `sed -n` count


def check_field_counts(lines: list[str], path: Path, first: int) -> None:
    for offset, line in enumerate(lines):
        fields = line.count("\t") + 1
        if fields != FIELDS:
            raise DataError(
                _where(path, first + offset),
                f"{FIELDS} tab-separated fields (label, I1-I13, C1-C26)",
                detail=f"found {fields}",
            )


def parse_chunk(lines: list[str]) -> pd.DataFrame:
    """Lines with 40 fields each -> strings, empty fields as ''."""
    return pd.read_csv(
        io.StringIO("\n".join(lines)),
        sep="\t",
        header=None,
        names=COLUMNS,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=False,
        engine="c",
    )


def _label_values(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(label as int64, rows that are not '0' or '1')."""
    bad = ~raw.isin(["0", "1"]).to_numpy()
    return np.where(bad, 0, raw.to_numpy() == "1").astype(np.int64), bad


def _int_values(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, NaN when empty; rows that are neither empty nor an integer literal)."""
    empty = (raw == "").to_numpy()
    filled = raw[~empty]
    try:  # fast path: every non-empty value is an integer literal
        parsed = pd.to_numeric(filled)
        if pd.api.types.is_integer_dtype(parsed.dtype):
            values = np.full(len(raw), np.nan)
            values[~empty] = parsed.to_numpy(dtype=np.float64)
            return values, np.zeros(len(raw), dtype=bool)
    except (ValueError, TypeError):
        pass
    literal = raw.str.fullmatch(r"-?\d+").to_numpy(dtype=bool)
    bad = ~(empty | literal)
    values = pd.to_numeric(raw.where(literal), errors="coerce").to_numpy(dtype=np.float64)
    return values, bad


def typed_chunk(raw: pd.DataFrame, path: Path, first: int) -> pd.DataFrame:
    """Checked, typed columns: label int64, I float64 (NaN when empty), C string (null when
    empty). The first bad line of the chunk (label not 0/1, an I value that is not an
    integer) raises a DataError naming the file, the line, the column and the rule."""
    problems: list[tuple[int, str, str]] = []  # (row, column, rule)
    columns: dict[str, np.ndarray | pd.Series] = {}
    columns["label"], bad = _label_values(raw["label"])
    if bad.any():
        problems.append((int(np.argmax(bad)), "label", "label is 0 or 1"))
    for column in INT_COLUMNS:
        columns[column], bad = _int_values(raw[column])
        if bad.any():
            problems.append((int(np.argmax(bad)), column, "integer or empty"))
    if problems:
        row, column, rule = min(problems)
        raise DataError(
            _where(path, first + row), rule, column=column, detail=f"found {raw[column].iat[row]!r}"
        )
    for column in CAT_COLUMNS:
        columns[column] = raw[column].where(raw[column] != "", None)
    return pd.DataFrame(columns)


@dataclass
class ImportSummary:
    rows: int
    days: dict[str, int]
    manifest: dict


def import_criteo(
    path: Path,
    root: Path,
    start: date,
    rows_per_day: int | None = None,
    days: int | None = None,
    dataset: str = DATASET,
    force: bool = False,
    chunk_lines: int = CHUNK_LINES,
    on_chunk: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Stream a Criteo TSV into day partitions `root/<dataset>/day=...` in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file exists", detail="no such file")
    store.refuse_existing(root, dataset, force)
    plan = plan_days(path, start, rows_per_day, days)
    per_day: dict[str, int] = {}
    parts: dict[str, int] = {}
    with store.staged_dataset(root, dataset, force) as staging:
        for first, lines in read_line_chunks(path, chunk_lines):
            check_field_counts(lines, path, first)
            frame = typed_chunk(parse_chunk(lines), path, first)
            frame["day"] = [plan.day(k) for k in plan.day_offsets(first, len(frame))]
            for day, rows in frame.groupby("day", sort=True):
                store.write_part(staging, dataset, day, rows, part=parts.get(day, 0), schema=SCHEMA)
                parts[day] = parts.get(day, 0) + 1
                per_day[day] = per_day.get(day, 0) + len(rows)
            if on_chunk is not None:
                on_chunk(len(lines))
        if not per_day:
            raise DataError(path, "non-empty file", detail="no lines")
        manifest = store.write_manifest(
            staging,
            dataset,
            source=f"{SOURCE}: {path}",
            licence=LICENCE,
            rows=sum(per_day.values()),
            rows_per_day=plan.rows_per_day,
        )
    return ImportSummary(rows=sum(per_day.values()), days=per_day, manifest=manifest)
