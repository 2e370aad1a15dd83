"""The popularity baseline: smoothed item CTR, global CTR for unseen items."""

from __future__ import annotations

import numpy as np
import pytest

from models.baselines import popularity_scores


def test_popularity_is_the_smoothed_item_ctr_and_the_global_ctr_for_new_items():
    items = ["a"] * 8 + ["b"] * 2
    clicks = [1] * 6 + [0] * 2 + [0, 0]
    p = popularity_scores(items, clicks, ["a", "b", "zzz", "a"], smoothing=10)
    ctr = 6 / 10
    np.testing.assert_allclose(p, [(6 + 10 * ctr) / (8 + 10), (0 + 10 * ctr) / (2 + 10), ctr, (6 + 10 * ctr) / 18])
    assert p[0] > p[2] > p[1]  # shrinkage keeps the order of the raw rates


def test_popularity_refuses_misaligned_labels():
    with pytest.raises(ValueError, match="as many labels as items"):
        popularity_scores(["a", "b"], [1], ["a"])
