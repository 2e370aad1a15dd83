"""The served stack, for real: `python -m flows.stack up` starts a Prefect server and an MLflow
server (both on PostgreSQL when one answers on 127.0.0.1:5432, in two databases created from a
RECLOOP_DB_URL whose own database does not exist; else on their SQLite files), a process worker
and the `nightly` deployment from prefect.yaml, on free loopback ports, with RECLOOP_HOME in a
temporary directory. The module always stops the stack and drops its databases, also when a
test fails.

`recloop` is called as a user would after `make up`: no RECLOOP_TRACKING_URI, no PREFECT_API_URL
(it finds the stack of its RECLOOP_HOME). The nights use strictly increasing run dates."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
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
import prefect_ui  # tests/e2e/prefect_ui.py, the resume form reader
import pytest
from webhook_receiver import WebhookReceiver  # tests/webhook_receiver.py

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("RECLOOP_E2E_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TIMEZONE = "America/New_York"  # not prefect.yaml's default: shows the override reaches the server
DATASET = "synthetic_clicks"
MODEL = "synthetic_clicks-ranker"
ARTIFACTS = Path(os.environ.get("RECLOOP_TEST_ARTIFACTS", REPO / "test-artifacts"))
# The flow engine renews a deployment run's concurrency lease when the run starts and every
# 0.75 x 300 s (a literal in Prefect 3.8.8's flow_engine.py, no setting shortens it): a pause
# that outlives this has survived one renewal.
LEASE_RENEWAL_S = 225
LONG_PAUSE_S = 240
HANDOFF: dict[str, str] = {}  # the night that waits behind the long pause, for the next test


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
    def __init__(self, home: Path, env: dict[str, str], db: str | None, hook: WebhookReceiver):
        self.home, self.env, self.db = home, env, db
        self.hook = hook  # receives the alerts of the worker's nights and of the CLI
        self.ui = f"http://127.0.0.1:{env['RECLOOP_PREFECT_PORT']}"
        self.api = f"{self.ui}/api"
        self.mlflow = f"http://127.0.0.1:{env['RECLOOP_MLFLOW_PORT']}"
        self.user_env = dict(env)  # what a user has after `make up`: no server addresses
        self.env["PREFECT_API_URL"] = self.api
        self.up_output = ""

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

    def create_night(self, run_date: str, **parameters) -> str:
        """A run of the deployment (manual approval and one architecture unless told)."""
        dep = self.deployment()
        return self.api_call("POST", f"/deployments/{dep['id']}/create_flow_run", {
            "parameters": {"run_date": run_date, "architectures": ["wide"], **parameters}})["id"]

    def approval_runs(self, night_id: str) -> list[dict]:
        body = {"flows": {"name": {"any_": ["nightly-approval"]}},
                "flow_runs": {"parent_flow_run_id": {"any_": [night_id]}}, "sort": "START_TIME_DESC", "limit": 5}
        return self.api_call("POST", "/flow_runs/filter", body)

    def log(self, name: str) -> str:
        return (self.home / "stack" / f"{name}.log").read_text(errors="replace")

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
    # 2026-01-01..14: nights from 2026-01-10 (the hint `make up` prints) to 2026-01-14.
    generate_synthetic(home / "data", start=date(2026, 1, 1), days=14, rows_per_day=3000, seed=7)
    # Not created here: `make up` must create <db>_prefect and <db>_mlflow without it.
    db = f"recloop_e2e_{uuid.uuid4().hex[:10]}"
    if not _pg(["SELECT 1"]):
        db = None  # no PostgreSQL here: the same stack on SQLite files
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECLOOP_", "PREFECT_API_", "MLFLOW_TRACKING_", "MLFLOW_REGISTRY_"))}
    # Alerts go to a receiver on loopback: the worker (hence every night) and the CLI inherit it.
    hook = WebhookReceiver().__enter__()
    env.update({
        "RECLOOP_ALERTS_WEBHOOK_URL": hook.url,
        "RECLOOP_HOME": str(home),
        "RECLOOP_SETTINGS_FILE": str(home / "absent.env"),
        "PREFECT_HOME": str(home / "prefect"),
        "RECLOOP_PREFECT_PORT": str(_free_port()),
        "RECLOOP_MLFLOW_PORT": str(_free_port()),
        "RECLOOP_SCHEDULE_TIMEZONE": TIMEZONE,
        # Small, quick nights; the gate is relaxed: this module tests the plumbing, not the models.
        "RECLOOP_WINDOW_DAYS": "4",
        "RECLOOP_TRAIN_EPOCHS": "2",
        "RECLOOP_GATE_BOOTSTRAP_SAMPLES": "50",
        "RECLOOP_GATE_MIN_AUC": "0.5",
        "RECLOOP_GATE_CALIBRATION_BOUNDS": "[0.2, 5.0]",
        "RECLOOP_GATE_AUC_TOLERANCE": "1.0",
        "RECLOOP_GATE_LOGLOSS_TOLERANCE": "1.0",
        "RECLOOP_APPROVAL_POLL_S": "2",
        # No retrieval stage: in manual mode a retriever that passes its gate waits for a second
        # decision after the ranker's, and whether it passes against tonight's retriever champion
        # depends on the data. This module's nights test the ranker's approval plumbing; retriever
        # approval runs the same subflow (tests/integration/test_retriever_approval.py).
        "RECLOOP_RETRIEVAL_ENABLED": "false",
        # A quick scheduler and worker poll, so the test does not wait on default intervals.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        # A night that found the deployment's slot taken asks again after 5 s, not 30.
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
        # The server's access log (uvicorn, INFO) shows each lease renewal and its status.
        "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    if db:
        env["RECLOOP_DB_URL"] = f"postgresql://postgres@127.0.0.1:5432/{db}"
    st = Stack(home, env, db, hook)
    try:
        t0 = time.monotonic()
        up = subprocess.run([sys.executable, "-m", "flows.stack", "up"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=400)
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}\n{st.logs()}"
        print(f"stack up in {time.monotonic() - t0:.1f} s:\n{up.stdout}")
        if db:
            assert f"created databases {db}_prefect, {db}_mlflow" in up.stdout, up.stdout
        st.up_output = up.stdout
        yield st
    finally:
        down = subprocess.run([sys.executable, "-m", "flows.stack", "down"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        print(down.stdout, down.stderr)
        if db:
            _pg([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                 for name in (db, f"{db}_prefect", f"{db}_mlflow")])
        hook.__exit__(None, None, None)


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


def _alert(stack, event: str, flow_run_id: str | None = None, timeout: float = 60, **fields: str) -> dict:
    """The alert of `event` the receiver got (for the flow run `flow_run_id`, with these fields)."""
    def match(body: dict) -> bool:
        return ((flow_run_id is None or body.get("flow_run_url", "").endswith(f"/runs/flow-run/{flow_run_id}"))
                and all(body.get(k) == v for k, v in fields.items()))

    return stack.hook.wait_for(event, match, timeout)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _recloop(stack, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it next to `make up`: no server addresses in the environment."""
    return subprocess.run([str(BIN / "recloop"), *args], env=stack.user_env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def _wait_for_approval(stack, night_id: str, timeout: float = 300) -> str:
    """Wait until the night waits for a decision: its `nightly-approval` subflow run is Paused
    while the night itself stays Running. Returns the approval run's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        night = stack.flow_run(night_id)
        paused = [r for r in stack.approval_runs(night_id) if r["state_type"] == "PAUSED"]
        if paused:
            assert night["state_type"] == "RUNNING", night["state"]
            return paused[0]["id"]
        if night["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    raise AssertionError(f"night {night_id} did not wait for approval: {night['state']}\n{stack.logs()}")


def test_the_hint_make_up_prints_runs_a_first_night_as_printed(stack):
    """`make up` ends with the command for a first night; run as printed (no other variables),
    it promotes a champion in the MLflow server's registry, and `recloop status` (again without
    variables) reads that registry, not a stray local one."""
    from mlflow import MlflowClient

    (hint,) = [line.removeprefix("run a night: ") for line in stack.up_output.splitlines()
               if line.startswith("run a night: ")]
    assert "--param architectures='[\"wide_deep\"]'" in hint and "--param run_date=2026-01-10" in hint, hint
    res = subprocess.run(["bash", "-c", hint], env=stack.user_env, cwd=REPO, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0 and "Completed" in res.stdout, f"{res.stdout}\n{res.stderr}\n{stack.logs()}"

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["arch"] == "wide_deep" and champion.tags["gate.passed"] == "true"
    exp = client.get_experiment_by_name(DATASET)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_date = '2026-01-10' and tags.mlflow.runName = 'night-2026-01-10'")
    assert parent.info.status == "FINISHED"
    # The promotion alert, with links that work from the receiver's side.
    flow_run_id = parent.data.tags["flow_run_id"]
    alert = _alert(stack, "promoted", flow_run_id)
    assert alert["flow_run_url"] == f"{stack.ui}/runs/flow-run/{flow_run_id}"
    assert alert["mlflow_run"] == f"{stack.mlflow}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
    assert (alert["version"], alert["arch"], alert["champion_after"]) == (str(champion.version), "wide_deep",
                                                                         str(champion.version))
    assert alert["run_date"] == "2026-01-10" and "Reason: by auto-gate: staging gate passed" in alert["body"]
    print(f"promotion alert:\n{alert['text']}")

    status = _recloop(stack, "status", "--dataset", DATASET)
    assert status.returncode == 0, status.stdout + status.stderr
    (row,) = [line for line in status.stdout.splitlines() if " champion " in line]
    assert f" v{champion.version} " in row and "wide_deep" in row, status.stdout
    assert not list(stack.home.glob("*.db")), list(stack.home.glob("*.db"))  # no stray mlflow.db


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
    alert = _alert(stack, "failed", run["id"])
    assert (alert["run_date"], alert["state"], alert["champion_after"]) == ("2030-01-01", "Failed", str(before))
    assert "2029-12-31" in alert["body"] and "staging holdout" in alert["body"], alert["body"]
    print(f"failure alert:\n{alert['text']}")
    exp = client.get_experiment_by_name(DATASET)
    assert not client.search_runs([exp.experiment_id], "tags.run_date = '2030-01-01'")  # stopped before tracking
    assert client.get_model_version_by_alias(MODEL, "champion").version == before


def test_a_manual_night_outlives_its_lease_renewal_while_a_second_night_waits(stack):
    """The issue's defect: a paused night crashed at its first lease renewal (~225 s after it
    started). Now the night stays Running past it, renewing its concurrency lease (the server's
    access log shows every renewal answered 204), while a second night of the deployment waits
    in AwaitingConcurrencySlot; the reviewer's wait is used for `recloop pending`, the resume
    form in the Prefect UI, the MLflow UI's comparison of the night's models and the refusals.
    Approved after >= 240 s, it promotes as documented, and only then does the second night
    start."""
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    # approval_mode not passed: the deployment's manual. Two architectures, for the MLflow page.
    first = stack.create_night("2026-01-11", architectures=["wide", "deep"])
    waiting = _wait_for_approval(stack, first)
    second = stack.create_night("2026-01-12")
    version = client.get_model_version_by_alias(MODEL, "challenger").version
    tags = client.get_model_version(MODEL, version).tags
    assert (tags["approval.decision"], tags["approval.flow_run_id"], tags["approval.night_run_id"]) == (
        "pending", waiting, first)
    assert stack.flow_run(waiting)["name"] == f"approve-{DATASET}-v{version}"

    listed = _recloop(stack, "pending")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    out = " ".join(listed.stdout.split())
    assert waiting in out and f"{MODEL} v{version}" in out and f"{first} (Running)" in out, listed.stdout
    _check_resume_form(stack, waiting, version)
    _check_compare_page(stack, first, before)

    started = _ts(stack.flow_run(first)["start_time"])
    states: set[str] = set()
    while (datetime.now(started.tzinfo) - started).total_seconds() < LONG_PAUSE_S:
        night, paused, behind = stack.flow_run(first), stack.flow_run(waiting), stack.flow_run(second)
        assert night["state_type"] == "RUNNING", f"{night['state']}\n{stack.logs()}"
        assert paused["state_type"] == "PAUSED", paused["state"]
        assert behind["state_type"] not in ("PENDING", "RUNNING"), behind["state"]
        states.add(behind["state_name"])
        time.sleep(2)
    assert stack.flow_run(second)["state_name"] == "AwaitingConcurrencySlot", states
    eager = _recloop(stack, "approve", second, "--reviewer", "e2e-eager")
    assert eager.returncode == 1 and "is not waiting for approval: it is AwaitingConcurrencySlot" in eager.stdout, (
        eager.stdout + eager.stderr)

    # The lease was renewed past its first renewal interval, and never refused.
    lease = stack.flow_run(first)["state"]["state_details"]["deployment_concurrency_lease_id"]
    renewals = re.findall(rf'"POST /api/v2/concurrency_limits/leases/{lease}/renew HTTP/1.1" (\d+)', stack.log("prefect"))
    assert len(renewals) >= 2 and set(renewals) == {"204"}, renewals
    assert "410 Gone" not in stack.log("worker") and "Lease not found" not in stack.log("worker")
    print(f"lease {lease}: {len(renewals)} renewals, all 204; second night was {sorted(states)}")

    res = _recloop(stack, "approve", waiting, "--reviewer", "e2e-reviewer", "--reason", "served-stack test")
    assert res.returncode == 0, res.stdout + res.stderr
    night = _wait_terminal(stack, first, timeout=180)
    assert night["state_type"] == "COMPLETED", night["state"]
    assert stack.flow_run(waiting)["state_type"] == "COMPLETED"
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == version != before
    assert (champion.tags["approval.decision"], champion.tags["approval.by"]) == ("approved", "e2e-reviewer")
    assert champion.tags["approval.flow_run_id"] == waiting and champion.tags["previous_champion"] == str(before)
    alert = _alert(stack, "promoted", first)
    assert (alert["champion_before"], alert["champion_after"]) == (str(before), str(version))
    assert "Reason: by e2e-reviewer: served-stack test" in alert["body"], alert["body"]

    # The second night starts once the first has finished, never alongside it.
    deadline = time.monotonic() + 120
    while stack.flow_run(second)["start_time"] is None and time.monotonic() < deadline:
        time.sleep(1)
    behind = stack.flow_run(second)
    assert behind["start_time"], behind["state"]
    assert _ts(behind["start_time"]) >= _ts(night["end_time"]), (behind["start_time"], night["end_time"])
    HANDOFF["night"] = second


def _check_resume_form(stack, waiting: str, version: str) -> None:
    """The comparison in the UI's Resume form fits: nothing in its markdown scrolls sideways."""
    why_not = mlflow_ui.chromium_available()
    if why_not:
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium is required in CI: {why_not}")
        print(f"resume form not checked in a browser: {why_not}")
        return
    shot = ARTIFACTS / f"prefect-resume-form-{waiting}.png"
    form = prefect_ui.read_resume_form(stack.ui, waiting, f"Approval needed: {MODEL} v{version}", shot)
    print(f"resume form {form.url}: markdown {form.scroll_width}/{form.width} px in a {form.modal_width} px "
          f"modal; screenshot {shot}")
    assert form.overflowing == [] and form.scroll_width <= form.width, form.overflowing
    assert "Δ AUC" in form.text and "95% CI" in form.text and "champion v" in form.text
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def _flow_processes(night_id: str) -> list[int]:
    """The processes running a flow run: the worker starts them with PREFECT__FLOW_RUN_ID set."""
    marker, found = f"PREFECT__FLOW_RUN_ID={night_id}".encode(), []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_a_night_killed_while_it_waits_leaves_its_version_marked_crashed(stack):
    """kill -9 of the night's process while its challenger waits: the worker reports the night
    Crashed; the version ends `crashed` with the reason, loses `challenger`, the night's MLflow
    run says why, the orphaned approval run no longer offers Resume, and `recloop pending` says
    so. (The worker runs the night's on_crashed hook; `pending` reconciles if it did not.)"""
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    night = HANDOFF.get("night") or stack.create_night("2026-01-12")
    waiting = _wait_for_approval(stack, night)
    version = client.get_model_version_by_alias(MODEL, "challenger").version
    pids = _flow_processes(night)
    assert pids, f"no process with PREFECT__FLOW_RUN_ID={night}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert _wait_terminal(stack, night, timeout=120)["state_type"] == "CRASHED"

    listed = _recloop(stack, "pending")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    out = " ".join(listed.stdout.split())
    assert f"{MODEL} v{version} was not decided on: approval.decision=crashed" in out and night in out, listed.stdout
    tags = client.get_model_version(MODEL, version).tags
    assert tags["approval.decision"] == "crashed" and tags["approval.reason"].startswith(f"flow run {night} is Crashed")
    with pytest.raises(Exception, match="alias"):
        client.get_model_version_by_alias(MODEL, "challenger")
    parent = client.get_run(tags["parent_run_id"])
    assert parent.info.status == "FAILED" and night in parent.data.tags["failure.reason"]
    deadline = time.monotonic() + 60  # the worker's hook may still be on its way
    while stack.flow_run(waiting)["state_type"] != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(1)
    assert stack.flow_run(waiting)["state_type"] == "CANCELLED", stack.flow_run(waiting)["state"]
    late = _recloop(stack, "approve", waiting, "--reviewer", "e2e-late")
    assert late.returncode == 1 and "is not paused: it is Cancelled" in late.stdout, late.stdout + late.stderr
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    print(f"reason: {tags['approval.reason']}")
    # The worker ran the night's on_crashed hook: the alert names the version that was waiting.
    alert = _alert(stack, "failed", night, timeout=120)
    assert (alert["state"], alert["version"], alert["champion_after"]) == ("Crashed", str(version), str(champion))


def test_a_rejected_night_keeps_the_champion_then_rollback_restores_the_previous_one(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    night = stack.create_night("2026-01-13")
    waiting = _wait_for_approval(stack, night)
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    res = _recloop(stack, "reject", waiting, "--reviewer", "e2e-bob", "--reason", "calibration drifted")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _wait_terminal(stack, night, timeout=180)["state_type"] == "COMPLETED"
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version
    tags = client.get_model_version(MODEL, challenger.version).tags
    assert (tags["approval.decision"], tags["approval.by"], tags["approval.reason"]) == (
        "rejected", "e2e-bob", "calibration drifted")
    assert tags["approval.flow_run_id"] == waiting and tags["approval.night_run_id"] == night
    alert = _alert(stack, "rejected", night, version=str(challenger.version))
    assert alert["champion_before"] == alert["champion_after"] == str(champion.version)
    assert "Reason: by e2e-bob: calibration drifted" in alert["body"], alert["body"]

    res = _recloop(stack, "rollback", DATASET, "--reviewer", "e2e-carol", "--reason", "CTR dropped")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = client.get_model_version_by_alias(MODEL, "champion")
    assert restored.version == champion.tags["previous_champion"]
    assert restored.tags["rollback.by"] == "e2e-carol" and restored.tags["rollback.role"] == "restored"
    alert = _alert(stack, "rolled_back", version=str(restored.version))
    assert (alert["champion_before"], alert["champion_after"]) == (str(champion.version), str(restored.version))
    assert "Reason: by e2e-carol: CTR dropped" in alert["body"] and "warning" not in res.stdout, res.stdout


def test_a_night_nobody_decides_on_times_out_without_promotion(stack):
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow, stack.mlflow)
    before = client.get_model_version_by_alias(MODEL, "champion").version
    night = stack.create_night("2026-01-14", approval_timeout_s=20)
    waiting = _wait_for_approval(stack, night)
    challenger = client.get_model_version_by_alias(MODEL, "challenger").version
    run = _wait_terminal(stack, night, timeout=240)
    # Failed whichever comes first: the server's pause-expiration loop or the flow's own end.
    assert run["state_type"] == "FAILED", run["state"]
    assert stack.flow_run(waiting)["state_type"] == "FAILED"
    assert client.get_model_version_by_alias(MODEL, "champion").version == before
    tags = client.get_model_version(MODEL, challenger).tags
    assert tags["approval.decision"] == "timeout" and tags["approval.by"] == "nobody"
    alert = _alert(stack, "timeout", night, version=str(challenger))
    assert "Reason: by nobody: no decision within 20 s" in alert["body"], alert["body"]
    # The night ends Failed by ApprovalExpired; its `timeout` alert says so, no `failed` one follows
    # (checked once the night's process, which runs its on_failure hook, has ended).
    deadline = time.monotonic() + 60
    while _flow_processes(night) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _flow_processes(night)
    assert not [b for b in stack.hook.events("failed") if b.get("flow_run_url", "").endswith(night)]
    late = _recloop(stack, "approve", waiting, "--reviewer", "e2e-late")
    assert late.returncode == 1 and "is not paused" in late.stdout + late.stderr


def _check_compare_page(stack, flow_run_id: str, champion_version: str) -> None:
    """A reviewer opens the waiting night's child runs side by side in the MLflow UI: same params
    and metrics on every run, the champion's staging numbers next to the challenger's, tags for
    the data window and the code version. The page is read in a real browser; the screenshot is
    kept in $RECLOOP_TEST_ARTIFACTS (default test-artifacts/)."""
    from mlflow import MlflowClient

    why_not = mlflow_ui.chromium_available()
    if why_not:
        if os.environ.get("CI"):
            pytest.fail(f"headless Chromium is required in CI: {why_not}")
        print(f"MLflow compare page not checked in a browser: {why_not}")
        return
    client = MlflowClient(stack.mlflow, stack.mlflow)
    exp = client.get_experiment_by_name(DATASET)
    runs = client.search_runs([exp.experiment_id], f"tags.flow_run_id = '{flow_run_id}'")
    # The ranking runs (retriever runs, tag stage=retrieval, are compared among themselves).
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags and r.data.tags.get("stage") != "retrieval"),
                      key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in children] == ["deep", "wide"]
    deep, wide = children
    # The same metric keys and the same run-level params; `hp.*` are each architecture's own, and
    # `dryrun_*` the selected candidate's (the night serves that one model).
    assert {k for k in deep.data.metrics if not k.startswith("dryrun_")} == {
        k for k in wide.data.metrics if not k.startswith("dryrun_")}
    shared = {k for k in wide.data.params if not k.startswith("hp.")}
    assert shared == {k for k in deep.data.params if not k.startswith("hp.")} and "train.epochs" in shared
    for r in children:  # the champion of that night was scored on the same staging day
        assert r.data.tags["champion_version"] == str(champion_version)
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
