"""Validate: the spec's Great Expectations suite on every file and day of the window, before training."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store.spec import DatasetSpec
from feature_store.validation import (
    STAGING_DAY,
    VALIDATION_DAY,
    DayFiles,
    ValidationReport,
    raise_for_failures,
    validate_day_files,
)
from tasks.handoff import RawWindow


def validate_files(days: list[DayFiles], spec: DatasetSpec) -> list[ValidationReport]:
    """Every part file streamed through the suite (never a whole file in memory); raises
    `ValidationFailed` naming every failing file (or day), column and rule at once."""
    reports = validate_day_files(days, spec)
    raise_for_failures(reports)
    return reports


def window_days(window: RawWindow) -> list[DayFiles]:
    """The window's days as files, the validation and staging days marked."""
    roles = {window.val_day: VALIDATION_DAY, window.holdout_day: STAGING_DAY}
    return [DayFiles(day, window.files(day), roles.get(day)) for day in [*window.train_days, window.holdout_day]]


def validate_window(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Raises `ValidationFailed` naming every failing file (or day), column and rule at once."""
    return validate_files(window_days(window), spec)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Great Expectations suite on every file and day; fails the run before training."""
    return validate_window(window, spec)
