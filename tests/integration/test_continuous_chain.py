"""`ContinuousChain` (feature_store/continuous.py): its one-pass statistics over many
partitions equal the two-pass computation on the whole column (fill, then the moments of the
filled values), and its transform is fill >> clip >> log1p >> standardize."""

from __future__ import annotations

import numpy as np
import nvtabular as nvt
import pandas as pd
import pytest
from merlin.io import Dataset

from feature_store.continuous import ContinuousChain, Steps
from feature_store.workflow import fit_workflow


def _column(n: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(3.0, 1.2, n) - 2.0  # some negatives for clip_min
    values[rng.random(n) < 0.15] = np.nan
    return pd.Series(values)


STEPS = {
    "median_log_norm": Steps(fill="median", clip_min=0.0, log=True, normalize=True),
    "zero_log": Steps(fill="zero", clip_min=0.0, log=True, normalize=False),
    "median_norm": Steps(fill="median", log=False, normalize=True),
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame({name: _column(60_000, seed) for seed, name in enumerate(STEPS)})


@pytest.mark.parametrize("one_pass", [True, False], ids=["fit_workflow", "Workflow.fit"])
def test_statistics_over_partitions_equal_the_whole_column(frame: pd.DataFrame, one_pass: bool) -> None:
    op = ContinuousChain(STEPS)
    workflow = nvt.Workflow(list(STEPS) >> op)
    ds = Dataset(frame, cpu=True, npartitions=7)
    fit_workflow(workflow, ds) if one_pass else workflow.fit(ds)
    for name, step in STEPS.items():
        raw = frame[name].to_numpy()
        present = raw[~np.isnan(raw)]
        if step.fill == "median":
            # A sketch of 1001 percentiles per partition: within a hair of the exact median.
            assert op.fills[name] == pytest.approx(np.median(present), rel=2e-3)
        else:
            assert op.fills[name] == 0.0
        filled = np.where(np.isnan(raw), op.fills[name], raw)
        shaped = np.maximum(filled, step.clip_min) if step.clip_min is not None else filled
        shaped = np.log1p(shaped) if step.log else shaped
        assert op.means[name] == pytest.approx(shaped.mean(), rel=1e-9)
        assert op.stds[name] == pytest.approx(shaped.std(ddof=1), rel=1e-9)


def test_transform_is_fill_clip_log_standardize(frame: pd.DataFrame) -> None:
    op = ContinuousChain(STEPS)
    workflow = nvt.Workflow(list(STEPS) >> op)
    fit_workflow(workflow, Dataset(frame, cpu=True, npartitions=3))
    out = workflow.transform(frame.iloc[:500].reset_index(drop=True))
    name = "median_log_norm"
    raw = frame[name].to_numpy()[:500]
    expected = (np.log1p(np.maximum(np.where(np.isnan(raw), op.fills[name], raw), 0.0)) - op.means[name]) / op.stds[name]
    np.testing.assert_allclose(out[name].to_numpy(), expected.astype(np.float32), rtol=1e-6)
    assert out[name].dtype == np.float32 and not out.isna().any().any()
    zero = frame["zero_log"].to_numpy()[:500]
    np.testing.assert_allclose(out["zero_log"].to_numpy(), np.log1p(np.maximum(np.nan_to_num(zero), 0.0)), rtol=1e-6)


def test_values_only_stops_after_fill_and_clip() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, -5.0, 7.0, 3.0]})
    op = ContinuousChain({"x": Steps(fill="median", clip_min=0.0, log=True)}, values_only=True)
    workflow = nvt.Workflow(["x"] >> op)
    fit_workflow(workflow, Dataset(frame, cpu=True))
    assert workflow.transform(frame)["x"].tolist() == [1.0, 2.0, 0.0, 7.0, 3.0]  # median of 1, -5, 7, 3


def test_an_all_null_training_column_fills_zero() -> None:
    frame = pd.DataFrame({"x": [np.nan] * 4})
    op = ContinuousChain({"x": Steps(fill="median", normalize=True)})
    workflow = nvt.Workflow(["x"] >> op)
    fit_workflow(workflow, Dataset(frame, cpu=True))
    assert workflow.transform(pd.DataFrame({"x": [np.nan, 5.0]}))["x"].tolist() == [0.0, 5.0]
