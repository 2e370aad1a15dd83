"""The comparison a reviewer approves from: numbers, interval, checks, drift, links (no MLflow needed)."""

import dataclasses

import numpy as np
import pytest

from feature_store.drift import DriftFlag, DriftPolicy, DriftReport, FeatureDrift
from tasks.approval import ApprovalRequest, RetrievalComparison, comparison_markdown
from tasks.drift import drift_check, drift_note
from tasks.evaluate import Check, DryRunResult, GatePolicy, evaluate_gate
from tasks.report import drift_lines
from tasks.retrieval_gate import RetrievalPolicy, evaluate_retrieval_gate


@pytest.fixture(scope="module")
def request_():
    rng = np.random.default_rng(1)
    p = rng.beta(2, 12, size=5000)
    y = (rng.random(p.size) < p).astype(float)
    champion = np.clip(p + rng.normal(0, 0.05, p.size), 0.001, 0.999)
    gate = evaluate_gate(y, p, champion, GatePolicy(bootstrap_samples=100))
    return ApprovalRequest(dataset="synthetic_clicks", name="synthetic_clicks-ranker", version="3", arch="wide_deep",
                           run_id="run-new", experiment_id="7", gate=gate, champion_version="2",
                           champion_run_id="run-old", champion_experiment_id="7",
                           tracking_uri="http://mlflow.internal:5000/", staging_day="2026-01-09", timeout_s=6 * 3600)


def _table(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]


def test_shows_both_models_the_deltas_with_interval_and_how_to_decide(request_):
    md = comparison_markdown(request_, "fr-123")
    g = request_.gate
    assert "challenger v3" in md and "champion v2" in md and "moves `champion` from v2 to v3" in md
    rows = {r[0]: r[1:] for r in _table(md)}
    assert rows["AUC"] == [f"{g.challenger.auc:.4f}", f"{g.champion.auc:.4f}"]
    assert rows["logloss"] == [f"{g.challenger.logloss:.4f}", f"{g.champion.logloss:.4f}"]
    assert rows["calibration"] == [f"{g.challenger.calibration:.3f}", f"{g.champion.calibration:.3f}"]
    assert f"- Δ AUC {g.delta_auc:+.4f}, 95% CI [{g.delta_auc_low:+.4f}, {g.delta_auc_high:+.4f}]" in md.splitlines()
    assert f"- Δ logloss {g.delta_logloss:+.4f}" in md.splitlines()
    assert "ok auc_vs_champion" in md
    assert "`recloop approve fr-123 --reviewer NAME --reason TEXT`" in md and "recloop reject" in md
    assert "6:00:00" in md


def test_fits_a_narrow_form_without_a_sideways_scroll(request_):
    """The Prefect UI's resume form is narrow: a three-column table whose rows stay short, the
    deltas and the interval outside it, and no code block (a <pre> never wraps)."""
    md = comparison_markdown(request_, "0b6f3d6e-1f6b-4d7e-9d55-3b8a2d6c9f10")
    table = _table(md)
    assert table[0] == ["staging day", "challenger v3", "champion v2"]
    assert all(len(row) == 3 for row in table), table
    assert max(len(line) for line in md.splitlines() if line.startswith("|")) <= 50
    assert not any(line.startswith(("    ", "\t", "```")) for line in md.splitlines())
    assert not any("CI" in cell or "Δ" in cell for row in table for cell in row)


def test_links_runs_on_a_tracking_server_and_prints_ids_otherwise(request_):
    md = comparison_markdown(request_, "fr-123")
    assert "[run-new](http://mlflow.internal:5000/#/experiments/7/runs/run-new)" in md
    assert "[run-old](http://mlflow.internal:5000/#/experiments/7/runs/run-old)" in md
    local = comparison_markdown(dataclasses.replace(request_, tracking_uri="sqlite:////tmp/mlflow.db"), "fr-123")
    assert "`run-new`" in local and "`run-old`" in local and "](" not in local


def test_first_champion_has_no_comparison_columns(request_):
    rng = np.random.default_rng(2)
    p = rng.beta(2, 12, size=2000)
    y = (rng.random(p.size) < p).astype(float)
    first = dataclasses.replace(request_, gate=evaluate_gate(y, p, None, GatePolicy()), champion_version=None,
                                champion_run_id=None, champion_experiment_id=None)
    md = comparison_markdown(first, "fr-1")
    assert "champion (none yet)" in md and "moves `champion` to v3" in md and "ok auc_floor" in md


def test_shows_the_served_latency_next_to_the_champions_own(request_):
    gate = dataclasses.replace(request_.gate)
    gate.record_dry_run(DryRunResult(uri="models:/synthetic_clicks-ranker/3", rows=2000, requests=20, request_rows=100,
                                     p50_ms=11.04, p99_ms=15.46, max_abs_diff=0.0, seconds=6.1, p99_budget_ms=250.0))
    md = comparison_markdown(dataclasses.replace(request_, gate=gate, champion_served_ms=(10.2, 14.9)), "fr-1")
    rows = {r[0]: r[1:] for r in _table(md)}
    assert rows["served p50 ms"] == ["11.0", "10.2"] and rows["served p99 ms"] == ["15.5", "14.9"]
    assert "2000 staging rows in requests of 100, p99 budget 250 ms" in md and "ok served_dry_run" in md
    assert all(len(row) == 3 for row in _table(md))
    assert max(len(line) for line in md.splitlines() if line.startswith("|")) <= 50
    without = comparison_markdown(dataclasses.replace(request_, gate=gate), "fr-1")
    assert {r[0]: r[1:] for r in _table(without)}["served p99 ms"] == ["15.5", "-"]  # a champion never served


def _drift(mode: str, flags: list[DriftFlag]) -> DriftReport:
    features = [FeatureDrift("device", "categorical", {"psi": 0.41, "linf": 0.3, "unseen_share": 0.0,
                                                        "null_rate_change": 0.0}),
                FeatureDrift("price", "continuous", {"js": 0.01, "unseen_share": 0.0, "null_rate_change": 0.0})]
    return DriftReport(mode, DriftPolicy().thresholds, 60_000, 20_000, features, flags)


def test_shows_the_drift_section_flagged_or_none(request_):
    flags = [DriftFlag("device", "psi", 0.41, 0.2), DriftFlag("device", "linf", 0.3, 0.2)]
    md = comparison_markdown(dataclasses.replace(request_, drift=_drift("warn", flags)), "fr-1").splitlines()
    head = next(line for line in md if line.startswith("**Drift**"))
    assert head == ("**Drift** (fitted days 60,000 rows vs staging day 20,000 rows, 2 features, mode warn): "
                    "2 flagged")
    assert "- psi of 'device' is 0.41 > 0.2" in md and "- linf of 'device' is 0.3 > 0.2" in md
    calm = comparison_markdown(dataclasses.replace(request_, drift=_drift("warn", [])), "fr-1")
    assert "mode warn): none flagged" in calm
    assert "**Drift**: not checked (RECLOOP_DRIFT_MODE=off)" in comparison_markdown(request_, "fr-1")
    assert drift_lines(_drift("block", flags))[0].endswith("2 flagged: promotion blocked")
    assert drift_lines(_drift("block", flags))[1:] == ["  - psi of 'device' is 0.41 > 0.2",
                                                       "  - linf of 'device' is 0.3 > 0.2"]


def test_a_blocking_report_is_a_failing_gate_check_and_a_warning_only_a_note():
    flags = [DriftFlag("device", "psi", 0.41, 0.2)]
    check = drift_check(_drift("block", flags))
    assert check == Check("drift", False, "drift: psi of 'device' is 0.41 > 0.2")
    assert drift_note(_drift("block", flags)) is None  # the gate's note names it
    assert drift_check(_drift("warn", flags)) is None and drift_check(_drift("block", [])) is None
    assert drift_check(None) is None
    assert "not gated in mode warn" in drift_note(_drift("warn", flags))
    assert drift_note(_drift("warn", [])) is None


def test_a_retrievers_request_shows_recall_and_ndcg_at_k_and_the_recall_interval():
    rng = np.random.default_rng(2)
    old = rng.random(400) * 0.5
    new = np.clip(old + rng.normal(0.02, 0.05, old.size), 0, 1)
    gate = evaluate_retrieval_gate(new, old, 100, RetrievalPolicy(bootstrap_samples=100))
    metrics = {"staging_recall_at_10": 0.21, "staging_ndcg_at_10": 0.13, "staging_recall_at_100": 0.52,
               "staging_ndcg_at_100": 0.24, "staging_coverage_at_100": 0.4}
    req = ApprovalRequest(
        dataset="synthetic_clicks", name="synthetic_clicks-retriever", version="4", arch="item_knn", run_id="run-new",
        experiment_id="7", gate=gate, champion_version="3", champion_run_id="run-old", champion_experiment_id="7",
        tracking_uri="sqlite:///mlflow.db", staging_day="2026-01-09", timeout_s=3600,
        retrieval=RetrievalComparison(100, 400, metrics, {**metrics, "staging_recall_at_100": 0.5}))
    assert req.run_name == "approve-synthetic_clicks-retriever-v4"
    md = comparison_markdown(req, "fr-9")
    assert "Approval needed: synthetic_clicks-retriever v4 (item_knn)" in md and "400 users" in md
    rows = {r[0]: r[1:] for r in _table(md)}
    assert rows["Recall@100"] == ["0.5200", "0.5000"] and rows["NDCG@10"] == ["0.1300", "0.1300"]
    assert "AUC" not in md and "Drift" not in md
    assert f"- Δ Recall@100 {gate.delta:+.4f}, 95% CI [{gate.delta_low:+.4f}, {gate.delta_high:+.4f}]" in md
    assert "ok recall_vs_champion" in md and "`recloop approve fr-9" in md and "moves `champion` from v3 to v4" in md
    assert max(len(line) for line in md.splitlines() if line.startswith("|")) <= 50
