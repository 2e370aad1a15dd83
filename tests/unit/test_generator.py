"""Data tests for the synthetic click generator: determinism, shape, planted signal."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from feature_store.generators.synthetic import generate_synthetic, write_day
from feature_store.partitions import available_days, read_day
from feature_store.spec import load_spec

COLUMNS = [
    "user_id", "item_id", "user_segment", "item_category", "device", "hour",
    "position", "price", "day", "ts", "click", "true_ctr",
]


def _frame_hash(df: pd.DataFrame) -> str:
    row_hashes = pd.util.hash_pandas_object(df, index=True).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    generate_synthetic(root, start=date(2026, 1, 1), days=2, rows_per_day=4_000, seed=7)
    return root


def test_layout_and_columns(small: Path) -> None:
    assert available_days(small, "synthetic_clicks") == [date(2026, 1, 1), date(2026, 1, 2)]
    df = read_day(small, "synthetic_clicks", date(2026, 1, 2))
    assert list(df.columns) == COLUMNS
    assert len(df) == 4_000
    assert (df["day"] == "2026-01-02").all()
    assert df["hour"].between(0, 23).all() and df["position"].between(1, 10).all()
    assert (df["price"] > 0).all()
    assert set(df["device"]) <= {"mobile", "desktop", "tablet"}
    assert set(df["click"].unique()) <= {0, 1}
    assert df["user_id"].str.fullmatch(r"u\d{5}").all()
    assert df["item_id"].str.fullmatch(r"i\d{5}").all()
    start = pd.Timestamp("2026-01-02", tz="UTC").timestamp()
    assert df["ts"].between(start, start + 86_399).all()
    assert df["ts"].is_monotonic_increasing
    # Attributes are fixed per entity: one segment per user, one category per item.
    assert df.groupby("user_id")["user_segment"].nunique().max() == 1
    assert df.groupby("item_id")["item_category"].nunique().max() == 1
    # Atomic writes leave no temp files behind.
    assert not any(p.name.endswith(".tmp") for p in small.rglob("*"))


def test_same_seed_same_bytes(small: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path, start=date(2026, 1, 1), days=2, rows_per_day=4_000, seed=7)
    for path in again:
        original = small / path.relative_to(tmp_path)
        assert original.read_bytes() == path.read_bytes()
        assert _frame_hash(pd.read_parquet(original)) == _frame_hash(pd.read_parquet(path))


def test_world_is_shared_and_days_are_independent(small: Path, tmp_path: Path) -> None:
    # Day 2 generated alone is the same day 2: the world depends on the seed, a day on (seed, day).
    generate_synthetic(tmp_path, start=date(2026, 1, 2), days=1, rows_per_day=4_000, seed=7)
    alone = read_day(tmp_path, "synthetic_clicks", date(2026, 1, 2))
    assert _frame_hash(alone) == _frame_hash(read_day(small, "synthetic_clicks", date(2026, 1, 2)))
    day1 = read_day(small, "synthetic_clicks", date(2026, 1, 1))
    no_time = ["day", "ts"]
    assert _frame_hash(day1.drop(columns=no_time)) != _frame_hash(alone.drop(columns=no_time))


def test_different_seed_differs(small: Path, tmp_path: Path) -> None:
    generate_synthetic(tmp_path, start=date(2026, 1, 1), days=1, rows_per_day=4_000, seed=8)
    other = read_day(tmp_path, "synthetic_clicks", date(2026, 1, 1))
    base = read_day(small, "synthetic_clicks", date(2026, 1, 1))
    assert _frame_hash(other) != _frame_hash(base)
    assert not np.allclose(other["true_ctr"].to_numpy(), base["true_ctr"].to_numpy())


def test_planted_signal(tmp_path: Path) -> None:
    generate_synthetic(tmp_path, days=1, rows_per_day=20_000, seed=7)
    df = read_day(tmp_path, "synthetic_clicks", date(2026, 1, 1))
    assert 0.08 <= df["click"].mean() <= 0.22
    assert abs(df["click"].mean() - df["true_ctr"].mean()) < 0.01  # clicks are drawn from true_ctr
    assert roc_auc_score(df["click"], df["true_ctr"]) > 0.7
    # Position bias: the top slot gets clicked more than the bottom one.
    by_pos = df.groupby("position")["true_ctr"].mean()
    assert by_pos.loc[1] > by_pos.loc[10]
    # Zipf-like popularity: the most popular user and item carry far more than a uniform share.
    assert df["user_id"].value_counts().iloc[0] > 50 * len(df) / 5_000
    assert df["item_id"].value_counts().iloc[0] > 50 * len(df) / 2_000


def test_spec_loads_and_matches_generated_columns(small: Path) -> None:
    spec = load_spec("synthetic_clicks")
    assert spec.label == "click" and spec.oracle_column == "true_ctr"
    assert [c.name for c in spec.crosses] == ["user_segment_x_item_category", "device_x_hour"]
    df = read_day(small, "synthetic_clicks", date(2026, 1, 1), spec=spec)
    assert set(spec.required_columns) <= set(df.columns)


def test_write_day_csv_roundtrip(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = write_day(tmp_path, "toy", "2026-02-03", df, fmt="csv")
    assert path == tmp_path / "toy" / "day=2026-02-03" / "part-0.csv"
    pd.testing.assert_frame_equal(read_day(tmp_path, "toy", date(2026, 2, 3)), df)
    with pytest.raises(ValueError, match="fmt"):
        write_day(tmp_path, "toy", "2026-02-03", df, fmt="json")


def test_big_day_is_streamed_into_parts_whatever_the_cut(tmp_path: Path) -> None:
    # A day above part_rows: several zero-padded files in timestamp order, row groups of at
    # most row_group_rows, and the same rows for any part size and chunk size.
    import pyarrow.parquet as pq

    from feature_store.partitions import partition_files

    day = date(2026, 1, 1)
    a, b = tmp_path / "a", tmp_path / "b"
    generate_synthetic(a, days=1, rows_per_day=25_000, part_rows=10_000, row_group_rows=3_000)
    generate_synthetic(b, days=1, rows_per_day=25_000, part_rows=12_500, row_group_rows=4_096)
    files = partition_files(a, "synthetic_clicks", day)
    assert [p.name for p in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in files] == [10_000, 10_000, 5_000]
    assert max(pq.ParquetFile(p).metadata.row_group(g).num_rows
               for p in files for g in range(pq.ParquetFile(p).metadata.num_row_groups)) <= 3_000
    streamed = read_day(a, "synthetic_clicks", day)
    assert _frame_hash(streamed) == _frame_hash(read_day(b, "synthetic_clicks", day))
    assert list(streamed.columns) == COLUMNS and len(streamed) == 25_000
    assert streamed["ts"].is_monotonic_increasing and (streamed["day"] == "2026-01-01").all()
    assert streamed["position"].between(1, 10).all() and streamed["hour"].between(0, 23).all()
    generate_synthetic(tmp_path / "c", days=1, rows_per_day=25_000)
    one_file = read_day(tmp_path / "c", "synthetic_clicks", day)
    assert streamed.dtypes.equals(one_file.dtypes)  # same columns and types as a one-file day
    assert abs(streamed["click"].mean() - streamed["true_ctr"].mean()) < 0.01
    assert roc_auc_score(streamed["click"], streamed["true_ctr"]) > 0.7
    # Regenerating the day smaller replaces the parts instead of adding to them.
    generate_synthetic(a, days=1, rows_per_day=4_000)
    assert [p.name for p in partition_files(a, "synthetic_clicks", day)] == ["part-0.parquet"]
