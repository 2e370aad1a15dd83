"""The scoring app's fast path builds exactly the frame MLflow's parse + schema enforcement build
(columns, order, dtypes, values), and declines (None: MLflow's app answers) every request MLflow
would cast, fill or refuse."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.models.utils import _enforce_schema
from mlflow.types import ColSpec, Schema
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

from tasks.scoring import FastFrame

SCHEMA = Schema([ColSpec("string", "user"), ColSpec("string", "device"), ColSpec("long", "hour"),
                 ColSpec("double", "price")])
FAST = FastFrame(SCHEMA.input_names(), ["string", "string", "long", "double"])


def _mlflow_frame(request: dict) -> pd.DataFrame:
    """What `PyFuncModel.predict` hands the model after MLflow's scoring server parsed `request`."""
    (key, value), = request.items()
    return _enforce_schema(dataframe_from_parsed_json(value, key.split("_")[1], SCHEMA), SCHEMA)


def _split(columns: list[str], rows: list[list]) -> dict:
    return {"dataframe_split": {"columns": columns, "data": rows}}


PLAIN = [
    _split(["user", "device", "hour", "price"], [["u1", "mobile", 3, 1.5]]),
    _split(["price", "hour", "user", "device"], [[2, 23, "u2", "tablet"], [0.25, 0, "u3", "desktop"]]),
    _split(["user", "device", "hour", "price"], [["u1", None, 3, None], [None, "mobile", 4, 2.0]]),
    _split(["user", "device", "hour", "price"], [[None, None, 5, None]]),  # all-null columns
    _split(["user", "device", "hour", "price"], [["u1", "mobile", 3, float("nan")]]),  # a NaN literal
    _split(["user", "device", "hour", "price"], [["2026-03-01", "17", 9, 1e300], ["", "NaN", -2, -0.0]]),
    {"dataframe_records": [{"user": "u1", "device": "mobile", "hour": 3, "price": 1.5},
                           {"price": None, "hour": 7, "device": None, "user": "u9"}]},
]


@pytest.mark.parametrize("request_", PLAIN, ids=range(len(PLAIN)))
def test_plain_requests_give_mlflows_frame(request_):
    fast = FAST.parse(json.dumps(request_).encode())
    assert fast is not None
    pd.testing.assert_frame_equal(fast, _mlflow_frame(request_), check_exact=True)


DECLINED = {
    "string for a long": _split(["user", "device", "hour", "price"], [["u1", "mobile", "3", 1.5]]),
    "float for a long": _split(["user", "device", "hour", "price"], [["u1", "mobile", 3.0, 1.5]]),
    "null in a long": _split(["user", "device", "hour", "price"], [["u1", "mobile", None, 1.5]]),
    "bool for a long": _split(["user", "device", "hour", "price"], [["u1", "mobile", True, 1.5]]),
    "int for a string": _split(["user", "device", "hour", "price"], [[7, "mobile", 3, 1.5]]),
    "string for a double": _split(["user", "device", "hour", "price"], [["u1", "mobile", 3, "1.5"]]),
    "beyond int64": _split(["user", "device", "hour", "price"], [["u1", "mobile", 2**70, 1.5]]),
    "missing column": _split(["user", "device", "hour"], [["u1", "mobile", 3]]),
    "extra column": _split(["user", "device", "hour", "price", "x"], [["u1", "mobile", 3, 1.5, 0]]),
    "duplicate column": _split(["user", "user", "hour", "price"], [["u1", "u1", 3, 1.5]]),
    "short row": _split(["user", "device", "hour", "price"], [["u1", "mobile", 3]]),
    "no rows": _split(["user", "device", "hour", "price"], []),
    "index": {"dataframe_split": {"index": [0], "columns": ["user", "device", "hour", "price"],
                                  "data": [["u1", "mobile", 3, 1.5]]}},
    "params": {**_split(["user", "device", "hour", "price"], [["u1", "mobile", 3, 1.5]]), "params": {}},
    "inputs": {"inputs": {"user": ["u1"], "device": ["mobile"], "hour": [3], "price": [1.5]}},
    "records missing a key": {"dataframe_records": [{"user": "u1", "device": "mobile", "hour": 3}]},
}


@pytest.mark.parametrize("name", DECLINED)
def test_requests_mlflow_would_cast_or_refuse_are_declined(name):
    assert FAST.parse(json.dumps(DECLINED[name]).encode()) is None


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"x"', b'{"dataframe_split": [1]}', b"\xff\xfe"])
def test_bodies_that_are_not_a_plain_json_object_are_declined(body):
    assert FAST.parse(body) is None
