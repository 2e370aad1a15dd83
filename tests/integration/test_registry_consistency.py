"""A process killed (SIGKILL, no cleanup) at any point of a champion move leaves a registry that
`doctor.repair_registry` puts right: the move is either completed with all its tags, or it never
happened; tags that describe a move never exist without the alias. The kill is real: a child
process runs the move with RECLOOP_FAULT naming the point, against a real SQLite registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks import doctor, registry, tracking
from tasks.settings import get_settings

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def client(recloop_home):
    client = tracking.configure(get_settings())
    client.exp_id = tracking.experiment_id(client, DATASET, tracking.artifact_location(get_settings()))
    return client


def _version(client, **tags) -> str:
    run = client.create_run(client.exp_id)
    tags = {"gate.passed": "true", "gate.verdict": "pass", **tags}
    return str(registry.register_version(client, NAME, DATASET, f"runs:/{run.info.run_id}/model",
                                         run.info.run_id, tags).version)


def _killed_at(point: str, call: str) -> None:
    """Run `call` (registry code) in a child process that SIGKILLs itself at `point`."""
    script = textwrap.dedent(f"""
        from tasks import registry, tracking
        from tasks.settings import get_settings
        client = tracking.configure(get_settings())
        {call}
        raise SystemExit("the fault point was never reached")
    """)
    env = {**os.environ, "RECLOOP_FAULT": point, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr


def _state(client) -> dict:
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    challenger = registry.alias_version(client, NAME, registry.CHALLENGER)
    return {"champion": champion and str(champion.version), "challenger": challenger and str(challenger.version),
            "tags": {str(mv.version): dict(mv.tags) for mv in registry.all_versions(client, NAME)}}


def _promotion_of_a_challenger_killed_at(client, point: str) -> tuple[str, str]:
    """v1 champion, v2 challenger; the promotion of v2 is killed at `point`."""
    v1, v2 = _version(client), _version(client)
    registry.promote(client, NAME, v1, "ann", "first")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, v2)
    _killed_at(point, f"registry.promote(client, {NAME!r}, {v2!r}, 'bob', 'better')")
    return v1, v2


def test_a_promotion_killed_before_the_alias_moves_never_happened(client):
    v1, v2 = _promotion_of_a_challenger_killed_at(client, "before_champion_alias")
    hurt = _state(client)
    assert hurt["champion"] == v1 and registry.INTENT in hurt["tags"][v2]
    assert "approval.by" not in hurt["tags"][v2]  # nothing claims v2 was approved

    repairs = doctor.repair_registry(client, NAME)
    assert [r.what for r in repairs] == ["withdrew promotion"]
    fixed = _state(client)
    assert fixed["champion"] == v1 and fixed["challenger"] == v2  # still waiting, as before the kill
    assert registry.INTENT not in fixed["tags"][v2] and "promoted_at" not in fixed["tags"][v2]
    assert doctor.repair_registry(client, NAME) == []  # idempotent


def test_a_promotion_killed_after_the_alias_moved_is_completed(client):
    v1, v2 = _promotion_of_a_challenger_killed_at(client, "after_champion_alias")
    hurt = _state(client)
    assert hurt["champion"] == hurt["challenger"] == v2  # the state the issue reported
    assert "previous_champion" not in hurt["tags"][v2]

    repairs = doctor.repair_registry(client, NAME)
    assert [r.what for r in repairs] == ["completed promotion"]
    fixed = _state(client)
    tags = fixed["tags"][v2]
    assert fixed["champion"] == v2 and fixed["challenger"] is None
    assert (tags["previous_champion"], tags["approval.by"], tags["approval.reason"]) == (v1, "bob", "better")
    assert tags["approval.decision"] == "approved" and registry.INTENT not in tags
    assert registry.rollback(client, NAME, "carol", "check the chain").version == v1


@pytest.mark.parametrize("point", ["before_champion_alias", "after_champion_alias"])
def test_a_killed_rollback_is_completed_or_withdrawn(client, point):
    v1, v2 = _version(client), _version(client)
    registry.promote(client, NAME, v1, "ann", "first")
    registry.promote(client, NAME, v2, "ann", "second")

    _killed_at(point, f"registry.rollback(client, {NAME!r}, 'carol', 'CTR dropped')")
    doctor.repair_registry(client, NAME)
    fixed = _state(client)
    if point == "before_champion_alias":
        assert fixed["champion"] == v2
        assert not any(k.startswith("rollback.") for k in fixed["tags"][v1])
    else:
        assert fixed["champion"] == v1
        for version, role in ((v2, "rolled back"), (v1, "restored")):
            assert fixed["tags"][version]["rollback.role"] == role
            assert fixed["tags"][version]["rollback.by"] == "carol"
    assert all(registry.INTENT not in t for t in fixed["tags"].values())


def test_champion_and_challenger_on_one_version_and_versions_without_a_gate_result(client):
    v1 = _version(client)
    registry.promote(client, NAME, v1, "ann", "first")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, v1)
    run = client.create_run(client.exp_id)  # registered by hand, or by a pre-1.0 recloop: no gate tags
    bare = str(registry.register_version(client, NAME, DATASET, f"runs:/{run.info.run_id}/m", run.info.run_id, {}).version)

    repairs = {r.what for r in doctor.repair_registry(client, NAME)}
    assert repairs == {"removed alias", "marked incomplete"}
    fixed = _state(client)
    assert fixed["champion"] == v1 and fixed["challenger"] is None
    assert fixed["tags"][bare]["gate.passed"] == "false"
    with pytest.raises(registry.RollbackError, match="did not pass"):
        registry.rollback(client, NAME, "carol", "x", to_version=bare)
