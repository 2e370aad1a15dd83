"""Dataset specs: one YAML file per dataset under `feature_store/specs/`.

A spec says which column is the label, which is the day, how each feature column is
preprocessed, which feature crosses feed the wide part, and what the raw data must satisfy.
A new dataset is added by writing a spec, never by editing code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feature_store.errors import SpecError

SPEC_DIR = Path(__file__).parent / "specs"


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
        return self

    @property
    def feature_columns(self) -> list[str]:
        """The raw input columns of the preprocessing (bucketized columns are derived)."""
        return [c.name for c in self.categorical] + [c.name for c in self.continuous]

    @property
    def required_columns(self) -> list[str]:
        """Columns every raw partition must carry (features, label, day)."""
        return [*self.feature_columns, self.label]


def spec_path(name_or_path: str | Path) -> Path:
    """A bare name resolves to `feature_store/specs/<name>.yaml`; anything else is a path."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"}:
        return p
    return SPEC_DIR / f"{name_or_path}.yaml"


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load and validate a dataset spec; errors name the file and the offending field."""
    path = spec_path(name_or_path)
    if not path.exists():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
        raise SpecError(path, f"no such spec (known datasets: {known})")
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
