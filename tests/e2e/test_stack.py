"""The served stack, for real: `python -m flows.stack up` starts a Prefect server and an MLflow
server (both on a fresh PostgreSQL database when one answers on 127.0.0.1:5432, else on their
SQLite files), a process worker and the `nightly` deployment from prefect.yaml, on free loopback
ports, with RECLOOP_HOME in a temporary directory. The module always stops the stack and drops
its databases, also when a test fails."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import mlflow_ui  # tests/e2e/mlflow_ui.py, the page reader
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("RECLOOP_E2E_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMEZONE = "America/New_York"  # not prefect.yaml's default: shows the override reaches the server
DATASET = "synthetic_clicks"
MODEL = "synthetic_clicks-ranker"
ARTIFACTS = Path(os.environ.get("RECLOOP_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg(sql: list[str]) -> bool:
    """Run admin statements on the local PostgreSQL; False when none answers."""
    import asyncpg

    async def go():
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            for stmt in sql:
                await conn.execute(stmt)
        finally:
            await conn.close()

    try:
        asyncio.run(go())
        return True
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False


class Stack:
    def __init__(self, home: Path, env: dict[str, str], db: str | None):
        self.home, self.env, self.db = home, env, db
        self.api = f"http://127.0.0.1:{env['RECLOOP_PREFECT_PORT']}/api"
        self.mlflow = f"http://127.0.0.1:{env['RECLOOP_MLFLOW_PORT']}"
        self.env["PREFECT_API_URL"] = self.api

    def api_call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def flow_run(self, run_id: str) -> dict:
        return self.api_call("GET", f"/flow_runs/{run_id}")

    def deployment(self) -> dict:
        return self.api_call("GET", "/deployments/name/nightly-retrain/nightly")

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)

    def logs(self) -> str:
        out = []
        for log in sorted((self.home / "stack").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(out)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from feature_store.generators.synthetic import generate_synthetic

    home = tmp_path_factory.mktemp("stack") / "home"
    generate_synthetic(home / "data", start=date(2026, 1, 1), days=6, rows_per_day=3000, seed=7)
    db = f"recloop_e2e_{uuid.uuid4().hex[:10]}"
    if not _pg([f'CREATE DATABASE "{db}"']):
        db = None  # no PostgreSQL here: the same stack on SQLite files
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECLOOP_", "PREFECT_API_", "MLFLOW_TRACKING_", "MLFLOW_REGISTRY_"))}
    env.update({
        "RECLOOP_HOME": str(home),
        "RECLOOP_SETTINGS_FILE": str(home / "absent.env"),
        "PREFECT_HOME": str(home / "prefect"),
        "RECLOOP_PREFECT_PORT": str(_free_port()),
        "RECLOOP_MLFLOW_PORT": str(_free_port()),
        "RECLOOP_SCHEDULE_TIMEZONE": TIMEZONE,
        # Small, quick nights; the gate is relaxed: this module tests the plumbing, not the models.
        "RECLOOP_WINDOW_DAYS": "4",
        "RECLOOP_EPOCHS": "2",
        "RECLOOP_BOOTSTRAP_SAMPLES": "50",
        "RECLOOP_MIN_AUC": "0.5",
        "RECLOOP_CALIBRATION_BOUNDS": "[0.2, 5.0]",
        "RECLOOP_AUC_TOLERANCE": "1.0",
        "RECLOOP_LOGLOSS_TOLERANCE": "1.0",
        # A quick scheduler and worker poll, so the test does not wait on default intervals.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    if db:
        env["RECLOOP_DB_URL"] = f"postgresql://postgres@127.0.0.1:5432/{db}"
    st = Stack(home, env, db)
    try:
        t0 = time.monotonic()
        up = subprocess.run([sys.executable, "-m", "flows.stack", "up"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=400)
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}\n{st.logs()}"
        print(f"stack up in {time.monotonic() - t0:.1f} s:\n{up.stdout}")
        yield st
    finally:
        down = subprocess.run([sys.executable, "-m", "flows.stack", "down"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        print(down.stdout, down.stderr)
        if db:
            _pg([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                 for name in (db, f"{db}_prefect", f"{db}_mlflow")])


def _wait_terminal(st: Stack, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = st.flow_run(run_id)
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} not finished after {timeout} s: {run['state_name']}\n{st.logs()}")


def test_nightly_schedule_is_0200_in_the_configured_time_zone(stack):
    dep = stack.deployment()
    (sched,) = dep["schedules"]
    assert sched["schedule"]["cron"] == "0 2 * * *"
    assert sched["schedule"]["timezone"] == TIMEZONE
    assert dep["parameters"]["approval_mode"] == "manual"
    assert dep["parameters"]["architectures"] == ["wide", "deep", "wide_deep"]
    assert dep["work_pool_name"] == "recloop-process"
    assert dep["global_concurrency_limit"]["limit"] == 1

    # The scheduler service turns the cron into Scheduled runs: read them from the API.
    body = {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 5}
    deadline = time.monotonic() + 90
    runs = []
    while time.monotonic() < deadline and len(runs) < 3:
        runs = [r for r in stack.api_call("POST", "/flow_runs/filter", body) if r["auto_scheduled"]]
        time.sleep(2)
    assert len(runs) >= 3, f"no scheduled runs after 90 s\n{stack.logs()}"
    local = [datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")).astimezone(ZoneInfo(TIMEZONE))
             for r in runs]
    assert all((t.hour, t.minute) == (2, 0) for t in local), local
    assert len({t.date() for t in local}) == len(local)  # one per night

    # Keep the real nightly runs out of the way of the other tests: deactivate the schedule
    # and remove the runs it made.
    stack.api_call("PATCH", f"/deployments/{dep['id']}/schedules/{sched['id']}", {"active": False})
    for r in stack.api_call("POST", "/flow_runs/filter", body):
        stack.api_call("DELETE", f"/flow_runs/{r['id']}")


def test_deployment_run_on_the_worker_promotes_a_champion_in_the_mlflow_server(stack):
    from mlflow import MlflowClient

    res = stack.prefect("deployment", "run", "nightly-retrain/nightly", "--param", "run_date=2026-01-06",
                        "--param", "approval_mode=auto", "--param", 'architectures=["wide"]',
                        "--watch", "--watch-timeout", "280", timeout=320)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{stack.logs()}"
    assert "Completed" in res.stdout

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["arch"] == "wide" and champion.tags["gate.passed"] == "true"
    exp = client.get_experiment_by_name(DATASET)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_date = '2026-01-06' and tags.mlflow.runName = 'night-2026-01-06'")
    assert parent.info.status == "FINISHED"


def test_a_run_for_a_date_without_data_fails_fast_with_the_reason_in_its_state(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    dep = stack.deployment()
    run = stack.api_call("POST", f"/deployments/{dep['id']}/create_flow_run",
                         {"parameters": {"run_date": "2030-01-01", "approval_mode": "auto", "architectures": ["wide"]}})
    run = _wait_terminal(stack, run["id"], timeout=180)
    assert run["state_type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "2029-12-31" in message and "staging holdout" in message, message
    exp = client.get_experiment_by_name(DATASET)
    assert not client.search_runs([exp.experiment_id], "tags.run_date = '2030-01-01'")  # stopped before tracking
    assert client.get_model_version_by_alias(MODEL, "champion").version == before


def test_concurrency_limit_one_makes_the_second_night_wait(stack):
    dep = stack.deployment()
    ids = [stack.api_call("POST", f"/deployments/{dep['id']}/create_flow_run",
                          {"parameters": {"run_date": d, "approval_mode": "auto", "architectures": ["wide"]}})["id"]
           for d in ("2026-01-06", "2026-01-07")]
    seen_waiting: set[str] = set()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        runs = [stack.flow_run(i) for i in ids]
        types = [r["state_type"] for r in runs]
        assert types.count("RUNNING") <= 1, [r["state_name"] for r in runs]
        if "RUNNING" in types:
            seen_waiting |= {r["state_name"] for r in runs if r["state_type"] in ("SCHEDULED", "PENDING")}
        if all(t in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for t in types):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"runs not finished: {[r['state_name'] for r in runs]}\n{stack.logs()}")
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
    assert seen_waiting, "never saw one run waiting while the other ran"
    # The running intervals do not overlap.
    def ts(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    first, second = sorted(runs, key=lambda r: ts(r["start_time"]))
    assert ts(second["start_time"]) >= ts(first["end_time"]), (first["end_time"], second["start_time"])
    print(f"waiting states seen: {seen_waiting}")


def _start_manual_night(stack, run_date: str, **parameters) -> str:
    """A manual-mode night (the deployment's default mode) on the worker, waited on until it
    pauses for a decision."""
    dep = stack.deployment()
    run_id = stack.api_call("POST", f"/deployments/{dep['id']}/create_flow_run",
                            {"parameters": {"run_date": run_date, "architectures": ["wide"], **parameters}})["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run = stack.flow_run(run_id)
        if run["state_type"] in ("PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    assert run["state_type"] == "PAUSED", f"{run['state']}\n{stack.logs()}"
    return run_id


def _recloop(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**stack.env, "RECLOOP_TRACKING_URI": stack.mlflow}
    return subprocess.run([str(BIN / "recloop"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_manual_mode_pauses_and_recloop_approve_moves_the_champion(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    run_id = _start_manual_night(stack, "2026-01-07")  # approval_mode not passed: manual
    res = _recloop(stack, "approve", run_id, "--reviewer", "e2e-reviewer", "--reason", "served-stack test")
    assert res.returncode == 0, res.stdout + res.stderr
    run = _wait_terminal(stack, run_id, timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version != before
    assert champion.tags["approval.by"] == "e2e-reviewer"
    assert champion.tags["previous_champion"] == str(before)


def test_a_rejected_night_keeps_the_champion_then_rollback_restores_the_previous_one(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    run_id = _start_manual_night(stack, "2026-01-06")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    res = _recloop(stack, "reject", run_id, "--reviewer", "e2e-bob", "--reason", "calibration drifted")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _wait_terminal(stack, run_id, timeout=180)["state_type"] == "COMPLETED"
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version
    tags = client.get_model_version(MODEL, challenger.version).tags
    assert (tags["approval.decision"], tags["approval.by"], tags["approval.reason"]) == (
        "rejected", "e2e-bob", "calibration drifted")
    assert tags["approval.flow_run_id"] == run_id

    res = _recloop(stack, "rollback", DATASET, "--reviewer", "e2e-carol", "--reason", "CTR dropped")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = client.get_model_version_by_alias(MODEL, "champion")
    assert restored.version == champion.tags["previous_champion"]
    assert restored.tags["rollback.by"] == "e2e-carol" and restored.tags["rollback.role"] == "restored"


def test_a_night_nobody_decides_on_times_out_without_promotion(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    run_id = _start_manual_night(stack, "2026-01-06", approval_timeout_s=20)
    challenger = client.get_model_version_by_alias(MODEL, "challenger").version
    run = _wait_terminal(stack, run_id, timeout=240)
    # Failed whichever comes first: the server's pause-expiration loop or the flow's own end.
    assert run["state_type"] == "FAILED", run["state"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == before
    tags = client.get_model_version(MODEL, challenger).tags
    assert tags["approval.decision"] == "timeout" and tags["approval.by"] == "nobody"
    late = _recloop(stack, "approve", run_id, "--reviewer", "e2e-late")
    assert late.returncode == 1 and "is not paused" in late.stdout + late.stderr


def test_the_mlflow_ui_compares_a_nights_child_runs_in_headless_chromium(stack):
    """A reviewer opens the night's child runs side by side in the MLflow UI: same params and
    metrics on every run, the champion's staging numbers next to the challenger's, tags for the
    data window and the code version. The page is read in a real browser; the screenshot is kept
    in $RECLOOP_TEST_ARTIFACTS (default test-artifacts/)."""
    from mlflow import MlflowClient

    why_not = mlflow_ui.chromium_available()
    if why_not:
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium is required in CI: {why_not}")
        pytest.skip(why_not)
    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")  # earlier tests made one
    dep = stack.deployment()
    flow_run_id = stack.api_call("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {
        "run_date": "2026-01-06", "approval_mode": "auto", "architectures": ["wide", "deep"]}})["id"]
    run = _wait_terminal(stack, flow_run_id, timeout=300)
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{stack.logs()}"

    exp = client.get_experiment_by_name(DATASET)
    runs = client.search_runs([exp.experiment_id], f"tags.flow_run_id = '{flow_run_id}'")
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in children] == ["deep", "wide"]
    deep, wide = children
    # The same metric keys and the same run-level params; `hp.*` are each architecture's own.
    assert set(deep.data.metrics) == set(wide.data.metrics)
    shared = {k for k in wide.data.params if not k.startswith("hp.")}
    assert shared == {k for k in deep.data.params if not k.startswith("hp.")} and "train.epochs" in shared
    for r in children:  # the champion of that night was scored on the same staging day
        assert r.data.tags["champion_version"] == str(champion.version)
        assert r.data.metrics["champion_staging_auc"] == wide.data.metrics["champion_staging_auc"]

    shot = ARTIFACTS / f"mlflow-compare-{flow_run_id}.png"
    page = mlflow_ui.read_compare_page(stack.mlflow, exp.experiment_id, [wide.info.run_id, deep.info.run_id],
                                       screenshot=shot)
    print(f"compare page {page.url}\nscreenshot {shot}\nmetrics shown: {page.metrics}")
    assert page.runs == [wide.info.run_id, deep.info.run_id]
    for key in ("val_auc", "val_logloss", "staging_auc", "staging_logloss", "champion_staging_auc",
                "champion_staging_logloss", "delta_auc"):
        for r in children:
            shown, stored = page.metric(key, r.info.run_id), r.data.metrics[key]
            assert shown == pytest.approx(stored, rel=5e-3, abs=5e-4), (key, r.info.run_name, shown, stored)
    assert page.rows["arch"] == ["wide", "deep"]
    for tag in ("data_window", "code_version", "staging_day"):
        assert page.rows[tag] == [wide.data.tags[tag], deep.data.tags[tag]], (tag, page.rows.get(tag))
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
