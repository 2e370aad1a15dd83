"""Ingest: pick the training window and the staging day for a run date and read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store import partitions
from feature_store.errors import RecloopInputError
from feature_store.spec import DatasetSpec


@dataclass
class RawWindow:
    """Raw rows of one nightly run. The last training day is the validation day (early
    stopping, model selection); the holdout day is the staging day nobody trained on."""

    dataset: str
    run_date: date
    train_days: list[date]
    holdout_day: date
    frames: dict[date, pd.DataFrame]
    sources: dict[date, str]
    fingerprint: str

    @property
    def fit_days(self) -> list[date]:
        return self.train_days[:-1]

    @property
    def val_day(self) -> date:
        return self.train_days[-1]

    def frame(self, days: list[date]) -> pd.DataFrame:
        return pd.concat([self.frames[d] for d in days], ignore_index=True)

    @property
    def data_window(self) -> str:
        return f"{self.train_days[0]}..{self.train_days[-1]}"


def load_window(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """Read the window for `run_date`: fails fast, naming the file, when a day is unusable."""
    train_days, holdout_day = partitions.training_window(data_root, spec.name, run_date, window_days)
    days = [*train_days, holdout_day]
    frames = {d: partitions.read_day(data_root, spec.name, d, spec=spec) for d in days}
    sources = {d: str(partitions.day_dir(data_root, spec.name, d)) for d in days}
    return RawWindow(
        dataset=spec.name,
        run_date=run_date,
        train_days=list(train_days),
        holdout_day=holdout_day,
        frames=frames,
        sources=sources,
        fingerprint=partitions.fingerprint(data_root, spec.name, days),
    )


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry I/O hiccups, not bad data: a corrupt file or a missing day stays that way."""
    return not isinstance(getattr(state, "data", None), RecloopInputError)


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_bad_input,
      cache_policy=NO_CACHE)
def ingest_task(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """Read the training window and the staging day (retried: reads can hit a flaky disk)."""
    return load_window(data_root, spec, run_date, window_days)
