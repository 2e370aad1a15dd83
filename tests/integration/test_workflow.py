"""Integration tests of the NVTabular preprocessing built from a spec (CPU mode)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.errors import DataError
from feature_store.generators.synthetic import generate_synthetic
from feature_store.partitions import read_day, read_days, training_window
from feature_store.spec import DatasetSpec, load_spec
from feature_store.workflow import (
    CATEGORIFY_NULL_ID,
    CATEGORIFY_OOV_ID,
    FeatureArrays,
    Preprocessor,
    select_device,
)
from models.schema import InputSchema

DS = "synthetic_clicks"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("raw")
    generate_synthetic(root, start=date(2026, 1, 1), days=4, rows_per_day=3_000, seed=11)
    train_days, holdout = training_window(root, DS, date(2026, 1, 5), window_days=3)
    spec = load_spec(DS)
    return read_days(root, DS, train_days, spec), read_day(root, DS, holdout, spec)


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, pd.DataFrame]) -> Preprocessor:
    return Preprocessor.fit(load_spec(DS), data[0])


def _assert_in_range(arrays: FeatureArrays, layout: dict) -> None:
    for block, fields in ((arrays.cat, layout["categorical"]), (arrays.cross, layout["crosses"])):
        assert block.dtype == np.int64
        cards = np.array([f["cardinality"] for f in fields])
        assert (block >= 0).all()
        assert (block < cards).all(), dict(zip([f["name"] for f in fields], block.max(0)))


def test_select_device_is_cpu_here() -> None:
    assert select_device() == "cpu"


def test_layout_matches_schema_and_models(fitted: Preprocessor) -> None:
    layout = fitted.layout
    assert [f["name"] for f in layout["categorical"]] == [
        "user_id", "item_id", "user_segment", "item_category", "device", "hour", "position",
    ]
    assert layout["continuous"] == ["price"]
    assert layout["crosses"] == [
        {"name": "user_segment_x_item_category", "cardinality": 2000},
        {"name": "device_x_hour", "cardinality": 500},
    ]
    assert layout["user_fields"] == ["user_id", "user_segment"]
    assert layout["item_fields"] == ["item_id", "item_category"]  # price is continuous
    cards = {f["name"]: f["cardinality"] for f in layout["categorical"]}
    # 3 reserved ids (padding, null, OOV) + the vocabulary seen in training.
    assert cards["device"] == 3 + 3 and cards["hour"] == 3 + 24 and cards["position"] == 3 + 10
    schema = InputSchema.from_layout(layout)
    assert schema.to_layout() == layout


def test_label_and_oracle_are_not_in_the_workflow(fitted: Preprocessor) -> None:
    outputs = set(fitted.workflow.output_schema.column_names)
    inputs = set(fitted.input_dtypes)
    for column in ("click", "true_ctr", "day", "ts"):
        assert column not in outputs and column not in inputs


def test_every_id_below_its_cardinality(fitted: Preprocessor, data: tuple) -> None:
    train, holdout = data
    for frame in (train, holdout):
        arrays = fitted.transform(frame)
        assert arrays.cat.shape == (len(frame), 7)
        assert arrays.cont.shape == (len(frame), 1) and arrays.cont.dtype == np.float32
        assert arrays.cross.shape == (len(frame), 2)
        assert np.isfinite(arrays.cont).all()
        _assert_in_range(arrays, fitted.layout)
    # Normalized log price: about zero mean, unit variance on the training window.
    cont = fitted.transform(train).cont[:, 0]
    assert abs(cont.mean()) < 0.05 and abs(cont.std() - 1.0) < 0.05


def test_fitted_on_train_only(fitted: Preprocessor, data: tuple) -> None:
    _, holdout = data
    rows = holdout.iloc[:4].copy()
    rows["device"] = ["smart_tv", "mobile", "mobile", "mobile"]  # never seen in training
    rows["user_id"] = ["u_new_1", rows["user_id"].iloc[1], "u_new_2", rows["user_id"].iloc[3]]
    cat = fitted.transform(rows).cat
    names = [f["name"] for f in fitted.layout["categorical"]]
    assert cat[0, names.index("device")] == CATEGORIFY_OOV_ID
    assert (cat[1:, names.index("device")] > CATEGORIFY_OOV_ID).all()
    assert cat[0, names.index("user_id")] == CATEGORIFY_OOV_ID
    assert cat[2, names.index("user_id")] == CATEGORIFY_OOV_ID


def test_rare_ids_below_threshold_are_oov(fitted: Preprocessor, data: tuple) -> None:
    train, _ = data
    counts = train["user_id"].value_counts()
    rare, common = counts[counts < 3].index[0], counts[counts >= 3].index[0]
    rows = train[train["user_id"].isin([rare, common])].drop_duplicates("user_id")
    ids = dict(zip(rows["user_id"], fitted.transform(rows).cat[:, 0]))
    assert ids[rare] == CATEGORIFY_OOV_ID and ids[common] > CATEGORIFY_OOV_ID


def test_crosses_are_value_functions(fitted: Preprocessor, data: tuple) -> None:
    _, holdout = data
    cross = fitted.transform(holdout).cross
    frame = pd.DataFrame(
        {"seg_cat": cross[:, 0], "dev_hour": cross[:, 1], "s": holdout["user_segment"],
         "c": holdout["item_category"], "d": holdout["device"], "h": holdout["hour"]}
    )
    # One id per value pair, whatever the row (NVTabular 23.08 on CPU hashes the index too).
    assert frame.groupby(["s", "c"])["seg_cat"].nunique().max() == 1
    assert frame.groupby(["d", "h"])["dev_hour"].nunique().max() == 1
    assert frame["seg_cat"].nunique() > 0.7 * frame.groupby(["s", "c"]).ngroups  # few collisions


def test_row_order_preserved_on_any_index(fitted: Preprocessor, data: tuple) -> None:
    _, holdout = data
    base = fitted.transform(holdout)
    shuffled = holdout.sample(frac=1.0, random_state=3)  # index is now a permutation
    out = fitted.transform(shuffled)
    order = shuffled.index.to_numpy()
    assert np.array_equal(out.cat, base.cat[order])
    assert np.array_equal(out.cross, base.cross[order])
    assert np.array_equal(out.cont, base.cont[order])
    # One row at a time gives the same ids as the batch (serving path).
    for i in (0, 17, 999):
        single = fitted.transform(holdout.iloc[[i]])
        assert np.array_equal(single.cat[0], base.cat[i])
        assert np.array_equal(single.cross[0], base.cross[i])


def test_nulls_and_serving_dtypes(fitted: Preprocessor, data: tuple) -> None:
    _, holdout = data
    names = [f["name"] for f in fitted.layout["categorical"]]
    base = fitted.transform(holdout.iloc[[5]])
    row = holdout.iloc[[5]].copy()
    row["device"] = None
    row["hour"] = np.nan  # an integer column with a null
    cat = fitted.transform(row).cat
    assert cat[0, names.index("device")] == CATEGORIFY_NULL_ID
    assert cat[0, names.index("hour")] == CATEGORIFY_NULL_ID
    # hour sent as a string or as int32 (JSON, another client) maps to the same ids.
    hour = int(holdout["hour"].iloc[5])
    for sent in (np.array([str(hour)], dtype=object), np.array([hour], dtype=np.int32)):
        other = holdout.iloc[[5]].copy()
        other["hour"] = sent
        arrays = fitted.transform(other)
        assert np.array_equal(arrays.cat, base.cat) and np.array_equal(arrays.cross, base.cross)
    with pytest.raises(DataError, match="position"):
        fitted.transform(holdout.iloc[:3].drop(columns=["position"]))
    assert len(fitted.transform(holdout.iloc[:0])) == 0


def test_save_load_transforms_identically(
    fitted: Preprocessor, data: tuple, tmp_path: Path
) -> None:
    _, holdout = data
    before = fitted.transform(holdout)
    fitted.save(tmp_path / "pre")
    meta = json.loads((tmp_path / "pre" / "layout.json").read_text())
    assert meta["device"] == "cpu" and meta["nvtabular_version"].startswith("23.")
    assert InputSchema.from_layout(meta).to_layout() == fitted.layout
    loaded = Preprocessor.load(tmp_path / "pre")
    after = loaded.transform(holdout)
    assert loaded.layout == fitted.layout
    assert np.array_equal(before.cat, after.cat)
    assert np.array_equal(before.cont, after.cont)
    assert np.array_equal(before.cross, after.cross)
    with pytest.raises(RuntimeError, match="gpu"):
        Preprocessor.load(tmp_path / "pre", device="gpu")
    # The in-memory object does not depend on the saved copy (it may be deleted after logging).
    fitted.save(tmp_path / "scratch")
    shutil.rmtree(tmp_path / "scratch")
    assert np.array_equal(fitted.transform(holdout).cat, before.cat)


def test_load_in_a_fresh_process(fitted: Preprocessor, data: tuple, tmp_path: Path) -> None:
    _, holdout = data
    fitted.save(tmp_path / "pre")
    holdout.iloc[:200].to_parquet(tmp_path / "rows.parquet")
    np.save(tmp_path / "expected.npy", fitted.transform(holdout.iloc[:200]).cross)
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from feature_store.workflow import Preprocessor\n"
        "d = sys.argv[1]\n"
        "out = Preprocessor.load(d + '/pre').transform(pd.read_parquet(d + '/rows.parquet'))\n"
        "assert np.array_equal(out.cross, np.load(d + '/expected.npy'))\n"
    )
    repo = Path(__file__).parents[2]
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=repo)


def _mixed_spec(hour_as: str) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "mixed",
            "label": "y",
            "categorical": [
                {"name": "hour"},
                {"name": "city", "hash_buckets": 16},
                {"name": "color", "freq_threshold": 2},
            ],
            "continuous": [
                {"name": "age", "bucketize": [18, 30, 50]},
                {"name": "amount", "fill": "zero", "log": True},
            ],
            "crosses": [
                {"columns": ["age", "hour"], "buckets": 64},
                {"columns": ["color", "age"], "buckets": 32},
                {"columns": ["hour", "city", "color"], "buckets": 100},
            ],
            "user_columns": ["age", "city"],
            "item_columns": ["color", "amount"],
        }
    )


@pytest.mark.parametrize("hour_as", ["int", "str"])
def test_string_and_int_columns_bucketize_and_hash(hour_as: str) -> None:
    rng = np.random.default_rng(0)
    n = 400
    hour = rng.integers(0, 24, n)
    df = pd.DataFrame(
        {
            "hour": hour if hour_as == "int" else hour.astype(str).astype(object),
            "city": rng.choice(["paris", "lyon", "nice", None], n),
            "color": rng.choice(["red", "blue", "green", None], n),
            "age": rng.uniform(10, 70, n),
            "amount": rng.exponential(10.0, n),
            "y": rng.integers(0, 2, n),
        }
    )
    df.loc[::7, "age"] = np.nan
    df.loc[::5, "amount"] = np.nan
    spec = _mixed_spec(hour_as)
    pre = Preprocessor.fit(spec, df)
    assert "y" not in pre.workflow.input_schema.column_names
    assert "y" not in pre.workflow.output_schema.column_names
    layout = pre.layout
    assert [f["name"] for f in layout["categorical"]] == ["hour", "city", "color", "age"]
    cards = {f["name"]: f["cardinality"] for f in layout["categorical"]}
    assert cards["city"] == 16 and cards["age"] == 4 and cards["hour"] == 3 + 24
    assert [f["cardinality"] for f in layout["crosses"]] == [64, 32, 100]
    assert layout["user_fields"] == ["city", "age"] and layout["item_fields"] == ["color"]
    arrays = pre.transform(df)
    _assert_in_range(arrays, layout)
    assert np.isfinite(arrays.cont).all()
    assert (arrays.cat[:, 0] > CATEGORIFY_OOV_ID).all()  # every hour seen in training
    # Bucket ids follow the boundaries; a null age is filled with the median first.
    known = df["age"].notna().to_numpy()
    assert np.array_equal(arrays.cat[known, 3], np.digitize(df["age"][known], [18, 30, 50]))


def test_cross_of_equal_values_does_not_collapse() -> None:
    # NVTabular XORs per-column hashes, so every row with home == away lands in bucket 0.
    spec = DatasetSpec.model_validate(
        {
            "name": "pairs",
            "label": "y",
            "categorical": [{"name": "home"}, {"name": "away"}],
            "crosses": [{"columns": ["home", "away"], "buckets": 1000}],
        }
    )
    teams = [f"t{i}" for i in range(20)]
    df = pd.DataFrame({"home": teams + teams[:5], "away": teams + teams[5:10], "y": 0})
    cross = Preprocessor.fit(spec, df).transform(df).cross[:, 0]
    assert len(set(cross[:20])) > 15  # 20 equal pairs, few collisions in 1000 buckets
