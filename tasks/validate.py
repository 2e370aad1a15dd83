"""Validate: the spec's Great Expectations suite on every day of the window, before training."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store.spec import DatasetSpec
from feature_store.validation import ValidationReport, validate_frames
from tasks.ingest import RawWindow


def validate_window(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Raises `ValidationFailed` (naming the partition, columns and rules) on the first bad day."""
    days = [*window.train_days, window.holdout_day]
    reports = validate_frames([(window.sources[d], window.frames[d]) for d in days], spec)
    for report in reports:
        report.raise_for_failures()
    return reports


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Great Expectations suite on every day; fails the run before training."""
    return validate_window(window, spec)
