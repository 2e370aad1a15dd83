"""Which servers the `recloop` CLI talks to (flows.stack.resolve_servers): an explicit
RECLOOP_TRACKING_URI / PREFECT_API_URL, else the running stack of RECLOOP_HOME, else the local
defaults; a stack that was started and is not running is never guessed around. The "running"
stack here is real processes (pid files of live process groups we started), without servers:
the served stack itself is tests/e2e/test_stack.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows import stack

API, MLFLOW = "http://127.0.0.1:4999/api", "http://127.0.0.1:5999"


def _write_stack(home: Path, pids: dict[str, int]) -> None:
    """What `up` leaves: stack.json and one pid file per service."""
    cfg = stack.StackConfig(home=home)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "stack.json").write_text(json.dumps({"prefect_api": API, "mlflow_ui": MLFLOW}))
    for name, pid in pids.items():
        (cfg.run_dir / f"{name}.pid").write_text(json.dumps(
            {"pid": pid, "pgid": pid, "starttime": stack._start_time(pid)}))


@pytest.fixture()
def live(tmp_path):
    """Two process-group leaders standing in for the servers."""
    home = tmp_path / "live"
    procs = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(2)]
    _write_stack(home, {"prefect": procs[0].pid, "mlflow": procs[1].pid})
    yield home
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture()
def dead(tmp_path):
    """stack.json and pid files left by a stack whose processes are gone."""
    procs = [subprocess.Popen(["true"], start_new_session=True) for _ in range(2)]
    home = tmp_path / "dead"
    _write_stack(home, {"prefect": procs[0].pid, "mlflow": procs[1].pid})
    for p in procs:
        p.wait()
    return home


def test_without_a_stack_the_local_defaults_unless_a_prefect_server_is_needed(tmp_path):
    assert stack.resolve_servers(tmp_path, None, None, "optional") == stack.Servers(None, None)
    with pytest.raises(stack.StackError, match="set PREFECT_API_URL .* `make up`"):
        stack.resolve_servers(tmp_path, None, None, "required")
    assert stack.resolve_servers(tmp_path, None, "http://x/api", "required") == stack.Servers(None, "http://x/api")


def test_a_running_stack_of_this_home_is_used_unless_set_explicitly(live):
    assert stack.resolve_servers(live, None, None, "required") == stack.Servers(MLFLOW, API)
    assert stack.resolve_servers(live, None, None, "none") == stack.Servers(MLFLOW, None)
    assert stack.resolve_servers(live, "sqlite:///x.db", "http://x/api", "required") == stack.Servers(
        "sqlite:///x.db", "http://x/api")


def test_a_stack_that_stopped_is_not_guessed_around(dead):
    with pytest.raises(stack.StackError, match="is not running .*`make up`.*RECLOOP_TRACKING_URI"):
        stack.resolve_servers(dead, None, None, "none")
    with pytest.raises(stack.StackError, match="is not running .*PREFECT_API_URL"):
        stack.resolve_servers(dead, "sqlite:///x.db", None, "required")
    assert stack.resolve_servers(dead, "sqlite:///x.db", None, "none") == stack.Servers("sqlite:///x.db", None)
    # `make down` forgets the stack: the local stores are the answer again.
    stack.down(stack.StackConfig(home=dead))
    assert stack.served_stack(dead) is None
    assert stack.resolve_servers(dead, None, None, "optional") == stack.Servers(None, None)


def test_the_cli_refuses_in_one_line_and_leaves_no_local_store(dead, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import app

    monkeypatch.setenv("RECLOOP_HOME", str(dead))
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(dead / "absent.env"))
    monkeypatch.delenv("RECLOOP_TRACKING_URI", raising=False)
    res = CliRunner().invoke(app, ["status"])
    assert res.exit_code == 1 and "RECLOOP_TRACKING_URI" in res.output, res.output
    assert len(res.output.strip().splitlines()) <= 3, res.output  # one message (wrapped by rich)
    assert not (dead / "mlflow.db").exists()

    stack.down(stack.StackConfig(home=dead))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        res = CliRunner().invoke(app, ["pending"])
    assert res.exit_code == 1 and "set PREFECT_API_URL" in res.output and "make up" in res.output, res.output
    assert not (dead / "mlflow.db").exists()


def test_make_ui_shows_the_running_stack_and_falls_back_otherwise(live, dead, monkeypatch):
    for home, code in ((live, 0), (dead, 1)):
        monkeypatch.setenv("RECLOOP_HOME", str(home))
        monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        res = CliRunner().invoke(stack.app, ["ui"])
        assert res.exit_code == code, res.output
    monkeypatch.setenv("RECLOOP_HOME", str(live))
    res = CliRunner().invoke(stack.app, ["ui"])
    assert "http://127.0.0.1:4999" in res.output and MLFLOW in res.output and "/api" not in res.output
