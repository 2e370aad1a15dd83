"""The night's work directory: removed at the end, kept on request, and what a killed night
left is removed by the next night of the same dataset only."""

from __future__ import annotations

from datetime import date

import pytest

from tasks.workdir import KEEP_MARKER, night_workdir, remove_stale, work_root

DAY = date(2026, 1, 10)


def test_the_directory_is_removed_when_the_night_ends_even_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with night_workdir(tmp_path, "clicks", DAY, log=lambda _: None) as work:
            (work / "transformed").mkdir()
            (work / "transformed" / "part-00000.parquet").write_bytes(b"x")
            raise RuntimeError("the night failed")
    assert not work.exists()


def test_a_kept_directory_is_marked_and_survives_the_next_night(tmp_path):
    with night_workdir(tmp_path, "clicks", DAY, keep=True, log=lambda _: None) as kept:
        pass
    assert (kept / KEEP_MARKER).exists()
    with night_workdir(tmp_path, "clicks", DAY, log=lambda _: None):
        assert kept.exists()


def test_leftovers_of_a_killed_night_go_but_not_another_datasets(tmp_path):
    root = work_root(tmp_path)
    killed = root / "clicks-2026-01-09-4242"
    other = root / "clicks_eu-2026-01-09-4243"  # a dataset whose name extends this one
    for path in (killed, other):
        (path / "vocab").mkdir(parents=True)
    seen = []
    with night_workdir(tmp_path, "clicks", DAY, log=seen.append):
        assert not killed.exists() and other.exists()
    assert any(str(killed) in line for line in seen)
    assert remove_stale(tmp_path, "clicks_eu") == [other]
