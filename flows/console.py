"""The rich console the command line prints with."""

from __future__ import annotations

import sys

from rich.console import Console


def stdout_console(**options) -> Console:
    """A rich console on the current sys.stdout (a test runner may have swapped it): 160 columns
    wide when stdout is not a terminal, so tables in logs and CI output are not folded."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, **options)
