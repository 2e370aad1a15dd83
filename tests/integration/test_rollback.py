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


def _new_version(client) -> str:
    """A registered version; the rollback logic only moves aliases and tags, so no real bundle."""
    run = client.create_run(client.exp_id)
    mv = registry.register_version(client, NAME, DATASET, f"runs:/{run.info.run_id}/model", run.info.run_id, {})
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
