"""Errors raised on bad input. Each names the file, the column and the rule that failed."""

from __future__ import annotations


class RecloopInputError(ValueError):
    """Base class: bad input that must stop the run before anything is stored."""


class SpecError(RecloopInputError):
    """A dataset spec YAML is malformed or inconsistent."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"dataset spec {self.path}: {problem}")


class DataError(RecloopInputError):
    """Raw data violates the dataset spec (missing column, bad label, empty day, corrupt file)."""

    def __init__(self, source: str, rule: str, column: str | None = None, detail: str = ""):
        self.source = str(source)
        self.column = column
        self.rule = rule
        self.detail = detail
        where = f"column '{column}'" if column else "table"
        msg = f"{self.source}: {where} fails rule '{rule}'"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class ParameterError(RecloopInputError):
    """A run parameter (architecture name, hyper-parameter) is invalid."""
