"""Bucketized columns derived from a continuous one (`bucketized:` in a spec), and clipping
before the log: one source column feeds both a normalized value and a crossable bucket id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.errors import SpecError
from feature_store.spec import DatasetSpec, load_spec
from feature_store.workflow import Preprocessor

AGE_BOUNDARIES = [18, 30, 50]


def _spec(**extra) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "derived",
            "label": "y",
            "categorical": [{"name": "edu"}],
            "continuous": [{"name": "age"}, {"name": "count", "clip_min": 0, "log": True}],
            "bucketized": [{"name": "age_buckets", "source": "age", "boundaries": AGE_BOUNDARIES}],
            "crosses": [{"columns": ["age_buckets", "edu"], "buckets": 64}],
            **extra,
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "edu": rng.choice(["hs", "ba", "ms", "phd"], n),
            "age": rng.uniform(10, 70, n),
            "count": rng.integers(0, 1000, n).astype(np.float64),
            "y": rng.integers(0, 2, n),
        }
    )
    df.loc[:5, "count"] = [-3, -2, -1, 0, 0, 0]  # negative sentinels next to true zeros
    df.loc[::11, "age"] = np.nan
    return df


@pytest.fixture(scope="module")
def fitted(frame: pd.DataFrame) -> Preprocessor:
    return Preprocessor.fit(_spec(), frame)


def test_source_stays_a_continuous_input_and_the_buckets_are_derived(fitted: Preprocessor) -> None:
    assert fitted.spec.feature_columns == ["edu", "age", "count"]  # raw inputs only
    assert "age_buckets" not in fitted.input_dtypes
    assert [f["name"] for f in fitted.layout["categorical"]] == ["edu", "age_buckets"]
    assert fitted.layout["continuous"] == ["age", "count"]
    cards = {f["name"]: f["cardinality"] for f in fitted.layout["categorical"]}
    assert cards["age_buckets"] == len(AGE_BOUNDARIES) + 1
    assert fitted.layout["crosses"] == [{"name": "age_buckets_x_edu", "cardinality": 64}]


def test_bucket_ids_follow_the_filled_source(fitted: Preprocessor, frame: pd.DataFrame) -> None:
    arrays = fitted.transform(frame)
    buckets = arrays.cat[:, 1]
    filled = frame["age"].fillna(frame["age"].median())  # FillMedian, as the source's spec says
    assert np.array_equal(buckets, np.digitize(filled, AGE_BOUNDARIES))
    # The same rows still get the normalized age: about zero mean, unit variance.
    age = arrays.cont[:, 0]
    assert abs(age.mean()) < 0.05 and abs(age.std() - 1.0) < 0.05


def test_cross_sees_the_bucket_not_the_raw_age(fitted: Preprocessor, frame: pd.DataFrame) -> None:
    arrays = fitted.transform(frame)
    pairs = pd.DataFrame(
        {"bucket": arrays.cat[:, 1], "edu": frame["edu"], "cross": arrays.cross[:, 0]}
    )
    # One id per (bucket, edu): ages in one bucket share the cross id.
    assert pairs.groupby(["bucket", "edu"])["cross"].nunique().max() == 1


def test_clip_before_log_keeps_negative_sentinels_finite(
    fitted: Preprocessor, frame: pd.DataFrame
) -> None:
    count = fitted.transform(frame).cont[:, 1]
    assert np.isfinite(count).all()
    negative = (frame["count"] < 0).to_numpy()
    zero = (frame["count"] == 0).to_numpy()
    assert negative.any() and zero.any()
    assert np.allclose(count[negative], count[zero][0])  # -3..-1 are clipped to 0


def test_save_load_keeps_the_derived_column(
    fitted: Preprocessor, frame: pd.DataFrame, tmp_path
) -> None:
    fitted.save(tmp_path / "pre")
    loaded = Preprocessor.load(tmp_path / "pre")
    assert loaded.spec.bucketized == fitted.spec.bucketized
    assert np.array_equal(loaded.transform(frame).cat, fitted.transform(frame).cat)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"bucketized": [{"name": "b", "source": "edu", "boundaries": [1]}]},
            "source 'edu' must be a continuous",
        ),
        ({"bucketized": [{"name": "b", "source": "nope", "boundaries": [1]}]}, "source 'nope'"),
        (
            {"bucketized": [{"name": "b", "source": "age", "boundaries": [3, 2]}]},
            "strictly increasing",
        ),
        ({"bucketized": [{"name": "edu", "source": "age", "boundaries": [1]}]}, "declared twice"),
        (
            {"bucketized": [{"name": "b", "source": "age", "boundaries": [1], "extra": 1}]},
            "bucketized.0.extra",
        ),
    ],
)
def test_bad_bucketized_entry_names_the_field(tmp_path, change, fragment) -> None:
    import yaml

    raw = _spec().model_dump(mode="json", exclude_none=True)
    raw.update(change)
    raw["crosses"] = []
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
