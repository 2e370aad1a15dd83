"""Data tests for the validation rules: every bad input names the part file, the column and the
rule, once, the most specific rule first; nothing here needs a Prefect server or MLflow."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.errors import RecloopInputError
from feature_store.generators.synthetic import write_day
from feature_store.partitions import day_dir
from feature_store.spec import DatasetSpec
from feature_store.validation import ValidationFailed, validate_frame
from tasks.ingest import load_window
from tasks.validate import validate_window

DS = "toy"
RUN_DATE = date(2026, 1, 5)  # staging day 01-04, validation day 01-03, window 01-01..01-03
STAGING, VALIDATION = date(2026, 1, 4), date(2026, 1, 3)


def _spec(**expectations) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": DS,
            "label": "click",
            "timestamp_column": "ts",
            "categorical": [{"name": "user"}, {"name": "hour"}],
            "continuous": [{"name": "price"}],
            "expectations": {
                "columns": {
                    "user": {"dtype": "string"},
                    "hour": {"dtype": "integer", "min": 0, "max": 23},
                    "price": {"dtype": "float", "min": 0},
                    "click": {"dtype": "integer", "allowed_values": [0, 1]},
                    "ts": {"dtype": "integer", "min": 0},
                },
                **expectations,
            },
        }
    )


def _frame(day: date, n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + day.toordinal())
    return pd.DataFrame(
        {
            "user": [f"u{i % 7}" for i in range(n)],
            "hour": rng.integers(0, 24, n),
            "price": rng.uniform(0.5, 9.0, n),
            "click": np.arange(n) % 2,
            "ts": np.arange(n, dtype=np.int64) + 1_000,
            "day": day.isoformat(),
        }
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for offset in range(4):
        day = date(2026, 1, 1) + timedelta(days=offset)
        write_day(tmp_path, DS, day, _frame(day))
    return tmp_path


def _part(root: Path, day: date, name: str = "part-0.parquet") -> Path:
    return day_dir(root, DS, day) / name


def _head(column: str, *values):
    """A change that overwrites the first len(values) rows of `column`."""

    def change(df: pd.DataFrame) -> None:
        df.loc[df.index[: len(values)], column] = list(values)

    return change


def _rewrite(root: Path, day: date, change) -> Path:
    path = _part(root, day)
    df = pd.read_parquet(path)
    change(df)
    df.to_parquet(path, index=False)
    return path


def _fail(root: Path, spec: DatasetSpec) -> ValidationFailed:
    window = load_window(root, spec, RUN_DATE, window_days=3)
    with pytest.raises(ValidationFailed) as info:
        validate_window(window, spec)
    return info.value


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0]


def test_clean_window_passes(root: Path) -> None:
    spec = _spec()
    reports = validate_window(load_window(root, spec, RUN_DATE, window_days=3), spec)
    assert reports and all(r.ok for r in reports)


# ---- defect 1: +inf in a continuous column passed and broke the trainer


def test_infinite_price_fails_naming_file_column_and_rule(root: Path) -> None:
    path = _rewrite(root, date(2026, 1, 2), _head("price", np.inf, -np.inf, np.inf))
    exc = _fail(root, _spec())
    line = _first_line(exc)
    assert line.startswith(f"{path}: column 'price' fails rule 'finite values (no +/-inf)'"), line
    assert "3 unexpected values" in line and "inf" in line
    assert isinstance(exc, RecloopInputError)


def test_continuous_column_without_an_expectation_rejects_inf() -> None:
    spec = DatasetSpec.model_validate(
        {"name": DS, "label": "click", "categorical": [{"name": "user"}], "continuous": [{"name": "price"}]}
    )
    df = _frame(date(2026, 1, 1)).assign(price=lambda d: d["price"].where(d.index != 5, np.inf))
    report = validate_frame(df, spec, "f.parquet")
    assert [(f.column, f.rule) for f in report.failures] == [("price", "finite values (no +/-inf)")]


def test_allow_infinite_is_an_explicit_opt_in_for_non_feature_columns() -> None:
    base = {"name": DS, "label": "click", "categorical": [{"name": "user"}], "continuous": [{"name": "price"}]}
    df = _frame(date(2026, 1, 1)).assign(score=np.inf)
    strict = DatasetSpec.model_validate({**base, "expectations": {"columns": {"score": {"dtype": "float"}}}})
    assert [f.rule for f in validate_frame(df, strict, "f").failures] == ["finite values (no +/-inf)"]
    lenient = DatasetSpec.model_validate(
        {**base, "expectations": {"columns": {"score": {"dtype": "float", "allow_infinite": True}}}}
    )
    assert validate_frame(df, lenient, "f").ok


def test_max_bounds_the_other_side() -> None:
    spec = _spec(columns={"price": {"dtype": "float", "min": 0, "max": 5}})
    df = _frame(date(2026, 1, 1))
    report = validate_frame(df, spec, "f.parquet")
    assert [(f.column, f.rule) for f in report.failures] == [("price", "values in [0, 5]")]


# ---- defect 2: a single-class staging or validation day passed and broke AUC


@pytest.mark.parametrize(("day", "role"), [(STAGING, "staging day"), (VALIDATION, "validation day")])
def test_one_label_class_on_an_evaluation_day(root: Path, day: date, role: str) -> None:
    path = _rewrite(root, day, _head("click", *[0] * 40))
    exc = _fail(root, _spec())
    assert _first_line(exc) == (
        f"{path}: column 'click' fails rule 'both label values present on the {role}': "
        f"only label value 0 occurs (40 rows)"
    )


def test_one_label_class_on_a_fitted_day_is_fine(root: Path) -> None:
    _rewrite(root, date(2026, 1, 1), _head("click", *[0] * 40))
    spec = _spec()
    assert all(r.ok for r in validate_window(load_window(root, spec, RUN_DATE, window_days=3), spec))


def test_label_classes_are_counted_over_all_files_of_the_day(root: Path) -> None:
    day = STAGING
    df = _frame(day)
    write_day(root, DS, day, df.assign(click=0), part=0)
    write_day(root, DS, day, df.assign(click=1, ts=df["ts"] + 100), part=1)
    spec = _spec()
    assert all(r.ok for r in validate_window(load_window(root, spec, RUN_DATE, window_days=3), spec))
    (day_dir(root, DS, day) / "part-1.parquet").unlink()
    write_day(root, DS, day, df.assign(click=0, ts=df["ts"] + 100), part=1)
    exc = _fail(root, _spec())
    # A day-level rule names the day's files.
    assert _first_line(exc).startswith(f"{_part(root, day)}, {_part(root, day, 'part-1.parquet')}: ")


# ---- defect 5: messages named the day, led with the weaker rule, repeated a rule


def test_csv_part_lacking_a_column_next_to_a_good_parquet_part(root: Path) -> None:
    day = date(2026, 1, 2)
    csv = write_day(root, DS, day, _frame(day, n=10).drop(columns=["ts"]), fmt="csv", part=1)
    exc = _fail(root, _spec())
    assert _first_line(exc) == f"{csv}: column 'ts' fails rule 'column present': column is missing"
    assert exc.source == str(csv) and exc.column == "ts" and exc.rule == "column present"


def test_type_is_reported_before_the_range_of_a_string_column(root: Path) -> None:
    def stringify(df):
        df["hour"] = df["hour"].astype(str)
        df.loc[df.index[:2], "hour"] = "noon"

    path = _rewrite(root, date(2026, 1, 1), stringify)
    exc = _fail(root, _spec())
    failures = exc.report.failures
    assert failures[0].column == "hour" and failures[0].rule == "type integer", failures
    # The range rule cannot judge strings: it is left out rather than reported as a crash.
    assert [f.rule for f in failures if f.column == "hour"] == ["type integer"]
    assert _first_line(exc).startswith(f"{path}: column 'hour' fails rule 'type integer'")


def test_failures_are_ordered_missing_type_nulls_range(root: Path) -> None:
    spec = _spec()

    def break_all(df):
        df.drop(columns=["ts"], inplace=True)
        df.loc[df.index[:2], "hour"] = 99  # range
        df.loc[df.index[:3], "click"] = np.nan  # nulls (the label)
        df["user"] = 7  # type

    _rewrite(root, date(2026, 1, 2), break_all)
    exc = _fail(root, spec)
    assert [(f.column, f.rule) for f in exc.report.failures] == [
        ("ts", "column present"),
        ("user", "type string"),
        ("click", "type integer"),  # NaN made it float64
        ("click", "no nulls"),
        ("hour", "values in [0, 23]"),
    ]


def test_every_failure_is_listed_once(root: Path) -> None:
    """The label's not-null and value-set rules come from the spec twice (label, and its column
    entry): each is checked and reported once."""
    path = _rewrite(root, date(2026, 1, 2), _head("click", 2, 2, 3))
    exc = _fail(root, _spec())
    message = str(exc)
    assert message.count("fails rule 'values in {0, 1}'") == 1, message
    assert len(message.splitlines()) == 1 and str(path) in message


def test_failures_in_several_files_are_all_listed(root: Path) -> None:
    first = _rewrite(root, date(2026, 1, 1), _head("hour", 31, 31))
    second = _rewrite(root, STAGING, _head("price", -1.0))
    lines = str(_fail(root, _spec())).splitlines()
    assert lines[0].startswith(f"{first}: column 'hour' fails rule 'values in [0, 23]'")
    assert any(line.strip().startswith(f"{second}: column 'price' fails rule 'values >= 0'") for line in lines[1:])


def test_min_rows_counts_the_whole_day(root: Path) -> None:
    spec = _spec(min_rows_per_day=60)
    day = date(2026, 1, 2)
    for d in (date(2026, 1, 1), date(2026, 1, 3), STAGING):
        write_day(root, DS, d, _frame(d, n=30, seed=1).assign(ts=lambda x: x["ts"] + 500), part=1)
    exc = _fail(root, spec)  # day 01-02 has 40 rows; the others 70, in two files
    assert _first_line(exc) == f"{_part(root, day)}: table fails rule 'at least 60 rows per day': 40 rows"


# ---- defects 3 and 4 through the ingest step: gaps and duplicate files


def test_window_with_a_gap_fails_unless_the_spec_allows_it(root: Path) -> None:
    import shutil

    shutil.rmtree(day_dir(root, DS, date(2026, 1, 2)))
    with pytest.raises(RecloopInputError) as info:
        load_window(root, _spec(), RUN_DATE, window_days=3)
    assert "misses 2026-01-02" in str(info.value)
    window = load_window(root, _spec(allow_missing_days=True), RUN_DATE, window_days=3)
    assert window.train_days == [date(2026, 1, 1), VALIDATION]
    # The tag names exactly the days trained on, not the calendar range.
    assert window.data_window == "2026-01-01, 2026-01-03 (missing 2026-01-02)"


def test_duplicate_part_file_fails_the_ingest_naming_both(root: Path) -> None:
    original = _part(root, date(2026, 1, 2))
    copy = original.with_name("part-0 (copy).parquet")
    copy.write_bytes(original.read_bytes())
    with pytest.raises(RecloopInputError) as info:
        load_window(root, _spec(), RUN_DATE, window_days=3)
    assert str(original) in str(info.value) and str(copy) in str(info.value)
    assert "no two part files with the same content" in str(info.value)


def test_window_keeps_its_public_shape(root: Path) -> None:
    from feature_store.partitions import fingerprint

    day = date(2026, 1, 2)
    write_day(root, DS, day, _frame(day, n=10, seed=3), fmt="csv", part=1)
    spec = _spec()
    window = load_window(root, spec, RUN_DATE, window_days=3)
    assert window.fit_days == [date(2026, 1, 1), day] and window.val_day == VALIDATION
    assert window.holdout_day == STAGING and window.data_window == "2026-01-01..2026-01-03"
    # Counted from the files (parquet footer, CSV parse); no rows are held by the window.
    assert window.rows(day) == 50 and window.rows([day, VALIDATION]) == 90
    assert sum(len(c) for c in window.day(day).chunks(["click"])) == 50
    assert [p.name for p in window.files(day)] == ["part-0.parquet", "part-1.csv"]
    assert window.sources[day] == str(day_dir(root, DS, day))
    assert window.fingerprint == fingerprint(root, DS, [*window.train_days, STAGING])


def test_validation_failed_survives_pickling(root: Path) -> None:
    """A task runner that ships exceptions between processes gets the same message back."""
    import pickle

    _rewrite(root, date(2026, 1, 1), _head("hour", 31))
    exc = _fail(root, _spec())
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and (again.source, again.column, again.rule) == (exc.source, exc.column, exc.rule)


def test_pandas_nullable_types_pass_their_type_rule_and_nulls_are_named_as_nulls():
    """Before: an Int64 (nullable) label failed 'type integer' even without a null, and with
    nulls the type rule hid the null rule (GX resolves pandas names as `pd.<name>`)."""
    df = _frame(STAGING)
    clean = df.assign(click=df["click"].astype("Int64"), price=df["price"].astype("Float64"),
                      hour=df["hour"].astype("Int32"))
    assert validate_frame(clean, _spec(), "clean").failures == []
    holes = clean.assign(click=clean["click"].where(clean.index >= 3))
    (failure,) = validate_frame(holes, _spec(), "holes").failures
    assert (failure.column, failure.rule) == ("click", "no nulls") and failure.observed.startswith("3 null values")


def test_validation_reports_progress_in_rows_of_the_window(root: Path) -> None:
    """Log lines (no terminal here) count the window's rows as its files are done, to 100%."""
    spec = _spec()
    window = load_window(root, spec, RUN_DATE, window_days=3)
    lines: list[str] = []
    validate_window(window, spec, log=lines.append)
    total = window.rows([*window.train_days, window.holdout_day])
    assert lines and all(line.startswith("validate: ") for line in lines), lines
    assert lines[-1].startswith(f"validate: {total:,}/{total:,} rows (100%)"), lines


def test_a_day_has_a_column_when_every_part_file_has_it(root: Path, monkeypatch) -> None:
    """Answered from the parquet schemas and a CSV's header, without reading rows."""
    import feature_store.partitions as partitions

    day = date(2026, 1, 2)
    write_day(root, DS, day, _frame(day, n=10, seed=3).drop(columns=["ts"]), fmt="csv", part=1)
    window = load_window(root, _spec(), RUN_DATE, window_days=3)
    monkeypatch.setattr(partitions, "iter_chunks", lambda *a, **k: pytest.fail("rows read"))
    assert window.day(day).has_column("click") and window.day(VALIDATION).has_column("ts")
    assert not window.day(day).has_column("ts")  # the CSV part lacks it
    assert not window.day(VALIDATION).has_column("oracle_ctr")
