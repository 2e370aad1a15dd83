"""Validate: the spec's Great Expectations suite on every file and day of the window, before training."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store.spec import DatasetSpec
from feature_store.validation import (
    STAGING_DAY,
    VALIDATION_DAY,
    DayParts,
    ValidationReport,
    raise_for_failures,
    validate_days,
)
from tasks.ingest import RawWindow


def validate_window(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Raises `ValidationFailed` naming every failing file (or day), column and rule at once."""
    roles = {window.val_day: VALIDATION_DAY, window.holdout_day: STAGING_DAY}
    days = [
        DayParts(day, [(str(p.file.path), p.frame) for p in window.parts[day]], roles.get(day))
        for day in [*window.train_days, window.holdout_day]
    ]
    reports = validate_days(days, spec)
    raise_for_failures(reports)
    return reports


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Great Expectations suite on every file and day; fails the run before training."""
    return validate_window(window, spec)
