"""Code tests for the raw-data contract: day discovery, window selection, clear errors."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from feature_store.errors import DataError
from feature_store.generators.synthetic import write_day
from feature_store.partitions import (
    available_days,
    day_dir,
    fingerprint,
    read_day,
    read_days,
    training_window,
)
from feature_store.spec import DatasetSpec

DS = "toy"


def _frame(day: date, n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": [f"u{i}" for i in range(n)],
            "hour": list(range(n)),
            "price": [1.5 * (i + 1) for i in range(n)],
            "click": [i % 2 for i in range(n)],
            "day": day.isoformat(),
        }
    )


@pytest.fixture
def spec() -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": DS,
            "label": "click",
            "categorical": [{"name": "user"}, {"name": "hour"}],
            "continuous": [{"name": "price"}],
        }
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Days Jan 1..Jan 10 except Jan 5, plus entries that are not day partitions."""
    for offset in range(10):
        day = date(2026, 1, 1) + timedelta(days=offset)
        if day != date(2026, 1, 5):
            write_day(tmp_path, DS, day, _frame(day))
    (tmp_path / DS / "day=not-a-date").mkdir()
    (tmp_path / DS / "day=2026-13-45").mkdir()
    (tmp_path / DS / "_SUCCESS").write_text("")
    (tmp_path / DS / "notes").mkdir()
    return tmp_path


def test_available_days_sorted_and_filtered(root: Path) -> None:
    days = available_days(root, DS)
    assert days[0] == date(2026, 1, 1) and days[-1] == date(2026, 1, 10)
    assert date(2026, 1, 5) not in days and len(days) == 9
    assert available_days(root, "absent") == []


def test_training_window_and_holdout(root: Path) -> None:
    train, holdout = training_window(root, DS, date(2026, 1, 11), window_days=3)
    assert holdout == date(2026, 1, 10)
    assert train == [date(2026, 1, 7), date(2026, 1, 8), date(2026, 1, 9)]
    # A gap shrinks the calendar window instead of reaching further back.
    train, holdout = training_window(root, DS, date(2026, 1, 8), window_days=3)
    assert holdout == date(2026, 1, 7)
    assert train == [date(2026, 1, 4), date(2026, 1, 6)]


def test_missing_holdout_day_names_day_and_dir(root: Path) -> None:
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 6), window_days=3)  # holdout Jan 5 is missing
    assert exc.value.rule == "holdout day present"
    assert "2026-01-05" in str(exc.value)
    assert str(day_dir(root, DS, date(2026, 1, 5))) in str(exc.value)


def test_too_few_training_days(root: Path) -> None:
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 3), window_days=5)  # only Jan 1 before Jan 2
    assert exc.value.rule == "at least 2 training days"


def test_read_days_keeps_day_order(root: Path) -> None:
    df = read_days(root, DS, [date(2026, 1, 3), date(2026, 1, 2)])
    assert df["day"].tolist() == ["2026-01-02"] * 5 + ["2026-01-03"] * 5
    assert df.index.tolist() == list(range(10))


def test_read_day_concatenates_parquet_and_csv(root: Path) -> None:
    day = date(2026, 1, 2)
    write_day(root, DS, day, _frame(day, n=3), fmt="csv", part=1)
    df = read_day(root, DS, day)
    assert len(df) == 8
    assert df["user"].tolist() == ["u0", "u1", "u2", "u3", "u4", "u0", "u1", "u2"]


def test_missing_partition(root: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_day(root, DS, date(2026, 1, 5))
    assert exc.value.rule == "day partition exists"
    assert exc.value.source == str(day_dir(root, DS, date(2026, 1, 5)))


def test_corrupt_parquet_names_the_file(root: Path) -> None:
    bad = day_dir(root, DS, date(2026, 1, 3)) / "part-1.parquet"
    bad.write_bytes(b"this is not parquet \x00\x01\x02" * 10)
    with pytest.raises(DataError) as exc:
        read_day(root, DS, date(2026, 1, 3))
    assert exc.value.rule == "readable parquet"
    assert exc.value.source == str(bad)
    assert str(bad) in str(exc.value)


def test_corrupt_csv_names_the_file(root: Path) -> None:
    bad = day_dir(root, DS, date(2026, 1, 3)) / "part-1.csv"
    bad.write_bytes(b"a,b\n1,2\n\xff\xfe\x00garbage,,,,,\n")
    with pytest.raises(DataError) as exc:
        read_day(root, DS, date(2026, 1, 3))
    assert exc.value.rule == "readable csv"
    assert exc.value.source == str(bad)


def test_missing_required_column_names_column_and_file(root: Path, spec: DatasetSpec) -> None:
    day = date(2026, 1, 4)
    path = write_day(root, DS, day, _frame(day).drop(columns=["price"]), part=0)
    with pytest.raises(DataError) as exc:
        read_day(root, DS, day, spec=spec)
    assert exc.value.rule == "required column present"
    assert exc.value.column == "price"
    assert exc.value.source == str(path)
    assert "price" in str(exc.value) and str(path) in str(exc.value)
    # Without a spec nothing is checked.
    assert "price" not in read_day(root, DS, day).columns


def test_empty_day(tmp_path: Path) -> None:
    empty_dir = day_dir(tmp_path, DS, date(2026, 1, 1))
    empty_dir.mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        read_day(tmp_path, DS, date(2026, 1, 1))
    assert exc.value.rule == "non-empty day"
    write_day(tmp_path, DS, date(2026, 1, 1), _frame(date(2026, 1, 1)).iloc[:0])
    with pytest.raises(DataError) as exc:
        read_day(tmp_path, DS, date(2026, 1, 1))
    assert exc.value.rule == "non-empty day"


def test_temp_files_are_ignored(root: Path) -> None:
    directory = day_dir(root, DS, date(2026, 1, 2))
    (directory / ".part-9.parquet.abc.tmp").write_bytes(b"half written")
    (directory / ".hidden.parquet").write_bytes(b"half written")
    assert len(read_day(root, DS, date(2026, 1, 2))) == 5


def test_fingerprint_is_stable_and_content_sensitive(
    root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    days = [date(2026, 1, 2), date(2026, 1, 3)]
    fp = fingerprint(root, DS, days)
    assert fp == fingerprint(root, DS, list(reversed(days)))
    # Same files under another root: same fingerprint (relative paths only).
    other = tmp_path_factory.mktemp("elsewhere")
    for day in days:
        write_day(other, DS, day, _frame(day))
    assert fingerprint(other, DS, days) == fp
    write_day(other, DS, days[0], _frame(days[0], n=6))
    assert fingerprint(other, DS, days) != fp
    assert fingerprint(root, DS, days[:1]) != fp
