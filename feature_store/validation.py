"""Data validation with Great Expectations (GX Core 1.x), built from the spec's expectations.

Every part file is its own GX batch, so a failure names the file it came from; day-level
rules (rows per day, both label values on the days the loop evaluates on) run on the day's
files together and name them. A failing window raises `ValidationFailed` before any
training: its first line is the most specific failure (file, column, rule, what was
observed), the next lines every other failed rule, each once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any

import pandas as pd

from feature_store.errors import DataError
from feature_store.spec import DatasetSpec

# GX looks a name up as a numpy dtype, else as an attribute of `pandas`: pandas' nullable
# types are `pd.Int64Dtype` etc. (an "Int64" entry matched nothing, so a nullable integer
# column always failed its type rule, hiding the null-count rule behind it).
_NULLABLE_INTS = [f"{u}Int{bits}Dtype" for u in ("", "U") for bits in (8, 16, 32, 64)]
_DTYPES = {
    "integer": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", *_NULLABLE_INTS],
    "float": ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"],
    "string": ["object", "str", "string", "StringDtype"],
}
_DTYPES["numeric"] = _DTYPES["integer"] + _DTYPES["float"]

# Failures are listed most specific first: a missing column is all there is to say about it,
# a wrong type makes its null count and ranges moot, then nulls, then the value rules; the
# day-level rules come after the files' own.
PRESENT, TYPE, NULLS, VALUES, TABLE = range(5)

STAGING_DAY, VALIDATION_DAY = "staging day", "validation day"
_INF = [float("inf"), float("-inf")]


@dataclass(frozen=True)
class Failure:
    column: str | None
    rule: str  # readable, e.g. "values in [0, 23]"
    observed: str
    expectation: str = ""  # the GX expectation type behind the rule


@dataclass
class ValidationReport:
    source: str
    rows: int
    evaluated: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        """One line per failure, each naming the source, the column and the rule."""
        return [_line(self.source, f) for f in self.failures]

    def summary(self) -> str:
        head = (f"{self.source}: {len(self.failures)} of {self.evaluated} expectations failed "
                f"({self.rows} rows)")
        rows = [f"  - {f.column or '<table>'}: {f.rule}: {f.observed}" for f in self.failures]
        return "\n".join([head, *rows])

    def raise_for_failures(self) -> None:
        raise_for_failures([self])


def _line(source: str, failure: Failure) -> str:
    where = f"column '{failure.column}'" if failure.column else "table"
    return f"{source}: {where} fails rule '{failure.rule}': {failure.observed}"


class ValidationFailed(DataError):
    """The GX suite failed: the first line is the first failure (file, column, rule), the
    following lines every other failed rule of every file."""

    def __init__(self, reports: ValidationReport | Sequence[ValidationReport]):
        if isinstance(reports, ValidationReport):
            reports = [reports]
        self.reports = [r for r in reports if r.failures]
        self.report = self.reports[0]
        first = self.report.failures[0]
        others = [line for r in self.reports for line in r.lines()][1:]
        detail = first.observed
        if others:
            detail += f"\nand {len(others)} more failed rule{'s' if len(others) > 1 else ''}:\n"
            detail += "\n".join(f"  {line}" for line in others)
        super().__init__(self.report.source, first.rule, first.column, detail)

    def __reduce__(self):  # rebuilt from its reports (a task runner may pickle it), not the message
        return (type(self), (self.reports,))


def raise_for_failures(reports: Sequence[ValidationReport]) -> None:
    """One `ValidationFailed` listing the failures of every report, if any failed."""
    if any(r.failures for r in reports):
        raise ValidationFailed(reports)


@dataclass(frozen=True)
class DayParts:
    """One day's part files as read, in name order. `role` marks a day the loop evaluates on
    (`STAGING_DAY`, `VALIDATION_DAY`): AUC needs both label values there."""

    day: date
    files: list[tuple[str, pd.DataFrame]]
    role: str | None = None

    @property
    def source(self) -> str:
        return ", ".join(path for path, _ in self.files)


class _Suite:
    """Expectations in the order they are added, each once, tagged with its readable rule and
    rank (`meta`, which GX hands back on every result)."""

    def __init__(self) -> None:
        import great_expectations as gx

        self.E = gx.expectations
        self._items: dict[tuple, Any] = {}

    def add(self, kind: str, rank: int, rule: str, **kwargs: Any) -> None:
        key = (kind, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in self._items:  # e.g. the label's not-null rule comes from the label and its column entry
            meta = {"rule": rule, "rank": rank, "order": len(self._items)}
            self._items[key] = getattr(self.E, kind)(**kwargs, meta=meta)

    @property
    def expectations(self) -> list[Any]:
        return list(self._items.values())


def _num(x: float) -> str:
    return f"{x:g}"


def build_expectations(spec: DatasetSpec) -> list[Any]:
    """The GX suite for one part file of `spec`'s dataset (the day-level rules are apart)."""
    suite = _Suite()
    declared = spec.expectations.columns
    continuous = {c.name for c in spec.continuous}
    for column in dict.fromkeys([*spec.required_columns, *declared]):
        suite.add("ExpectColumnToExist", PRESENT, "column present", column=column)
    # A continuous feature is numeric, entry or not: a string or an inf there breaks training.
    dtypes = {c: e.dtype for c, e in declared.items() if e.dtype}
    dtypes |= {c: "numeric" for c in continuous if c not in dtypes}
    for column, dtype in dtypes.items():
        suite.add("ExpectColumnValuesToBeInTypeList", TYPE, f"type {dtype}", column=column,
                  type_list=_DTYPES[dtype])
    suite.add("ExpectColumnValuesToNotBeNull", NULLS, "no nulls", column=spec.label)
    for column, exp in declared.items():
        if exp.max_null_fraction == 0.0:
            suite.add("ExpectColumnValuesToNotBeNull", NULLS, "no nulls", column=column)
        elif exp.max_null_fraction < 1.0:
            rule = f"at most {exp.max_null_fraction * 100:g}% nulls"
            suite.add("ExpectColumnValuesToNotBeNull", NULLS, rule, column=column,
                      mostly=1.0 - exp.max_null_fraction)
    suite.add("ExpectColumnValuesToBeInSet", VALUES, _in_set(spec.label_values), column=spec.label,
              value_set=list(spec.label_values))
    lenient = {c for c, e in declared.items() if e.allow_infinite}
    for column, dtype in dtypes.items():  # inf is not a value: said before a range it also fails
        if dtype in {"float", "numeric"} and column not in lenient:
            suite.add("ExpectColumnValuesToNotBeInSet", VALUES, "finite values (no +/-inf)",
                      column=column, value_set=_INF)
    for column, exp in declared.items():
        if exp.min is not None or exp.max is not None:
            suite.add("ExpectColumnValuesToBeBetween", VALUES, _between(exp.min, exp.max), column=column,
                      min_value=exp.min, max_value=exp.max)
        if exp.allowed_values is not None:
            suite.add("ExpectColumnValuesToBeInSet", VALUES, _in_set(exp.allowed_values), column=column,
                      value_set=list(exp.allowed_values))
    return suite.expectations


def build_day_expectations(spec: DatasetSpec, role: str | None = None) -> list[Any]:
    """The GX suite for a whole day (its files' rows together): rows per day, and on a day the
    loop evaluates on (`role`) both label values, without which AUC is undefined."""
    suite = _Suite()
    n = spec.expectations.min_rows_per_day
    suite.add("ExpectTableRowCountToBeBetween", TABLE, f"at least {n} row{'s' if n > 1 else ''} per day",
              min_value=n)
    if role is not None:
        which = "both label values" if len(spec.label_values) == 2 else "every label value"
        suite.add("ExpectColumnDistinctValuesToContainSet", TABLE, f"{which} present on the {role}",
                  column=spec.label, value_set=list(spec.label_values))
    return suite.expectations


def _between(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"values in [{_num(low)}, {_num(high)}]"
    return f"values >= {_num(low)}" if low is not None else f"values <= {_num(high)}"


def _in_set(values: Sequence[Any]) -> str:
    return "values in {" + ", ".join(map(str, values)) + "}"


class _Validator:
    """One ephemeral GX context for a whole window: building it and its suites costs more than
    validating a file."""

    def __init__(self, spec: DatasetSpec) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx, self._spec = gx, spec
        self._ctx = gx.get_context(mode="ephemeral")
        self._ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._batch = (
            self._ctx.data_sources.add_pandas("raw")
            .add_dataframe_asset(name=spec.name)
            .add_batch_definition_whole_dataframe("batch")
        )
        self._definitions: dict[str, Any] = {}

    def _run(self, name: str, build: Callable[[], list[Any]], source: str, df: pd.DataFrame) -> ValidationReport:
        if name not in self._definitions:
            gx, full_name = self._gx, f"{self._spec.name}-{name}"
            suite = self._ctx.suites.add(gx.ExpectationSuite(name=full_name, expectations=build()))
            self._definitions[name] = self._ctx.validation_definitions.add(
                gx.ValidationDefinition(name=full_name, data=self._batch, suite=suite)
            )
        results = self._definitions[name].run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
        return _report(source, df, results, self._spec)

    def part(self, source: str, df: pd.DataFrame) -> ValidationReport:
        return self._run("part", partial(build_expectations, self._spec), source, df)

    def day(self, parts: DayParts) -> ValidationReport:
        # The day-level rules read only the label: no need to concatenate whole files here.
        labels = pd.concat([df.reindex(columns=[self._spec.label]) for _, df in parts.files], ignore_index=True)
        build = partial(build_day_expectations, self._spec, parts.role)
        return self._run(f"day-{parts.role or 'fit'}", build, parts.source, labels)


def validate_frames(frames: list[tuple[str, pd.DataFrame]], spec: DatasetSpec) -> list[ValidationReport]:
    """The part-file suite on each (source, frame) pair, one GX batch each."""
    validator = _Validator(spec)
    return [validator.part(source, df) for source, df in frames]


def validate_frame(df: pd.DataFrame, spec: DatasetSpec, source: str) -> ValidationReport:
    return validate_frames([(source, df)], spec)[0]


def validate_days(days: Sequence[DayParts], spec: DatasetSpec) -> list[ValidationReport]:
    """Every file of every day through the part suite, then each day through the day suite;
    reports in day order, each day's files first."""
    validator = _Validator(spec)
    reports = []
    for parts in days:
        file_reports = [validator.part(source, df) for source, df in parts.files]
        day = validator.day(parts)
        # A label a file already fails on (missing, wrong type) says nothing new per day.
        if any(f.column == spec.label for r in file_reports for f in r.failures):
            day.failures = [f for f in day.failures if f.column != spec.label]
        reports += [*file_reports, day]
    return reports


def _report(source: str, df: pd.DataFrame, results: Any, spec: DatasetSpec) -> ValidationReport:
    report = ValidationReport(source=source, rows=len(df), evaluated=len(results.results))
    failed = sorted((r for r in results.results if not r.success),
                    key=lambda r: (r.expectation_config.meta["rank"], r.expectation_config.meta["order"]))
    missing, mistyped = set(), set()
    for r in failed:
        cfg = r.expectation_config
        column, rank, error = cfg.kwargs.get("column"), cfg.meta["rank"], _exception(r)
        if column in missing:
            continue  # its other expectations cannot run
        if column in mistyped and error:
            continue  # e.g. a range on strings: the type failure already says it
        if rank == PRESENT:
            missing.add(column)
        elif rank == TYPE:
            mistyped.add(column)
        observed = f"could not be evaluated ({error})" if error else _observed(r, spec, df)
        report.failures.append(Failure(column=column, rule=cfg.meta["rule"], observed=observed, expectation=cfg.type))
    return report


def _rows(n: Any) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _exception(result: Any) -> str | None:
    """The first line of the error GX caught while evaluating, if any (it nests metric errors
    by metric id)."""
    info = result.exception_info or {}
    for entry in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "error").splitlines()[0]
    return None


def _observed(result: Any, spec: DatasetSpec, df: pd.DataFrame) -> str:
    kind = result.expectation_config.type
    res = result.result or {}
    sample = (res.get("partial_unexpected_list") or [])[:5]
    if kind == "expect_column_to_exist":
        return "column is missing"
    if kind == "expect_column_values_to_be_in_type_list":
        # GX judges an object column value by value; the column's dtype is the useful fact.
        dtype = df[result.expectation_config.kwargs["column"]].dtype
        return f"dtype {dtype}" + (f", e.g. {sample}" if sample else "")
    if kind == "expect_column_distinct_values_to_contain_set":
        absent = res.get("partial_missing_list") or []
        present = [v for v in spec.label_values if v not in absent]
        if len(present) == 1:
            return f"only label value {present[0]} occurs ({_rows(len(df))})"
        return f"label values {absent} never occur ({_rows(len(df))})"
    if kind == "expect_table_row_count_to_be_between":
        return _rows(res.get("observed_value"))
    if "unexpected_count" in res:
        pct = res.get("unexpected_percent")
        pct_s = f" ({pct:.2f}%)" if isinstance(pct, (int, float)) else ""
        if kind == "expect_column_values_to_not_be_null":
            return f"{res['unexpected_count']} null values{pct_s}"
        return f"{res['unexpected_count']} unexpected values{pct_s}, e.g. {sample}"
    if "observed_value" in res:
        return f"observed {res['observed_value']}"
    return "failed"
