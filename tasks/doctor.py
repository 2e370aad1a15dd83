"""Put right what a night that died mid-way left behind (`recloop doctor`, and every night
before it starts, under the dataset lock).

A process can die at any instruction (OOM killer, a lost machine, kill -9). What it can leave:
- MLflow runs still RUNNING, and its Prefect flow run still Running (nobody will end them);
- an interrupted champion move: an intent tag without the move, or `champion` moved without
  the tags that describe the move (see `registry.finish_move`);
- `champion` and `challenger` on the same version;
- a version registered without a gate result (only registries written before versions were
  created with their gate tags in one write);
- a version whose served dry run never finished (`dryrun.result=pending`: registered, not
  passed, not challenger; the repair records why);
- a challenger waiting for approval on a night that no longer exists (`approval.reconcile_abandoned`).
Each repair is reported; a run is only ended when its process is known to be dead: it ran on
this host and its pid is gone (or was reused), or its Prefect flow run is over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import approval, registry, tracking
from tasks.dryrun import INTERRUPTED, PENDING
from tasks.lock import Holder

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ACTIVE = {"RUNNING", "PENDING", "PAUSED", "CANCELLING", "SCHEDULED"}
ENDED_BY = "recloop.ended_by"


@dataclass(frozen=True)
class Repair:
    what: str
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.what}: {self.subject} ({self.detail})"


class FlowRuns:
    """The Prefect side, over one sync client: read a flow run's state, mark a dead run Crashed,
    end a paused approval run nobody waits on. Unreachable API: states are unknown (None) and
    nothing is marked."""

    def __init__(self) -> None:
        self._client = None

    def _get(self):
        if self._client is None:
            from prefect import get_client

            self._client = get_client(sync_client=True)
            self._client.__enter__()
        return self._client

    def read(self, flow_run_id: str) -> approval.RunState | None:
        """The run's state, None when the API has no such run; raises when the API is unreachable."""
        return approval.prefect_run_states(self._get())(flow_run_id)

    def state(self, flow_run_id: str) -> str | None:
        """The state type ("MISSING" when the API has no such run), None when unknown."""
        try:
            found = self.read(flow_run_id)
        except Exception:  # no API here: unknown
            return None
        return "MISSING" if found is None else found.type

    def crash(self, flow_run_id: str, message: str) -> bool:
        from uuid import UUID

        from prefect.states import Crashed

        try:
            self._get().set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
            return True
        except Exception:
            return False

    def close_waiting(self, flow_run_id: str, why: str) -> None:
        approval.prefect_close_run(self._get())(flow_run_id, why)

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None


def dead_reason(tags: dict[str, str], flow_runs: FlowRuns | None, stale: Holder | None,
                run_id: str) -> str | None:
    """Why the process behind a RUNNING run is known to be dead, or None if it may be alive."""
    if stale is not None and (run_id == stale.parent_run_id or
                              (stale.flow_run_id and tags.get("flow_run_id") == stale.flow_run_id)):
        return f"its night (pid {stale.pid} on {stale.host}) died holding the dataset lock"
    alive = tracking.process_alive(tags)
    if alive is False:
        return f"process {tags.get(tracking.PROCESS_PID)} on {tags.get(tracking.PROCESS_HOST)} is gone"
    if alive is None and flow_runs is not None and tags.get("flow_run_id"):
        state = flow_runs.state(tags["flow_run_id"])
        if state in TERMINAL or state == "MISSING":
            return f"its Prefect flow run {tags['flow_run_id']} is {state.lower()}"
    return None


def end_dead_runs(client: MlflowClient, dataset: str, flow_runs: FlowRuns | None,
                  stale: Holder | None) -> list[Repair]:
    exp = client.get_experiment_by_name(dataset)
    if exp is None:
        return []
    repairs = []
    crashed_flow_runs: set[str] = set()
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        reason = dead_reason(tags, flow_runs, stale, run.info.run_id)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ENDED_BY, f"recloop doctor at {registry.utc_stamp()}: {reason}")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        repairs.append(Repair("ended run", f"{run.info.run_name} {run.info.run_id}", f"KILLED: {reason}"))
        flow_run_id = tags.get("flow_run_id")
        if flow_runs is not None and flow_run_id and flow_run_id not in crashed_flow_runs:
            crashed_flow_runs.add(flow_run_id)
            if flow_runs.state(flow_run_id) in ACTIVE and flow_runs.crash(flow_run_id, f"recloop doctor: {reason}"):
                repairs.append(Repair("crashed flow run", flow_run_id, reason))
    return repairs


def repair_registry(client: MlflowClient, name: str) -> list[Repair]:
    repairs = []
    champion = registry.alias_version(client, name, registry.CHAMPION)
    for mv, intent in registry.pending_moves(client, name):
        if champion is not None and str(champion.version) == str(mv.version):
            registry.finish_move(client, name, str(mv.version), intent)
            repairs.append(Repair(f"completed {intent['kind']}", f"{name} v{mv.version}",
                                  f"champion had moved; wrote the tags of the move by {intent['by']}"))
        else:
            registry.drop_intent(client, name, str(mv.version))
            repairs.append(Repair(f"withdrew {intent['kind']}", f"{name} v{mv.version}",
                                  "the process died before `champion` moved; nothing changed"))
    champion = registry.alias_version(client, name, registry.CHAMPION)
    challenger = registry.alias_version(client, name, registry.CHALLENGER)
    if champion is not None and challenger is not None and champion.version == challenger.version:
        registry.remove_alias_if(client, name, registry.CHALLENGER, str(challenger.version))
        repairs.append(Repair("removed alias", f"{name}@challenger", f"it pointed at champion v{champion.version}"))
    for mv in registry.all_versions(client, name):
        if "gate.verdict" not in mv.tags:
            registry.set_tags(client, name, str(mv.version), {
                "gate.verdict": "incomplete (registered without a gate result)", "gate.passed": "false"})
            if registry.remove_alias_if(client, name, registry.CHALLENGER, str(mv.version)):
                repairs.append(Repair("removed alias", f"{name}@challenger", f"v{mv.version} has no gate result"))
            repairs.append(Repair("marked incomplete", f"{name} v{mv.version}", "no gate tags: never promotable"))
        elif mv.tags.get("dryrun.result") == PENDING:  # under the lock: its night is gone
            registry.set_tags(client, name, str(mv.version), {"dryrun.result": INTERRUPTED, "gate.passed": "false"})
            registry.remove_alias_if(client, name, registry.CHALLENGER, str(mv.version))
            repairs.append(Repair("marked dry run interrupted", f"{name} v{mv.version}",
                                  "its night ended during the served dry run: never promotable"))
    return repairs


def reconcile(client: MlflowClient, dataset: str, flow_runs: FlowRuns | None = None,
              stale: Holder | None = None, log: Callable[[str], None] = print) -> list[Repair]:
    """Every repair for one dataset; call it while holding the dataset's lock."""
    name = registry.registered_model_name(dataset)
    repairs = end_dead_runs(client, dataset, flow_runs, stale) + repair_registry(client, name)
    repairs += repair_registry(client, registry.retriever_model_name(dataset))  # the same write order
    for model in registry.model_names(dataset) if flow_runs is not None else ():
        try:
            notes = approval.reconcile_abandoned(client, model, flow_runs.read, flow_runs.close_waiting)
        except MlflowException:
            raise
        except Exception as exc:  # the Prefect API does not answer: approvals stay as they are
            log(f"doctor: approvals of {model} not checked, the Prefect API did not answer ({exc})")
            break
        repairs += [Repair("marked approval crashed", model, note) for note in notes]
    for r in repairs:
        log(f"doctor: {r.line()}")
    return repairs


@task(name="reconcile", cache_policy=NO_CACHE)
def reconcile_task(client: MlflowClient, dataset: str, stale: Holder | None) -> list[Repair]:
    """End what a dead night left running and finish interrupted registry writes."""
    flow_runs = FlowRuns()
    try:
        return reconcile(client, dataset, flow_runs, stale, log=get_run_logger().info)
    finally:
        flow_runs.close()
