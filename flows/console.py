"""The rich console the command line prints with."""

from __future__ import annotations

import logging
import sys

from rich.console import Console


def stdout_console(**options) -> Console:
    """A rich console on the current sys.stdout (a test runner may have swapped it): 160 columns
    wide when stdout is not a terminal, so tables in logs and CI output are not folded."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, **options)


def print_error(message: str) -> None:
    """One line on stderr: how every command reports what stopped it."""
    print(f"error: {message}", file=sys.stderr)


class _ExpectedStopsWithoutTraceback(logging.Filter):
    """Prefect logs a failed task and then the failed flow, each with a full traceback. For a
    night stopped on purpose (bad input, a store that does not answer, another night holding
    the dataset, an approval nobody gave) the traceback says nothing the message does not:
    keep one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, _expected_stops()):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            record.msg, record.args = f"stopped: {type(exc).__name__}: {first}", ()
            record.exc_info, record.exc_text = None, None
        return True


def _expected_stops() -> tuple[type[BaseException], ...]:
    from feature_store.errors import RecloopInputError
    from tasks.approval import ApprovalExpired
    from tasks.lock import LockTimeout
    from tasks.preflight import StoreUnreachable

    return RecloopInputError, StoreUnreachable, LockTimeout, ApprovalExpired


_FILTER = _ExpectedStopsWithoutTraceback()


def quiet_expected_stops() -> None:
    """Install the filter on Prefect's run loggers (idempotent; called when a night starts)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _CurrentStderr:
    """Whatever sys.stderr is at the moment of each write."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def __getattr__(self, name: str):
        return getattr(sys.stderr, name)


_STDERR = _CurrentStderr()


def rebind_prefect_console() -> None:
    """Point Prefect's console log handlers at whatever sys.stderr is when they write. They keep
    the stream they were created with; when a host program (a test runner, a notebook) swaps it
    and closes it, every later log line fails, and with the flow's `log_prints` the error report
    itself is logged again, without end."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger("prefect"), logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and handler.stream is not _STDERR:
                with handler.lock:  # not setStream(): it flushes the old, maybe closed, stream
                    handler.stream = _STDERR
                    handler.console.file = _STDERR
