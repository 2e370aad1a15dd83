"""Rules that decide, before any training, whether a night may run at all.

- The staging day must be unseen by the champion: a night whose staging day is not after the
  champion's training window would score the champion on a day it trained on (a backfill).
  It is refused unless run as a backfill, which evaluates and registers nothing.
- A re-run of the night that produced the champion (same data fingerprint, same code, same
  training config) would register an identical model and fill the `previous_champion` chain
  with copies: it is a no-op unless forced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date

from mlflow.entities.model_registry import ModelVersion

from feature_store.errors import RecloopInputError

NIGHT_CONFIG = "night_config"


class BackfillRefused(RecloopInputError):
    """The staging day is inside (or before) the champion's training window."""


def champion_last_training_day(champion: ModelVersion) -> date | None:
    """The last day the champion trained on (its validation day: the window's last day)."""
    value = champion.tags.get("validation_day") or champion.tags.get("data_window", "").rpartition("..")[2]
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def check_staging_day(champion: ModelVersion | None, staging_day: date, run_date: date, backfill: bool) -> str | None:
    """Raise `BackfillRefused` when the champion trained on `staging_day` or later; with
    `backfill`, return the note that says the night only evaluates."""
    last = champion_last_training_day(champion) if champion is not None else None
    if last is None or staging_day > last:
        return None
    message = (f"run date {run_date} stages on {staging_day}, but champion v{champion.version} trained on days "
               f"up to {last} (window {champion.tags.get('data_window', '?')}): a night must stage on a day "
               f"after the champion's training window")
    if not backfill:
        raise BackfillRefused(message + "; run it as a backfill (--backfill) to evaluate without registering")
    return f"backfill: {message}; evaluated only, nothing registered or promoted"


def night_config(architectures: list[str], hparams: dict | None, train_config, window_days: int,
                 warm_start: str = "auto") -> str:
    """Short hash of what decides the trained models besides data and code (not the thread
    count or the DDP timeout: they change speed, not the model; the process count only when
    it is not 1, and the warm-start setting only when it is not `auto`, so nights keep the hash
    they had before either existed)."""
    train = {k: v for k, v in dataclasses.asdict(train_config).items()
             if k not in ("threads", "ddp_timeout_s") and not (k == "processes" and v == 1)}
    payload = {"architectures": sorted(architectures), "hparams": hparams or {}, "train": train,
               "window_days": window_days}
    if warm_start != "auto":
        payload["warm_start"] = warm_start
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def rerun_of_champion(champion: ModelVersion | None, fingerprint: str, code_version: str, config: str) -> bool:
    """True when the champion came from this very night: same data, same code, same config."""
    if champion is None:
        return False
    tags = champion.tags
    return (tags.get("dataset_fingerprint") == fingerprint and tags.get("code_version") == code_version
            and tags.get(NIGHT_CONFIG) == config)
