"""Ingest: pick the training window and the staging day for a run date, and list their files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store import partitions
from feature_store.errors import DataError, RecloopInputError
from feature_store.spec import DatasetSpec
from tasks.handoff import RawPart, RawWindow


def load_window(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """Find the window for `run_date` and its part files, each hashed and its rows counted (from
    the parquet footer: no rows are read here). Fails fast, naming the day or file, when a day is
    missing, empty, written twice or unreadable. Columns and values are validation's job."""
    train_days, holdout_day = partitions.training_window(
        data_root, spec.name, run_date, window_days, allow_missing_days=spec.expectations.allow_missing_days
    )
    days = [*train_days, holdout_day]
    parts = {}
    for day in days:
        parts[day] = [RawPart(f, partitions.count_rows(f.path)) for f in partitions.scan_day(data_root, spec.name, day)]
        if sum(p.rows for p in parts[day]) == 0:
            raise DataError(partitions.day_dir(data_root, spec.name, day), "non-empty day",
                            detail=f"{len(parts[day])} file(s), zero rows")
    return RawWindow(
        dataset=spec.name,
        run_date=run_date,
        train_days=list(train_days),
        holdout_day=holdout_day,
        parts=parts,
        sources={d: str(partitions.day_dir(data_root, spec.name, d)) for d in days},
        # From the hashes scan_day computed: every file is hashed once per night.
        fingerprint=partitions.fingerprint_parts(p.file for d in days for p in parts[d]),
    )


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry I/O hiccups, not bad data: a corrupt file or a missing day stays that way."""
    return not isinstance(getattr(state, "data", None), RecloopInputError)


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_bad_input,
      cache_policy=NO_CACHE)
def ingest_task(data_root: Path, spec: DatasetSpec, run_date: date, window_days: int) -> RawWindow:
    """List, hash and count the window's files (retried: reads can hit a flaky disk)."""
    return load_window(data_root, spec, run_date, window_days)
