"""Dataset specs are validated on load; every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from feature_store.errors import SpecError
from feature_store.spec import load_spec, spec_to_yaml
from feature_store.validation import validate_frame

BASE = {
    "name": "tiny",
    "label": "click",
    "categorical": [{"name": "device"}, {"name": "user_id", "freq_threshold": 2}],
    "continuous": [{"name": "price", "log": True}],
    "crosses": [{"columns": ["device", "user_id"], "buckets": 100}],
}


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_valid_spec_round_trips(tmp_path):
    spec = load_spec(_write(tmp_path, BASE))
    assert spec.feature_columns == ["device", "user_id", "price"]
    assert load_spec(_write(tmp_path, spec_to_yaml(spec))) == spec


def test_bundled_spec_loads_by_name():
    spec = load_spec("synthetic_clicks")
    assert spec.label == "click" and spec.oracle_column == "true_ctr"
    assert spec.oracle_column not in spec.feature_columns


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"categorical": [{"name": "device", "frequency": 3}]}, "categorical.0.frequency"),  # unknown key
        ({"crosses": [{"columns": ["device", "nope"], "buckets": 10}]}, "['nope'] must be categorical"),
        ({"continuous": [{"name": "click"}]}, "cannot also be features"),
        ({"continuous": [{"name": "price", "bucketize": [5, 1]}]}, "strictly increasing"),
        ({"crosses": [{"columns": ["device", "user_id"], "buckets": 1}]}, "crosses.0.buckets"),
        ({"label": None}, "label"),
        # Expectations that no value, or no column, could meet are spec errors, not silent no-ops.
        ({"expectations": {"columns": {"score": {"min": 3, "max": 1}}}},
         "expectations.columns.score: Value error, min 3.0 > max 1.0"),
        ({"expectations": {"columns": {"score": {"dtype": "integer", "allow_infinite": True}}}},
         "allow_infinite: integer columns cannot hold inf"),
        ({"expectations": {"columns": {"score": {"allowed_values": []}}}}, "expectations.columns.score.allowed_values"),
        ({"expectations": {"columns": {"price": {"dtype": "float", "allow_infinite": True}}}},
         "expectations.columns.price.allow_infinite: a continuous feature cannot take inf"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, change, fragment):
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(SpecError, match="synthetic_clicks"):
        load_spec("no_such_dataset")


def test_invalid_yaml(tmp_path):
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(_write(tmp_path, "name: [unclosed"))


def test_clean_day_passes_the_suite_and_a_bad_one_lists_every_failure():
    spec = load_spec("synthetic_clicks")
    from datetime import date

    from feature_store.generators.synthetic import generate_day, make_world

    day = generate_day(make_world(7), date(2026, 1, 1), 1500, 7)
    assert validate_frame(day, spec, "clean").ok
    bad = day.copy()
    bad.loc[bad.index[:4], "position"] = 0
    bad["price"] = bad["price"].astype(object)
    bad.loc[bad.index[:2], "price"] = "free"
    report = validate_frame(bad, spec, "day=2026-01-01/part-0.parquet")
    # The type comes first; the range of a column of strings is not judged at all.
    assert [(f.column, f.rule, f.expectation) for f in report.failures] == [
        ("price", "type float", "expect_column_values_to_be_in_type_list"),
        ("position", "values in [1, 10]", "expect_column_values_to_be_between"),
    ]
    assert "4 unexpected values" in report.failures[1].observed
    assert "day=2026-01-01/part-0.parquet" in report.summary()


def test_missing_column_is_reported_once(tmp_path):
    spec = load_spec(_write(tmp_path, {**BASE, "expectations": {"columns": {"price": {"dtype": "float", "min": 0}}}}))
    df = pd.DataFrame({"device": ["a"] * 3, "user_id": ["u"] * 3, "click": [0, 1, 0]})
    report = validate_frame(df, spec, "f.parquet")
    assert [(f.column, f.observed) for f in report.failures] == [("price", "column is missing")]
