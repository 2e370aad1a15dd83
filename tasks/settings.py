"""One settings object for the whole loop, read from RECLOOP_* environment variables and an
optional env file (RECLOOP_SETTINGS_FILE, default `recloop.env` in the working directory)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feature_store.cluster import DaskConfig
from feature_store.drift import DriftPolicy
from feature_store.errors import ParameterError
from models.trainer import TrainConfig
from tasks.alerts import AlertConfig
from tasks.dryrun import DryRunConfig
from tasks.evaluate import GatePolicy
from tasks.retrieval_gate import RetrievalPolicy


@dataclass(frozen=True)
class StreamConfig:
    """The streamed data path (`RECLOOP_STREAM_*`): memory is bounded by these, not by the
    window. `part_size`: chunks of the raw days one Dask task reads (about this many bytes in
    memory, whole row groups of one part file);
    `row_group_rows`: row groups of the transformed parquet, the unit the trainer reads and
    shuffles; `shuffle_row_groups`: row groups per shuffle buffer (see README, Scale);
    `chunk_rows`: raw rows per chunk when the staging day is scored through bundles;
    `keep_workdir`: keep the night's work directory for debugging."""

    part_size: str = "128MB"
    row_group_rows: int = 65_536
    shuffle_row_groups: int = 32
    chunk_rows: int = 262_144
    keep_workdir: bool = False

    def __post_init__(self):
        if min(self.row_group_rows, self.shuffle_row_groups, self.chunk_rows) < 1:
            raise ValueError("need row_group_rows, shuffle_row_groups and chunk_rows >= 1")


def _default_home() -> Path:
    return Path(os.environ.get("RECLOOP_HOME", ".recloop")).resolve()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECLOOP_",
        env_file="recloop.env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        # RECLOOP_TRAIN_EPOCHS -> train.epochs; names without a section prefix stay top-level.
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    home: Path = Field(default_factory=_default_home, description="Working directory for data, stores and reports.")
    data_root: Path | None = Field(default=None, description="Raw day partitions; default <home>/data.")
    # NoDecode: the variable is os.pathsep-separated like PATH, not the JSON list pydantic expects.
    spec_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories searched for dataset specs by name, in order, before the package's "
        "feature_store/specs/ (RECLOOP_SPEC_DIRS=dir1:dir2).",
    )
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; default sqlite:///<home>/mlflow.db.")
    registry_uri: str | None = Field(default=None, description="MLflow registry URI; default: the tracking URI.")
    prefect_api_url: str | None = Field(
        default=None, description="Prefect API; unset means Prefect's local ephemeral mode."
    )
    approval_mode: Literal["auto", "manual"] = "auto"
    warm_start: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: a challenger of the champion's architecture starts from the champion's weights, "
        "remapped through both vocabularies (tasks/warm_start.py); off: every night starts cold.",
    )
    approval_timeout_s: int = Field(default=6 * 3600, ge=1, description="Manual mode: wait this long for a decision.")
    approval_poll_s: int = Field(default=10, ge=1, description="Manual mode: how often the paused run checks for one.")
    window_days: int = Field(default=7, ge=2, description="Training days before the staging day.")
    lock_wait_s: float = Field(
        default=600, ge=0, description="How long a night waits for another night of its dataset to finish."
    )
    # Sections (RECLOOP_TRAIN_EPOCHS, RECLOOP_GATE_MIN_AUC, ...): their defaults live in the
    # dataclasses themselves, the trainer's and the gate's, and nowhere else.
    train: TrainConfig = Field(default_factory=TrainConfig, description="The trainer (models/trainer.py TrainConfig).")
    gate: GatePolicy = Field(default_factory=GatePolicy, description="The staging gate (tasks/evaluate.py GatePolicy).")
    dryrun: DryRunConfig = Field(default_factory=DryRunConfig,
                                 description="The gate's served dry run (tasks/dryrun.py DryRunConfig).")
    drift: DriftPolicy = Field(default_factory=DriftPolicy,
                               description="Training-serving skew and drift (feature_store/drift.py DriftPolicy).")
    dask: DaskConfig = Field(default_factory=DaskConfig, description="Where preprocessing runs (feature_store/cluster.py).")
    stream: StreamConfig = Field(default_factory=StreamConfig, description="Partition, row-group and buffer sizes.")
    alerts: AlertConfig = Field(default_factory=AlertConfig,
                                description="Failed nights, decisions, promotions, rollbacks (tasks/alerts.py).")
    retrieval: RetrievalPolicy = Field(default_factory=RetrievalPolicy,
                                       description="The retrieval stage (tasks/retrieval_gate.py RetrievalPolicy).")
    # Served stack (`make up` / `recloop stack`, flows/stack.py).
    db_url: str | None = Field(
        default=None, description="PostgreSQL for the served stack (postgresql://user@host:port/db); unset: SQLite files."
    )
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    schedule_timezone: str | None = Field(default=None, description="Overrides prefect.yaml's nightly time zone.")

    @field_validator("spec_dirs", mode="before")
    @classmethod
    def _split_spec_dirs(cls, value):
        if isinstance(value, str):  # empty entries (a trailing ':') are skipped, not the cwd
            return [entry for entry in value.split(os.pathsep) if entry.strip()]
        return value

    @field_validator("train", "gate", "dryrun", "drift", "dask", "stream", "alerts", "retrieval", mode="before")
    @classmethod
    def _section_lists(cls, value):
        # A list inside a section arrives from the environment as its JSON text.
        if isinstance(value, dict):
            value = {k: json.loads(v) if isinstance(v, str) and v.lstrip().startswith("[") else v
                     for k, v in value.items()}
            # RECLOOP_ALERTS_EVENTS=failed,promoted: a comma list too, as people type it.
            if isinstance(value.get("events"), str):
                value["events"] = [e.strip() for e in value["events"].split(",") if e.strip()]
        return value

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root or self.home / "data"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri


# Flat names before the settings had sections: refused with the new name, never ignored.
RENAMED = {
    **{f"RECLOOP_{k.upper()}": f"RECLOOP_TRAIN_{k.upper()}" for k in ("epochs", "batch_size", "threads", "seed")},
    **{f"RECLOOP_{k.upper()}": f"RECLOOP_GATE_{k.upper()}"
       for k in ("auc_tolerance", "logloss_tolerance", "min_auc", "calibration_bounds", "bootstrap_samples")},
}


def _merged(given: dict) -> dict:
    """Drop None overrides, also inside a section (`train={"epochs": None}` is no override)."""
    out = {}
    for key, value in given.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _where(loc: tuple, given: dict, env_file: str) -> str:
    """The variable (or override) a validation error is about, with its value."""
    if not loc:
        return "settings"
    section = given.get(str(loc[0]))
    if len(loc) >= 2 and isinstance(section, dict) and loc[1] in section:
        return f"{loc[1]}={section[loc[1]]!r}"
    if len(loc) == 1 and str(loc[0]) in given and not isinstance(section, dict):
        return f"{loc[0]}={given[str(loc[0])]!r}"
    if len(loc) == 1 and isinstance(section, dict):  # a section-wide rule: name what was given
        return ", ".join(f"{k}={v!r}" for k, v in section.items())
    var = "RECLOOP_" + "_".join(str(p) for p in loc[:2]).upper()
    if var in os.environ:
        return f"{var}={os.environ[var]!r}"
    if len(loc) == 1:  # a section-wide rule (e.g. 0 < low < 1 < high): the section's variables
        prefix = f"{var}_"
        set_here = [f"{k}={v!r}" for k, v in sorted(os.environ.items()) if k.startswith(prefix)]
        if set_here:
            return ", ".join(set_here)
    return f"{var} (in {env_file})"


def get_settings(**overrides) -> Settings:
    """Settings from the environment and the env file named by RECLOOP_SETTINGS_FILE (read
    now, not at import), with explicit overrides (CLI flags, flow parameters; a section as a
    dict: `train={"epochs": 2}`). A bad value, or a variable of the old flat names, is one
    `ParameterError` line naming the variable (or parameter) and the rule."""
    env_file = os.environ.get("RECLOOP_SETTINGS_FILE", "recloop.env")
    old = sorted(k for k in RENAMED if k in os.environ)
    if old:
        raise ParameterError("; ".join(f"{k}: renamed to {RENAMED[k]}" for k in old))
    given = _merged(overrides)
    try:
        return Settings(_env_file=env_file, **given)
    except ValidationError as exc:
        problems = [f"{_where(tuple(err['loc']), given, env_file)}: {err['msg']}" for err in exc.errors()]
        raise ParameterError("; ".join(problems)) from None
