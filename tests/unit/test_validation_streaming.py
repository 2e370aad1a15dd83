"""Data tests for streaming validation: a day in several part files of several row groups, read
in chunks smaller than a file, gives the reports a whole-frame validation gives, counts and
percentages over the whole file, and a `mostly` rule decided on the file, not on a chunk."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store.errors import DataError
from feature_store.partitions import day_dir, read_part
from feature_store.spec import DatasetSpec
from feature_store.validation import (
    STAGING_DAY,
    DayFiles,
    DayParts,
    _open_parquet,
    _parquet_chunks,
    validate_day_files,
    validate_days,
)

DS = "toy"
FIT_DAY, STAGING = date(2026, 1, 1), date(2026, 1, 2)
FILES, ROWS, ROW_GROUP, CHUNK = 2, 600, 100, 250  # chunks of 250, 250, 100 rows: across row groups
LAST_FILE = f"part-{FILES - 1}.parquet"


def _spec(**expectations) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": DS,
            "label": "click",
            "categorical": [{"name": "user"}, {"name": "device"}, {"name": "hour"}],
            "continuous": [{"name": "price"}],
            "expectations": {
                "columns": {
                    "user": {"dtype": "string"},
                    "device": {"dtype": "string", "max_null_fraction": 0.01,
                               "allowed_values": ["mobile", "desktop", "tablet"]},
                    "hour": {"dtype": "integer", "min": 0, "max": 23},
                    "price": {"dtype": "float", "min": 0},
                    "click": {"dtype": "integer", "allowed_values": [0, 1]},
                    "ts": {"dtype": "integer", "min": 0},
                },
                **expectations,
            },
        }
    )


def _frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user": [f"u{i % 7}" for i in range(ROWS)],
            "device": np.array(["mobile", "desktop", "tablet"], dtype=object)[np.arange(ROWS) % 3],
            "hour": rng.integers(0, 24, ROWS),
            "price": rng.uniform(0.5, 9.0, ROWS),
            "click": np.arange(ROWS) % 2,
            "ts": np.arange(ROWS, dtype=np.int64) + 1_000,
        }
    )


def _write(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=ROW_GROUP)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for day in (FIT_DAY, STAGING):
        for part in range(FILES):
            _write(day_dir(tmp_path, DS, day) / f"part-{part}.parquet", _frame(day.toordinal() * 10 + part))
    return tmp_path


def _days(root: Path, fit_day: bool = False) -> list[DayFiles]:
    """The staging day (and the fit day before it): few GX runs, so the tests stay quick."""
    days = [(FIT_DAY, None)] * fit_day + [(STAGING, STAGING_DAY)]
    return [DayFiles(day, sorted(day_dir(root, DS, day).glob("*.parquet")), role) for day, role in days]


def _rewrite(root: Path, change, day: date = STAGING, name: str = LAST_FILE) -> Path:
    path = day_dir(root, DS, day) / name
    df = pd.read_parquet(path)
    change(df)
    _write(path, df)
    return path


def _last_rows(column: str, *values):
    """A change that overwrites the last len(values) rows of `column` (the last chunk)."""

    def change(df: pd.DataFrame) -> None:
        df.loc[df.index[-len(values):], column] = list(values)

    return change


def _lines(reports) -> list[str]:
    return [line for r in reports for line in r.lines()]


def _whole(root: Path, spec: DatasetSpec, fit_day: bool = False) -> list[str]:
    """Today's path: every file read whole, one GX batch each."""
    parts = [DayParts(d.day, [(str(p), read_part(p)) for p in d.files], d.role) for d in _days(root, fit_day)]
    return _lines(validate_days(parts, spec))


def test_chunks_cross_row_groups_and_never_exceed_chunk_rows(root: Path) -> None:
    path = day_dir(root, DS, STAGING) / LAST_FILE
    assert pq.ParquetFile(path).metadata.num_row_groups == ROWS // ROW_GROUP
    for chunk_rows, sizes in ((CHUNK, [250, 250, 100]), (300, [300, 300]), (5000, [600])):
        chunks = _parquet_chunks(path, _open_parquet(path, ["user"]), ["user", "hour"], chunk_rows)
        assert [len(c) for c in chunks] == sizes
    (chunk,) = _parquet_chunks(path, _open_parquet(path, ["user"]), ["user", "hour"], 5000)
    assert isinstance(chunk["user"].dtype, pd.CategoricalDtype)  # strings read dictionary-encoded


def test_clean_days_pass_with_one_report_per_file_then_the_day(root: Path) -> None:
    reports = validate_day_files(_days(root, fit_day=True), _spec(), chunk_rows=CHUNK)
    assert all(r.ok for r in reports)
    assert [r.rows for r in reports] == [ROWS] * FILES + [ROWS * FILES] + [ROWS] * FILES + [ROWS * FILES]
    assert reports[FILES].source == ", ".join(str(p) for p in _days(root, fit_day=True)[0].files)


def _stringify_hour(df: pd.DataFrame) -> None:
    df["hour"] = df["hour"].astype(str)
    df.loc[df.index[-1], "hour"] = "noon"


def _inf(value: float):
    return _last_rows("price", value)


CASES = {
    "wrong type": (_stringify_hour, "hour", "type integer", "dtype object, e.g. ["),
    "label value 2": (_last_rows("click", 2), "click", "values in {0, 1}", "1 unexpected values (0.17%), e.g. [2]"),
    "+inf": (_inf(np.inf), "price", "finite values (no +/-inf)", "1 unexpected values (0.17%), e.g. [inf]"),
    "-inf": (_inf(-np.inf), "price", "finite values (no +/-inf)", "1 unexpected values (0.17%), e.g. [-inf]"),
    "out of range": (_last_rows("hour", 31), "hour", "values in [0, 23]", "1 unexpected values (0.17%), e.g. [31]"),
    "unknown value": (_last_rows("device", "smart-fridge"), "device", "values in {mobile, desktop, tablet}",
                      "1 unexpected values (0.17%), e.g. ['smart-fridge']"),
    "null label": (_last_rows("click", None), "click", "no nulls", "1 null values (0.17%)"),
    "null flood in the last chunk": (_last_rows("device", *[None] * 12), "device", "at most 1% nulls",
                                     "12 null values (2.00%)"),
    "missing column": (lambda df: df.drop(columns=["ts"], inplace=True), "ts", "column present", "column is missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_row_in_the_last_chunk_of_the_last_file(root: Path, case: str) -> None:
    change, column, rule, observed = CASES[case]
    if case == "null label":  # a nullable integer: pandas metadata keeps it Int64 in every chunk
        def change(df):
            df["click"] = df["click"].astype("Int64")
            df.loc[df.index[-1], "click"] = pd.NA
    path = _rewrite(root, change)
    spec = _spec()
    reports = validate_day_files(_days(root), spec, chunk_rows=CHUNK)
    lines = _lines(reports)
    assert lines, case
    assert lines[0].startswith(f"{path}: column '{column}' fails rule '{rule}': {observed}"), lines
    # One failure: the range of a mistyped column is not reported; -inf is also below 0.
    assert len(lines) == (2 if case == "-inf" else 1), lines
    assert lines == _whole(root, spec)  # the words of a whole-file validation


def test_null_counts_are_summed_over_the_chunks(root: Path) -> None:
    """3 nulls in each chunk (1.2%, 1.2%, 3%): the file has 9 (1.50%), not a chunk's 3."""
    def spread(df):
        df.loc[[i for start in range(0, ROWS, CHUNK) for i in range(start, start + 3)], "device"] = None

    path = _rewrite(root, spread)
    lines = _lines(validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'device' fails rule 'at most 1% nulls': 9 null values (1.50%)"]


def test_a_chunk_over_the_null_limit_passes_when_the_file_is_under_it(root: Path) -> None:
    """2 nulls in the last chunk (2% of its 100 rows) are 0.33% of the file: the rule is about
    the file, so it passes."""
    _rewrite(root, _last_rows("device", *[None] * 2))
    assert all(r.ok for r in validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))


def test_a_failure_in_every_file_names_each(root: Path) -> None:
    paths = [_rewrite(root, _last_rows("hour", 31), name=f"part-{p}.parquet") for p in range(FILES)]
    lines = _lines(validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))
    assert [line.split(":")[0] for line in lines] == [str(p) for p in paths]


def test_too_few_rows_counts_the_whole_day(root: Path) -> None:
    spec = _spec(min_rows_per_day=ROWS * FILES + 1)
    lines = _lines(validate_day_files(_days(root, fit_day=True), spec, chunk_rows=CHUNK))
    days = _days(root, fit_day=True)
    assert lines == [f"{d.source}: table fails rule 'at least {ROWS * FILES + 1} rows per day': "
                     f"{ROWS * FILES} rows" for d in days]
    assert lines == _whole(root, spec, fit_day=True)


def test_one_class_staging_day_unless_the_last_row_of_the_last_file_has_the_other(root: Path) -> None:
    for part in range(FILES):
        _rewrite(root, lambda df: df.__setitem__("click", 0), name=f"part-{part}.parquet")
    spec = _spec()
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines == [f"{_days(root)[-1].source}: column 'click' fails rule 'both label values present on the "
                     f"staging day': only label value 0 occurs ({ROWS * FILES} rows)"]
    assert lines == _whole(root, spec)
    _rewrite(root, _last_rows("click", 1))
    assert all(r.ok for r in validate_day_files(_days(root), spec, chunk_rows=CHUNK))


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "ArrowInvalid: Could not open Parquet input source '<Buffer>': Parquet file size is 0 bytes"),
        (b"PAR1 this is not a parquet file at all", "ArrowInvalid: Could not open Parquet input source '<Buffer>': "
                                                    "Parquet magic bytes not found in footer"),
        (b"user,hour\nu1,3\n", "ArrowInvalid: Could not open Parquet input source '<Buffer>': Parquet magic bytes"),
    ],
    ids=["zero-byte", "corrupt", "csv named .parquet"],
)
def test_unreadable_files_fail_as_ingest_always_said(root: Path, content: bytes, detail: str) -> None:
    path = day_dir(root, DS, STAGING) / LAST_FILE
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        validate_day_files(_days(root), _spec(), chunk_rows=CHUNK)
    assert str(info.value).startswith(f"{path}: table fails rule 'readable parquet': {detail}"), str(info.value)


def test_a_day_without_rows_fails_naming_its_directory(root: Path) -> None:
    for part in range(FILES):
        _rewrite(root, lambda df: df.drop(df.index, inplace=True), name=f"part-{part}.parquet")
    with pytest.raises(DataError) as info:
        validate_day_files(_days(root), _spec(), chunk_rows=CHUNK)
    assert str(info.value) == (f"{day_dir(root, DS, STAGING)}: table fails rule 'non-empty day': "
                               f"{FILES} file(s), zero rows")


def test_an_empty_file_next_to_full_ones_still_has_its_columns_checked(root: Path) -> None:
    def empty_without_ts(df):
        df.drop(df.index, inplace=True)
        df.drop(columns=["ts"], inplace=True)

    path = _rewrite(root, empty_without_ts)
    lines = _lines(validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'ts' fails rule 'column present': column is missing"]


def test_csv_parts_are_chunked_too(root: Path) -> None:
    csv = day_dir(root, DS, STAGING) / "part-9.csv"
    df = _frame(5)
    df.loc[df.index[-1], "hour"] = 31
    df.to_csv(csv, index=False)
    days = _days(root)
    days[-1] = DayFiles(STAGING, [*days[-1].files, csv], STAGING_DAY)
    lines = _lines(validate_day_files(days, _spec(), chunk_rows=CHUNK))
    assert lines == [f"{csv}: column 'hour' fails rule 'values in [0, 23]': 1 unexpected values (0.17%), e.g. [31]"]


# ---- rules decided before GX: presence from the schema, numeric rules counted with Arrow


def _three_files(root: Path) -> list[Path]:
    """The staging day in three part files (the fixture's two and one more)."""
    extra = _write(day_dir(root, DS, STAGING) / "part-2.parquet", _frame(99))
    return [*sorted(day_dir(root, DS, STAGING).glob("*.parquet"))[:FILES], extra]


def _columns_read(monkeypatch) -> list[list[str]]:
    """Records the columns every GX pass over a parquet file reads."""
    import feature_store.validation as validation

    calls: list[list[str]] = []
    original = validation._parquet_chunks

    def recording(path, fragment, columns, chunk_rows):
        calls.append(list(columns))
        return original(path, fragment, columns, chunk_rows)

    monkeypatch.setattr(validation, "_parquet_chunks", recording)
    return calls


def test_a_missing_column_in_the_middle_file_of_a_day_is_named_from_the_schema(root: Path, monkeypatch) -> None:
    files = _three_files(root)
    path = _rewrite(root, lambda df: df.drop(columns=["hour"], inplace=True), name=files[1].name)
    columns = _spec().expectations.model_dump()["columns"]
    spec = _spec(columns={**columns, "user": {"dtype": "string", "max_null_fraction": 1.0}})
    read = _columns_read(monkeypatch)
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'hour' fails rule 'column present': column is missing"]
    assert lines == _whole(root, spec)
    # 'user' (a string column whose only rules, presence and type, the schema decides) is never
    # read, like Criteo's C columns; 'device' (nulls and a value set on strings) goes to GX; the
    # numeric rules of a clean file never do.
    assert read and all("user" not in columns for columns in read), read
    assert all(columns == ["device"] for columns in read), read


def test_a_string_column_stored_as_integers_is_named_by_gx(root: Path) -> None:
    path = _rewrite(root, lambda df: df.__setitem__("user", np.arange(len(df)) % 7))
    spec = _spec()
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines[0].startswith(f"{path}: column 'user' fails rule 'type string': dtype int64"), lines
    assert lines == _whole(root, spec)


def test_an_integer_column_stored_as_floats_is_named_by_gx(root: Path) -> None:
    path = _rewrite(root, lambda df: df.__setitem__("ts", df["ts"].astype(np.float64)))
    spec = _spec()
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'ts' fails rule 'type integer': dtype float64"]
    assert lines == _whole(root, spec)


def test_a_null_in_a_plain_integer_column_types_only_its_chunk_as_float(root: Path) -> None:
    """Written by Arrow without pandas metadata: the chunk with the null reads as float64, the
    others as int64; the type and the null rule fail as for the whole file."""
    path = day_dir(root, DS, STAGING) / LAST_FILE
    table = pq.read_table(path).replace_schema_metadata(None)
    ts = table.column("ts").to_pylist()
    ts[-1] = None
    table = table.set_column(table.schema.get_field_index("ts"), "ts", pa.array(ts, pa.int64()))
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    spec = _spec()
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines[0] == f"{path}: column 'ts' fails rule 'type integer': dtype float64", lines
    assert lines == _whole(root, spec)


def test_nan_counts_as_a_null_and_not_as_a_value(root: Path) -> None:
    """pandas (and GX) count NaN as missing: over the null limit it is named as nulls, and it
    is never an unexpected value of a range."""
    spec = _spec(columns={**_spec().expectations.model_dump()["columns"],
                          "price": {"dtype": "float", "min": 0, "max_null_fraction": 0.01}})
    _rewrite(root, _last_rows("price", *[np.nan] * 5))
    assert all(r.ok for r in validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    path = _rewrite(root, _last_rows("price", *[np.nan] * 12))
    lines = _lines(validate_day_files(_days(root), spec, chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'price' fails rule 'at most 1% nulls': 12 null values (2.00%)"]
    assert lines == _whole(root, spec)


def test_values_on_the_bounds_pass_and_just_outside_fail(root: Path) -> None:
    _rewrite(root, _last_rows("hour", 0, 23))
    assert all(r.ok for r in validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))
    path = _rewrite(root, _last_rows("hour", -1, 23))
    lines = _lines(validate_day_files(_days(root), _spec(), chunk_rows=CHUNK))
    assert lines == [f"{path}: column 'hour' fails rule 'values in [0, 23]': 1 unexpected values (0.17%), e.g. [-1]"]


def test_the_window_counts_are_used_instead_of_opening_every_file_first(root: Path, monkeypatch) -> None:
    import feature_store.validation as validation

    def never(days):
        raise AssertionError("files counted again")

    monkeypatch.setattr(validation, "_row_counts", never)
    days = _days(root)
    rows = {path: ROWS for day in days for path in day.files}
    done: list[int] = []
    reports = validate_day_files(days, _spec(), chunk_rows=CHUNK, rows=rows, on_file=done.append)
    assert all(r.ok for r in reports) and [r.rows for r in reports] == [ROWS] * FILES + [ROWS * FILES]
    assert done == [ROWS] * FILES
