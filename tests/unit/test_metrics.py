"""Metrics against sklearn and against a slow bootstrap reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from models.metrics import bootstrap_auc_delta, calibration_ratio, log_loss, roc_auc


def _data(n=2000, seed=0, decimals=2, rate=0.25):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    score = np.round(0.4 * y + rng.random(n), decimals)  # rounding makes many ties
    return y, score


@pytest.mark.parametrize(
    "seed, decimals, rate", [(0, 2, 0.25), (1, 1, 0.5), (2, 6, 0.05), (3, 0, 0.3)]
)
def test_roc_auc_matches_sklearn_including_ties(seed, decimals, rate):
    y, score = _data(seed=seed, decimals=decimals, rate=rate)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_roc_auc_edge_cases():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([True, False, True], np.array([[0.9], [0.1], [0.8]])) == 1.0  # bools, 2-D
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))  # undefined, as in sklearn
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="values"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def test_log_loss_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    p = rng.uniform(0.01, 0.99, 1000)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-12)


def test_log_loss_clips_confident_mistakes():
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert log_loss([0], [1.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7))


def test_calibration_ratio():
    assert calibration_ratio([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
    assert calibration_ratio([1, 0], [0.5, 0.5]) == pytest.approx(1.0)
    assert math.isnan(calibration_ratio([0, 0], [0.1, 0.2]))


def _slow_bootstrap(y, new, old, n_boot, seed, alpha):
    """Reference: resample rows with the same draws as the implementation
    (one rng.integers(0, n, (n_boot, n)) call when it fits one chunk), sklearn AUC per row."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, y.size, size=(n_boot, y.size))
    deltas = np.array(
        [roc_auc_score(y[r], new[r]) - roc_auc_score(y[r], old[r]) for r in rows]
    )
    return np.quantile(deltas, [alpha / 2, 1 - alpha / 2])


def test_bootstrap_matches_a_slow_reference():
    y, new = _data(n=300, seed=4)
    old = np.round(0.2 * y + np.random.default_rng(9).random(300), 2)
    delta, low, high = bootstrap_auc_delta(y, new, old, n_boot=100, seed=5, alpha=0.1)
    assert delta == pytest.approx(roc_auc_score(y, new) - roc_auc_score(y, old), abs=1e-12)
    ref_low, ref_high = _slow_bootstrap(y, new, old, 100, 5, 0.1)
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-12)


def test_bootstrap_interval_behaviour():
    y, better = _data(n=5000, seed=6)
    worse = np.round(0.1 * y + np.random.default_rng(7).random(y.size), 2)
    delta, low, high = bootstrap_auc_delta(y, better, worse, n_boot=300, seed=0)
    assert 0 < low < delta < high
    assert bootstrap_auc_delta(y, better, worse, n_boot=300, seed=0) == (delta, low, high)
    assert bootstrap_auc_delta(y, better, worse, n_boot=300, seed=1) != (delta, low, high)
    # A model compared with itself: every paired resample gives exactly 0.
    assert bootstrap_auc_delta(y, better, better, n_boot=50) == (0.0, 0.0, 0.0)
    # Swapping the models mirrors the interval.
    d2, low2, high2 = bootstrap_auc_delta(y, worse, better, n_boot=300, seed=0)
    assert (d2, low2, high2) == pytest.approx((-delta, -high, -low), abs=1e-12)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="single class"):
        bootstrap_auc_delta([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_auc_delta([0, 1], [0.1, 0.2], [0.2, 0.1], alpha=1.5)
    with pytest.raises(ValueError, match="p_old"):
        bootstrap_auc_delta([0, 1], [0.1, 0.2], [0.2])
