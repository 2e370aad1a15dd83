"""`ContinuousChain`: fill -> clip -> log1p -> standardize as one NVTabular op, fitted in one pass.

NVTabular's chain `FillMedian >> Clip >> LogOp >> Normalize` needs two passes over the
training window: Normalize's moments are taken on the filled values, so it waits for the
median. With one op the pass is shared: per partition it keeps a quantile sketch of the
non-null values (for the median) and the count, mean and sum of squared deviations of
g(x) = log1p(clip(x)) over the non-null values; the nulls, which all become the same value
g(fill), join the moments afterwards as one more "partition" of identical values (Chan et
al.'s parallel variance), so the mean and standard deviation are those of the filled column.

The median is approximate like FillMedian's (Dask's `quantile(method="dask")` merges
per-partition percentiles the same way, with fewer points): it depends slightly on how the
window is partitioned. Everything else is exact up to float64 rounding.

Transform per column, in float64, output float32:
    v = fillna(x, median or 0); v = max(v, clip_min); v = log1p(v) if log;
    v = (v - mean) / std if normalize (v - mean when std is 0)
`values_only` columns stop after the clip (the value a bucketized column is cut from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dask
import numpy as np
import pandas as pd
from dask.array.percentile import merge_percentiles
from merlin.dag import ColumnSelector
from merlin.dag.ops.stat_operator import StatOperator
from merlin.schema import Tags

_QUANTILES = np.linspace(0.0, 100.0, 1001)  # per-partition sketch of the median
_TREE_WIDTH = 8


@dataclass(frozen=True)
class Steps:
    """What happens to one continuous column (from its spec entry)."""

    fill: Literal["median", "zero"] = "median"
    clip_min: float | None = None
    log: bool = False
    normalize: bool = True


@dataclass
class _Partial:
    """One column's statistics over some partitions."""

    n: int  # non-null values
    nulls: int
    mean: float  # of g(x) over the non-null values
    m2: float  # sum of squared deviations from `mean`
    sketch: list[tuple[np.ndarray, int]]  # (percentile values, count) per partition

    def merge(self, other: _Partial) -> _Partial:
        n = self.n + other.n
        if n == 0:
            return _Partial(0, self.nulls + other.nulls, 0.0, 0.0, self.sketch + other.sketch)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return _Partial(n, self.nulls + other.nulls, mean, m2, self.sketch + other.sketch)


def _clip(values: np.ndarray, clip_min: float | None) -> np.ndarray:
    return values if clip_min is None else np.maximum(values, clip_min)


def _shape(values: np.ndarray, steps: Steps) -> np.ndarray:
    """g: clip then log1p, in float64 (the part of the chain before standardizing)."""
    values = _clip(values, steps.clip_min)
    return np.log1p(values) if steps.log else values


def _as_float(ser: pd.Series) -> np.ndarray:
    return pd.to_numeric(ser, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _partition_stats(df: pd.DataFrame, steps: dict[str, Steps]) -> dict[str, _Partial]:
    out = {}
    for column, step in steps.items():
        values = _as_float(df[column])
        present = values[~np.isnan(values)]
        n = len(present)
        sketch = []
        if step.fill == "median" and n:
            sketch = [(np.percentile(present, _QUANTILES), n)]
        shaped = _shape(present, step)
        mean = float(shaped.mean()) if n else 0.0
        m2 = float(((shaped - mean) ** 2).sum()) if n else 0.0
        out[column] = _Partial(n, len(values) - n, mean, m2, sketch)
    return out


def _merge(parts: list[dict[str, _Partial]]) -> dict[str, _Partial]:
    merged = dict(parts[0])
    for part in parts[1:]:
        for column, partial in part.items():
            merged[column] = merged[column].merge(partial)
    return merged


def _median(sketch: list[tuple[np.ndarray, int]]) -> float:
    if not sketch:
        return 0.0  # an all-null training column: no median; 0 keeps the model's input finite
    if len(sketch) == 1:
        values, _ = sketch[0]
        return float(values[len(_QUANTILES) // 2])
    merged = merge_percentiles(
        [50.0], [_QUANTILES] * len(sketch), [v for v, _ in sketch], Ns=[n for _, n in sketch], method="linear"
    )
    return float(merged[0])


class ContinuousChain(StatOperator):
    """Fill, clip, log1p and standardize continuous columns, with the statistics of all of them
    computed in one pass (see the module docstring).

    Args:
        steps: per column, what to do (`Steps`).
        values_only: stop after fill and clip (no log, no standardizing): the value a
            bucketized column is cut from. The output is then float64, like FillMedian's.
    """

    def __init__(self, steps: dict[str, Steps] | None = None, values_only: bool = False):
        super().__init__()
        self.steps = dict(steps or {})
        self.values_only = values_only
        self.fills: dict[str, float] = {}
        self.means: dict[str, float] = {}
        self.stds: dict[str, float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, col_selector: ColumnSelector, ddf: Any) -> Any:
        columns = list(col_selector.names)
        layer = [dask.delayed(self.partition_stats)(p, columns) for p in ddf[columns].to_delayed()]
        while len(layer) > 1:
            layer = [dask.delayed(self.merge_stats)(layer[i : i + _TREE_WIDTH]) for i in range(0, len(layer), _TREE_WIDTH)]
        return layer[0]

    def partition_stats(self, df: pd.DataFrame, columns: list[str]) -> dict[str, _Partial]:
        return _partition_stats(df, {c: self.steps[c] for c in columns})

    @staticmethod
    def merge_stats(parts: list[dict[str, _Partial]]) -> dict[str, _Partial]:
        return _merge(parts)

    def fit_finalize(self, stats: dict[str, _Partial]) -> None:
        for column, partial in stats.items():
            step = self.steps[column]
            fill = _median(partial.sketch) if step.fill == "median" else 0.0
            self.fills[column] = fill
            # The nulls all become g(fill): a group of identical values joins the moments.
            nulls = _Partial(partial.nulls, 0, float(_shape(np.array([fill]), step)[0]), 0.0, [])
            total = partial.merge(nulls)
            self.means[column] = total.mean
            self.stds[column] = float(np.sqrt(total.m2 / (total.n - 1))) if total.n > 1 else 0.0

    def clear(self) -> None:
        self.fills, self.means, self.stds = {}, {}, {}

    # ------------------------------------------------------------ transform
    def apply(self, column: str, values: pd.Series | np.ndarray) -> np.ndarray:
        """One column's output for its raw values (the serving transform calls this too)."""
        step = self.steps[column]
        raw = _as_float(pd.Series(values)) if not isinstance(values, np.ndarray) else values.astype(np.float64)
        filled = np.where(np.isnan(raw), self.fills[column], raw)
        if self.values_only:
            return _clip(filled, step.clip_min)
        shaped = _shape(filled, step)
        if step.normalize:
            std = self.stds[column]
            shaped = (shaped - self.means[column]) / std if std > 0 else shaped - self.means[column]
        return shaped.astype(np.float32)

    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        out = type(df)(index=df.index)
        for column in col_selector.names:
            out[column] = self.apply(column, df[column])
        return out

    @property
    def output_tags(self) -> list[Tags]:
        return [] if self.values_only else [Tags.CONTINUOUS]

    @property
    def output_dtype(self) -> Any:
        return np.float64 if self.values_only else np.float32
