"""Figures logged to MLflow: ROC, calibration (reliability), training curves and drift."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def roc_figure(y: np.ndarray, scores: dict[str, np.ndarray], title: str):
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def calibration_figure(y: np.ndarray, scores: dict[str, np.ndarray], title: str, bins: int = 15):
    """Mean predicted vs observed click rate in quantile bins of the prediction."""
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for label, p in scores.items():
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        counts = np.bincount(idx, minlength=len(edges) - 1)
        keep = counts > 0
        mean_p = np.bincount(idx, weights=p, minlength=len(edges) - 1)[keep] / counts[keep]
        mean_y = np.bincount(idx, weights=y, minlength=len(edges) - 1)[keep] / counts[keep]
        ax.plot(mean_p, mean_y, "o-", ms=3, label=label)
        top = max(top, mean_p.max(), mean_y.max())
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set(xlabel="mean predicted CTR", ylabel="observed CTR", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def training_curve_figure(history: list[dict], title: str):
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train logloss")
    ax1.plot(epochs, [h["val_logloss"] for h in history], "o-", label="val logloss")
    ax1.set(xlabel="epoch", title="logloss")
    ax1.legend()
    ax2.plot(epochs, [h["val_auc"] for h in history], "o-", color="tab:green")
    ax2.set(xlabel="epoch", title="validation AUC")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def drift_figure(report, title: str = "training window vs staging day"):
    """One panel per drift measure: a horizontal bar per feature it applies to, the flagged ones
    red, the threshold a dashed line (null-rate change as its absolute value, as it is judged)."""
    measures = [m for m in report.thresholds if any(m in f.measures for f in report.features)] or ["psi"]
    rows = max(sum(m in f.measures for f in report.features) for m in measures)
    fig, axes = plt.subplots(1, len(measures), figsize=(3.2 * len(measures), 1.5 + 0.22 * max(rows, 1)),
                             squeeze=False)
    flagged = {(f.feature, f.measure) for f in report.flags}
    for ax, measure in zip(axes[0], measures):
        feats = [f for f in report.features if measure in f.measures]
        values = [abs(f.measures[measure]) if measure == "null_rate_change" else f.measures[measure] for f in feats]
        colors = ["tab:red" if (f.feature, measure) in flagged else "tab:blue" for f in feats]
        ax.barh(range(len(feats)), values, color=colors)
        ax.set_yticks(range(len(feats)), [f.feature for f in feats], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(report.thresholds[measure], color="k", ls="--", lw=0.8)
        ax.set_xlim(0, 1.1 * max([report.thresholds[measure], *values]) or 1.0)
        ax.set_title("|null_rate_change|" if measure == "null_rate_change" else measure, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"drift, {title} (mode {report.mode}; red: over the dashed threshold)", fontsize=9)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
