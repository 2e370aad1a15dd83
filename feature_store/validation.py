"""Data validation with Great Expectations (GX Core 1.x), built from the spec's expectations.

Each day partition is validated on its own, so a failure names the partition it came from.
A failing suite raises `ValidationFailed` before any training, with every failed expectation
listed (column, rule, what was observed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from feature_store.errors import DataError
from feature_store.spec import DatasetSpec

_DTYPES = {
    "integer": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "Int64", "Int32"],
    "float": ["float16", "float32", "float64", "Float64"],
    "string": ["object", "str", "string", "StringDtype"],
}
_DTYPES["numeric"] = _DTYPES["integer"] + _DTYPES["float"]


@dataclass(frozen=True)
class Failure:
    column: str | None
    rule: str
    observed: str


@dataclass
class ValidationReport:
    source: str
    rows: int
    evaluated: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.failures)} of {self.evaluated} expectations failed ({self.rows} rows)"]
        lines += [f"  - {f.column or '<table>'}: {f.rule}: {f.observed}" for f in self.failures]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if self.failures:
            raise ValidationFailed(self)


class ValidationFailed(DataError):
    """The GX suite failed; the message lists every failed expectation."""

    def __init__(self, report: ValidationReport):
        self.report = report
        first = report.failures[0]
        super().__init__(report.source, first.rule, first.column, "\n" + report.summary())


def build_expectations(spec: DatasetSpec) -> list[Any]:
    """The GX expectation suite for one day partition of `spec`'s dataset."""
    import great_expectations as gx

    E = gx.expectations
    suite: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=spec.expectations.min_rows_per_day)]
    for column in spec.required_columns:
        suite.append(E.ExpectColumnToExist(column=column))
    suite.append(E.ExpectColumnValuesToNotBeNull(column=spec.label))
    suite.append(E.ExpectColumnValuesToBeInSet(column=spec.label, value_set=list(spec.label_values)))
    for column, exp in spec.expectations.columns.items():
        if exp.dtype:
            suite.append(E.ExpectColumnValuesToBeInTypeList(column=column, type_list=_DTYPES[exp.dtype]))
        if exp.max_null_fraction < 1.0:
            mostly = 1.0 - exp.max_null_fraction
            suite.append(E.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly))
        if exp.min is not None or exp.max is not None:
            suite.append(E.ExpectColumnValuesToBeBetween(column=column, min_value=exp.min, max_value=exp.max))
        if exp.allowed_values is not None:
            suite.append(E.ExpectColumnValuesToBeInSet(column=column, value_set=list(exp.allowed_values)))
    return suite


def _observed(result: Any) -> str:
    if result.exception_info and result.exception_info.get("raised_exception"):
        msg = str(result.exception_info.get("exception_message", "")).splitlines()[0]
        return f"could not be evaluated ({msg})"
    res = result.result or {}
    if "unexpected_count" in res:
        sample = res.get("partial_unexpected_list") or []
        pct = res.get("unexpected_percent")
        pct_s = f" ({pct:.2f}%)" if isinstance(pct, (int, float)) else ""
        return f"{res['unexpected_count']} unexpected values{pct_s}, e.g. {sample[:5]}"
    if "observed_value" in res:
        return f"observed {res['observed_value']}"
    return "failed"


def validate_frames(frames: list[tuple[str, pd.DataFrame]], spec: DatasetSpec) -> list[ValidationReport]:
    """Run the spec's suite on each (source, frame) pair, typically one per day partition.

    One ephemeral GX context and one suite serve every frame (building them costs more than
    validating a day)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        ctx.data_sources.add_pandas("raw")
        .add_dataframe_asset(name=spec.name)
        .add_batch_definition_whole_dataframe("day")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{spec.name}-raw", expectations=build_expectations(spec)))
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}-raw", data=batch_def, suite=suite)
    )
    reports = []
    for source, df in frames:
        results = definition.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
        reports.append(_report(source, df, results.results))
    return reports


def validate_frame(df: pd.DataFrame, spec: DatasetSpec, source: str) -> ValidationReport:
    return validate_frames([(source, df)], spec)[0]


def _report(source: str, df: pd.DataFrame, results: list[Any]) -> ValidationReport:
    report = ValidationReport(source=source, rows=len(df), evaluated=len(results))
    failed = [r for r in results if not r.success]
    missing = {r.expectation_config.kwargs.get("column") for r in failed
               if r.expectation_config.type == "expect_column_to_exist"}
    # A missing column is the one thing to say about it; its other expectations cannot run.
    failed.sort(key=lambda r: (r.expectation_config.type != "expect_table_row_count_to_be_between",
                               r.expectation_config.type != "expect_column_to_exist"))
    for r in failed:
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        if column in missing and cfg.type != "expect_column_to_exist":
            continue
        observed = "column is missing" if cfg.type == "expect_column_to_exist" else _observed(r)
        report.failures.append(Failure(column=column, rule=_rule_name(cfg), observed=observed))
    return report


def _rule_name(cfg: Any) -> str:
    kw = {k: v for k, v in cfg.kwargs.items() if k not in {"column", "batch_id", "result_format"} and v is not None}
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{cfg.type}({args})" if args else cfg.type
