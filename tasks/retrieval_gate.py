"""The retrieval stage's settings and its gate: a challenger retriever against the champion
retriever on Recall@K over the staging day's users.

As the ranking gate does for AUC: the challenger passes when its Recall@K is no worse than
the champion's beyond a tolerance; a paired bootstrap over users (the same resampled users for
both, so their correlation cancels) gives the interval of the difference, reported, not gated
on. No (loadable) champion: an absolute floor instead. Numpy only, so the settings can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.evaluate import Check


@dataclass(frozen=True)
class RetrievalPolicy:
    """The retrieval stage (`RECLOOP_RETRIEVAL_*`; the defaults live here only).

    `enabled`: run the stage for specs with a `retrieval` section. `k`: candidates per user
    (a spec's `retrieval.k` overrides it); `top_n`: the two-stage pipeline's final list, re-scored
    by the ranker; `exclude_seen`: never recommend an item the user interacted with (any event,
    positive or not) in the training window. `epochs`, `batch_size`, `lr`: trained retrievers
    (`models.retrieval.trainer.RetrievalTrainConfig`; None: each retriever's own). Gate: `recall_tolerance` below the
    champion's Recall@K, `min_recall` with no champion, `bootstrap_samples` resamples of users."""

    enabled: bool = True
    k: int = 100
    top_n: int = 10
    exclude_seen: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    recall_tolerance: float = 0.005
    min_recall: float = 0.0
    bootstrap_samples: int = 500
    seed: int = 0

    def __post_init__(self):
        if min(self.k, self.top_n, self.epochs or 1, self.batch_size or 1) < 1:
            raise ValueError("need k, top_n, epochs and batch_size >= 1")
        if self.top_n > self.k:
            raise ValueError(f"top_n ({self.top_n}) cannot exceed k ({self.k}): the ranker re-scores the k candidates")
        if self.recall_tolerance < 0 or not 0 <= self.min_recall <= 1 or self.bootstrap_samples < 50:
            raise ValueError("need recall_tolerance >= 0, 0 <= min_recall <= 1 and bootstrap_samples >= 50")


def bootstrap_mean_delta(new: np.ndarray, old: np.ndarray, n_boot: int = 500, seed: int = 0,
                         alpha: float = 0.05) -> tuple[float, float, float]:
    """Paired bootstrap of mean(new) - mean(old) over the same units (users): the difference and
    its (alpha/2, 1 - alpha/2) percentile interval."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    if new.shape != old.shape or new.size == 0:
        raise ValueError(f"need two equal, non-empty samples, got {new.shape} and {old.shape}")
    diff = new - old
    rows = np.random.default_rng(seed).integers(0, diff.size, size=(n_boot, diff.size))
    low, high = np.quantile(diff[rows].mean(axis=1), [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(low), float(high)


@dataclass
class RetrievalGate:
    """One challenger retriever's gate on the staging day (`recall` is Recall@`k`)."""

    k: int
    recall: float
    champion_recall: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    checks: list[Check] = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail (" + ", ".join(c.name for c in self.checks if not c.passed) + ")"

    @property
    def explanation(self) -> str:
        return "; ".join(f"{'ok' if c.passed else 'FAILED'} {c.name}: {c.detail}" for c in self.checks)

    def add_check(self, check: Check) -> None:
        self.checks = [c for c in self.checks if c.name != check.name] + [check]

    def metrics(self) -> dict[str, float]:
        """The same keys on every retriever run (NaN-free: champion keys only with a champion)."""
        out = {"gate_passed": float(self.passed)}
        if self.champion_recall is not None:
            out |= {f"champion_staging_recall_at_{self.k}": self.champion_recall,
                    f"delta_recall_at_{self.k}": self.delta, "delta_recall_ci_low": self.delta_low,
                    "delta_recall_ci_high": self.delta_high}
        return out

    def tags(self) -> dict[str, str]:
        out = {"gate.verdict": self.verdict, "gate.checks": self.explanation, "gate.passed": str(self.passed).lower(),
               "gate.k": str(self.k), "gate.staging_recall": f"{self.recall:.5f}"}
        if self.champion_recall is not None:
            out |= {"gate.champion_recall": f"{self.champion_recall:.5f}", "gate.delta_recall": f"{self.delta:+.5f}",
                    "gate.delta_recall_ci95": f"[{self.delta_low:+.5f}, {self.delta_high:+.5f}]"}
        return out


def evaluate_retrieval_gate(recall_new: np.ndarray, recall_old: np.ndarray | None, k: int,
                            policy: RetrievalPolicy, finite: bool = True) -> RetrievalGate:
    """Gate per-user Recall@k of a challenger against the champion's on the same users (or
    the absolute floor `policy.min_recall` when `recall_old` is None)."""
    recall = float(np.mean(recall_new)) if len(recall_new) else float("nan")
    checks = [Check("finite", finite, "scores finite" if finite else "non-finite scores in the top-K")]
    if not len(recall_new):
        checks.append(Check("staging_users", False, "no staging user with a positive to evaluate on"))
        return RetrievalGate(k, recall, checks=checks)
    if recall_old is None:
        ok = recall >= policy.min_recall
        checks.append(Check("recall_floor", ok, f"Recall@{k} {recall:.4f} {'>=' if ok else '<'} floor {policy.min_recall}"))
        return RetrievalGate(k, recall, checks=checks)
    delta, low, high = bootstrap_mean_delta(recall_new, recall_old, policy.bootstrap_samples, policy.seed)
    old = float(np.mean(recall_old))
    ok = recall >= old - policy.recall_tolerance
    checks.append(Check("recall_vs_champion", ok, f"Recall@{k} delta {delta:+.4f} [{low:+.4f}, {high:+.4f}] "
                                                  f"(tolerance -{policy.recall_tolerance})"))
    return RetrievalGate(k, recall, old, delta, low, high, checks)
