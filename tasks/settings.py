"""One settings object for the whole loop, read from RECLOOP_* environment variables and an
optional env file (RECLOOP_SETTINGS_FILE, default `recloop.env` in the working directory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feature_store.errors import ParameterError


def _default_home() -> Path:
    return Path(os.environ.get("RECLOOP_HOME", ".recloop")).resolve()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECLOOP_",
        env_file="recloop.env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
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
    approval_timeout_s: int = Field(default=6 * 3600, ge=1, description="Manual mode: wait this long for a decision.")
    approval_poll_s: int = Field(default=10, ge=1, description="Manual mode: how often the paused run checks for one.")
    window_days: int = Field(default=7, ge=2, description="Training days before the staging day.")
    lock_wait_s: float = Field(
        default=600, ge=0, description="How long a night waits for another night of its dataset to finish."
    )
    # Staging gate.
    auc_tolerance: float = Field(default=0.002, ge=0.0, description="Challenger AUC may be this much below the champion's.")
    logloss_tolerance: float = Field(default=0.002, ge=0.0, description="Challenger logloss may be this much above.")
    min_auc: float = Field(default=0.60, ge=0.0, le=1.0, description="Absolute floor when there is no champion.")
    calibration_bounds: tuple[float, float] = (0.8, 1.25)
    bootstrap_samples: int = Field(default=500, ge=50)
    # Training.
    epochs: int = Field(default=4, ge=1)
    batch_size: int = Field(default=1024, ge=16)
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    seed: int = 0
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

    @model_validator(mode="after")
    def _bounds(self) -> Settings:
        lo, hi = self.calibration_bounds
        if not 0 < lo < 1 < hi:
            raise ValueError(f"calibration_bounds must satisfy 0 < low < 1 < high, got {self.calibration_bounds}")
        return self

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root or self.home / "data"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri


def get_settings(**overrides) -> Settings:
    """Settings from the environment and the env file named by RECLOOP_SETTINGS_FILE (read
    now, not at import), with explicit overrides (CLI flags, flow parameters). A bad value is
    one `ParameterError` line naming the variable (or parameter) and the rule."""
    env_file = os.environ.get("RECLOOP_SETTINGS_FILE", "recloop.env")
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(_env_file=env_file, **given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            if field in given:
                where = f"{field}={given[field]!r}"
            else:
                var = f"RECLOOP_{field.upper()}" if field else "settings"
                where = f"{var}={os.environ[var]!r}" if var in os.environ else f"{var} (in {env_file})"
            problems.append(f"{where}: {err['msg']}")
        raise ParameterError("; ".join(problems)) from None
