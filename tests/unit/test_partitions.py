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
    describe_days,
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


def test_missing_day_inside_the_window_is_an_error(root: Path) -> None:
    """The window is the calendar range [D-1-window_days, D-2]: a gap in it is named, not
    silently dropped (before, Jan 5 vanished and the window shrank to Jan 4 and 6)."""
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 8), window_days=3)
    assert exc.value.rule == "every day of the training window present"
    assert exc.value.source == str(day_dir(root, DS, date(2026, 1, 5)))
    assert "window 2026-01-04..2026-01-06 misses 2026-01-05" in str(exc.value)
    assert "allow_missing_days" in str(exc.value)


def test_allow_missing_days_keeps_the_days_that_exist(root: Path) -> None:
    train, holdout = training_window(root, DS, date(2026, 1, 8), window_days=3, allow_missing_days=True)
    assert holdout == date(2026, 1, 7)
    # The calendar range stays [D-1-window_days, D-2]: it never reaches back to staler days.
    assert train == [date(2026, 1, 4), date(2026, 1, 6)]
    assert describe_days(train) == "2026-01-04, 2026-01-06 (missing 2026-01-05)"


def test_describe_days_shows_runs_and_gaps() -> None:
    jan = [date(2026, 1, d) for d in (1, 2, 3, 4, 6, 7, 8, 9)]
    assert describe_days(jan) == "2026-01-01..2026-01-04, 2026-01-06..2026-01-09 (missing 2026-01-05)"
    assert describe_days(jan[:4]) == "2026-01-01..2026-01-04"
    assert describe_days([]) == "none"
    sparse = [date(2026, 1, 1) + timedelta(days=2 * i) for i in range(40)]  # every other day
    text = describe_days(sparse)
    assert text.startswith("2026-01-01, 2026-01-03, ") and "... (30 more), " in text
    assert "missing 39 days: 2026-01-02, 2026-01-04, " in text and len(text) < 400


def test_missing_holdout_day_names_day_and_dir(root: Path) -> None:
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 6), window_days=3)  # holdout Jan 5 is missing
    assert exc.value.rule == "holdout day present"
    assert "2026-01-05" in str(exc.value)
    assert str(day_dir(root, DS, date(2026, 1, 5))) in str(exc.value)
    # The available days show their gap instead of hiding it in "first..last".
    assert str(exc.value).endswith(
        "available days: 2026-01-01..2026-01-04, 2026-01-06..2026-01-10 (missing 2026-01-05)"
    )


def test_too_few_training_days(root: Path) -> None:
    # Only Jan 1 before Jan 2: the window Dec 28..Jan 1 misses four days...
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 3), window_days=5)
    assert exc.value.rule == "every day of the training window present"
    assert "misses 2025-12-28, 2025-12-29, 2025-12-30, 2025-12-31" in str(exc.value)
    # ...and even where gaps are allowed, one day is too few to fit and validate.
    with pytest.raises(DataError) as exc:
        training_window(root, DS, date(2026, 1, 3), window_days=5, allow_missing_days=True)
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


def test_duplicate_part_files_are_an_error_naming_both(root: Path) -> None:
    """A day written twice used to double its rows without a word."""
    directory = day_dir(root, DS, date(2026, 1, 2))
    original = directory / "part-0.parquet"
    copy = directory / "part-0 (copy).parquet"
    copy.write_bytes(original.read_bytes())
    with pytest.raises(DataError) as exc:
        read_day(root, DS, date(2026, 1, 2))
    assert exc.value.rule == "no two part files with the same content"
    assert exc.value.source in {str(original), str(copy)}
    assert str(original) in str(exc.value) and str(copy) in str(exc.value)
    copy.unlink()
    assert len(read_day(root, DS, date(2026, 1, 2))) == 5


def test_fingerprint_is_unchanged_for_the_same_files(root: Path) -> None:
    """The fingerprint is the one the loop always computed (a re-run of the same night must
    see the same value): sha256 over 'relative path, size, content sha256' per file."""
    import hashlib

    days = [date(2026, 1, 2), date(2026, 1, 3)]
    digest = hashlib.sha256()
    for day in days:
        for path in sorted(day_dir(root, DS, day).glob("*.parquet")):
            rel = path.relative_to(root / DS).as_posix()
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"{rel}\0{path.stat().st_size}\0{content}\n".encode())
    assert fingerprint(root, DS, days) == digest.hexdigest()[:16]


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
