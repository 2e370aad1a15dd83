"""Preprocess: fit the spec's NVTabular workflow on the training days only, transform all."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store.spec import DatasetSpec
from feature_store.workflow import Preprocessor
from models.schema import InputSchema
from tasks.features import to_batch
from tasks.ingest import RawWindow


@dataclass
class PreparedData:
    preprocessor: Preprocessor
    schema: InputSchema
    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    holdout: dict[str, torch.Tensor]
    holdout_raw: pd.DataFrame
    holdout_labels: np.ndarray
    fit_seconds: float
    transform_rows_per_s: float


def prepare(window: RawWindow, spec: DatasetSpec) -> PreparedData:
    """The loop's split: fit on the window's training days, validate on D-1, stage on D."""
    return prepare_frames(
        spec, window.frame(window.fit_days), window.frame([window.val_day]), window.frame([window.holdout_day])
    )


def prepare_frames(
    spec: DatasetSpec, train_raw: pd.DataFrame, val_raw: pd.DataFrame, holdout_raw: pd.DataFrame
) -> PreparedData:
    """Fit the workflow on `train_raw` only, then transform all three splits into tensors."""
    t0 = time.perf_counter()
    preprocessor = Preprocessor.fit(spec, train_raw)
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    batches = [
        to_batch(preprocessor.transform(df), df[spec.label].to_numpy())
        for df in (train_raw, val_raw, holdout_raw)
    ]
    rows = len(train_raw) + len(val_raw) + len(holdout_raw)
    transform_rows_per_s = rows / max(time.perf_counter() - t1, 1e-9)
    return PreparedData(
        preprocessor=preprocessor,
        schema=InputSchema.from_layout(preprocessor.layout),
        train=batches[0],
        val=batches[1],
        holdout=batches[2],
        holdout_raw=holdout_raw,
        holdout_labels=holdout_raw[spec.label].to_numpy(dtype=np.float64),
        fit_seconds=fit_seconds,
        transform_rows_per_s=transform_rows_per_s,
    )


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(window: RawWindow, spec: DatasetSpec) -> PreparedData:
    """Fit the NVTabular workflow on the training days and transform every split."""
    return prepare(window, spec)
