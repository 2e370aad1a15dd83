"""Data validation with Great Expectations (GX Core 1.x), built from the spec's expectations.

Every part file is its own GX batch, so a failure names the file it came from; day-level
rules (rows per day, both label values on the days the loop evaluates on) run on the day's
files together and name them. A failing window raises `ValidationFailed` before any
training: its first line is the most specific failure (file, column, rule, what was
observed), the next lines every other failed rule, each once.

The night validates files, not frames (`validate_day_files`): each part file is streamed in
chunks of at most `CHUNK_ROWS` rows, GX runs the part suite on every chunk, and the chunks'
counts are summed into one report per file, worded exactly as for a whole frame. A `mostly`
rule ("at most 1% nulls") runs per chunk without `mostly` and is decided on the file's totals.
`validate_frame(s)` and `validate_days` keep serving in-memory callers (dataset loaders, tests).

GX sees only what the rows must decide: a column's presence (and a parquet string column's
type) is decided from the file's schema, and the rules on integer and float columns are first
counted with Arrow kernels over the file (`_screen`); a rule that holds there is not given to
GX, which judges every other rule, and words every failure, as before. Criteo's 26 string
columns, which only have to be present, are never read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from feature_store import partitions
from feature_store.errors import DataError
from feature_store.spec import DatasetSpec

# Rows per GX batch when streaming a file: GX costs ~0.2 s per run whatever the size, so
# chunks are large; a chunk of the synthetic log (10 columns, strings dictionary-encoded) is
# ~60 MB. Measured in benchmarks/validation_speed.py.
CHUNK_ROWS = 1_000_000
# GX's partial_unexpected_count (BASIC): the examples kept per rule, over all chunks of a file.
_SAMPLE = 20

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

    def add(self, kind: str, rank: int, rule: str, mostly: float = 1.0, **kwargs: Any) -> None:
        """`mostly` travels in `meta`, not to GX: a file is judged in chunks, and the share of
        failing rows is decided on the file's totals (`_Outcome.success`)."""
        key = (kind, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in self._items:  # e.g. the label's not-null rule comes from the label and its column entry
            meta = {"rule": rule, "rank": rank, "order": len(self._items), "mostly": mostly}
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


EXISTS = "expect_column_to_exist"
NOT_NULL = "expect_column_values_to_not_be_null"
TYPE_LIST = "expect_column_values_to_be_in_type_list"
ROW_COUNT = "expect_table_row_count_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
NOT_IN_SET = "expect_column_values_to_not_be_in_set"
BETWEEN = "expect_column_values_to_be_between"


@dataclass
class _Outcome:
    """One expectation over a whole file (or frame, or day): GX's results on each chunk, summed.

    Map rules (nulls, value rules, a per-value type check) add up their counts and are decided
    on the totals, with the `mostly` of the rule's meta, as GX decides one batch; the others
    (column present, a column's dtype, label values present) fail if a chunk fails. What the
    message shows (dtype, observed value) comes from the first failing chunk, the examples from
    the first chunks that had any: for a file read whole that is what GX itself reports.
    """

    kind: str
    column: str | None
    meta: dict[str, Any]
    chunk_failed: bool = False
    rows: int = 0  # rows seen (GX's element_count)
    judged: int = 0  # rows a value rule judged: GX leaves the nulls out
    unexpected: int | None = None  # None: not a map rule
    sample: list[Any] = field(default_factory=list)
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # the first failing chunk's GX result
    dtype: Any = None  # the column's dtype in that chunk

    @classmethod
    def of(cls, expectation: Any) -> _Outcome:
        return cls(expectation.expectation_type, getattr(expectation, "column", None), dict(expectation.meta))

    def add(self, result: Any, chunk: pd.DataFrame) -> None:
        res = result.result or {}
        self.error = self.error or _exception(result)
        if "unexpected_count" in res:
            self.unexpected = (self.unexpected or 0) + res["unexpected_count"]
            self.rows += res["element_count"]
            self.judged += res["element_count"] - res.get("missing_count", 0)
            self.sample += (res.get("partial_unexpected_list") or [])[: _SAMPLE - len(self.sample)]
        if not result.success and not self.chunk_failed:
            self.chunk_failed, self.result = True, res
            if self.column in chunk.columns:
                self.dtype = chunk[self.column].dtype

    @property
    def _considered(self) -> int:
        return self.rows if self.kind == NOT_NULL else self.judged  # GX's denominators

    @property
    def success(self) -> bool:
        if self.error:
            return False
        if self.unexpected is None:
            return not self.chunk_failed
        considered = self._considered
        if considered == 0:
            return True  # vacuously, as GX
        return (considered - self.unexpected) / considered >= self.meta.get("mostly", 1.0)

    @property
    def percent(self) -> float | None:
        considered = self._considered
        return self.unexpected / considered * 100 if self.unexpected is not None and considered else None


@dataclass(frozen=True)
class DayFiles:
    """One day's part files (parquet or CSV), in name order, not read yet. `role` marks a day
    the loop evaluates on (`STAGING_DAY`, `VALIDATION_DAY`): AUC needs both label values there."""

    day: date
    files: list[Path]
    role: str | None = None

    @property
    def source(self) -> str:
        return ", ".join(str(path) for path in self.files)


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
        self._suites: dict[str, list[Any]] = {}
        self._gx_suites: dict[tuple[str, frozenset[int]], Any] = {}

    def suite(self, name: str, build: Callable[[], list[Any]]) -> list[Any]:
        if name not in self._suites:
            self._suites[name] = build()
        return self._suites[name]

    def _gx_suite(self, name: str, build: Callable[[], list[Any]], decided: frozenset[int]) -> Any:
        key = (name, decided)
        if key not in self._gx_suites:
            full_name = f"{self._spec.name}-{name}-{len(self._gx_suites)}"
            expectations = [e for e in build() if e.meta["order"] not in decided]
            self._gx_suites[key] = self._ctx.suites.add(self._gx.ExpectationSuite(name=full_name, expectations=expectations))
        return self._gx_suites[key]

    def run(
        self, name: str, build: Callable[[], list[Any]], chunks: Iterable[pd.DataFrame],
        decided: frozenset[int] = frozenset(),
    ) -> list[_Outcome]:
        """The suite on every chunk (one GX batch each), summed per expectation. `decided`: the
        `order`s of expectations already decided, and passed, on the file's schema; GX skips them."""
        outcomes = {e.meta["order"]: _Outcome.of(e) for e in self.suite(name, build)}
        suite = self._gx_suite(name, build, decided)
        for chunk in chunks:
            # `Batch.validate`, not a ValidationDefinition: that one also stores every chunk's
            # results in the context, which costs more than the rules on a small chunk.
            # BASIC carries the counts and examples; SUMMARY adds index lists that cost a pass.
            batch = self._batch.get_batch(batch_parameters={"dataframe": chunk})
            results = batch.validate(suite, result_format="BASIC")
            for result in results.results:
                outcomes[result.expectation_config.meta["order"]].add(result, chunk)
        return list(outcomes.values())

    def part(self, source: str, df: pd.DataFrame) -> ValidationReport:
        outcomes = self.run("part", partial(build_expectations, self._spec), [df])
        return _report(source, len(df), outcomes, self._spec)

    def day(self, parts: DayParts) -> ValidationReport:
        # The day-level rules read only the label: no need to concatenate whole files here.
        labels = pd.concat([df.reindex(columns=[self._spec.label]) for _, df in parts.files], ignore_index=True)
        build = partial(build_day_expectations, self._spec, parts.role)
        outcomes = self.run(f"day-{parts.role or 'fit'}", build, [labels])
        return _report(parts.source, len(labels), outcomes, self._spec)

    def part_file(self, path: Path, rows: int, chunk_rows: int, labels: set[Any]) -> ValidationReport:
        """One part file through the part suite, chunk by chunk; the label values the day rule
        needs are noted on the way (`labels`).

        Rules the file's columns decide are not given to GX: a column's presence (from the parquet
        schema, or a CSV's header), and a parquet string column's type. Only the columns the
        other rules judge are read: Criteo's 26 string columns, which only have to be present,
        are never read (GX copies a chunk for every map rule, so an unused wide column costs a
        copy per rule)."""
        spec, build = self._spec, partial(build_expectations, self._spec)
        expectations = self.suite("part", build)
        if path.suffix == ".csv":
            # Read whole, as ingest reads a CSV: pandas infers a column's dtype from the whole
            # file, and per-chunk inference (read_csv(chunksize=...)) would type chunks apart.
            frame = partitions.read_part(path)
            failed, decided = _decided_by_columns(expectations, list(frame.columns), {})
            read = _columns_judged(expectations, decided, frame.columns)
            chunks: Iterable[pd.DataFrame] = _slices(frame[read], chunk_rows)
        else:
            strings = _string_columns(spec)
            fragment = _open_parquet(path, strings)
            stored = fragment.metadata.schema.to_arrow_schema()  # types as written, before read options
            # Every value of a parquet string column is a string: its type rule is decided for
            # every row by the schema, and the column is read dictionary-encoded (a pandas
            # categorical), which GX's null and set rules evaluate on codes. GX would otherwise
            # check the type value by value, the slowest rule of the suite.
            typed = {c: stored.field(c).type for c in strings if c in stored.names}
            failed, decided = _decided_by_columns(expectations, stored.names, typed)
            passed, seen = _screen(path, fragment, [e for e in expectations if e.meta["order"] not in decided],
                                   chunk_rows, spec)
            labels.update(seen)
            decided |= passed
            read = _columns_judged(expectations, decided, stored.names)
            chunks = _parquet_chunks(path, fragment, read, chunk_rows) if read else iter(())
        outcomes = self.run("part", build, _noting_labels(chunks, spec, labels), decided)
        for outcome in outcomes:
            if outcome.meta["order"] in failed:
                outcome.chunk_failed = True
        return _report(str(path), rows, outcomes, spec)

    def day_files(self, day: DayFiles, rows: int, labels: set[Any]) -> ValidationReport:
        """The day suite from what the files' pass gathered: the row count (from parquet
        metadata) is compared here, and GX judges the label values on a frame of the values seen
        (a column contains a set exactly when its distinct values do)."""
        name, build = f"day-{day.role or 'fit'}", partial(build_day_expectations, self._spec, day.role)
        counted = frozenset(e.meta["order"] for e in self.suite(name, build) if e.expectation_type == ROW_COUNT)
        seen = pd.DataFrame({self._spec.label: pd.Series(sorted(labels), dtype=object)})
        outcomes = self.run(name, build, [seen], decided=counted)
        for outcome in outcomes:
            if outcome.kind == ROW_COUNT and rows < self._spec.expectations.min_rows_per_day:
                outcome.chunk_failed, outcome.result = True, {"observed_value": rows}
        return _report(day.source, rows, outcomes, self._spec)


def _decided_by_columns(
    expectations: list[Any], columns: Sequence[str], string_types: dict[str, Any]
) -> tuple[frozenset[int], frozenset[int]]:
    """(failed, decided): the `order`s of the rules a file's column names and parquet string
    types decide before any row is read. A column's presence is decided either way; on a missing
    column every other rule is decided too (it cannot run, and the report names only the
    missing column); a string column's type rule passes when the schema stores strings."""
    present = set(columns)
    failed, decided = set(), set()
    for e in expectations:
        column, order = getattr(e, "column", None), e.meta["order"]
        if column is None:
            continue
        if e.expectation_type == EXISTS:
            decided.add(order)
            if column not in present:
                failed.add(order)
        elif column not in present:
            decided.add(order)
        elif e.expectation_type == TYPE_LIST and column in string_types and _is_string(string_types[column]):
            decided.add(order)
    return frozenset(failed), frozenset(decided)


def _columns_judged(expectations: list[Any], decided: frozenset[int], columns: Iterable[str]) -> list[str]:
    """The columns (in the file's order) some rule still has to judge row by row."""
    judged = {e.column for e in expectations if e.meta["order"] not in decided and getattr(e, "column", None)}
    return [c for c in columns if c in judged]


@dataclass
class _NumericTotals:
    """One numeric column over a whole file, from Arrow batches: what GX would count."""

    rows: int = 0
    missing: int = 0  # nulls and NaN: pandas (and GX) count both as missing
    low: Any = None  # min and max of the other values (None: none seen)
    high: Any = None
    values: set[Any] = field(default_factory=set)  # the distinct values, kept for the label only
    outside: dict[int, int] = field(default_factory=dict)  # IN_SET order -> values outside its set

    def add(self, column: Any, in_sets: dict[int, Any], keep_values: bool) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.rows += len(column)
        missing = column.null_count
        if pa.types.is_floating(column.type):
            missing += int(pc.sum(pc.is_nan(column)).as_py() or 0)
        self.missing += missing
        if len(column) > missing:
            bounds = pc.min_max(column)  # skips nulls and NaN
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)
        for order, value_set in in_sets.items():
            inside = pc.sum(pc.is_in(column, value_set=value_set)).as_py() or 0  # null and NaN: not inside
            self.outside[order] = self.outside.get(order, 0) + len(column) - missing - inside
        if keep_values:
            self.values.update(pc.unique(column).to_pylist())

    def passes(self, e: Any, dtype: Any) -> bool:
        """True when GX would pass `e` on the file (decided on its totals, as `_Outcome`);
        False when it might not: then GX judges it, and words the failure."""
        kind, judged = e.expectation_type, self.rows - self.missing
        if kind == NOT_NULL:
            return self.rows == 0 or (self.rows - self.missing) / self.rows >= e.meta.get("mostly", 1.0)
        if kind == TYPE_LIST:
            return dtype is not None and any(_is_numpy_dtype(name, dtype) for name in e.type_list)
        if judged == 0:
            return True  # vacuously, as GX: it leaves the missing values out
        if kind == IN_SET:
            return self.outside.get(e.meta["order"], 1) == 0
        if kind == NOT_IN_SET:
            return all(v in _INF for v in e.value_set) and -math.inf < self.low and self.high < math.inf
        if kind == BETWEEN:
            return ((e.min_value is None or self.low >= e.min_value)
                    and (e.max_value is None or self.high <= e.max_value))
        return False


def _is_numpy_dtype(name: str, dtype: Any) -> bool:
    import numpy as np

    try:
        return np.dtype(name) == dtype
    except TypeError:  # a pandas extension type's name
        return False


def _screen(path: Path, fragment: Any, expectations: list[Any], chunk_rows: int,
            spec: DatasetSpec) -> tuple[frozenset[int], set[Any]]:
    """(passed, labels): the rules on the file's integer and float columns that hold on every
    row, counted with Arrow kernels on the file's batches (no pandas frame, no Python object per
    value), and the label values seen. A rule passes here only when GX would pass it on the
    file (nulls and NaN are missing values, as in pandas; `mostly` on the file's totals); any
    other rule, and every rule on other columns, is left to GX, which then words the failure
    exactly as before. A clean Criteo file is judged in one pass over 14 numeric columns."""
    import pyarrow as pa

    read = fragment.physical_schema
    numeric = {f.name: f.type for f in read if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    kinds = {NOT_NULL, TYPE_LIST, NOT_IN_SET, BETWEEN}
    in_sets: dict[str, dict[int, Any]] = {}
    screened = []
    for e in expectations:
        column = getattr(e, "column", None)
        if column not in numeric:
            continue
        if e.expectation_type == IN_SET:
            try:  # the set in the column's type, as pandas' isin compares (1.0 is in {0, 1})
                value_set = pa.array(list(e.value_set)).cast(numeric[column])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                continue  # e.g. {0.5} for an integer column: GX judges
            in_sets.setdefault(column, {})[e.meta["order"]] = value_set
        elif e.expectation_type not in kinds:
            continue
        screened.append(e)
    columns = list(dict.fromkeys(e.column for e in screened))
    if not columns:
        return frozenset(), set()
    totals = {c: _NumericTotals() for c in columns}
    try:
        for batch in fragment.to_batches(columns=columns, batch_size=chunk_rows):
            for c in columns:
                totals[c].add(batch.column(c), in_sets.get(c, {}), keep_values=c == spec.label)
    except Exception as exc:  # a bad page deep in the file
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc
    # The dtypes pandas gives these columns (an integer column with a null reads as float64).
    empty = pa.schema([read.field(c) for c in columns], metadata=read.metadata).empty_table().to_pandas()
    dtypes = {c: _read_dtype(empty[c].dtype, totals[c]) for c in columns}
    passed = frozenset(e.meta["order"] for e in screened if totals[e.column].passes(e, dtypes[e.column]))
    labels = totals[spec.label].values if spec.label in totals else set()
    return passed, {v for v in spec.label_values if v in labels}


def _read_dtype(dtype: Any, totals: _NumericTotals) -> Any:
    """The pandas dtype of a numeric column in every chunk, or None when chunks may differ."""
    import numpy as np

    if not isinstance(dtype, np.dtype):
        return None  # an extension type from the pandas metadata: GX judges
    if dtype.kind in "iu" and totals.missing:
        return None  # float64 in the chunks with a null, integer in the others
    return dtype


def _string_columns(spec: DatasetSpec) -> list[str]:
    return [c for c, e in spec.expectations.columns.items() if e.dtype == "string"]


def _is_string(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _open_parquet(path: Path, dictionary: list[str]) -> Any:
    """A parquet file as a pyarrow dataset fragment, its footer read. Opened from an arrow file
    handle, so a bad file fails with the words pandas uses (`Could not open Parquet input
    source '<Buffer>': ...`), which ingest has always reported as 'readable parquet'."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        options = ds.ParquetReadOptions(dictionary_columns=dictionary)  # ignored for non-string columns
        fragment = ds.ParquetFileFormat(read_options=options).make_fragment(pa.OSFile(str(path)))
        fragment.metadata  # noqa: B018 - reads the footer: a bad file fails here
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for bad bytes
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc
    return fragment


def _parquet_chunks(path: Path, fragment: Any, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's `columns` in frames of at most `chunk_rows` rows. Row groups are read batch by
    batch and coalesced, so a GX batch is a chunk, not a (small) row group; a file without rows
    gives one empty frame, so its columns and types are still checked."""
    import pyarrow as pa

    read = fragment.physical_schema
    schema = pa.schema([read.field(c) for c in columns], metadata=read.metadata)
    buffered: list[Any] = []
    size, emitted = 0, False
    try:
        for batch in fragment.to_batches(columns=columns, batch_size=chunk_rows):
            buffered.append(batch)
            size += batch.num_rows
            while size >= chunk_rows:
                table = pa.Table.from_batches(buffered, schema=schema)
                rest = table.slice(chunk_rows)
                buffered, size = rest.to_batches(), rest.num_rows
                emitted = True
                yield table.slice(0, chunk_rows).to_pandas()
        if size or not emitted:
            yield pa.Table.from_batches(buffered, schema=schema).to_pandas()
    except Exception as exc:  # a bad page deep in the file
        raise DataError(path, "readable parquet", detail=f"{type(exc).__name__}: {exc}") from exc


def _slices(frame: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(frame), 1), chunk_rows):
        yield frame.iloc[start:start + chunk_rows]


def _noting_labels(chunks: Iterable[pd.DataFrame], spec: DatasetSpec, seen: set[Any]) -> Iterator[pd.DataFrame]:
    """The chunks, unchanged; on the way, which of the label values occur (`seen`)."""
    for chunk in chunks:
        if spec.label in chunk.columns:
            column = chunk[spec.label]
            seen.update(v for v in spec.label_values if v not in seen and bool((column == v).any()))
        yield chunk


def _row_counts(days: Sequence[DayFiles]) -> dict[Path, int]:
    """Every file opened and counted before any rule runs (parquet from its footer; a CSV is
    read), so a bad file or an empty day fails first, with the messages ingest always gave."""
    rows: dict[Path, int] = {}
    for day in days:
        for path in day.files:
            if path.suffix == ".csv":
                rows[path] = len(partitions.read_part(path))
            else:
                rows[path] = _open_parquet(path, []).metadata.num_rows
        if day.files and sum(rows[p] for p in day.files) == 0:
            raise DataError(day.files[0].parent, "non-empty day", detail=f"{len(day.files)} file(s), zero rows")
    return rows


def validate_frames(frames: list[tuple[str, pd.DataFrame]], spec: DatasetSpec) -> list[ValidationReport]:
    """The part-file suite on each (source, frame) pair, one GX batch each."""
    validator = _Validator(spec)
    return [validator.part(source, df) for source, df in frames]


def validate_frame(df: pd.DataFrame, spec: DatasetSpec, source: str) -> ValidationReport:
    return validate_frames([(source, df)], spec)[0]


def _without_label_repeats(day: ValidationReport, files: list[ValidationReport], spec: DatasetSpec) -> ValidationReport:
    """A label a file already fails on (missing, wrong type) says nothing new per day."""
    if any(f.column == spec.label for r in files for f in r.failures):
        day.failures = [f for f in day.failures if f.column != spec.label]
    return day


def validate_days(days: Sequence[DayParts], spec: DatasetSpec) -> list[ValidationReport]:
    """Every file of every day through the part suite, then each day through the day suite;
    reports in day order, each day's files first."""
    validator = _Validator(spec)
    reports = []
    for parts in days:
        file_reports = [validator.part(source, df) for source, df in parts.files]
        reports += [*file_reports, _without_label_repeats(validator.day(parts), file_reports, spec)]
    return reports


def validate_day_files(
    days: Sequence[DayFiles], spec: DatasetSpec, chunk_rows: int = CHUNK_ROWS,
    rows: Mapping[Path, int] | None = None, on_file: Callable[[int], None] | None = None,
) -> list[ValidationReport]:
    """`validate_days` on files not read yet, never more than `chunk_rows` rows of a file in
    memory: the same reports, in the same order (each day's files, then the day), with the
    same words. `rows`: every file's row count, when the caller already has them (ingest counts
    them from the same footers); else every file is opened and counted first, and an
    unreadable file or a day without rows raises `DataError` before any rule runs (as ingest
    does). `on_file(rows)` is called after each file, for progress."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    rows = _row_counts(days) if rows is None else {path: rows[path] for day in days for path in day.files}
    validator = _Validator(spec)
    reports = []
    for day in days:
        labels: set[Any] = set()
        file_reports = []
        for path in day.files:
            file_reports.append(validator.part_file(path, rows[path], chunk_rows, labels))
            if on_file is not None:
                on_file(rows[path])
        day_report = validator.day_files(day, sum(rows[p] for p in day.files), labels)
        reports += [*file_reports, _without_label_repeats(day_report, file_reports, spec)]
    return reports


def _report(source: str, rows: int, outcomes: list[_Outcome], spec: DatasetSpec) -> ValidationReport:
    report = ValidationReport(source=source, rows=rows, evaluated=len(outcomes))
    failed = sorted((o for o in outcomes if not o.success), key=lambda o: (o.meta["rank"], o.meta["order"]))
    missing, mistyped = set(), set()
    for outcome in failed:
        column, rank = outcome.column, outcome.meta["rank"]
        if column in missing:
            continue  # its other expectations cannot run
        if column in mistyped and outcome.error:
            continue  # e.g. a range on strings: the type failure already says it
        if rank == PRESENT:
            missing.add(column)
        elif rank == TYPE:
            mistyped.add(column)
        observed = f"could not be evaluated ({outcome.error})" if outcome.error else _observed(outcome, spec, rows)
        report.failures.append(
            Failure(column=column, rule=outcome.meta["rule"], observed=observed, expectation=outcome.kind)
        )
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


def _observed(outcome: _Outcome, spec: DatasetSpec, rows: int) -> str:
    kind, res = outcome.kind, outcome.result
    sample = outcome.sample[:5]
    if kind == EXISTS:
        return "column is missing"
    if kind == TYPE_LIST:
        # GX judges an object column value by value; the column's dtype is the useful fact.
        return f"dtype {outcome.dtype}" + (f", e.g. {sample}" if sample else "")
    if kind == "expect_column_distinct_values_to_contain_set":
        absent = res.get("partial_missing_list") or []
        present = [v for v in spec.label_values if v not in absent]
        if len(present) == 1:
            return f"only label value {present[0]} occurs ({_rows(rows)})"
        return f"label values {absent} never occur ({_rows(rows)})"
    if kind == ROW_COUNT:
        return _rows(res.get("observed_value"))
    if outcome.unexpected is not None:
        pct = outcome.percent
        pct_s = f" ({pct:.2f}%)" if pct is not None else ""
        if kind == NOT_NULL:
            return f"{outcome.unexpected} null values{pct_s}"
        return f"{outcome.unexpected} unexpected values{pct_s}, e.g. {sample}"
    if "observed_value" in res:
        return f"observed {res['observed_value']}"
    return "failed"
