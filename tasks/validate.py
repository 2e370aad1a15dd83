"""Validate: the spec's Great Expectations suite on every file and day of the window, before training."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

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
from tasks.progress import StageProgress


def validate_files(days: list[DayFiles], spec: DatasetSpec, rows: Mapping[Path, int],
                   log: Callable[[str], None] = print, show_progress: bool = False) -> list[ValidationReport]:
    """Every part file streamed through the suite (never a whole file in memory), each counted
    once (`rows`: ingest read them from the footers); raises `ValidationFailed` naming every
    failing file (or day), column and rule at once. Progress counts rows as each file is done:
    a bar in a terminal, log lines elsewhere, a Prefect artifact when `show_progress`."""
    total, done = sum(rows[p] for day in days for p in day.files), 0
    progress = StageProgress("validate", "rows", log=log, artifact=show_progress)

    def on_file(n: int) -> None:
        nonlocal done
        done += n
        progress.update(done, total)

    try:
        reports = validate_day_files(days, spec, rows=rows, on_file=on_file)
    finally:
        progress.close()
    raise_for_failures(reports)
    return reports


def window_days(window: RawWindow) -> list[DayFiles]:
    """The window's days as files, the validation and staging days marked."""
    roles = {window.val_day: VALIDATION_DAY, window.holdout_day: STAGING_DAY}
    return [DayFiles(day, window.files(day), roles.get(day)) for day in [*window.train_days, window.holdout_day]]


def validate_window(window: RawWindow, spec: DatasetSpec, log: Callable[[str], None] = print,
                    show_progress: bool = False) -> list[ValidationReport]:
    """Raises `ValidationFailed` naming every failing file (or day), column and rule at once.
    Row counts come from the window (ingest read them from the footers)."""
    rows = {part.path: part.rows for parts in window.parts.values() for part in parts}
    return validate_files(window_days(window), spec, rows, log=log, show_progress=show_progress)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(window: RawWindow, spec: DatasetSpec) -> list[ValidationReport]:
    """Great Expectations suite on every file and day; fails the run before training."""
    from prefect import get_run_logger

    return validate_window(window, spec, log=get_run_logger().info, show_progress=True)
