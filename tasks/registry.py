"""The MLflow model registry: `<dataset>-ranker`, aliases `champion` and `challenger`.

Aliases, not the deprecated stages. A promotion moves `champion` and records the previous
champion on the new version (tag `previous_champion`), so a rollback is one command.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


def utc_stamp() -> str:
    """The timestamp format of every time tag on a version (promotion, approval, rollback)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    # A logged model's URI is `models:/<model_id>`. An MLflow 3.17 tracking *server* rejects that
    # source unless model_id names the same model (a local SQLite store does not check).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    return client.create_model_version(name=name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)


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
            "promoted_at": utc_stamp(),
        },
    )
    client.set_registered_model_alias(name, CHAMPION, version)
    remove_alias_if(client, name, CHALLENGER, version)
    return Promotion(name, str(version), prev_version)


def remove_alias_if(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    """Delete `alias` when it points to `version` (a newer night may already have moved it)."""
    current = alias_version(client, name, alias)
    if current is None or str(current.version) != str(version):
        return False
    client.delete_registered_model_alias(name, alias)
    return True


class RollbackError(RuntimeError):
    """A rollback that cannot happen (no champion, no recorded previous champion)."""


def rollback(client: MlflowClient, name: str, by: str, reason: str) -> Promotion:
    """Move `champion` back to the version recorded in the current champion's
    `previous_champion` tag, tagging who, why and when on both versions. Repeating it walks
    further back, since the restored version carries its own `previous_champion`."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RollbackError(f"{name} has no champion: nothing to roll back")
    target = current.tags.get("previous_champion", "none")
    if target in {"", "none"}:
        raise RollbackError(f"{name} champion v{current.version} has no previous champion recorded: "
                            "it is the first one, there is nothing to roll back to")
    try:
        client.get_model_version(name, target)
    except MlflowException as exc:
        raise RollbackError(f"{name} v{target} (the previous champion) no longer exists: {exc.message}") from None
    stamp = {"rollback.by": by, "rollback.reason": reason,
             "rollback.at": utc_stamp(),
             "rollback.from_version": str(current.version), "rollback.to_version": target}
    set_tags(client, name, str(current.version), {**stamp, "rollback.role": "rolled back"})
    set_tags(client, name, target, {**stamp, "rollback.role": "restored"})
    client.set_registered_model_alias(name, CHAMPION, target)
    return Promotion(name, target, str(current.version))


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
