"""Rollback against a real SQLite MLflow registry: `champion` goes back to the version the
current champion replaced, both versions say who/why/when, and with no earlier champion the
rollback is refused (library call and CLI)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tasks import registry, tracking
from tasks.settings import get_settings

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)


@pytest.fixture()
def client(recloop_home):
    client = tracking.configure(get_settings())
    exp_id = tracking.experiment_id(client, DATASET, tracking.artifact_location(get_settings()))
    client.exp_id = exp_id
    return client


def _new_version(client, gate_passed: bool = True) -> str:
    """A registered version; the rollback logic only moves aliases and tags, so no real bundle."""
    run = client.create_run(client.exp_id)
    tags = {"gate.passed": str(gate_passed).lower(), "gate.verdict": "pass" if gate_passed else "fail (auc_floor)"}
    mv = registry.register_version(client, NAME, DATASET, f"runs:/{run.info.run_id}/model", run.info.run_id, tags)
    return str(mv.version)


def test_rollback_restores_the_previous_champion(client):
    v1, v2 = _new_version(client), _new_version(client)
    registry.promote(client, NAME, v1, approved_by="ann", reason="first")
    registry.promote(client, NAME, v2, approved_by="ann", reason="better")

    done = registry.rollback(client, NAME, by="carol", reason="CTR dropped in production")

    assert (done.version, done.previous) == (v1, v2)
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v1
    for version, role in ((v2, "rolled back"), (v1, "restored")):
        tags = client.get_model_version(NAME, version).tags
        assert tags["rollback.by"] == "carol"
        assert tags["rollback.reason"] == "CTR dropped in production"
        assert tags["rollback.from_version"] == v2 and tags["rollback.to_version"] == v1
        assert tags["rollback.role"] == role and tags["rollback.at"]

    # v1 was the first champion: a second rollback has nowhere to go.
    with pytest.raises(registry.RollbackError, match="no previous champion"):
        registry.rollback(client, NAME, by="carol", reason="again")
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v1


def test_cli_rollback_moves_champion_and_refuses_without_history(client):
    from flows.cli import app

    runner = CliRunner()
    args = ["rollback", DATASET, "--reviewer", "carol", "--reason", "bad night"]

    nothing = runner.invoke(app, args)
    assert nothing.exit_code == 1 and "no champion" in nothing.output, nothing.output

    v1 = _new_version(client)
    registry.promote(client, NAME, v1, approved_by="ann", reason="first")
    only_one = runner.invoke(app, args)
    assert only_one.exit_code == 1 and "rollback refused" in only_one.output, only_one.output
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v1

    v2 = _new_version(client)
    registry.promote(client, NAME, v2, approved_by="ann", reason="second")
    moved = runner.invoke(app, args)
    assert moved.exit_code == 0, moved.output
    assert f"v{v2} -> v{v1}" in moved.output
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v1


def test_rollback_to_a_named_version_and_the_targets_it_refuses(client):
    v1, v2, v3 = _new_version(client), _new_version(client), _new_version(client)
    failed = _new_version(client, gate_passed=False)
    registry.promote(client, NAME, v2, approved_by="ann", reason="first")  # first champion: no history
    with pytest.raises(registry.RollbackError, match="--to-version"):
        registry.rollback(client, NAME, by="carol", reason="x")

    with pytest.raises(registry.RollbackError, match="did not pass its staging gate"):
        registry.rollback(client, NAME, by="carol", reason="x", to_version=failed)
    registry.mark_health(client, NAME, v3, "cannot score the staging day: FileNotFoundError")
    with pytest.raises(registry.RollbackError, match="health=broken"):
        registry.rollback(client, NAME, by="carol", reason="x", to_version=v3)
    with pytest.raises(registry.RollbackError, match="does not exist"):
        registry.rollback(client, NAME, by="carol", reason="x", to_version="99")
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v2

    done = registry.rollback(client, NAME, by="carol", reason="v2 misbehaves", to_version=v1)
    assert (done.version, done.previous) == (v1, v2)
    tags = client.get_model_version(NAME, v1).tags
    assert tags["rollback.role"] == "restored" and tags["rollback.from_version"] == v2
    assert registry.INTENT not in tags


def test_cli_rollback_to_version(client):
    from flows.cli import app

    v1, v2 = _new_version(client), _new_version(client)
    registry.promote(client, NAME, v2, approved_by="ann", reason="first")
    res = CliRunner().invoke(app, ["rollback", DATASET, "--reviewer", "carol", "--reason", "bad", "--to-version", v1])
    assert res.exit_code == 0, res.output
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == v1
