"""Baselines a learned ranker must beat: item popularity.

Popularity scores every impression by its item's click-through rate in the training data,
shrunk toward the global rate so that rarely shown items are not scored on two clicks:

    p(item) = (clicks_item + m * ctr_global) / (impressions_item + m)

Items unseen in training get `ctr_global`. This is what "most clicked" ranking does, and a
model that cannot beat it has learned nothing about who is looking.
"""

from __future__ import annotations

import numpy as np


def popularity_scores(
    train_items, train_labels, score_items, smoothing: float = 20.0
) -> np.ndarray:
    """Smoothed training CTR of each item in `score_items` (float64, one per row).

    Args:
        train_items, score_items: item ids (any comparable dtype; compared as strings).
        train_labels: 0/1 clicks aligned with `train_items`.
        smoothing: m, the number of impressions at the global rate every item starts with.
    """
    items = np.asarray(train_items).astype(str)
    y = np.asarray(train_labels, dtype=np.float64)
    if items.shape != y.shape or items.size == 0:
        raise ValueError(f"popularity baseline: need as many labels as items, got {y.shape} and {items.shape}")
    if smoothing <= 0:
        raise ValueError("popularity baseline: smoothing must be > 0")
    ctr = float(y.mean())
    vocab, inverse = np.unique(items, return_inverse=True)
    clicks = np.bincount(inverse, weights=y, minlength=vocab.size)
    shown = np.bincount(inverse, minlength=vocab.size)
    item_ctr = (clicks + smoothing * ctr) / (shown + smoothing)
    query = np.asarray(score_items).astype(str)
    pos = np.clip(np.searchsorted(vocab, query), 0, vocab.size - 1)
    known = vocab[pos] == query
    return np.where(known, item_ctr[pos], ctr)
