"""Helpers for integration tests that run nights against the Prefect test server: the night's
environment, a manual night in a background thread, waiting for its approval run to pause,
reading that run."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

DATASET = "synthetic_clicks"


def night_env(mp: pytest.MonkeyPatch, home: Path, *unset: str, **settings: str) -> None:
    """Point every store of a night at `home` (RECLOOP_HOME; no settings file; the data root,
    tracking and registry URIs and the approval mode unset, with the variables in `unset`), a
    3-day window and batches of 256 (small data: enough optimizer steps in 2 epochs), then
    RECLOOP_<KEY>=value for each of `settings`."""
    mp.setenv("RECLOOP_HOME", str(home))
    mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
    mp.setenv("RECLOOP_WINDOW_DAYS", "3")
    mp.setenv("RECLOOP_TRAIN_BATCH_SIZE", "256")
    for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_APPROVAL_MODE", *unset):
        mp.delenv(var, raising=False)
    for key, value in settings.items():
        mp.setenv(f"RECLOOP_{key}", value)


class Night:
    """One manual-mode night in a background thread (the flow blocks while paused). The
    thread runs in a copy of this context, so it talks to the same Prefect test server."""

    def __init__(self, loop, run_date: date, timeout_s: int = 600):
        self.result: dict = {}
        self.error: BaseException | None = None

        def target():
            try:
                self.result = loop["flow"](run_date=run_date, dataset=DATASET, architectures=["wide"], epochs=2,
                                           approval_mode="manual", approval_timeout_s=timeout_s)
            except BaseException as exc:  # surfaced by finish()
                self.error = exc

        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
        self.thread.start()

    def finish(self, timeout: float = 120):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the flow did not finish after the decision"
        if self.error is not None:
            raise self.error
        return self.result


def paused_run_ids() -> set[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=50)
    return {str(r.id) for r in runs if r.state.state_details.pause_timeout.timestamp() > time.time()}


def wait_until_paused(night: Night, before: set[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = paused_run_ids() - before
        if new:
            (run_id,) = new
            return run_id
        if not night.thread.is_alive():
            night.finish(0)
            pytest.fail(f"the flow ended without pausing: {night.result.get('notes')}")
        time.sleep(0.5)
    pytest.fail("the flow did not pause for approval in time")


def flow_run(run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def flow_run_state(run_id: str):
    return flow_run(run_id).state


def night_of(run_id: str) -> str:
    """The night (parent flow run) an approval run belongs to."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
        return str(client.read_task_run(run.parent_task_run_id).flow_run_id)


def approval_artifact(run_id: str, key: str = "synthetic-clicks-approval") -> str:
    """The markdown the flow published for the reviewer. Raw filter request: this Prefect
    server answers 422 to the client's null defaults, and empty task/flow-run filter objects
    turn into joins that drop flow-level artifacts."""
    from prefect import get_client

    body = {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}},
            "limit": 5}
    with get_client(sync_client=True) as client:
        found = client.request("POST", "/artifacts/filter", json=body).json()
    assert len(found) == 1 and found[0]["type"] == "markdown", found
    return found[0]["data"]


def cli(loop, *args: str):
    return CliRunner().invoke(loop["app"], list(args))
