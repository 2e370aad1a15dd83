"""The MLflow model registry: `<dataset>-ranker`, aliases `champion` and `challenger`.

Aliases, not the deprecated stages. A promotion moves `champion` and records the previous
champion on the new version (tag `previous_champion`), so a rollback is one command.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks import faults
from tasks.processes import utc_now

CHAMPION = "champion"
CHALLENGER = "challenger"


def utc_stamp() -> str:
    """The timestamp format of every time tag on a version (promotion, approval, rollback)."""
    return utc_now()


def registered_model_name(dataset: str) -> str:
    return f"{dataset}-ranker"


def retriever_model_name(dataset: str) -> str:
    """The candidate generator's registered model: same aliases, approval and rollback."""
    return f"{dataset}-retriever"


def model_names(dataset: str) -> tuple[str, str]:
    """Every registered model of a dataset: its ranker and its retriever."""
    return registered_model_name(dataset), retriever_model_name(dataset)


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
        what = "Retriever (user -> top-K items)" if name == retriever_model_name(dataset) else "Click-through-rate ranker"
        client.create_registered_model(name, tags={"dataset": dataset}, description=f"{what} for dataset '{dataset}'.")


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


# Moving `champion` is three writes that no store makes atomic: an intent tag on the target,
# the alias, then the tags that describe the move. The intent says what the move is and
# carries everything the final tags need, so a process killed between the writes leaves a
# state `finish_move` (run by `recloop doctor` and every night) completes or withdraws:
# `champion` on a version with an intent -> write the final tags; an intent on a version that
# is not champion -> the alias never moved, drop the intent. Tags that describe a move never
# exist without the alias.
INTENT = "champion.intent"


def _move_champion(client: MlflowClient, name: str, version: str, intent: dict[str, str]) -> None:
    set_tags(client, name, version, {INTENT: json.dumps(intent, sort_keys=True)})
    faults.point("before_champion_alias")
    client.set_registered_model_alias(name, CHAMPION, version)
    faults.point("after_champion_alias")
    finish_move(client, name, version, intent)


def finish_move(client: MlflowClient, name: str, version: str, intent: dict[str, str]) -> None:
    """The tags that follow a champion move (promotion or rollback), then drop the intent."""
    if intent["kind"] == "promotion":
        set_tags(client, name, version, {
            "previous_champion": intent["previous"] or "none",
            "approval.decision": "approved",
            "approval.by": intent["by"],
            "approval.reason": intent["reason"],
            "promoted_at": intent["at"],
        })
    else:  # rollback: both versions say who, why and when
        stamp = {"rollback.by": intent["by"], "rollback.reason": intent["reason"], "rollback.at": intent["at"],
                 "rollback.from_version": intent["previous"], "rollback.to_version": version}
        set_tags(client, name, intent["previous"], {**stamp, "rollback.role": "rolled back"})
        set_tags(client, name, version, {**stamp, "rollback.role": "restored"})
    drop_intent(client, name, version)
    remove_alias_if(client, name, CHALLENGER, version)


def drop_intent(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.delete_model_version_tag(name, version, INTENT)
    except MlflowException as exc:  # already gone: another reconcile finished the move
        if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}:
            raise


def promote(client: MlflowClient, name: str, version: str, approved_by: str, reason: str) -> Promotion:
    """Move `champion` to `version`, recording who, why and the champion it replaces."""
    previous = alias_version(client, name, CHAMPION)
    prev_version = str(previous.version) if previous is not None else None
    if prev_version == str(version):
        return Promotion(name, str(version), prev_version)
    _move_champion(client, name, str(version), {"kind": "promotion", "previous": prev_version or "",
                                                "by": approved_by, "reason": reason, "at": utc_stamp()})
    return Promotion(name, str(version), prev_version)


def remove_alias_if(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    """Delete `alias` when it points to `version` (a newer night may already have moved it)."""
    current = alias_version(client, name, alias)
    if current is None or str(current.version) != str(version):
        return False
    client.delete_registered_model_alias(name, alias)
    return True


class RollbackError(RuntimeError):
    """A rollback that cannot happen (no champion, no recorded previous champion, a bad target)."""


def rollback(client: MlflowClient, name: str, by: str, reason: str, to_version: str | None = None) -> Promotion:
    """Move `champion` back to the version recorded in the current champion's
    `previous_champion` tag (or to `to_version`), tagging who, why and when on both versions.
    Repeating it walks further back, since the restored version carries its own
    `previous_champion`. A target must have passed its gate and not be marked broken."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RollbackError(f"{name} has no champion: nothing to roll back")
    target = str(to_version) if to_version else current.tags.get("previous_champion", "none")
    if target in {"", "none"}:
        raise RollbackError(f"{name} champion v{current.version} has no previous champion recorded: "
                            "it is the first one; name a version with --to-version")
    if target == str(current.version):
        raise RollbackError(f"{name} v{target} is the champion already")
    try:
        mv = client.get_model_version(name, target)
    except MlflowException as exc:
        raise RollbackError(f"{name} v{target} does not exist: {exc.message}") from None
    if mv.tags.get("gate.passed") != "true":
        raise RollbackError(f"{name} v{target} did not pass its staging gate "
                            f"({mv.tags.get('gate.verdict', 'no gate result')}): not a rollback target")
    if mv.tags.get(HEALTH) == BROKEN:
        raise RollbackError(f"{name} v{target} is marked {HEALTH}={BROKEN} "
                            f"({mv.tags.get(HEALTH_REASON, 'no reason')}): choose another with --to-version")
    _move_champion(client, name, target, {"kind": "rollback", "previous": str(current.version),
                                          "by": by, "reason": reason, "at": utc_stamp()})
    return Promotion(name, target, str(current.version))


def pending_moves(client: MlflowClient, name: str) -> list[tuple[ModelVersion, dict]]:
    """Versions carrying a champion-move intent (a move that was interrupted)."""
    return [(mv, json.loads(mv.tags[INTENT])) for mv in all_versions(client, name) if mv.tags.get(INTENT)]


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of a registered model, newest first (none when the model does not exist)."""
    found = client.search_model_versions(f"name='{name}'")
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


# Health of a version, as last seen by a night that tried to score it.
HEALTH, HEALTH_REASON, HEALTH_AT = "health", "health.reason", "health.checked_at"
OK, BROKEN = "ok", "broken"


def mark_health(client: MlflowClient, name: str, version: str, reason: str | None) -> None:
    """`health=ok`, or `health=broken` with the reason (e.g. the bundle no longer loads)."""
    set_tags(client, name, version, {HEALTH: BROKEN if reason else OK, HEALTH_REASON: reason or "",
                                     HEALTH_AT: utc_stamp()})


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class VersionStatus:
    """One line of `recloop status`: a version and why it is listed (its alias, or `latest`)."""

    name: str
    role: str
    version: str
    run_id: str | None
    tags: dict[str, str]


def status(client: MlflowClient, dataset: str, name: str | None = None) -> list[VersionStatus]:
    """Champion, challenger, and the newest version when it is neither (e.g. a night that was
    rejected, timed out or died while waiting); empty when nothing is registered. `name`: another
    registered model of the dataset (its retriever); default the ranker."""
    name = name or registered_model_name(dataset)
    out = []
    for alias in (CHAMPION, CHALLENGER):
        mv = alias_version(client, name, alias)
        if mv is not None:
            out.append(VersionStatus(name, alias, str(mv.version), mv.run_id, dict(mv.tags)))
    newest = next(iter(all_versions(client, name)), None)
    if newest is not None and str(newest.version) not in {row.version for row in out}:
        out.append(VersionStatus(name, "latest", str(newest.version), newest.run_id, dict(newest.tags)))
    return out
