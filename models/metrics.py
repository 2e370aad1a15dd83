"""Ranking and calibration metrics in numpy (no sklearn at run time), plus the paired
bootstrap of an AUC difference used by the staging gate.

All functions take 1-D arrays: y in {0, 1}, scores / probabilities as floats.
"""

from __future__ import annotations

import numpy as np


def _labels(y_true) -> np.ndarray:
    y = np.asarray(y_true).ravel()
    if y.size == 0:
        raise ValueError("empty label array")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(bool)


def _scores(y_score, n: int, name: str = "y_score") -> np.ndarray:
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if s.shape[0] != n:
        raise ValueError(f"{name} has {s.shape[0]} values, labels have {n}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of `s`, ties sharing the mean of their ranks (scipy's 'average')."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Tie groups in sorted order: group g spans [start_g, end_g).
    new_group = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], s.size]
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve, via the Mann-Whitney U statistic, O(n log n).

        AUC = (sum_{i: y_i=1} rank_i - n_pos (n_pos + 1) / 2) / (n_pos n_neg)

    with tied scores given their average rank (a tie counts 1/2), which matches
    `sklearn.metrics.roc_auc_score`. Returns NaN when only one class is present
    (as sklearn >= 1.6 does), since the AUC is undefined there.
    """
    y = _labels(y_true)
    s = _scores(y_score, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y_true, p, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, -mean(y log p + (1 - y) log(1 - p)), with p clipped to
    [eps, 1 - eps] so a confident mistake costs log(1/eps) instead of infinity."""
    y = _labels(y_true).astype(np.float64)
    q = np.clip(_scores(p, y.size, "p"), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


def calibration_ratio(y_true, p) -> float:
    """mean(p) / mean(y): 1 is calibrated on average, > 1 over-predicts clicks.
    NaN when there is no positive label."""
    y = _labels(y_true)
    q = _scores(p, y.size, "p")
    rate = y.mean()
    return float(q.mean() / rate) if rate > 0 else float("nan")


class _PairedAUC:
    """AUC of one score vector under many row-count weightings, vectorised.

    For weights w (how often each row occurs in a resample):

        AUC_w = sum_{i pos} w_i (Wneg_below(s_i) + Wneg_tied(s_i) / 2) / (Wpos Wneg)

    where Wneg_below / Wneg_tied sum the weights of negatives scoring strictly below /
    equal to s_i. Negatives are sorted by score once, and each positive's range of
    lower / tied negatives is found once by binary search; per resample it is one
    cumulative sum over the negatives' weights and two gathers.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray):
        self.pos_rows = np.flatnonzero(y)  # (P,)
        neg_rows = np.flatnonzero(~y)
        order = np.argsort(s[neg_rows], kind="mergesort")
        self.neg_rows = neg_rows[order]  # (N,) negatives by ascending score
        neg_sorted = s[self.neg_rows]
        pos_s = s[self.pos_rows]
        self.lo = np.searchsorted(neg_sorted, pos_s, side="left")  # (P,) negatives below
        self.hi = np.searchsorted(neg_sorted, pos_s, side="right")  # (P,) below or tied

    def __call__(self, w: np.ndarray) -> np.ndarray:
        wn = w[:, self.neg_rows]  # (R, N)
        cum = np.zeros((w.shape[0], wn.shape[1] + 1))
        np.cumsum(wn, axis=1, out=cum[:, 1:])  # cum[:, k] = weight of the k lowest negatives
        cl, ch = cum[:, self.lo], cum[:, self.hi]  # (R, P)
        wp = w[:, self.pos_rows]  # (R, P)
        num = (wp * (cl + ch)).sum(axis=1) * 0.5  # below + tied/2 = (cl + ch) / 2
        denom = wp.sum(axis=1) * cum[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.nan)


def bootstrap_auc_delta(
    y_true,
    p_new,
    p_old,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Paired bootstrap of AUC(new) - AUC(old) on the same rows.

    Each of `n_boot` resamples draws n rows with replacement (the same rows for both
    models, so their correlation cancels) and records AUC(new) - AUC(old).

    Returns:
        (delta, low, high): delta on the full sample, and the (alpha/2, 1 - alpha/2)
        percentiles of the resampled deltas (a percentile confidence interval).
        Resamples holding a single class are skipped.
    """
    y = _labels(y_true)
    new, old = _scores(p_new, y.size, "p_new"), _scores(p_old, y.size, "p_old")
    if not 0.0 < alpha < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    delta = roc_auc(y, new) - roc_auc(y, old)
    if np.isnan(delta):
        raise ValueError("AUC is undefined: the labels hold a single class")
    n = y.size
    auc_new, auc_old = _PairedAUC(y, new), _PairedAUC(y, old)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // n))  # bound memory at a few (chunk, n) arrays
    deltas = []
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        rows = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        w = np.bincount(rows.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
        deltas.append(auc_new(w) - auc_old(w))
    d = np.concatenate(deltas)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float(delta), float("nan"), float("nan")
    low, high = np.quantile(d, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(delta), float(low), float(high)


TOPK_KS = (10, 50, 100)
TOPK_MEASURES = ("recall", "ndcg", "hit", "mrr", "coverage")


def topk_metric_keys(ks=TOPK_KS) -> list[str]:
    """The keys `topk_metrics` returns, e.g. `recall@10`: the same on every run."""
    return [f"{m}@{k}" for k in ks for m in TOPK_MEASURES]


def topk_metrics(recommended, relevant, n_items: int, ks=TOPK_KS) -> dict[str, float]:
    """Top-K quality of ranked lists against each user's relevant items.

    Args:
        recommended: int (U, Kmax) item indices, best first, -1 padding a short list.
        relevant: U arrays of the items each user actually clicked (the held-out day).
        n_items: the catalogue size, for coverage.
    Per user u with relevant set R_u (users with an empty R_u are skipped) and top-K list L:
        recall@K   |L ∩ R_u| / |R_u|
        hit@K      1 if L ∩ R_u else 0
        ndcg@K     sum_{r: L_r in R_u} 1/log2(r+1)  /  sum_{r <= min(|R_u|, K)} 1/log2(r+1)
        mrr@K      1 / rank of the first relevant item in L (0 if none)
    averaged over users; coverage@K = distinct items in all top-K lists / n_items.
    K beyond Kmax reads the Kmax list. Raises ValueError on mismatched lengths."""
    rec = _lists(recommended, relevant)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    out: dict[str, float] = {}
    hits, n_rel = _hits(rec, relevant)
    if not n_rel.size:
        return {key: float("nan") for key in topk_metric_keys(ks)}
    discount = 1.0 / np.log2(np.arange(2, rec.shape[1] + 2))
    for k in ks:
        h = hits[:, :k]
        found = h.sum(1)
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(n_rel, k).astype(int) - 1]
        first = np.where(h.any(1), h.argmax(1) + 1, 0)
        listed = rec[:, :k]
        out[f"recall@{k}"] = float(np.mean(found / n_rel))
        out[f"ndcg@{k}"] = float(np.mean((h * discount[:h.shape[1]]).sum(1) / ideal))
        out[f"hit@{k}"] = float(np.mean(found > 0))
        out[f"mrr@{k}"] = float(np.mean(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)))
        out[f"coverage@{k}"] = float(np.unique(listed[listed >= 0]).size / n_items)
    return {key: out[key] for key in topk_metric_keys(ks)}


def per_user_recall(recommended, relevant, k: int) -> np.ndarray:
    """Recall@k of each user with a non-empty relevant set, float64 (U',): the values
    `topk_metrics` averages into `recall@k` (the retrieval gate bootstraps over them)."""
    hits, n_rel = _hits(_lists(recommended, relevant), relevant)
    return hits[:, :k].sum(1) / n_rel if n_rel.size else np.zeros(0)


def _lists(recommended, relevant) -> np.ndarray:
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2 or rec.shape[0] != len(relevant):
        raise ValueError(f"recommended is {rec.shape}, relevant has {len(relevant)} users")
    return rec


def _hits(rec: np.ndarray, relevant) -> tuple[np.ndarray, np.ndarray]:
    """Over the users with a relevant item: which listed items are relevant, bool (U', Kmax),
    and how many distinct relevant items each has, float64 (U',)."""
    rows = [(row, np.unique(np.asarray(r, dtype=np.int64))) for row, r in zip(rec, relevant) if len(r)]
    if not rows:
        return np.zeros((0, rec.shape[1]), dtype=bool), np.zeros(0)
    hits = np.stack([np.isin(row, r) & (row >= 0) for row, r in rows])
    return hits, np.array([r.size for _, r in rows], dtype=np.float64)
