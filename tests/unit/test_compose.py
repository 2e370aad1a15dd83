"""docker-compose.yml, Dockerfile and prefect.yaml checked statically (no Docker engine in CI):
they parse, and the names, ports and variables they use are the ones the code reads."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from flows import stack
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_services_have_an_image_or_build_and_a_healthcheck(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "prefect-worker", "mlflow-server"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    assert {"pgdata", "mlartifacts"} <= declared
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name} mounts missing file {source}"


def test_ports_match_the_launcher_defaults(compose):
    defaults = Settings.model_fields
    prefect_port, mlflow_port = defaults["prefect_port"].default, defaults["mlflow_port"].default
    assert (prefect_port, mlflow_port) == (4200, 5000)
    services = compose["services"]
    assert f"127.0.0.1:{prefect_port}:{prefect_port}" in services["prefect-server"]["ports"]
    assert f"127.0.0.1:{mlflow_port}:{mlflow_port}" in services["mlflow-server"]["ports"]
    assert f"--port {prefect_port}" in _command(services["prefect-server"])
    mlflow_cmd = _command(services["mlflow-server"])
    assert f"--port {mlflow_port}" in mlflow_cmd and "--allowed-hosts" in mlflow_cmd
    assert f"mlflow-server:{mlflow_port}" in mlflow_cmd  # how the worker reaches it (Host header)


def test_worker_env_names_are_the_ones_the_code_reads(compose):
    services = compose["services"]
    env = _env(services["prefect-worker"])
    # RECLOOP_* names come from the settings object (env_prefix + field name).
    prefix = Settings.model_config["env_prefix"]
    assert prefix + "TRACKING_URI" in env and "tracking_uri" in Settings.model_fields
    assert env[prefix + "TRACKING_URI"] == f"http://mlflow-server:{Settings.model_fields['mlflow_port'].default}"
    assert env["PREFECT_API_URL"] == f"http://prefect-server:{Settings.model_fields['prefect_port'].default}/api"
    assert env["RECLOOP_REPO_DIR"] == "/app"  # prefect.yaml's pull step
    assert "RECLOOP_HOME" in env and "home" in Settings.model_fields
    for field in ("webhook_url", "block"):  # alerts: the section's variables, empty when the shell has none
        assert env[f"{prefix}ALERTS_{field.upper()}"] == f"${{{prefix}ALERTS_{field.upper()}:-}}"
        assert field in {f.name for f in dataclasses.fields(Settings.model_fields["alerts"].annotation)}
    worker_cmd = _command(services["prefect-worker"])
    assert f"--pool {stack.WORK_POOL}" in worker_cmd and "deploy --all" in worker_cmd
    assert "postgresql+asyncpg://" in _env(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "postgresql+psycopg://" in _command(services["mlflow-server"])


def test_databases_match_the_launcher_layout(compose):
    init_sql = (ROOT / "mlflow" / "postgres-init.sql").read_text()
    cfg = stack.StackConfig(home=Path("/x"), db_url="postgresql://recloop:recloop@postgres:5432/recloop")
    prefect_db = cfg.database_url("prefect")
    mlflow_db = cfg.database_url("mlflow")
    assert prefect_db == _env(compose["services"]["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert mlflow_db in _command(compose["services"]["mlflow-server"])
    for db in ("recloop_prefect", "recloop_mlflow"):
        assert f"CREATE DATABASE {db}" in init_sql


def test_dockerfile_installs_with_old_pip_and_the_lock(compose):
    dockerfile = ROOT / "Dockerfile"
    assert dockerfile.exists()
    text = dockerfile.read_text()
    assert "pip<24" in text and "-c requirements.lock" in text
    assert "COPY pyproject.toml requirements.lock" in text
    for svc in ("prefect-server", "prefect-worker", "mlflow-server"):
        build = compose["services"][svc].get("build")
        assert build and build.get("dockerfile", "Dockerfile") == "Dockerfile"


def test_prefect_yaml_declares_the_nightly_deployment():
    cfg = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (dep,) = [d for d in cfg["deployments"] if d["name"] == "nightly"]
    assert dep["entrypoint"] == "flows/nightly.py:nightly_retrain"
    assert dep["work_pool"]["name"] == stack.WORK_POOL
    assert dep["concurrency_limit"] == 1
    (sched,) = dep["schedules"]
    assert sched["cron"] == "0 2 * * *" and sched["timezone"]
    assert dep["parameters"] == {"dataset": "synthetic_clicks",
                                 "architectures": ["wide", "deep", "wide_deep"], "approval_mode": "manual"}
    (pull,) = cfg["pull"]
    assert "prefect.deployments.steps.set_working_directory" in pull
    assert not cfg.get("build") and not cfg.get("push")
    # The entrypoint exists (the flow name itself is checked against a real server in e2e).
    assert "def nightly_retrain(" in (ROOT / "flows" / "nightly.py").read_text()
    assert stack.DEPLOYMENT == "nightly-retrain/nightly"


def test_stale_pid_file_is_removed_not_acted_on(tmp_path):
    cfg = stack.StackConfig(home=tmp_path)
    cfg.run_dir.mkdir(parents=True)
    # A live pid that is not the one we started (its start time differs; recycled pids look
    # like this): down must not signal it. The start time "x" can never match a real one.
    me = os.getpid()
    (cfg.run_dir / "worker.pid").write_text(json.dumps({"pid": me, "pgid": me, "starttime": "x"}))
    (cfg.run_dir / "mlflow.pid").write_text("garbage")
    result = stack.down(cfg)
    assert "stale" in result["worker"] and "stale" in result["mlflow"]
    assert result["prefect"] == "not running"
    assert not list(cfg.run_dir.glob("*.pid"))
    # and the process is untouched
    assert stack._proc_stat(me) is not None


def test_the_hint_make_up_prints_is_a_valid_quick_first_night():
    """`make up` ends with a command for a first night (tests/e2e/test_stack.py runs it as
    printed): one known architecture, automatic approval, a date `recloop generate` covers."""
    import shlex

    from models import ARCHITECTURES

    words = shlex.split(stack.run_hint("http://127.0.0.1:4200/api"))
    assert words[0] == "PREFECT_API_URL=http://127.0.0.1:4200/api" and words[2:5] == ["deployment", "run", stack.DEPLOYMENT]
    params = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--param")
    assert json.loads(params["architectures"]) == ["wide_deep"] and "wide_deep" in ARCHITECTURES
    assert params["approval_mode"] == "auto" and params["run_date"] == stack.HINT_RUN_DATE
    assert "--watch" in words
