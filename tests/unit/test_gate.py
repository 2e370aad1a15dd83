"""The staging gate's decision logic on planted predictions (no MLflow needed)."""

import numpy as np
import pytest

from tasks.evaluate import GatePolicy, evaluate_gate, reload_check


@pytest.fixture(scope="module")
def holdout():
    rng = np.random.default_rng(0)
    true_p = rng.beta(2, 12, size=20_000)
    y = (rng.random(true_p.size) < true_p).astype(float)
    return y, true_p, rng


def _noisy(p, rng, scale):
    logit = np.log(p / (1 - p)) + rng.normal(0, scale, size=p.size)
    return 1 / (1 + np.exp(-logit))


def test_better_challenger_passes_and_reports_positive_delta(holdout):
    y, p, rng = holdout
    champion = _noisy(p, rng, 1.5)
    gate = evaluate_gate(y, p, champion, GatePolicy(bootstrap_samples=200))
    assert gate.passed, gate.verdict
    assert gate.delta_auc > 0.02
    assert gate.delta_auc_low < gate.delta_auc < gate.delta_auc_high
    assert gate.delta_auc_low > 0  # the interval excludes zero for a clearly better model
    assert gate.metrics()["champion_staging_auc"] == pytest.approx(gate.champion.auc)


def test_worse_challenger_fails_on_auc_and_logloss(holdout):
    y, p, rng = holdout
    gate = evaluate_gate(y, _noisy(p, rng, 1.5), p, GatePolicy(bootstrap_samples=200))
    assert not gate.passed
    failed = {c.name for c in gate.checks if not c.passed}
    assert {"auc_vs_champion", "logloss_vs_champion"} <= failed
    assert gate.tags()["gate.passed"] == "false"


def test_tolerance_admits_an_equal_model(holdout):
    y, p, _ = holdout
    assert evaluate_gate(y, p, p.copy(), GatePolicy(bootstrap_samples=100)).passed


def test_no_champion_uses_absolute_floor(holdout):
    y, p, rng = holdout
    assert evaluate_gate(y, p, None, GatePolicy(min_auc=0.6)).passed
    random_scores = rng.random(p.size) * 0.3
    gate = evaluate_gate(y, random_scores, None, GatePolicy(min_auc=0.6, calibration_bounds=(0.01, 100)))
    assert not gate.passed
    assert [c.name for c in gate.checks if not c.passed] == ["auc_floor"]


def test_non_finite_predictions_fail(holdout):
    y, p, _ = holdout
    bad = p.copy()
    bad[5] = np.nan
    gate = evaluate_gate(y, bad, p, GatePolicy())
    assert not gate.passed and "non-finite" in gate.explanation and gate.verdict == "fail (finite)"


def test_miscalibrated_predictions_fail(holdout):
    y, p, _ = holdout
    gate = evaluate_gate(y, np.clip(p * 2.0, 0, 1), None, GatePolicy())
    assert not gate.passed
    assert [c.name for c in gate.checks if not c.passed] == ["calibration"]


def test_reload_check():
    p = np.linspace(0.1, 0.9, 10)
    assert reload_check(p + 1e-7, p).passed
    assert not reload_check(p + 1e-3, p).passed
    assert not reload_check(p[:5], p).passed


def test_unknown_architecture_or_key_fails_before_any_work():
    from feature_store.errors import ParameterError
    from tasks.train import check_architectures

    check_architectures(["wide", "wide_deep"], {"wide_deep": {"embedding_dim": 8}})
    with pytest.raises(ParameterError, match="wide_deep"):
        check_architectures(["widedeep"], None)
    with pytest.raises(ParameterError, match="embedding_dim"):
        check_architectures(["deep"], {"deep": {"embeding_dim": 8}})
    with pytest.raises(ParameterError, match="not being trained"):
        check_architectures(["deep"], {"wide": {}})
