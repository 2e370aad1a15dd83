"""Criteo TSV import on small files the tests write: day partitions in file order, missing
values, negative counts, the spec's preprocessing, and bad input (wrong field count, a
non-integer count, a label that is not 0/1) naming the file, the line and the rule, with
nothing left half-written."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.datasets import criteo, store
from feature_store.errors import DataError
from feature_store.partitions import available_days, read_day, read_days
from feature_store.spec import load_spec
from feature_store.validation import validate_frame
from feature_store.workflow import Preprocessor

START = date(2014, 5, 1)
LINES = 3_000


def make_lines(n: int, seed: int = 0) -> list[str]:
    """Criteo-like lines: ~20% empty counts, I2 down to -3, 8-hex-digit categories (~10% empty)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        label = str(int(rng.random() < 0.25))
        ints = [
            ""
            if rng.random() < 0.2
            else str(int(rng.integers(-3, 50) if j == 1 else rng.zipf(1.5) - 1))
            for j in range(13)
        ]
        cats = [
            ""
            if rng.random() < 0.1
            else f"{int(rng.integers(0, 8 if j < 13 else 2000)) * 2654435761 % 2**32:08x}"
            for j in range(26)
        ]
        lines.append("\t".join([label, *ints, *cats]))
    return lines


def write_tsv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines(LINES)


@pytest.fixture(scope="module")
def imported(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> tuple[Path, criteo.ImportSummary]:
    base = tmp_path_factory.mktemp("criteo")
    path = write_tsv(base / "train.txt", lines)
    root = base / "data"
    # Small chunks and parts, so days span chunks and parts, and chunks span days.
    summary = criteo.import_criteo(path, root, START, days=3, chunk_lines=700, part_rows=600)
    return root, summary


def test_days_follow_file_order(imported, lines: list[str]) -> None:
    root, summary = imported
    assert summary.rows == LINES
    assert available_days(root, "criteo") == [date(2014, 5, 1), date(2014, 5, 2), date(2014, 5, 3)]
    assert list(summary.days.values()) == [1_000, 1_000, 1_000]
    frame = read_days(root, "criteo", available_days(root, "criteo"))
    assert frame.columns.tolist() == [*criteo.COLUMNS, "day"]
    expected = pd.Series([line.split("\t")[0] for line in lines]).astype(np.int64)
    assert frame["label"].tolist() == expected.tolist()  # file order kept across chunks
    first = lines[0].split("\t")
    row = frame.iloc[0]
    for j, column in enumerate(criteo.INT_COLUMNS, start=1):
        assert (np.isnan(row[column]) and first[j] == "") or row[column] == int(first[j])
    for j, column in enumerate(criteo.CAT_COLUMNS, start=14):
        assert (row[column] is None and first[j] == "") or row[column] == first[j]
    assert (
        frame["I2"].min() < 0 and frame[criteo.INT_COLUMNS].isna().mean().between(0.15, 0.25).all()
    )
    assert frame["I1"].dtype == np.float64 and frame["label"].dtype == np.int64
    files = sorted((root / "criteo" / "day=2014-05-01").iterdir())
    assert [p.name for p in files] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]  # zero-padded: name order is file order
    import pyarrow.parquet as pq

    # 600 rows (one row group per chunk piece: lines 1-600 of chunk 1), then 400 (100 + 300).
    assert [pq.ParquetFile(p).metadata.num_rows for p in files] == [600, 400]
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in files] == [1, 2]
    manifest = store.read_manifest(root, "criteo")
    assert manifest["rows"] == LINES and manifest["rows_per_day"] == 1_000


def test_rows_per_day_and_gzip(tmp_path: Path, lines: list[str]) -> None:
    import gzip

    path = tmp_path / "day_0.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines[:250]))  # no newline after the last line
    summary = criteo.import_criteo(
        path, tmp_path / "data", START, rows_per_day=100, dataset="criteo_sample"
    )
    assert list(summary.days.values()) == [100, 100, 50]
    assert criteo.count_lines(path) == 250


def test_spec_validates_and_preprocesses_the_days(imported) -> None:
    root, _ = imported
    spec = load_spec("criteo")
    train = read_days(root, "criteo", [date(2014, 5, 1), date(2014, 5, 2)], spec)
    holdout = read_day(root, "criteo", date(2014, 5, 3), spec)
    assert validate_frame(holdout, spec, "criteo holdout").ok
    pre = Preprocessor.fit(spec, train)
    arrays = pre.transform(holdout)
    assert arrays.cat.shape == (1_000, 26) and arrays.cont.shape == (1_000, 13)
    assert arrays.cross.shape == (1_000, 3)
    assert np.isfinite(arrays.cont).all()  # negatives clipped before the log, empties filled
    cards = {f["name"]: f["cardinality"] for f in pre.layout["categorical"]}
    assert cards["C3"] == 100_000 and cards["C9"] < 20


@pytest.mark.parametrize(
    ("line_no", "mutate", "rule", "column"),
    [
        (1_234, lambda f: f[:-1], "40 tab-separated fields", None),
        (1_500, lambda f: [*f, "extra"], "40 tab-separated fields", None),
        (2_001, lambda f: [f[0], f[1], "3.5", *f[3:]], "integer or empty", "I2"),
        (17, lambda f: [f[0], "abc", *f[2:]], "integer or empty", "I1"),
        (999, lambda f: ["2", *f[1:]], "label is 0 or 1", "label"),
        (2_999, lambda f: ["", *f[1:]], "label is 0 or 1", "label"),
    ],
)
def test_bad_line_names_file_line_and_rule(
    tmp_path: Path, lines, line_no, mutate, rule, column
) -> None:
    bad = list(lines)
    bad[line_no - 1] = "\t".join(mutate(bad[line_no - 1].split("\t")))
    path = write_tsv(tmp_path / "train.txt", bad)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        criteo.import_criteo(path, root, START, days=3, chunk_lines=700)
    error = info.value
    assert error.source == f"{path}:{line_no}" and rule in error.rule and error.column == column
    assert f"{path}:{line_no}" in str(error)
    assert list(root.iterdir()) == []  # the staged days were removed; nothing half-written


def test_a_failed_reimport_keeps_the_previous_data(tmp_path: Path, lines) -> None:
    good = write_tsv(tmp_path / "good.txt", lines[:600])
    root = tmp_path / "data"
    criteo.import_criteo(good, root, START, rows_per_day=200)
    before = read_days(root, "criteo", available_days(root, "criteo"))
    with pytest.raises(DataError, match="pass --force"):
        criteo.import_criteo(good, root, START, rows_per_day=200)
    bad = write_tsv(tmp_path / "bad.txt", [*lines[:400], "1\t2"])
    with pytest.raises(DataError, match=r"bad\.txt:401"):
        criteo.import_criteo(bad, root, START, rows_per_day=100, force=True)
    after = read_days(root, "criteo", available_days(root, "criteo"))
    pd.testing.assert_frame_equal(before, after)
    assert sorted(p.name for p in root.iterdir()) == ["criteo"]


def test_blank_line_and_empty_file(tmp_path: Path, lines) -> None:
    path = write_tsv(tmp_path / "gap.txt", [lines[0], "", lines[1]])
    with pytest.raises(DataError, match=r"gap\.txt:2.*found 1"):
        criteo.import_criteo(path, tmp_path / "data", START, rows_per_day=10)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="non-empty file"):
        criteo.import_criteo(empty, tmp_path / "data", START, days=2)
    with pytest.raises(ValueError, match="exactly one"):
        criteo.import_criteo(empty, tmp_path / "data", START)
