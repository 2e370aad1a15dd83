"""What the stages of a night hand to each other, in one place: the `Night` record every
stage reads its context from, the stage outputs, and the typed summary the CLI, the
benchmarks and the tests read. A stage imports its inputs from here, never from the module
of the stage that produced them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import torch

from models.trainer import TrainResult
from tasks.evaluate import GateResult
from tasks.registry import registered_model_name


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
    oracle_val: dict[str, float] | None = None
    dask_dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
