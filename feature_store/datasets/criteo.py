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

The file is streamed in chunks of `chunk_lines` lines (never loaded whole; memory is about one
chunk whatever the file's size); every line is checked (40 fields, label 0/1, integers in I
columns), and the first bad line stops the import with a DataError naming the file, the line
number and the rule. A chunk is parsed by Arrow's CSV reader; a chunk it rejects is parsed
again line by line, which finds and names the bad line. A day is written as
`part-00000.parquet`, `part-00001.parquet`, ... of at most `part_rows` rows, one row group
per chunk. Partitions are staged and swapped in at the end, so a failed import leaves the
data root as it was.
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
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from feature_store.datasets import store
from feature_store.errors import DataError
from feature_store.partitions import day_dir

DATASET = "criteo"
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *INT_COLUMNS, *CAT_COLUMNS]
FIELDS = len(COLUMNS)  # 40
CHUNK_LINES = 200_000
PART_ROWS = 1_000_000  # rows per part file of a day partition
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


def read_byte_chunks(path: Path, chunk_lines: int = CHUNK_LINES) -> Iterator[tuple[int, int, bytes]]:
    """(0-based number of the chunk's first line, its number of lines, its bytes), streamed."""
    with _open_binary(path) as fh:
        first = 0
        while True:
            lines = list(itertools.islice(fh, chunk_lines))
            if not lines:
                return
            yield first, len(lines), b"".join(lines)
            first += len(lines)


_ARROW_READ = pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                                 escape_char=False, newlines_in_values=False, ignore_empty_lines=False)
_ARROW_CONVERT = pacsv.ConvertOptions(
    column_types={"label": pa.string(), **{c: pa.int64() for c in INT_COLUMNS},
                  **{c: pa.string() for c in CAT_COLUMNS}},
    null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
)


def _arrow_chunk(blob: bytes) -> pa.Table | None:
    """The chunk's rows in SCHEMA's types (without `day`), or None when Arrow rejects it (a
    field count, a count that is not an integer, bad UTF-8) or a label is not 0/1: then
    the line-by-line path finds the line to name."""
    try:
        table = pacsv.read_csv(
            io.BytesIO(blob),
            read_options=pacsv.ReadOptions(column_names=COLUMNS, block_size=max(1 << 20, len(blob) + 1)),
            parse_options=_ARROW_READ,
            convert_options=_ARROW_CONVERT,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    label = table.column("label")
    if label.null_count or not pc.all(pc.is_in(label, value_set=pa.array(["0", "1"]))).as_py():
        return None
    columns = [pc.cast(label, pa.int64())]
    columns += [pc.cast(table.column(c), pa.float64()) for c in INT_COLUMNS]
    columns += [table.column(c) for c in CAT_COLUMNS]
    return pa.Table.from_arrays(columns, schema=pa.schema(list(SCHEMA)[:-1]))


def _checked_chunk(blob: bytes, path: Path, first: int) -> pa.Table:
    """The chunk as Arrow rows; a chunk with a bad line raises the DataError naming it."""
    table = _arrow_chunk(blob)
    if table is not None:
        return table
    text = blob.decode("utf-8", errors="replace")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if text.endswith("\n"):
        lines.pop()
    check_field_counts(lines, path, first)
    frame = typed_chunk(parse_chunk(lines), path, first)
    return pa.Table.from_pandas(frame, schema=pa.schema(list(SCHEMA)[:-1]), preserve_index=False)


class _DayParts:
    """Part files of the day partitions being written, in file order: at most one file is
    open (days come one after the other), rolled over every `part_rows` rows."""

    def __init__(self, staging: Path, dataset: str, part_rows: int) -> None:
        self.staging, self.dataset, self.part_rows = staging, dataset, part_rows
        self.rows: dict[str, int] = {}
        self.parts: dict[str, int] = {}
        self._writer: pq.ParquetWriter | None = None
        self._day, self._in_part = "", 0

    def write(self, day: str, table: pa.Table) -> None:
        if day != self._day:
            self.close()
            self._day = day
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                directory = day_dir(self.staging, self.dataset, day)
                directory.mkdir(parents=True, exist_ok=True)
                part = self.parts.get(day, 0)
                self._writer = pq.ParquetWriter(directory / f"part-{part:05d}.parquet", SCHEMA)
                self.parts[day], self._in_part = part + 1, 0
            take = min(self.part_rows - self._in_part, table.num_rows - offset)
            piece = table.slice(offset, take)
            day_column = pa.array(np.full(take, day, dtype=object), type=pa.string())
            self._writer.write_table(piece.append_column("day", day_column), row_group_size=take)
            offset, self._in_part = offset + take, self._in_part + take
            self.rows[day] = self.rows.get(day, 0) + take
            if self._in_part == self.part_rows:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
    part_rows: int = PART_ROWS,
) -> ImportSummary:
    """Stream a Criteo TSV into day partitions `root/<dataset>/day=...` in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file exists", detail="no such file")
    if chunk_lines < 1 or part_rows < 1:
        raise ValueError(f"chunk_lines and part_rows must be >= 1, got {chunk_lines}, {part_rows}")
    store.refuse_existing(root, dataset, force)
    plan = plan_days(path, start, rows_per_day, days)
    with store.staged_dataset(root, dataset, force) as staging:
        out = _DayParts(staging, dataset, part_rows)
        try:
            for first, n, blob in read_byte_chunks(path, chunk_lines):
                table = _checked_chunk(blob, path, first)
                # Lines first .. first+n-1 go to consecutive days: cut the chunk at day ends.
                offset = 0
                while offset < n:
                    k = (first + offset) // plan.rows_per_day
                    take = min(n - offset, (k + 1) * plan.rows_per_day - (first + offset))
                    out.write(plan.day(k), table.slice(offset, take))
                    offset += take
                if on_chunk is not None:
                    on_chunk(n)
        finally:
            out.close()
        if not out.rows:
            raise DataError(path, "non-empty file", detail="no lines")
        manifest = store.write_manifest(
            staging,
            dataset,
            source=f"{SOURCE}: {path}",
            licence=LICENCE,
            rows=sum(out.rows.values()),
            rows_per_day=plan.rows_per_day,
        )
    return ImportSummary(rows=sum(out.rows.values()), days=out.rows, manifest=manifest)


# --- Criteo-format files for tests and benchmarks (no Criteo data is shipped) ---------------

# Distinct values per C column in the Kaggle train.txt (C3, C4, C12, C16, C21 capped at 2**21
# so that a synthetic file's vocabularies stay small), and the share of empty fields per
# column (roughly the real file's: I12 is mostly empty, most C columns almost never are).
LIKE_CARDINALITIES = (1460, 583, 2**21, 2**21, 305, 24, 12517, 633, 3, 93145, 5683, 2**21, 3194,
                      27, 14992, 2**21, 10, 5652, 2173, 4, 2**21, 18, 15, 286181, 105, 142572)
LIKE_INT_EMPTY = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
LIKE_CAT_EMPTY = (0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0,
                  0.0, 0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SIGNAL_COLUMNS = (5, 8, 13, 16, 19)  # C6, C9, C14, C17, C20: small vocabularies with a planted effect


def _hex8(values: np.ndarray) -> pa.Array:
    """uint32 values as 8 lowercase hex digits, without a Python string per value."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    digits = _HEX[(values.astype(np.uint32)[:, None] >> shifts) & 0xF]  # (n, 8) ASCII codes
    return pa.array(np.ascontiguousarray(digits).view("S8").ravel()).cast(pa.string())


def criteo_like_table(n: int, rng: np.random.Generator, salt: int = 0) -> pa.Table:
    """n Criteo-format rows as an Arrow table (label int64, I1-I13 int64, C1-C26 string; nulls
    are the empty fields). Categories are log-uniform over each column's vocabulary (a few
    values carry most rows), counts are Zipf-like with I2 down to -3, and the label (about
    25% ones) depends on a few small categorical columns and I1, so a model can learn it.
    `salt` keeps the hash values of the file's columns apart from another file's."""
    columns: dict[str, pa.Array] = {}
    logit = np.full(n, -1.75)
    for j, column in enumerate(INT_COLUMNS):
        values = rng.zipf(1.6, n).astype(np.int64) - 1
        if j == 1:
            values = values - 3
        if j == 0:
            logit += 0.25 * np.log1p(np.minimum(values, 10_000))
        columns[column] = pa.array(values, mask=rng.random(n) < LIKE_INT_EMPTY[j])
    for j, column in enumerate(CAT_COLUMNS):
        card = LIKE_CARDINALITIES[j]
        index = np.minimum(np.exp(rng.random(n) * np.log(card + 1)).astype(np.int64) - 1, card - 1)
        if j in _SIGNAL_COLUMNS:
            effect = np.random.default_rng([salt, 7, j]).normal(0.0, 0.6, card)
            k = np.arange(card)
            share = np.log((k + 2) / (k + 1)) / np.log(card + 1)  # P(index = k), log-uniform
            logit += effect[index] - share @ effect  # centred: the CTR does not drift with the seed
        hashed = (index * 2654435761 + (salt * 26 + j) * 40503) % 2**32
        strings = _hex8(hashed)
        empty = rng.random(n) < LIKE_CAT_EMPTY[j]
        columns[column] = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), strings)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pa.table({"label": pa.array(label), **columns})


def write_criteo_like(path: Path, lines: int, seed: int = 0, chunk_lines: int = CHUNK_LINES) -> Path:
    """Write a Criteo-format TSV of `lines` lines (40 tab-separated fields, empty fields for
    missing values, no header), `chunk_lines` at a time: memory is one chunk. Plain text, or
    gzip when the name ends in .gz. The same seed and chunk_lines give the same file."""
    path = Path(path)
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    rng = np.random.default_rng([seed, 40])
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as fh:
        for first in range(0, lines, chunk_lines):
            table = criteo_like_table(min(chunk_lines, lines - first), rng, salt=seed)
            pacsv.write_csv(table, fh, options)
    return path
