"""`recloop datasets ...` through the real typer app: list, prepare, fetch (from a local zip,
so no network), import-criteo, and their errors (exit status 2, one message)."""

from __future__ import annotations

from pathlib import Path

from test_datasets_criteo import make_lines, write_tsv
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_list_shows_every_dataset_with_source_and_status(recloop_home: Path) -> None:
    result = invoke("datasets", "list")
    assert result.exit_code == 0, result.output
    for fragment in (
        "adult",
        "movielens-100k",
        "criteo",
        "CC BY 4.0",
        "no redistribution",
        "absent",
    ):
        assert fragment in result.output
    assert str(recloop_home / "data") in result.output.replace("\n", "")


def test_prepare_adult_then_list_says_present(recloop_home: Path) -> None:
    result = invoke("datasets", "prepare", "adult")
    assert result.exit_code == 0, result.output
    assert "official test on 1994-01-08" in result.output
    assert "recloop run --dataset adult --date 1994-01-09" in result.output
    assert (recloop_home / "data" / "adult" / "day=1994-01-08").is_dir()
    again = invoke("datasets", "prepare", "adult")
    assert again.exit_code == 2 and "pass --force" in again.output
    listed = invoke("datasets", "list")
    assert "present: 8 days" in listed.output and "48,842 rows" in listed.output


def test_fetch_from_a_bad_zip_fails_cleanly(recloop_home: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(b"not a zip")
    result = invoke("datasets", "fetch", "movielens-100k", "--from-zip", str(archive))
    assert result.exit_code == 2
    assert (
        "readable zip" in result.output and "no redistribution" in result.output
    )  # licence note first
    assert not (recloop_home / "data" / "movielens_100k").exists()


def test_wrong_command_for_a_dataset_points_to_the_right_one(recloop_home: Path) -> None:
    result = invoke("datasets", "fetch", "adult")
    assert result.exit_code == 2 and "recloop datasets prepare adult" in result.output
    unknown = invoke("datasets", "fetch", "imagenet")
    assert (
        unknown.exit_code == 2 and "known: ['adult', 'criteo', 'movielens-100k']" in unknown.output
    )


def test_import_criteo(recloop_home: Path, tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "train.txt", make_lines(600))
    result = invoke(
        "datasets", "import-criteo", str(path), "--start-day", "2014-05-01", "--rows-per-day", "250"
    )
    assert result.exit_code == 0, result.output
    assert "wrote 600 lines as 3 day partitions" in result.output
    assert "2014-05-03 (100)" in result.output
    both = invoke("datasets", "import-criteo", str(path), "--start-day", "2014-05-01")
    assert both.exit_code == 2 and "exactly one of --rows-per-day and --days" in both.output
    bad = write_tsv(tmp_path / "bad.txt", [*make_lines(5), "2" + "\t" * 39])
    failed = invoke(
        "datasets",
        "import-criteo",
        str(bad),
        "--start-day",
        "2014-05-01",
        "--days",
        "2",
        "--dataset",
        "criteo_bad",
    )
    assert failed.exit_code == 2
    assert f"{bad}:6" in failed.output.replace("\n", "") and "label is 0 or 1" in failed.output
    assert not (recloop_home / "data" / "criteo_bad").exists()
