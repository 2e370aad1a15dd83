"""Training-serving skew and drift: per-feature summaries of the training window and of the
staging day, built chunk by chunk and merged, and the measures between the two.

Summaries (never a whole window in memory; every summary of a chunk merges with another):
  * categorical column: the count of every non-null value and the null count (the value
    counts `FastCategorify` takes for its vocabulary, computed on the same chunk reads);
  * hashed categorical column (spec `hash_buckets`): the same over its hash buckets, the ids
    the model sees, so memory stays bounded on ids with millions of distinct values (Criteo's
    C3 has 10M); a new value whose bucket a training value filled counts as seen;
  * continuous column, training window: count, null count, min, max and a percentile sketch
    of the non-null values (1001 points per chunk, merged with Dask's `merge_percentiles`,
    as `ContinuousChain` does for its median); the bin edges are its quantiles;
  * continuous column, staging day: exact counts per bin of the training edges, the null
    count, and how many values fall outside the training [min, max].

Measures per feature (training window T vs staging day S, both over non-null values):
  * `psi` (categorical): population stability index sum((s - t) * ln(s / t)) over the training's
    `top_categories` most frequent values plus one bin for every other value (rare and unseen):
    over every value of an id column it would be dominated by sampling noise in the tail (a
    user seen twice in training and absent from the staging day adds t * ln(t / eps)). Shares
    below `PSI_EPSILON` (1e-4) count as 1e-4, so an empty bin costs a bounded amount;
  * `linf` (categorical): L-infinity distance max |s - t| over every value (or bucket);
  * `js` (continuous): Jensen-Shannon divergence, base 2 (in [0, 1]), of the two distributions
    over `bins` quantile bins of the training values, the outer bins open-ended. The divergence,
    not scipy's distance (its square root). Training shares come from the sketch (within about
    0.1 percentage point of the exact share per bin), staging shares are exact;
  * `unseen_share`: the share of staging non-null values never seen in training; for a
    continuous column, the share outside the training [min, max] (what the model never saw a
    like of: extrapolation);
  * `null_rate_change`: staging null rate minus training null rate (flagged on its absolute value).

No module here imports torch or Prefect: the night's stage (`tasks/drift.py`) logs and gates.
The settings import `DriftPolicy`, so NVTabular, Dask and scipy are imported where used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

QUANTILES = np.linspace(0.0, 100.0, 1001)  # the sketch: these percentiles of every chunk
PSI_EPSILON = 1e-4
MEASURES = ("psi", "linf", "js", "unseen_share", "null_rate_change")
_TREE_WIDTH = 8
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")  # what MLflow refuses in a metric key


@dataclass(frozen=True)
class DriftPolicy:
    """The drift check's settings (`RECLOOP_DRIFT_*`; the defaults live here only).

    `mode`: `warn` logs flagged features and the night goes on; `block` makes every candidate
    fail the staging gate with the reason (the champion stays); `off` computes nothing.
    A feature is flagged when a measure exceeds its threshold:
      * psi 0.2: the credit-scoring rule of thumb (< 0.1 stable, 0.1-0.25 moderate, > 0.25
        major); 0.2 is where a normal column's mean has moved by about 0.45 standard deviations;
      * js 0.04: the same sensitivity for continuous columns: a mean shift of 0.45 sd on 20
        quantile bins gives a divergence of 0.036 (and PSI 0.2); sampling noise at 1,000 staging
        rows is about 0.004. (evidently's 0.1 is for the JS *distance*, i.e. divergence 0.01.)
      * linf 0.2: one category's share moved by 20 percentage points;
      * unseen_share 0.05: one staging value in 20 gets the out-of-vocabulary embedding (or lies
        outside the training range);
      * null_rate_change 0.05: five percentage points more (or fewer) nulls, which the model sees
        as the fill value or the null id.
    `bins`: quantile bins of continuous columns; `top_categories`: categories PSI keeps apart."""

    mode: Literal["off", "warn", "block"] = "warn"
    psi: float = 0.2
    linf: float = 0.2
    js: float = 0.04
    unseen_share: float = 0.05
    null_rate_change: float = 0.05
    bins: int = 20
    top_categories: int = 20

    def __post_init__(self):
        if self.mode not in ("off", "warn", "block"):
            raise ValueError(f"mode must be off, warn or block, got {self.mode!r}")
        if min(self.thresholds.values()) < 0:
            raise ValueError("drift thresholds must be >= 0")
        if self.bins < 2 or self.top_categories < 1:
            raise ValueError("need bins >= 2 and top_categories >= 1")

    @property
    def thresholds(self) -> dict[str, float]:
        return {m: float(getattr(self, m)) for m in MEASURES}


# ----------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class FeatureColumns:
    """The columns a profile covers and how each is summarized."""

    categorical: tuple[str, ...] = ()
    hashed: tuple[tuple[str, int], ...] = ()  # (column, hash buckets)
    continuous: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: Any) -> FeatureColumns:
        return cls(
            categorical=tuple(c.name for c in spec.categorical if c.hash_buckets is None),
            hashed=tuple((c.name, int(c.hash_buckets)) for c in spec.categorical if c.hash_buckets is not None),
            continuous=tuple(c.name for c in spec.continuous),
        )

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *(c for c, _ in self.hashed), *self.continuous]


# --------------------------------------------------------------------------- summaries
@dataclass
class Counts:
    """A categorical (or hashed) column: rows per non-null value (or bucket), and the nulls."""

    counts: pd.Series
    nulls: int
    hashed: bool = False

    @property
    def rows(self) -> int:
        return int(self.counts.sum()) + self.nulls


@dataclass
class Sketch:
    """A continuous column of the training window: non-null count, nulls, min, max, and the
    `QUANTILES` percentiles of the non-null values (None when there are none)."""

    n: int
    nulls: int
    low: float
    high: float
    percentiles: np.ndarray | None

    @property
    def rows(self) -> int:
        return self.n + self.nulls


@dataclass(frozen=True)
class Bins:
    """Where a staging column is cut: the training's quantile edges (bin k holds the values in
    (edges[k-1], edges[k]], the outer bins open-ended) and the training [low, high]."""

    edges: np.ndarray
    low: float
    high: float


@dataclass
class Binned:
    """A continuous column of the staging day: rows per bin of the training edges
    (len(edges) + 1 counts), nulls, and the non-null values outside the training [low, high]."""

    counts: np.ndarray
    nulls: int
    outside: int

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def rows(self) -> int:
        return self.n + self.nulls


Summary = Counts | Sketch | Binned


def _as_float(ser: pd.Series) -> np.ndarray:
    return pd.to_numeric(ser, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _hashed_counts(ser: pd.Series, buckets: int) -> tuple[pd.Series, int]:
    from feature_store.stable_ops import hash_rows  # the hash StableHashBucket gives the model

    present = ser[ser.notna()]
    ids = (hash_rows(present) % np.uint64(buckets)).astype(np.int64)
    counts = np.bincount(ids, minlength=buckets)
    keep = np.flatnonzero(counts)
    return pd.Series(counts[keep], index=pd.Index(keep)), len(ser) - len(present)


def summarize_chunk(df: pd.DataFrame, columns: FeatureColumns,
                    bins: dict[str, Bins] | None = None) -> dict[str, Summary]:
    """One chunk's summaries. Continuous columns: a `Sketch` without `bins` (the training
    window), `Binned` on the training's bins with them (the staging day)."""
    from feature_store.categorify import _partition_counts  # FastCategorify's own counts

    out: dict[str, Summary] = {}
    for column, (counts, nulls) in _partition_counts(df, list(columns.categorical)).items():
        out[column] = Counts(counts, nulls)
    for column, buckets in columns.hashed:
        out[column] = Counts(*_hashed_counts(df[column], buckets), hashed=True)
    for column in columns.continuous:
        values = _as_float(df[column])
        present = values[~np.isnan(values)]
        nulls = len(values) - len(present)
        if bins is None:
            if len(present):
                out[column] = Sketch(len(present), nulls, float(present.min()), float(present.max()),
                                     np.percentile(present, QUANTILES))
            else:
                out[column] = Sketch(0, nulls, math.inf, -math.inf, None)
        else:
            b = bins.get(column)
            if b is None:  # no training values: nothing to bin against
                counts = np.array([len(present)], dtype=np.int64)
                outside = len(present)
            else:
                counts = np.bincount(np.searchsorted(b.edges, present, side="left"), minlength=len(b.edges) + 1)
                outside = int(np.count_nonzero((present < b.low) | (present > b.high)))
            out[column] = Binned(counts.astype(np.int64), nulls, outside)
    return out


def _merge_sketches(parts: list[Sketch]) -> Sketch:
    from dask.array.percentile import merge_percentiles

    filled = [p for p in parts if p.n]
    n, nulls = sum(p.n for p in parts), sum(p.nulls for p in parts)
    low = min((p.low for p in filled), default=math.inf)
    high = max((p.high for p in filled), default=-math.inf)
    if not filled:
        return Sketch(0, nulls, low, high, None)
    if len(filled) == 1:
        return Sketch(n, nulls, low, high, filled[0].percentiles)
    merged = merge_percentiles(QUANTILES, [QUANTILES] * len(filled), [p.percentiles for p in filled],
                               Ns=[p.n for p in filled], method="linear")
    merged = np.asarray(merged, dtype=np.float64)
    merged[0], merged[-1] = low, high  # exact: the sketch's ends are each chunk's min and max
    return Sketch(n, nulls, low, high, np.maximum.accumulate(merged))


def merge_summaries(parts: list[dict[str, Summary]]) -> dict[str, Summary]:
    """Merge chunk summaries (associative: a tree of merges gives the same result)."""
    from feature_store.categorify import _merge_counts

    parts = [p for p in parts if p]
    if not parts:
        return {}
    out: dict[str, Summary] = {}
    for column, first in parts[0].items():
        same = [p[column] for p in parts]
        if isinstance(first, Counts):
            counts, nulls = _merge_counts([{column: (s.counts, s.nulls)} for s in same])[column]
            out[column] = Counts(counts, nulls, first.hashed)
        elif isinstance(first, Sketch):
            out[column] = _merge_sketches(same)
        else:
            out[column] = Binned(np.sum([s.counts for s in same], axis=0), sum(s.nulls for s in same),
                                 sum(s.outside for s in same))
    return out


@dataclass
class Profile:
    """Every feature's summary over some rows (the training window, or the staging day)."""

    columns: dict[str, Summary]

    @property
    def rows(self) -> int:
        return next(iter(self.columns.values())).rows if self.columns else 0

    def bins(self, count: int) -> dict[str, Bins]:
        """The staging day's cuts: `count` quantile bins of each continuous column's training
        values (fewer where quantiles coincide, e.g. a column that is mostly 0)."""
        out = {}
        for column, summary in self.columns.items():
            if isinstance(summary, Sketch) and summary.percentiles is not None:
                at = np.rint(np.arange(1, count) * (len(QUANTILES) - 1) / count).astype(int)
                out[column] = Bins(np.unique(summary.percentiles[at]), summary.low, summary.high)
        return out


class ProfileStat:
    """The training window's `Profile` as a one-pass statistic (`workflow.fit_workflow`'s
    `side` statistics): computed on the chunks the workflow's fit reads anyway, merged in the
    same tree; `profile` is set by `fit_finalize`."""

    def __init__(self, columns: FeatureColumns):
        self.columns = columns
        self.profile: Profile | None = None

    @property
    def input_columns(self) -> list[str]:
        return self.columns.names

    def partition_stats(self, df: pd.DataFrame, columns: list[str]) -> dict[str, Summary]:
        return summarize_chunk(df, self.columns)

    @staticmethod
    def merge_stats(parts: list[dict[str, Summary]]) -> dict[str, Summary]:
        return merge_summaries(parts)

    def fit_finalize(self, merged: dict[str, Summary]) -> None:
        self.profile = Profile(merged)


def profile_frame(df: pd.DataFrame, columns: FeatureColumns, bins: dict[str, Bins] | None = None) -> Profile:
    """The profile of rows in memory (tests, small data)."""
    return Profile(summarize_chunk(df, columns, bins))


def profile_parts(parts: list[Any], columns: FeatureColumns, bins: dict[str, Bins] | None = None) -> Any:
    """A Delayed `Profile` over lazy frames (`RawFiles.parts()`): one task per chunk, merged in
    a tree of `_TREE_WIDTH`; compute it on the night's cluster."""
    import dask

    layer = [dask.delayed(summarize_chunk)(p, columns, bins) for p in parts]
    if not layer:
        return dask.delayed(Profile)({})
    while len(layer) > 1:
        layer = [dask.delayed(merge_summaries)(layer[i: i + _TREE_WIDTH]) for i in range(0, len(layer), _TREE_WIDTH)]
    return dask.delayed(Profile)(dask.delayed(merge_summaries)(layer))


# ---------------------------------------------------------------------------- measures
def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index sum((a - e) * ln(a / e)) of two share vectors, shares below
    `eps` raised to `eps` (an empty bin costs a bounded amount instead of infinity)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (in [0, 1]): the square of scipy's JS distance."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, np.float64), np.asarray(q, np.float64), base=2) ** 2)


def _shares(counts: pd.Series) -> pd.Series:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def _aligned(train: pd.Series, staging: pd.Series) -> tuple[pd.Series, pd.Series]:
    """One index type for both sides: 5 (an int column) and 5.0 (the same column with nulls
    read as float) are one value."""
    numeric = [s.index.dtype.kind in "iuf" for s in (train, staging) if len(s)]
    if numeric and all(numeric) and any(s.index.dtype.kind == "f" for s in (train, staging) if len(s)):
        train = train.groupby(train.index.astype(np.float64)).sum()
        staging = staging.groupby(staging.index.astype(np.float64)).sum()
    return train, staging


def categorical_measures(train: Counts, staging: Counts, top_categories: int) -> dict[str, float]:
    """psi, linf and unseen_share of one categorical column (see the module docstring)."""
    t_counts, s_counts = _aligned(train.counts, staging.counts)
    if s_counts.sum() == 0 or t_counts.sum() == 0:
        return {}
    t, s = _shares(t_counts), _shares(s_counts)
    both = t.index.union(s.index)
    t_all, s_all = t.reindex(both, fill_value=0.0), s.reindex(both, fill_value=0.0)
    top = t.nlargest(top_categories).index
    t_top, s_top = t.reindex(top).to_numpy(), s.reindex(top, fill_value=0.0).to_numpy()
    t_vec = np.append(t_top, max(0.0, 1.0 - t_top.sum()))  # the last bin: every other value
    s_vec = np.append(s_top, max(0.0, 1.0 - s_top.sum()))
    unseen = s_counts[~s_counts.index.isin(t_counts.index)].sum() / s_counts.sum()
    return {"psi": psi(t_vec, s_vec), "linf": float(np.max(np.abs(t_all - s_all))),
            "unseen_share": float(unseen)}


def training_shares(sketch: Sketch, edges: np.ndarray) -> np.ndarray:
    """The training window's share in each bin of `edges`, read off the sketch's distribution
    function F(x) = P(X <= x), interpolated between percentiles (right-continuous at ties, so a
    point mass, e.g. a count column's zeros, stays in its bin)."""
    p = sketch.percentiles
    q = QUANTILES / 100.0
    right = np.searchsorted(p, edges, side="right")  # percentile points <= edge
    cdf = np.empty(len(edges))
    for k, (x, i) in enumerate(zip(edges, right)):
        if i == 0:
            cdf[k] = 0.0
        elif i == len(p):
            cdf[k] = 1.0
        else:
            cdf[k] = q[i - 1] + (x - p[i - 1]) / (p[i] - p[i - 1]) * (q[i] - q[i - 1])
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def continuous_measures(train: Sketch, staging: Binned, bins: Bins | None) -> dict[str, float]:
    """js and unseen_share (outside the training range) of one continuous column."""
    if staging.n == 0 or bins is None or train.percentiles is None:
        return {}
    expected = training_shares(train, bins.edges)
    return {"js": js_divergence(expected, staging.counts / staging.n),
            "unseen_share": staging.outside / staging.n}


# ------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class FeatureDrift:
    """One feature's measures (only those that apply and are defined: a staging column of
    nulls only has a null-rate change and nothing else)."""

    feature: str
    kind: Literal["categorical", "hashed", "continuous"]
    measures: dict[str, float]


@dataclass(frozen=True)
class DriftFlag:
    """One measure over its threshold: the named reason a blocked night gives."""

    feature: str
    measure: str
    value: float
    threshold: float

    @property
    def reason(self) -> str:
        if self.measure == "null_rate_change":
            return f"null_rate_change of '{self.feature}' is {self.value:+.3g} (|change| > {self.threshold:g})"
        return f"{self.measure} of '{self.feature}' is {self.value:.3g} > {self.threshold:g}"


@dataclass
class DriftReport:
    """Training window vs staging day, every feature; `flags` are the measures over their
    thresholds, most severe (value / threshold) first."""

    mode: str
    thresholds: dict[str, float]
    train_rows: int
    staging_rows: int
    features: list[FeatureDrift] = field(default_factory=list)
    flags: list[DriftFlag] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.mode == "block" and bool(self.flags)

    @property
    def reason(self) -> str:
        """'drift: psi of 'device' is 1.53 > 0.2; ...' or '' when nothing is flagged."""
        return "drift: " + "; ".join(f.reason for f in self.flags) if self.flags else ""

    def metrics(self) -> dict[str, float]:
        """MLflow metrics `drift.<measure>.<feature>` (characters MLflow refuses become '_')."""
        return {f"drift.{m}.{_METRIC_UNSAFE.sub('_', f.feature)}": v
                for f in self.features for m, v in f.measures.items()}

    def value(self, feature: str, measure: str) -> float | None:
        for f in self.features:
            if f.feature == feature:
                return f.measures.get(measure)
        return None


def _flagged(features: Iterable[FeatureDrift], thresholds: dict[str, float]) -> list[DriftFlag]:
    flags = []
    for f in features:
        for measure, value in f.measures.items():
            limit = thresholds[measure]
            if (abs(value) if measure == "null_rate_change" else value) > limit:
                flags.append(DriftFlag(f.feature, measure, value, limit))
    return sorted(flags, key=lambda fl: -abs(fl.value) / fl.threshold if fl.threshold else -math.inf)


def compare(train: Profile, staging: Profile, policy: DriftPolicy = DriftPolicy()) -> DriftReport:
    """Every feature's measures between the training window and the staging day, flagged
    against `policy`'s thresholds. `staging` must be binned on `train.bins(policy.bins)`."""
    bins = train.bins(policy.bins)
    features = []
    for column, t in train.columns.items():
        s = staging.columns[column]
        measures: dict[str, float] = {}
        if isinstance(t, Counts):
            kind = "hashed" if t.hashed else "categorical"
            measures |= categorical_measures(t, s, policy.top_categories)
        else:
            kind = "continuous"
            measures |= continuous_measures(t, s, bins.get(column))
        if t.rows and s.rows:
            measures["null_rate_change"] = s.nulls / s.rows - t.nulls / t.rows
        features.append(FeatureDrift(column, kind, {m: float(v) for m, v in measures.items()}))
    return DriftReport(policy.mode, policy.thresholds, train.rows, staging.rows, features,
                       _flagged(features, policy.thresholds))
