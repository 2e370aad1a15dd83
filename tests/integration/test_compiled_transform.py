"""The compiled transform (feature_store/compiled.py) equals the fitted NVTabular workflow.

On every spec in the repo: fitted on random rows, then both run on other random rows with
unseen values, nulls, out-of-range and negative numbers, integer columns that arrive as
floats with nulls, and one-row and all-null batches; every output column must be identical
(ids exactly, continuous values bit for bit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.compiled import CompiledTransform, Unsupported
from feature_store.spec import SPEC_DIR, DatasetSpec, load_spec
from feature_store.workflow import Preprocessor, build_workflow

SPECS = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def _dtype(spec: DatasetSpec, column: str) -> str:
    declared = spec.expectations.columns.get(column)
    return (declared.dtype if declared and declared.dtype else "string") if column in {
        c.name for c in spec.categorical} else "float"


def _frame(spec: DatasetSpec, n: int, seed: int, unseen: bool) -> pd.DataFrame:
    """Random raw rows: a small pool per categorical (plus unseen values), skewed numbers."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for col in spec.categorical:
        pool = 40 if col.freq_threshold > 1 else 12
        values = rng.zipf(1.5, n) % pool + (rng.integers(100, 200, n) * (rng.random(n) < 0.1) if unseen else 0)
        if _dtype(spec, col.name) == "integer":
            columns[col.name] = values.astype(np.int64)
        else:
            columns[col.name] = np.array([f"v{v}" for v in values], dtype=object)
    for col in spec.continuous:
        scale = 100.0 if not unseen else 1e6
        columns[col.name] = np.round(rng.exponential(20.0, n) * (1 + (rng.random(n) < 0.05) * scale) - 3, 2)
    frame = pd.DataFrame(columns)
    nulls = rng.random((n, frame.shape[1])) < 0.05
    for j, column in enumerate(frame.columns):
        if frame[column].dtype == object:
            frame.loc[nulls[:, j], column] = None
        elif frame[column].dtype.kind == "f":
            frame.loc[nulls[:, j], column] = np.nan
    frame[spec.label] = rng.integers(0, 2, n)
    return frame


def _workflow_columns(pre: Preprocessor, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    prepared, null_rows = pre._prepare(frame)
    out = pre.workflow.transform(prepared)
    return {c: out[c].to_numpy()[: len(frame)] for c in out.columns}, null_rows


def _assert_equal(pre: Preprocessor, frame: pd.DataFrame) -> None:
    expected, _ = _workflow_columns(pre, frame)
    prepared, _ = pre._prepare(frame)
    got = pre.compiled(prepared)
    assert set(got) == set(expected)
    for name, want in expected.items():
        have = np.asarray(got[name])[: len(frame)]
        assert have.dtype.kind == want.dtype.kind, name
        np.testing.assert_array_equal(have, want, err_msg=name)


@pytest.fixture(scope="module", params=SPECS)
def fitted(request) -> tuple[DatasetSpec, Preprocessor]:
    spec = load_spec(request.param)
    return spec, Preprocessor.fit(spec, _frame(spec, 4000, seed=1, unseen=False))


def test_every_spec_compiles(fitted) -> None:
    _, pre = fitted
    assert pre.compiled is not None


@pytest.mark.parametrize("seed", [2, 3])
def test_compiled_equals_workflow_on_unseen_nulls_and_outliers(fitted, seed: int) -> None:
    spec, pre = fitted
    _assert_equal(pre, _frame(spec, 3000, seed=seed, unseen=True))


def test_compiled_equals_workflow_on_one_row_and_all_null_rows(fitted) -> None:
    spec, pre = fitted
    frame = _frame(spec, 5, seed=4, unseen=True)
    _assert_equal(pre, frame.iloc[[2]])
    blank = frame.iloc[:3].copy()
    for column in spec.feature_columns:
        blank[column] = None if blank[column].dtype == object else np.nan
    _assert_equal(pre, blank)


def test_integer_column_arriving_as_floats_with_nulls(fitted) -> None:
    spec, pre = fitted
    ints = [c for c, d in pre.input_dtypes.items() if d == "int64"]
    if not ints:
        pytest.skip(f"{spec.name}: no integer input column")
    frame = _frame(spec, 500, seed=5, unseen=True)
    frame[ints[0]] = frame[ints[0]].astype("float64")
    frame.loc[frame.index[::7], ints[0]] = np.nan
    # Through the public path: the workflow's ids with the null id forced, as the serving path does.
    expected, null_rows = _workflow_columns(pre, frame)
    got = pre.transform_columns(frame)
    for name, want in expected.items():
        want = want.copy()
        if name in null_rows:
            want[null_rows[name]] = 1
        np.testing.assert_array_equal(got[name], want.astype(got[name].dtype), err_msg=name)


def test_nvtabular_categorify_does_not_compile_and_falls_back() -> None:
    spec = load_spec("synthetic_clicks")
    frame = _frame(spec, 2000, seed=6, unseen=False)
    pre = Preprocessor.fit(spec, frame, categorify="nvtabular")
    with pytest.raises(Unsupported, match="Categorify"):
        CompiledTransform.compile(pre.workflow)
    assert pre.compiled is None
    fast = Preprocessor.fit(spec, frame)
    test = _frame(spec, 1000, seed=7, unseen=True)
    a, b = pre.transform(test), fast.transform(test)
    np.testing.assert_array_equal(a.cat, b.cat)
    np.testing.assert_array_equal(a.cross, b.cross)
    assert build_workflow(spec) is not None
