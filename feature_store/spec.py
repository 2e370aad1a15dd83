"""Dataset specs: one YAML file per dataset, under `feature_store/specs/` or anywhere else.

A spec says which column is the label, which is the day, how each feature column is
preprocessed, which feature crosses feed the wide part, and what the raw data must satisfy.
A new dataset is added by writing a spec, never by editing code.

A dataset *name* is looked up like a command on PATH: in each spec directory given (the
settings' `spec_dirs`, RECLOOP_SPEC_DIRS) in order, then in the package's specs; a value
ending in .yaml/.yml is a file, used as it is. Whichever way it was found, the dataset is
called by the `name:` inside the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feature_store.errors import ParameterError, SpecError

SPEC_DIR = Path(__file__).parent / "specs"
SPEC_SUFFIXES = (".yaml", ".yml")
DEFAULT_DATASET = "synthetic_clicks"  # the embedded data: what a run without a dataset trains on
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoricalColumn(_Strict):
    """Categorify with a frequency threshold (rare values -> the out-of-vocabulary id),
    or hash into a fixed number of buckets."""

    name: str
    freq_threshold: int = Field(default=1, ge=1)
    hash_buckets: int | None = Field(default=None, ge=2)


def _check_boundaries(boundaries: list[float], what: str) -> None:
    if len(boundaries) == 0 or sorted(set(boundaries)) != list(boundaries):
        raise ValueError(f"{what}: bucketize boundaries must be strictly increasing")


class ContinuousColumn(_Strict):
    """Fill missing values, optionally clip from below, then log1p and normalize; or bucketize
    into a categorical. `clip_min` (e.g. 0) comes before the log: log1p is undefined at -1 and
    below, which count features with negative sentinels (Criteo's I2) do reach."""

    name: str
    fill: Literal["median", "zero"] = "median"
    clip_min: float | None = None
    log: bool = False
    normalize: bool = True
    bucketize: list[float] | None = None  # boundaries; the result is a categorical id

    @model_validator(mode="after")
    def _sorted_boundaries(self) -> ContinuousColumn:
        if self.bucketize is not None:
            _check_boundaries(self.bucketize, f"continuous '{self.name}'")
        return self


class BucketizedColumn(_Strict):
    """A categorical id derived from a continuous column's buckets, next to that column's own
    use: `age` feeds the deep part normalized and the crosses as `age_buckets`. The source is
    filled (and clipped) the way its continuous entry says, then bucketized; the raw data
    carries only the source."""

    name: str
    source: str
    boundaries: list[float]

    @model_validator(mode="after")
    def _sorted_boundaries(self) -> BucketizedColumn:
        _check_boundaries(self.boundaries, f"bucketized '{self.name}'")
        return self


class Cross(_Strict):
    """A hashed cross of two or more columns for the wide part."""

    columns: list[str] = Field(min_length=2)
    buckets: int = Field(ge=2)

    @property
    def name(self) -> str:
        return "_x_".join(self.columns)


class ColumnExpectation(_Strict):
    """What one raw column must satisfy in every part file. Values outside `min`/`max` (either
    may be left open) or `allowed_values` fail; so do +/-inf in a float or numeric column unless
    `allow_infinite` (never for a continuous feature: inf breaks training)."""

    dtype: Literal["integer", "float", "string", "numeric"] | None = None
    min: float | None = None
    max: float | None = None
    max_null_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    allowed_values: list[str | int | float] | None = Field(default=None, min_length=1)
    allow_infinite: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> ColumnExpectation:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}: no value could pass")
        if self.allow_infinite and self.dtype in {"integer", "string"}:
            raise ValueError(f"allow_infinite: {self.dtype} columns cannot hold inf (it applies to float/numeric)")
        return self


class Expectations(_Strict):
    """The data contract of a dataset. A training window must have every calendar day unless
    `allow_missing_days` (for sources with days without any event, e.g. MovieLens-100k)."""

    min_rows_per_day: int = Field(default=1, ge=1)
    allow_missing_days: bool = False
    columns: dict[str, ColumnExpectation] = Field(default_factory=dict)


class RetrieverEntry(_Strict):
    """One retriever the night trains: its name in `models.retrieval.RETRIEVERS` (checked by
    the night before any work) and its hyper-parameters (its `Config`; unknown keys are errors)."""

    name: str = Field(min_length=1)
    hparams: dict[str, Any] = Field(default_factory=dict)


class RatingPositive(_Strict):
    """A positive is a row whose `column` (a raw column, e.g. `rating`) is at least `min`."""

    column: str
    min: float


class TagColumn(_Strict):
    """An item column of tags, split on `separator` (`Crime|Drama`); no separator: one tag."""

    name: str
    separator: str | None = None


class RetrievalSection(_Strict):
    """Candidate generation for a dataset with users and items (`tasks/retrieve.py`): which
    retrievers the night trains, what counts as a positive interaction (the spec's label == 1,
    or a raw column at or above a threshold), the item text and tag columns content retrievers
    read, and optionally the top-K (default: the `retrieval.k` setting)."""

    retrievers: list[RetrieverEntry] = Field(min_length=1)
    positive: Literal["label"] | RatingPositive = "label"
    text_columns: list[str] = Field(default_factory=list)
    tag_columns: list[TagColumn] = Field(default_factory=list)
    k: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, raw: Any) -> Any:
        # `retrievers: [popularity, {name: mf, hparams: {dim: 32}}]`, `tag_columns: [genres]`
        if isinstance(raw, dict):
            raw = dict(raw)
            for key, field_name in (("retrievers", "name"), ("tag_columns", "name")):
                if isinstance(raw.get(key), list):
                    raw[key] = [{field_name: v} if isinstance(v, str) else v for v in raw[key]]
        return raw

    @model_validator(mode="after")
    def _unique(self) -> RetrievalSection:
        names = [r.name for r in self.retrievers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"retrievers listed twice: {dupes}")
        return self


class DatasetSpec(_Strict):
    name: str
    description: str = ""
    label: str
    label_values: list[int] = Field(default_factory=lambda: [0, 1])
    day_column: str = "day"
    timestamp_column: str | None = None
    oracle_column: str | None = None  # true click probability: reported, never trained on
    user_columns: list[str] = Field(default_factory=list)
    item_columns: list[str] = Field(default_factory=list)
    categorical: list[CategoricalColumn] = Field(default_factory=list)
    continuous: list[ContinuousColumn] = Field(default_factory=list)
    bucketized: list[BucketizedColumn] = Field(default_factory=list)
    crosses: list[Cross] = Field(default_factory=list)
    expectations: Expectations = Field(default_factory=Expectations)
    retrieval: RetrievalSection | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [*self.feature_columns, *(b.name for b in self.bucketized)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns declared twice: {dupes}")
        reserved = {self.label, self.day_column, self.timestamp_column, self.oracle_column} - {None}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"label/day/timestamp/oracle columns cannot also be features: {clash}")
        continuous = {c.name for c in self.continuous}
        lenient = sorted(c for c, e in self.expectations.columns.items() if e.allow_infinite and c in continuous)
        if lenient:
            raise ValueError(f"expectations.columns.{lenient[0]}.allow_infinite: a continuous feature "
                             "cannot take inf (training breaks on it)")
        for derived in self.bucketized:
            if derived.source not in continuous:
                raise ValueError(
                    f"bucketized '{derived.name}': source '{derived.source}' must be a continuous "
                    f"column (have: {sorted(continuous)})"
                )
        crossable = (
            {c.name for c in self.categorical}
            | {c.name for c in self.continuous if c.bucketize is not None}
            | {b.name for b in self.bucketized}
        )
        for cross in self.crosses:
            unknown = [c for c in cross.columns if c not in crossable]
            if unknown:
                raise ValueError(
                    f"cross {cross.columns}: {unknown} must be categorical, bucketized "
                    f"continuous or bucketized columns (have: {sorted(crossable)})"
                )
        for side, cols in (("user_columns", self.user_columns), ("item_columns", self.item_columns)):
            unknown = [c for c in cols if c not in set(names)]
            if unknown:
                raise ValueError(f"{side}: {unknown} are not feature columns")
        if not self.categorical and not self.continuous:
            raise ValueError("a spec needs at least one categorical or continuous column")
        if self.retrieval is not None:
            self._check_retrieval(self.retrieval)
        return self

    def _check_retrieval(self, section: RetrievalSection) -> None:
        """The ids retrievers index are the first user and item columns' vocabularies."""
        if not self.user_columns or not self.item_columns:
            raise ValueError("retrieval: needs user_columns and item_columns (the first of each is the id)")
        vocab = {c.name for c in self.categorical if c.hash_buckets is None}
        for side, column in (("user_columns", self.user_columns[0]), ("item_columns", self.item_columns[0])):
            if column not in vocab:
                raise ValueError(f"retrieval: {side}[0] '{column}' must be a categorical column with a "
                                 "vocabulary (no hash_buckets): retrievers index its ids")
        if isinstance(section.positive, RatingPositive) and section.positive.column in (self.day_column,):
            raise ValueError(f"retrieval.positive.column: '{section.positive.column}' is the day column")
        reserved = {self.label, self.day_column} | set(self.user_columns)
        for key, cols in (("text_columns", section.text_columns), ("tag_columns", [t.name for t in section.tag_columns])):
            clash = sorted(set(cols) & reserved)
            if clash:
                raise ValueError(f"retrieval.{key}: {clash} are label, day or user columns, not item text")

    @property
    def feature_columns(self) -> list[str]:
        """The raw input columns of the preprocessing (bucketized columns are derived)."""
        return [c.name for c in self.categorical] + [c.name for c in self.continuous]

    @property
    def required_columns(self) -> list[str]:
        """Columns every raw partition must carry (features, label, day)."""
        return [*self.feature_columns, self.label]


def is_spec_path(name_or_path: str | Path) -> bool:
    """A value ending in .yaml/.yml is a spec file, used as it is; anything else is a name."""
    return Path(name_or_path).suffix in SPEC_SUFFIXES


def spec_search_path(spec_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Where a dataset name is looked for, in order: each spec dir, then the package's specs."""
    return [*(Path(d) for d in spec_dirs), SPEC_DIR]


@dataclass(frozen=True)
class SpecCatalog:
    """Every spec the search path holds: the file a name resolves to, and the files it hides."""

    searched: tuple[Path, ...]
    found: dict[str, Path]
    shadowed: dict[str, tuple[Path, ...]]  # name -> files later in the search path, never read


def spec_catalog(spec_dirs: Iterable[str | Path] = ()) -> SpecCatalog:
    """The specs of the search path; a name found twice resolves the way `spec_path` does."""
    searched = tuple(spec_search_path(spec_dirs))
    found: dict[str, Path] = {}
    shadowed: dict[str, list[Path]] = {}
    for directory in searched:
        if not directory.is_dir():
            continue
        for suffix in SPEC_SUFFIXES:  # .yaml before .yml, as spec_path tries them
            for path in sorted(directory.glob(f"*{suffix}")):
                if not path.is_file():
                    continue
                if path.stem in found:
                    shadowed.setdefault(path.stem, []).append(path)
                else:
                    found[path.stem] = path
    return SpecCatalog(
        searched, dict(sorted(found.items())), {k: tuple(v) for k, v in sorted(shadowed.items())}
    )


def known_specs(spec_dirs: Iterable[str | Path] = ()) -> dict[str, Path]:
    """Dataset name -> the spec file it resolves to, over the whole search path."""
    return spec_catalog(spec_dirs).found


def _where_looked(spec_dirs: Iterable[str | Path]) -> str:
    places = []
    for directory in spec_search_path(spec_dirs):
        origin = "package" if directory == SPEC_DIR else "RECLOOP_SPEC_DIRS"
        missing = "" if directory.is_dir() else ", does not exist"
        places.append(f"{directory} ({origin}{missing})")
    return "; ".join(places)


def spec_path(name_or_path: str | Path, spec_dirs: Iterable[str | Path] = ()) -> Path:
    """The spec file of a dataset name (first `<dir>/<name>.yaml` or `.yml` along the search
    path) or of a path (as it is). An unknown name raises, listing the known datasets and
    every directory searched."""
    if is_spec_path(name_or_path):
        return Path(name_or_path)
    name = str(name_or_path)
    spec_dirs = list(spec_dirs)
    if not _NAME.fullmatch(name):
        raise SpecError(
            name,
            "neither a dataset name (letters, digits, '_', '-', '.') nor a spec file "
            f"({' or '.join(SPEC_SUFFIXES)})",
        )
    for directory in spec_search_path(spec_dirs):
        for suffix in SPEC_SUFFIXES:
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return path
    raise SpecError(
        name,
        f"unknown dataset (known: {sorted(known_specs(spec_dirs))}); looked for "
        f"{name}{'/'.join(SPEC_SUFFIXES)} in: {_where_looked(spec_dirs)}. "
        "A spec elsewhere: pass its path (--spec PATH) or add its directory to RECLOOP_SPEC_DIRS",
    )


@dataclass(frozen=True)
class ResolvedSpec:
    """A loaded spec and the file it came from. Everything named after the dataset (data
    directory, registered model, experiment, titles) uses `spec.name`, never the file name."""

    spec: DatasetSpec
    path: Path
    by_name: bool  # found along the search path (else: a file given as it is)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reference(self) -> str:
        """What to hand to a flow run that resolves it again: the name when it was found by
        name (the Prefect run's `dataset` parameter stays a name), else the absolute path."""
        return self.spec.name if self.by_name else str(self.path.resolve())


def resolve_spec(name_or_path: str | Path, spec_dirs: Iterable[str | Path] = ()) -> ResolvedSpec:
    """Find and validate a spec by name (spec dirs, then the package) or by path."""
    path = spec_path(name_or_path, spec_dirs)
    by_name = not is_spec_path(name_or_path)
    spec = _read_spec(path)
    if by_name and spec.name != str(name_or_path):
        # A name must mean one dataset: the file found for it has to agree on the name.
        raise SpecError(
            path,
            f"found for dataset '{name_or_path}' but declares name: '{spec.name}' (a spec "
            "in a spec directory is named after its file: rename the file or the name)",
        )
    return ResolvedSpec(spec, path, by_name)


def load_spec(name_or_path: str | Path, spec_dirs: Iterable[str | Path] = ()) -> DatasetSpec:
    """Load and validate a dataset spec by name or path; errors name the file and the field.
    `spec_dirs` (the settings' `spec_dirs`, RECLOOP_SPEC_DIRS) are searched before the package."""
    return resolve_spec(name_or_path, spec_dirs).spec


def select_spec(
    dataset: str | None,
    spec: str | Path | None,
    spec_dirs: Iterable[str | Path] = (),
    default: str | None = None,
) -> ResolvedSpec:
    """The one spec a command works on, from `--dataset NAME` and/or `--spec PATH`: both
    given must agree on the name; neither given means `default` (if the command has one)."""
    if spec is not None:
        if not is_spec_path(spec):
            raise SpecError(spec, f"a spec file's name ends in {' or '.join(SPEC_SUFFIXES)}")
        resolved = resolve_spec(spec, spec_dirs)
        if dataset is not None and dataset != resolved.name:
            raise SpecError(
                spec,
                f"declares name: '{resolved.name}', but --dataset says '{dataset}' "
                "(give one of them, or make them agree)",
            )
        return resolved
    if dataset is None:
        if default is None:
            raise ParameterError("give a dataset name or a spec file (--spec PATH)")
        dataset = default
    return resolve_spec(dataset, spec_dirs)


def _read_spec(path: Path) -> DatasetSpec:
    if not path.is_file():
        raise SpecError(path, "no such spec file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(path, f"invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(path, "top level must be a mapping")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(path, problems) from None


def spec_to_yaml(spec: DatasetSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
