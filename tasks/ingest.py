"""Ingest: pick the training window and the staging day for a run date and read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store import partitions
from feature_store.errors import RecloopInputError
from feature_store.spec import DatasetSpec


@dataclass(frozen=True)
class RawPart:
    """One part file of a day as read: validation checks, and names, each file on its own."""

    file: partitions.PartFile
    frame: pd.DataFrame


@dataclass
class RawWindow:
    """Raw rows of one nightly run. The last training day is the validation day (early
    stopping, model selection); the holdout day is the staging day nobody trained on."""

    dataset: str
    run_date: date
    train_days: list[date]
    holdout_day: date
    parts: dict[date, list[RawPart]]
    sources: dict[date, str]  # the day directories
    fingerprint: str

    @property
    def fit_days(self) -> list[date]:
        return self.train_days[:-1]

    @property
    def val_day(self) -> date:
        return self.train_days[-1]

    def files(self, day: date) -> list[Path]:
        return [p.file.path for p in self.parts[day]]

    @cached_property
    def frames(self) -> dict[date, pd.DataFrame]:
        """One frame per day, its files in name order (built at first use: after validation)."""
        return {
            day: parts[0].frame if len(parts) == 1 else pd.concat([p.frame for p in parts], ignore_index=True)
            for day, parts in self.parts.items()
        }

    def frame(self, days: list[date]) -> pd.DataFrame:
        return pd.concat([self.frames[d] for d in days], ignore_index=True)

    @property
    def data_window(self) -> str:
        """The training days, gaps shown: `2026-01-01..2026-01-07`, or with a spec that allows
        missing days `1997-12-08..1997-12-10, 1997-12-12..1997-12-14 (missing 1997-12-11)`."""
        return partitions.describe_days(self.train_days)


def load_window(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """Read the window for `run_date`: fails fast, naming the day or file, when a day is missing,
    empty, written twice or unreadable. Columns and values are validation's job."""
    train_days, holdout_day = partitions.training_window(
        data_root, spec.name, run_date, window_days, allow_missing_days=spec.expectations.allow_missing_days
    )
    days = [*train_days, holdout_day]
    parts = {d: [RawPart(f, df) for f, df in partitions.read_parts(data_root, spec.name, d)] for d in days}
    return RawWindow(
        dataset=spec.name,
        run_date=run_date,
        train_days=list(train_days),
        holdout_day=holdout_day,
        parts=parts,
        sources={d: str(partitions.day_dir(data_root, spec.name, d)) for d in days},
        # From the hashes read_parts computed: every file is hashed once per night.
        fingerprint=partitions.fingerprint_parts(p.file for d in days for p in parts[d]),
    )


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry I/O hiccups, not bad data: a corrupt file or a missing day stays that way."""
    return not isinstance(getattr(state, "data", None), RecloopInputError)


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_bad_input,
      cache_policy=NO_CACHE)
def ingest_task(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """Read the training window and the staging day (retried: reads can hit a flaky disk)."""
    return load_window(data_root, spec, run_date, window_days)
