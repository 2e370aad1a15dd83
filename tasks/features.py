"""Glue between the preprocessing output (numpy) and the models' batch dicts (torch)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from feature_store.workflow import FeatureArrays


def to_batch(arrays: FeatureArrays, labels: np.ndarray | pd.Series | None = None) -> dict[str, torch.Tensor]:
    """Contiguous tensors the trainer slices batches from (no per-row Python objects)."""
    batch = {
        "cat": torch.from_numpy(np.ascontiguousarray(arrays.cat, dtype=np.int64)),
        "cont": torch.from_numpy(np.ascontiguousarray(arrays.cont, dtype=np.float32)),
        "cross": torch.from_numpy(np.ascontiguousarray(arrays.cross, dtype=np.int64)),
    }
    if labels is not None:
        batch["label"] = torch.from_numpy(np.asarray(labels, dtype=np.float32).copy())
    return batch
