"""Figures logged to MLflow: ROC, calibration (reliability) and training curves."""

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


def close(fig) -> None:
    plt.close(fig)
