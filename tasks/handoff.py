"""What the stages of a night hand to each other, in one place: the `Night` record every
stage reads its context from, the stage outputs, and the typed summary the CLI, the
benchmarks and the tests read. A stage imports its inputs from here, never from the module
of the stage that produced them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from feature_store import partitions
from feature_store.drift import DriftReport, Profile
from models.trainer import BatchSource, TrainResult
from tasks.evaluate import GateResult
from tasks.registry import registered_model_name
from tasks.retrieval_gate import RetrievalGate

if TYPE_CHECKING:
    from feature_store.id_maps import IdMaps
    from feature_store.interactions import EvalDay, IdSpace
    from feature_store.workflow import Preprocessor
    from models.retrieval.base import Interactions, SideInfo
    from models.retrieval.trainer import FitResult
    from models.schema import InputSchema


@dataclass(frozen=True)
class Night:
    """One night's context, built once by the flow: the dataset, its registered model, the
    run date, the MLflow experiment and parent run (set when the parent run starts) and the
    tags every run and version of the night carries."""

    dataset: str
    run_date: date
    tags: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""
    parent_run_id: str = ""

    @property
    def model_name(self) -> str:
        return registered_model_name(self.dataset)

    @property
    def version_tags(self) -> dict[str, str]:
        """Tags of a version registered tonight: the night's, and its parent run."""
        return {**self.tags, "parent_run_id": self.parent_run_id} if self.parent_run_id else dict(self.tags)

    def started(self, experiment_id: str, parent_run_id: str) -> Night:
        return dataclasses.replace(self, experiment_id=experiment_id, parent_run_id=parent_run_id)


@dataclass(frozen=True)
class RawPart:
    """One part file of a day: hashed (duplicates, fingerprint) and its rows counted."""

    file: partitions.PartFile
    rows: int

    @property
    def path(self) -> Path:
        return self.file.path


@dataclass(frozen=True)
class RawDay:
    """One day's raw rows, read on demand in bounded chunks (never the whole day at once)."""

    day: date
    files: tuple[Path, ...]
    rows: int
    chunk_rows: int = 262_144

    def chunks(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        for path in self.files:
            yield from partitions.iter_chunks(path, columns, self.chunk_rows)

    def column(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One column over the whole day (N values: labels, an oracle; not the features)."""
        parts = [c[name].to_numpy(dtype=dtype) for c in self.chunks([name]) if name in c.columns]
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    def has_column(self, name: str) -> bool:
        """Whether every part file has the column, from the parquet schemas (a CSV's header):
        no rows are read. Every file, since `column` concatenates the files' values."""
        return bool(self.files) and all(name in partitions.file_columns(path) for path in self.files)

    def head(self, n: int) -> pd.DataFrame:
        return next(self.chunks()).head(n).reset_index(drop=True)


@dataclass(frozen=True)
class FrameDay:
    """Raw rows already in memory (benchmarks and tests on small, not day-partitioned data),
    with `RawDay`'s interface."""

    frame: pd.DataFrame
    chunk_rows: int = 262_144

    @property
    def rows(self) -> int:
        return len(self.frame)

    def chunks(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        return partitions.frame_chunks(self.frame, columns, self.chunk_rows)

    def column(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        return self.frame[name].to_numpy(dtype=dtype)

    def has_column(self, name: str) -> bool:
        return name in self.frame.columns

    def head(self, n: int) -> pd.DataFrame:
        return self.frame.head(n).reset_index(drop=True)


@dataclass
class RawWindow:
    """The part files of one night. The last training day is the validation day (early
    stopping, model selection); the holdout day is the staging day nobody trained on. No rows
    are held here: every stage streams the files."""

    dataset: str
    run_date: date
    train_days: list[date]
    holdout_day: date
    parts: dict[date, list[RawPart]]
    sources: dict[date, str]  # the day directories
    fingerprint: str

    @property
    def fit_days(self) -> list[date]:
        return self.train_days[:-1]

    @property
    def val_day(self) -> date:
        return self.train_days[-1]

    def files(self, days: date | list[date]) -> list[Path]:
        days = [days] if isinstance(days, date) else days
        return [p.path for d in days for p in self.parts[d]]

    def rows(self, days: date | list[date]) -> int:
        days = [days] if isinstance(days, date) else days
        return sum(p.rows for d in days for p in self.parts[d])

    def day(self, day: date, chunk_rows: int = RawDay.chunk_rows) -> RawDay:
        return RawDay(day, tuple(self.files(day)), self.rows(day), chunk_rows)

    @property
    def data_window(self) -> str:
        """The training days, gaps shown: `2026-01-01..2026-01-07`, or with a spec that allows
        missing days `1997-12-08..1997-12-10, 1997-12-12..1997-12-14 (missing 1997-12-11)`."""
        return partitions.describe_days(self.train_days)


@dataclass
class PreparedData:
    """The fitted preprocessing and the transformed splits as batch sources (streamed from
    the night's parquet, or tensors for small in-memory data), plus the raw staging day the
    champion's bundle scores and its labels (N values, not features), and the drift profiles
    of the training window and the staging day (`feature_store.drift`; None when drift is off)."""

    preprocessor: Preprocessor
    schema: InputSchema
    train: BatchSource | dict[str, torch.Tensor]  # tensors: `prepare_frames`, small in-memory data
    val: BatchSource | dict[str, torch.Tensor]
    holdout: BatchSource | dict[str, torch.Tensor]
    holdout_raw: RawDay | FrameDay
    holdout_labels: np.ndarray
    fit_seconds: float
    transform_rows_per_s: float
    fit_rows_per_s: float
    dask_dashboard: str | None = None
    train_profile: Profile | None = None
    staging_profile: Profile | None = None


@dataclass(frozen=True)
class WarmSource:
    """What tonight's challengers may start from (`tasks/warm_start.py`): the champion's
    version, architecture and trained model, and the id maps from its vocabularies to
    tonight's. Without a usable champion (setting off, none yet, broken, unloadable, trained
    on tonight's staging day) `model` is None and `unavailable` says why."""

    version: str | None = None
    arch: str | None = None
    model: torch.nn.Module | None = None
    id_maps: IdMaps | None = None
    unavailable: str = ""
    mode: str = "auto"  # the `warm_start` setting it was loaded under


@dataclass(frozen=True)
class WarmStart:
    """How one candidate started. Warm: `from_version` is the champion's version, and
    `copied_share` the share of each field's rows that got a champion row; `not_copied` lists
    the tensors (or fields of a table) that kept their fresh initialisation, and why; the
    initial validation numbers are the model's before its first step. Cold: `from_version` is
    None and `fallback` says why (the setting, no champion, another architecture,
    hyper-parameters of other shapes)."""

    from_version: str | None = None
    fallback: str = ""
    copied_share: dict[str, float] = field(default_factory=dict)
    not_copied: dict[str, str] = field(default_factory=dict)
    initial_val_logloss: float | None = None
    initial_val_auc: float | None = None
    seconds: float = 0.0  # the remap and the validation before the first step

    @property
    def warm(self) -> bool:
        return self.from_version is not None


@dataclass
class Candidate:
    """A trained architecture: its child run, logged bundle, and staging-day predictions."""

    arch: str
    run_id: str
    model_uri: str
    model: torch.nn.Module
    result: TrainResult
    n_params: int
    holdout_pred: np.ndarray
    infer_rows_per_s: float
    warm_start: WarmStart = field(default_factory=WarmStart)


@dataclass
class ChampionScore:
    """The champion on the staging day; `pred` is None when its bundle could not score (then
    `broken` says why, the version is tagged `health=broken` and the absolute floor applies)."""

    version: str
    run_id: str | None
    pred: np.ndarray | None
    broken: str | None = None


@dataclass
class StagingOutcome:
    gates: dict[str, GateResult]
    champion: ChampionScore | None
    selected: str | None = None
    version: str | None = None
    version_gate: GateResult | None = None
    notes: list[str] = field(default_factory=list)
    drift: DriftReport | None = None


@dataclass(frozen=True)
class ComparisonRow:
    """One row of the comparison table (a candidate, the champion, or the oracle)."""

    model: str
    val_auc: float | None = None
    val_logloss: float | None = None
    staging_auc: float | None = None
    staging_logloss: float | None = None
    calibration: float | None = None
    delta_auc: float | None = None
    delta_auc_ci: tuple[float, float] | None = None
    delta_logloss: float | None = None
    train_samples_per_s: float | None = None
    verdict: str = ""
    registered: str = ""
    served_p50_ms: float | None = None  # the served dry run (the registered candidate only)
    served_p99_ms: float | None = None


@dataclass
class NightSummary:
    """What a night did, for the CLI (table, `--json`), the benchmarks and the tests."""

    dataset: str
    run_date: str
    data_window: str
    staging_day: str
    champion_before: str | None
    champion_after: str | None
    notes: list[str] = field(default_factory=list)
    rows: list[ComparisonRow] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment_id: str | None = None
    selected: str | None = None
    registered_version: str | None = None
    promoted: bool = False
    decision: str | None = None
    noop: bool = False
    backfill: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_rows: dict[str, int] = field(default_factory=dict)  # rows each stage read
    preprocess_rows_per_s: float | None = None
    preprocess_fit_seconds: float | None = None
    preprocess_fit_rows_per_s: float | None = None
    oracle_val: dict[str, float] | None = None
    dask_dashboard: str | None = None
    drift: DriftReport | None = None  # training window vs staging day; None when drift is off
    retrieval: RetrievalSummary | None = None  # None: the spec has no `retrieval` section, or it is off

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- the retrieval stage


@dataclass
class RetrievalData:
    """What the retrievers of a night learn from and are judged on (`tasks/retrieve.py`):
    positives of the fitted days (`train`), the pairs to exclude when evaluating the validation
    day (the fitted days' events) and the staging day (the whole window's), the catalogue and
    user tables (raw columns, one row per index), the two evaluated days, the side information."""

    ids: IdSpace
    train: Interactions
    seen_val: Interactions
    seen_staging: Interactions
    catalogue: pd.DataFrame
    user_table: pd.DataFrame
    val: EvalDay
    staging: EvalDay
    side: SideInfo
    seconds: float = 0.0


@dataclass
class RetrieverCandidate:
    """A fitted retriever: its child run, its metrics (keys `val_<m>_at_<k>` and
    `staging_<m>_at_<k>`), its staging top-K (catalogue indices, (U, K), -1 padded) and each
    evaluated user's Recall@K (the gate's bootstrap resamples these)."""

    name: str
    run_id: str
    fit: FitResult
    metrics: dict[str, float]
    staging_items: np.ndarray
    staging_scores: np.ndarray
    staging_recall: np.ndarray
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrievalRow:
    """One row of the retrieval table (a retriever, the champion retriever, or the pipeline)."""

    model: str
    val_recall: float | None = None  # Recall@K on the validation day (selection)
    recall_10: float | None = None
    ndcg_10: float | None = None
    recall_k: float | None = None
    coverage_k: float | None = None
    delta_recall: float | None = None
    delta_recall_ci: tuple[float, float] | None = None
    fit_seconds: float | None = None
    verdict: str = ""
    registered: str = ""


@dataclass
class RetrievalSummary:
    """The retrieval stage of a night: the table, the registered retriever, the pipeline."""

    k: int
    top_n: int
    rows: list[RetrievalRow] = field(default_factory=list)
    users: int = 0  # staging users with a positive (the users the metrics average)
    selected: str | None = None
    registered_version: str | None = None
    promoted: bool = False
    champion_before: str | None = None
    champion_after: str | None = None
    # The registered version's run, gate and staging metrics (`staging_<m>_at_<k>`), and the
    # champion's on the same users: what a manual approval shows.
    registered_run_id: str | None = None
    gate: RetrievalGate | None = None
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    decision: str | None = None  # manual approval: approved, rejected, stale, timeout
    pipeline: dict[str, float] = field(default_factory=dict)  # `pipeline_*` metrics of the parent run
    pipeline_models: str = ""  # which retriever and ranker the pipeline ran
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def awaits_approval(self) -> bool:
        """A registered retriever passed its gate and nothing promoted it (approval mode manual)."""
        return (self.registered_version is not None and not self.promoted and self.gate is not None
                and self.gate.passed)

    def record_decision(self, decision: str, promoted_version: str | None) -> None:
        """A reviewer's decision (or the timeout) on the registered retriever."""
        self.decision = decision
        if promoted_version is not None:
            self.promoted, self.champion_after = True, str(promoted_version)
