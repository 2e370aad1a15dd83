"""The MLflow model registry: `<dataset>-ranker`, aliases `champion` and `challenger`.

Aliases, not the deprecated stages. A promotion moves `champion` and records the previous
champion on the new version (tag `previous_champion`), so a rollback is one command.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"


def registered_model_name(dataset: str) -> str:
    return f"{dataset}-ranker"


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def ensure_registered_model(client: MlflowClient, name: str, dataset: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(
            name, tags={"dataset": dataset}, description=f"Click-through-rate ranker for dataset '{dataset}'."
        )


def register_version(
    client: MlflowClient, name: str, dataset: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register a logged bundle as a new version (no alias yet)."""
    ensure_registered_model(client, name, dataset)
    return client.create_model_version(name=name, source=model_uri, run_id=run_id, tags=tags)


def set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None


def promote(client: MlflowClient, name: str, version: str, approved_by: str, reason: str) -> Promotion:
    """Move `champion` to `version`, recording who, why and the champion it replaces."""
    previous = alias_version(client, name, CHAMPION)
    prev_version = str(previous.version) if previous is not None else None
    if prev_version == str(version):
        return Promotion(name, str(version), prev_version)
    set_tags(
        client,
        name,
        version,
        {
            "previous_champion": prev_version or "none",
            "approval.decision": "approved",
            "approval.by": approved_by,
            "approval.reason": reason,
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    return Promotion(name, str(version), prev_version)


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class AliasStatus:
    name: str
    alias: str
    version: str | None
    run_id: str | None
    tags: dict[str, str]


def status(client: MlflowClient, dataset: str) -> list[AliasStatus]:
    name = registered_model_name(dataset)
    out = []
    for alias in (CHAMPION, CHALLENGER):
        mv = alias_version(client, name, alias)
        out.append(AliasStatus(name, alias, str(mv.version) if mv else None, mv.run_id if mv else None,
                               dict(mv.tags) if mv else {}))
    return out
