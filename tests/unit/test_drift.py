"""Drift measures against hand-computed values, summaries merged over chunks against the summary
of the whole, flags, metric names and the settings (no MLflow, no cluster)."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from feature_store import drift
from feature_store.drift import (
    Binned,
    Counts,
    DriftPolicy,
    FeatureColumns,
    Sketch,
    compare,
    profile_frame,
)
from feature_store.errors import ParameterError
from feature_store.generators.synthetic import generate_day, make_world
from feature_store.spec import load_spec

CAT = FeatureColumns(categorical=("c",))
CONT = FeatureColumns(continuous=("x",))


def _cat(values) -> pd.DataFrame:
    return pd.DataFrame({"c": pd.Series(values, dtype=object)})


def _report(train: pd.DataFrame, staging: pd.DataFrame, columns: FeatureColumns, **policy):
    pol = DriftPolicy(**policy)
    t = profile_frame(train, columns)
    return compare(t, profile_frame(staging, columns, t.bins(pol.bins)), pol)


def test_categorical_measures_by_hand():
    # training shares a .5, b .3, c .2; staging a .3, b .3, c .4, and 25 nulls in 125 rows
    r = _report(_cat(["a"] * 50 + ["b"] * 30 + ["c"] * 20), _cat(["a"] * 30 + ["b"] * 30 + ["c"] * 40 + [None] * 25), CAT)
    m = r.features[0].measures
    # PSI = (.3 - .5) ln(.3/.5) + 0 + (.4 - .2) ln(.4/.2); the "other" bin is empty on both sides
    assert m["psi"] == pytest.approx(0.2 * math.log(5 / 3) + 0.2 * math.log(2), abs=1e-12)  # 0.24079
    assert m["linf"] == pytest.approx(0.2)
    assert m["unseen_share"] == 0.0
    assert m["null_rate_change"] == pytest.approx(25 / 125 - 0)
    assert r.features[0].kind == "categorical" and "js" not in m


def test_psi_epsilon_and_unseen_values():
    # a new value d takes 10% of the staging day: it lands in the "other" bin, empty in training
    r = _report(_cat(["a"] * 50 + ["b"] * 50), _cat(["a"] * 45 + ["b"] * 45 + ["d"] * 10), CAT)
    m = r.features[0].measures
    eps = drift.PSI_EPSILON  # 1e-4: the training share of "other" counts as 1e-4, not 0
    expected = 2 * (0.45 - 0.5) * math.log(0.45 / 0.5) + (0.1 - eps) * math.log(0.1 / eps)  # 0.70062
    assert m["psi"] == pytest.approx(expected, abs=1e-12)
    assert m["linf"] == pytest.approx(0.1)  # d: 0.1 vs 0 (a and b moved by 0.05)
    assert m["unseen_share"] == pytest.approx(0.1)
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_psi_keeps_the_top_categories_apart_and_lumps_the_rest():
    train = _cat(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    staging = _cat(["a"] * 30 + ["b"] * 30 + ["c"] * 40)
    m = _report(train, staging, CAT, top_categories=1).features[0].measures
    # bins: a (.5 vs .3) and everything else (.5 vs .7)
    assert m["psi"] == pytest.approx(0.2 * math.log(0.5 / 0.3) + 0.2 * math.log(0.7 / 0.5), abs=1e-12)  # 0.16946
    assert m["linf"] == pytest.approx(0.2)  # L-infinity is over every value, not the lumped bins


def test_js_divergence_and_share_outside_the_training_range_by_hand():
    train = pd.DataFrame({"x": np.arange(1.0, 101.0)})
    # 4 quantile bins of 1..100: edges 25.75, 50.5, 75.25, a quarter of the training values each
    t = profile_frame(train, CONT)
    bins = t.bins(4)
    assert np.allclose(bins["x"].edges, [25.75, 50.5, 75.25])
    assert np.allclose(drift.training_shares(t.columns["x"], bins["x"].edges), 0.25)
    staging = pd.DataFrame({"x": np.r_[np.arange(51.0, 151.0), [np.nan] * 25]})
    r = compare(t, profile_frame(staging, CONT, bins), DriftPolicy(bins=4))
    m = r.features[0].measures
    # P = (.25, .25, .25, .25), Q = (0, 0, .25, .75), M = (.125, .125, .25, .5):
    # KL(P||M) = .5 * 1 + 0 - .25 = .25 bit, KL(Q||M) = .75 log2(1.5); JS = their mean
    assert m["js"] == pytest.approx((0.25 + 0.75 * math.log2(1.5)) / 2, abs=1e-12)  # 0.34436
    assert m["unseen_share"] == pytest.approx(0.5)  # 101..150 lie above the training max 100
    assert m["null_rate_change"] == pytest.approx(0.2)
    assert set(m) == {"js", "unseen_share", "null_rate_change"}
    assert drift.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)  # base 2: disjoint is 1


def test_a_point_mass_stays_in_its_bin():
    """A count column that is mostly 0: the quantile edges collapse, and the sketch's training
    share of the bin (-inf, 0] is the share of zeros."""
    rng = np.random.default_rng(0)
    values = np.where(rng.random(50_000) < 0.4, 0.0, rng.poisson(5, 50_000) + 1.0)
    t = profile_frame(pd.DataFrame({"x": values}), CONT)
    edges = t.bins(20)["x"].edges
    assert edges[0] == 0.0 and len(edges) < 19
    shares = drift.training_shares(t.columns["x"], edges)
    exact = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1) / len(values)
    assert np.allclose(shares, exact, atol=2e-3)
    same = compare(t, profile_frame(pd.DataFrame({"x": values[:10_000]}), CONT, t.bins(20)))
    assert same.value("x", "js") < 1e-3


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = generate_day(make_world(3), date(2026, 1, 1), 12_000, 3)
    df.loc[::7, "hour"] = np.nan  # an int column with nulls: float in some chunks only
    df.loc[::5, "device"] = None
    df.loc[::3, "price"] = np.nan
    return df


def _tree(chunks, columns, bins=None):
    parts = [drift.summarize_chunk(c, columns, bins) for c in chunks]
    return drift.Profile(drift.merge_summaries([drift.merge_summaries(parts[:3]), drift.merge_summaries(parts[3:])]))


def test_summaries_merged_over_chunks_equal_the_summary_of_the_whole(frame):
    columns = FeatureColumns(categorical=("user_id", "device", "hour"), hashed=(("item_id", 500),),
                             continuous=("price",))
    chunks = [c for c in np.array_split(frame, 7)]
    chunks[1] = chunks[1].astype({"device": "category"})  # the night's reader: dictionary-encoded strings
    merged, whole = _tree(chunks, columns), profile_frame(frame, columns)
    for column in ("user_id", "device", "hour", "item_id"):
        a, b = merged.columns[column], whole.columns[column]
        assert isinstance(a, Counts) and a.nulls == b.nulls
        pd.testing.assert_series_equal(a.counts.sort_index(), b.counts.sort_index(), check_names=False,
                                       check_index_type=False)
    a, b = merged.columns["price"], whole.columns["price"]
    assert isinstance(a, Sketch) and (a.n, a.nulls, a.low, a.high) == (b.n, b.nulls, b.low, b.high)
    edges = whole.bins(20)["price"].edges
    assert np.allclose(drift.training_shares(a, edges), drift.training_shares(b, edges), atol=2e-3)
    # the staging side (bins given) is exact
    bins = whole.bins(20)
    sm, sw = _tree(chunks, columns, bins), profile_frame(frame, columns, bins)
    assert isinstance(sm.columns["price"], Binned)
    assert np.array_equal(sm.columns["price"].counts, sw.columns["price"].counts)
    assert sm.columns["price"].nulls == sw.columns["price"].nulls
    # and so are the measures, up to the sketch
    rm, rw = compare(merged, sm), compare(whole, sw)
    for f in rw.features:
        for measure, value in f.measures.items():
            assert rm.value(f.feature, measure) == pytest.approx(value, abs=2e-3), (f.feature, measure)


def test_hashed_columns_compare_their_buckets():
    columns = FeatureColumns(hashed=(("c", 1000),))
    train = _cat([f"v{i}" for i in range(200)] * 5)
    staging = _cat([f"v{i}" for i in range(200)] * 4 + [f"new{i}" for i in range(200)])
    r = _report(train, staging, columns)
    m = r.features[0].measures
    assert r.features[0].kind == "hashed"
    assert profile_frame(train, columns).columns["c"].counts.sum() == 1000
    # new values whose bucket a training value filled count as seen: at most the 20% planted
    assert 0.1 < m["unseen_share"] <= 0.2


def test_int_and_float_reads_of_one_column_are_one_value():
    train = pd.DataFrame({"h": np.array([1, 2, 2, 3], dtype=np.int64)})
    staging = pd.DataFrame({"h": [1.0, 2.0, 2.0, 3.0, np.nan]})
    r = _report(train, staging, FeatureColumns(categorical=("h",)))
    m = r.features[0].measures
    assert m["unseen_share"] == 0.0 and m["linf"] == pytest.approx(0.0) and m["psi"] == pytest.approx(0.0)


def test_flags_reasons_metric_names_and_blocking():
    pol = DriftPolicy(mode="block")
    train = pd.DataFrame({"a b/c?": ["x"] * 50 + ["y"] * 50, "n": [1.0] * 90 + [np.nan] * 10})
    staging = pd.DataFrame({"a b/c?": ["x"] * 50 + ["y"] * 50, "n": [1.0] * 100})
    columns = FeatureColumns(categorical=("a b/c?",), continuous=("n",))
    t = profile_frame(train, columns)
    r = compare(t, profile_frame(staging, columns, t.bins(pol.bins)), pol)
    assert [(f.feature, f.measure) for f in r.flags] == [("n", "null_rate_change")]  # -0.1: judged on |.|
    assert r.flags[0].reason == "null_rate_change of 'n' is -0.1 (|change| > 0.05)"
    assert r.blocks and r.reason == "drift: null_rate_change of 'n' is -0.1 (|change| > 0.05)"
    metrics = r.metrics()
    assert metrics["drift.psi.a b/c_"] == 0.0 and metrics["drift.null_rate_change.n"] == pytest.approx(-0.1)
    assert set(metrics) == {"drift.psi.a b/c_", "drift.linf.a b/c_", "drift.unseen_share.a b/c_",
                            "drift.null_rate_change.a b/c_", "drift.js.n", "drift.unseen_share.n",
                            "drift.null_rate_change.n"}
    warn = compare(t, profile_frame(staging, columns, t.bins(20)), DriftPolicy(mode="warn"))
    assert warn.flags and not warn.blocks
    loose = compare(t, profile_frame(staging, columns, t.bins(20)), DriftPolicy(null_rate_change=0.1))
    assert loose.flags == []  # a threshold is exceeded, not reached
    psi = drift.DriftFlag("c", "psi", 0.4123, 0.2)
    assert psi.reason == "psi of 'c' is 0.412 > 0.2"


def test_a_staging_column_of_nulls_only_has_a_null_rate_change():
    train = pd.DataFrame({"c": ["a", "b"] * 10, "x": np.arange(20.0)})
    staging = pd.DataFrame({"c": pd.Series([None] * 5, dtype=object), "x": [np.nan] * 5})
    columns = FeatureColumns(categorical=("c",), continuous=("x",))
    t = profile_frame(train, columns)
    r = compare(t, profile_frame(staging, columns, t.bins(20)))
    assert {f.feature: set(f.measures) for f in r.features} == {"c": {"null_rate_change"}, "x": {"null_rate_change"}}
    assert {f.feature for f in r.flags} == {"c", "x"}


def test_feature_columns_follow_the_spec():
    columns = FeatureColumns.from_spec(load_spec("criteo"))
    assert "C1" in columns.categorical and ("C3", 100_000) in columns.hashed and "I1" in columns.continuous
    assert len(columns.names) == 39


def test_policy_defaults_and_validation(monkeypatch, tmp_path):
    from tasks.settings import get_settings

    assert DriftPolicy().thresholds == {"psi": 0.2, "linf": 0.2, "js": 0.04, "unseen_share": 0.05,
                                        "null_rate_change": 0.05}
    assert DriftPolicy().mode == "warn"
    with pytest.raises(ValueError, match="bins"):
        DriftPolicy(bins=1)
    with pytest.raises(ValueError, match=">= 0"):
        DriftPolicy(psi=-1)
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("RECLOOP_DRIFT_MODE", "block")
    monkeypatch.setenv("RECLOOP_DRIFT_PSI", "0.3")
    monkeypatch.setenv("RECLOOP_DRIFT_NULL_RATE_CHANGE", "0.1")
    assert get_settings().drift == DriftPolicy(mode="block", psi=0.3, null_rate_change=0.1)
    monkeypatch.setenv("RECLOOP_DRIFT_MODE", "sometimes")
    with pytest.raises(ParameterError, match="RECLOOP_DRIFT_MODE='sometimes'"):
        get_settings()


def test_mode_off_checks_nothing():
    from tasks.drift import check_drift

    t = profile_frame(_cat(["a", "b"]), CAT)
    # no client, no run: off returns before any comparison or logging
    assert check_drift(None, None, t, profile_frame(_cat(["c"]), CAT), DriftPolicy(mode="off")) is None
    assert check_drift(None, None, None, None, DriftPolicy()) is None  # no profiles (in-memory frames)
