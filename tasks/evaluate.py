"""Staging evaluation and the promotion gate.

Challenger and champion are scored on the same holdout day, which neither trained on. The
challenger passes when it is no worse than the champion beyond the configured tolerances on
AUC and logloss, and its predictions are sane (finite, calibrated within bounds, and the
registered bundle reloads and reproduces them, and, served by a real scoring server, answers
with the same predictions within the latency budget: `DryRunResult`, measured by
tasks/dryrun.py). With no champion yet, an absolute AUC floor applies instead. The bootstrap interval of the AUC difference is reported, not gated on:
on one day of data a tolerance is a clearer contract than a significance test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from models.metrics import bootstrap_auc_delta, calibration_ratio, log_loss, roc_auc


@dataclass(frozen=True)
class GatePolicy:
    """The staging gate's settings (`RECLOOP_GATE_*`; the defaults live here only).

    `bootstrap_rows`: the AUC-difference interval resamples a seeded sample of at most this
    many staging rows (AUC and logloss themselves are exact over every row)."""

    auc_tolerance: float = 0.002  # the challenger's AUC may be this much below the champion's
    logloss_tolerance: float = 0.002  # its logloss this much above
    min_auc: float = 0.60  # the absolute floor when there is no (healthy) champion
    calibration_bounds: tuple[float, float] = (0.8, 1.25)  # allowed mean(prediction) / CTR
    bootstrap_samples: int = 500
    bootstrap_rows: int = 200_000
    seed: int = 0

    def __post_init__(self):
        lo, hi = self.calibration_bounds
        if not 0 < lo < 1 < hi:
            raise ValueError(f"calibration_bounds must satisfy 0 < low < 1 < high, got {self.calibration_bounds}")
        if min(self.auc_tolerance, self.logloss_tolerance) < 0 or not 0 <= self.min_auc <= 1:
            raise ValueError("need tolerances >= 0 and 0 <= min_auc <= 1")
        if self.bootstrap_samples < 50 or self.bootstrap_rows < 1000:
            raise ValueError("need bootstrap_samples >= 50 and bootstrap_rows >= 1000")


@dataclass(frozen=True)
class StagingScore:
    auc: float
    logloss: float
    calibration: float
    rows: int


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


DRY_RUN_CHECK = "served_dry_run"


@dataclass(frozen=True)
class DryRunResult:
    """The served dry run of the selected candidate (tasks/dryrun.py): its registered version
    served by a real `tasks.serve` subprocess, a seeded sample of staging rows sent in requests
    of `request_rows`, every prediction compared with the in-memory one, every request timed.
    `failures` name what went wrong ("server did not start: ...", "request failed: ...",
    "predictions differ: ...", "p99 over budget: ..."); empty when it passed. Latencies are
    None when no request was answered."""

    uri: str
    rows: int
    requests: int
    request_rows: int
    p50_ms: float | None
    p99_ms: float | None
    max_abs_diff: float | None
    seconds: float
    p99_budget_ms: float
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def result(self) -> str:
        """The version tag `dryrun.result`: `passed`, or `failed: <reasons>`."""
        return "passed" if self.passed else "failed: " + "; ".join(self.failures)

    def check(self) -> Check:
        if not self.passed:
            return Check(DRY_RUN_CHECK, False, "; ".join(self.failures))
        return Check(DRY_RUN_CHECK, True, f"{self.uri} served {self.rows} rows in {self.requests} requests of "
                                          f"{self.request_rows}: p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms "
                                          f"(budget {self.p99_budget_ms:g}), max |diff| {self.max_abs_diff:.1e}")

    def metrics(self) -> dict[str, float]:
        """Metrics of the candidate's run (those that were measured)."""
        out = {"dryrun_seconds": self.seconds, "dryrun_p50_ms": self.p50_ms, "dryrun_p99_ms": self.p99_ms,
               "dryrun_max_abs_diff": self.max_abs_diff}
        return {k: float(v) for k, v in out.items() if v is not None}

    def tags(self) -> dict[str, str]:
        out = {"dryrun.result": self.result}
        if self.p50_ms is not None:
            out |= {"dryrun.p50_ms": f"{self.p50_ms:.2f}", "dryrun.p99_ms": f"{self.p99_ms:.2f}"}
        return out


@dataclass
class GateResult:
    challenger: StagingScore
    champion: StagingScore | None
    delta_auc: float | None
    delta_auc_low: float | None
    delta_auc_high: float | None
    delta_logloss: float | None
    checks: list[Check] = field(default_factory=list)
    dry_run: DryRunResult | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        """Short: 'pass' or 'fail (check, check)'. The details are in `explanation`."""
        if self.passed:
            return "pass"
        return "fail (" + ", ".join(c.name for c in self.checks if not c.passed) + ")"

    @property
    def explanation(self) -> str:
        return "; ".join(f"{'ok' if c.passed else 'FAILED'} {c.name}: {c.detail}" for c in self.checks)

    def add_check(self, check: Check) -> None:
        """Add a check, or replace the one of the same name (a pending check gets its result)."""
        self.checks = [c for c in self.checks if c.name != check.name] + [check]

    def record_dry_run(self, result: DryRunResult) -> None:
        self.dry_run = result
        self.add_check(result.check())

    def metrics(self) -> dict[str, float]:
        """The metric keys every child run shares (champion numbers on the challenger's run)."""
        out = {
            "staging_auc": self.challenger.auc,
            "staging_logloss": self.challenger.logloss,
            "staging_calibration": self.challenger.calibration,
            "gate_passed": float(self.passed),
        }
        if self.champion is not None:
            out |= {
                "champion_staging_auc": self.champion.auc,
                "champion_staging_logloss": self.champion.logloss,
                "delta_auc": self.delta_auc,
                "delta_auc_ci_low": self.delta_auc_low,
                "delta_auc_ci_high": self.delta_auc_high,
                "delta_logloss": self.delta_logloss,
            }
        return out

    def tags(self) -> dict[str, str]:
        """Version tags recording the gate result and the comparison numbers."""
        out = {
            "gate.verdict": self.verdict,
            "gate.checks": self.explanation,
            "gate.passed": str(self.passed).lower(),
            "gate.staging_auc": f"{self.challenger.auc:.5f}",
            "gate.staging_logloss": f"{self.challenger.logloss:.5f}",
            "gate.calibration": f"{self.challenger.calibration:.4f}",
        }
        if self.champion is not None:
            out |= {
                "gate.champion_auc": f"{self.champion.auc:.5f}",
                "gate.champion_logloss": f"{self.champion.logloss:.5f}",
                "gate.delta_auc": f"{self.delta_auc:+.5f}",
                "gate.delta_auc_ci95": f"[{self.delta_auc_low:+.5f}, {self.delta_auc_high:+.5f}]",
                "gate.delta_logloss": f"{self.delta_logloss:+.5f}",
            }
        if self.dry_run is not None:
            out |= self.dry_run.tags()
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["verdict"] = self.verdict
        d["explanation"] = self.explanation
        return d


def score(y: np.ndarray, p: np.ndarray) -> StagingScore:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return StagingScore(
        auc=roc_auc(y, p), logloss=log_loss(y, p), calibration=calibration_ratio(y, p), rows=len(y)
    )


def bootstrap_sample(n: int, policy: GatePolicy) -> slice | np.ndarray:
    """The staging rows the bootstrap resamples: all of them, or a seeded sample of
    `policy.bootstrap_rows` (sorted, so it is the same rows for every candidate)."""
    if n <= policy.bootstrap_rows:
        return slice(None)
    return np.sort(np.random.default_rng(policy.seed).choice(n, policy.bootstrap_rows, replace=False))


def evaluate_gate(
    y: np.ndarray, p_challenger: np.ndarray, p_champion: np.ndarray | None, policy: GatePolicy
) -> GateResult:
    """Compare a challenger with the champion (or the absolute floor) on one holdout."""
    y = np.asarray(y, dtype=np.float64)
    p_challenger = np.asarray(p_challenger, dtype=np.float64)
    finite = bool(np.all(np.isfinite(p_challenger)) and np.all((p_challenger >= 0) & (p_challenger <= 1)))
    checks = [Check("finite", finite, "predictions finite and in [0, 1]" if finite else "non-finite or out-of-range predictions")]
    if not finite:
        nan = float("nan")
        return GateResult(StagingScore(nan, nan, nan, len(y)), None, None, None, None, None, checks)

    challenger = score(y, p_challenger)
    lo, hi = policy.calibration_bounds
    calibrated = lo <= challenger.calibration <= hi
    checks.append(Check("calibration", calibrated, f"calibration ratio {challenger.calibration:.3f} "
                                                    f"{'within' if calibrated else 'outside'} [{lo}, {hi}]"))
    if p_champion is None:
        ok = challenger.auc >= policy.min_auc
        checks.append(Check("auc_floor", ok, f"AUC {challenger.auc:.4f} {'>=' if ok else '<'} floor {policy.min_auc}"))
        return GateResult(challenger, None, None, None, None, None, checks)

    champion = score(y, p_champion)
    p_champion = np.asarray(p_champion, dtype=np.float64)
    rows = bootstrap_sample(len(y), policy)
    _, low, high = bootstrap_auc_delta(
        y[rows], p_challenger[rows], p_champion[rows], n_boot=policy.bootstrap_samples, seed=policy.seed
    )
    delta = challenger.auc - champion.auc  # exact, over every row; only the interval is sampled
    d_ll = challenger.logloss - champion.logloss
    auc_ok = challenger.auc >= champion.auc - policy.auc_tolerance
    ll_ok = d_ll <= policy.logloss_tolerance
    checks.append(Check("auc_vs_champion", auc_ok, f"AUC delta {delta:+.4f} (tolerance -{policy.auc_tolerance})"))
    checks.append(Check("logloss_vs_champion", ll_ok, f"logloss delta {d_ll:+.4f} (tolerance +{policy.logloss_tolerance})"))
    return GateResult(challenger, champion, delta, low, high, d_ll, checks)


def reload_check(p_loaded: np.ndarray, p_in_memory: np.ndarray, atol: float = 1e-5) -> Check:
    """The bundle read back from the registry must reproduce the in-memory predictions."""
    p_loaded = np.asarray(p_loaded, dtype=np.float64)
    if p_loaded.shape != np.shape(p_in_memory):
        return Check("bundle_reload", False, f"reloaded bundle returned shape {p_loaded.shape}, expected {np.shape(p_in_memory)}")
    diff = float(np.max(np.abs(p_loaded - p_in_memory))) if len(p_loaded) else 0.0
    ok = diff <= atol
    return Check("bundle_reload", ok, f"reloaded bundle max |diff| {diff:.2e} {'<=' if ok else '>'} {atol:.0e}")
