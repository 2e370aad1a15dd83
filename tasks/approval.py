"""Manual approval: what the reviewer sees, what they send back, and what it does to the registry.

In approval mode `manual`, a candidate that passed the staging gate carries the `challenger`
alias and the night waits in a subflow run (flow `nightly-approval`, run `approve-<dataset>-v<N>`;
for a retriever that passed the retrieval gate, `approve-<dataset>-retriever-v<N>` later in the
same night) that pauses itself (`pause_flow_run(wait_for_input=Decision)`) until a person approves or
rejects it in the Prefect UI or with `recloop approve/reject`. Every outcome (approved,
rejected, stale, timeout, crashed) is written on the model version as `approval.*` tags. The
pause itself lives in flows/nightly.py: Prefect can only pause a flow run.

Why a subflow: a deployment run holds its concurrency slot through a lease that its own process
renews every 225 s, and Prefect 3.8.8's server revokes that lease when the run leaves RUNNING,
for PAUSED too. So the night stays RUNNING (and keeps renewing) and only the subflow, which
holds no slot, is paused. A night that dies during the wait leaves a version tagged `pending`
that nobody will decide on: `reconcile_abandoned` finds and marks those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field

from feature_store.drift import DriftReport
from tasks import registry, tracking
from tasks.evaluate import GateResult
from tasks.handoff import Candidate, Night, RetrievalSummary, StagingOutcome
from tasks.report import drift_markdown
from tasks.retrieval_gate import RetrievalGate

FLOW_NAME = "nightly-retrain"  # the night: the deployment's flow
APPROVAL_FLOW_NAME = "nightly-approval"  # its subflow that pauses; `recloop pending` lists these
APPROVED, REJECTED, TIMEOUT, PENDING = "approved", "rejected", "timeout", "pending"
# Approved, but the champion moved while the run waited (a rollback or another night): the
# reviewer approved a comparison against a model that is no longer in production.
STALE = "stale"
# The night died while it waited (killed, crashed, cancelled): nothing will record a decision.
CRASHED = "crashed"
# Prefect state types after which a run's process records nothing any more.
FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def approval_run_name(subject: str, version: str) -> str:
    """The name of the paused subflow run a reviewer looks for in the Prefect UI (`subject`:
    the dataset for its ranker, `<dataset>-retriever` for its retriever)."""
    return f"approve-{subject}-v{version}"


class ApprovalExpired(RuntimeError):
    """Nobody decided before the pause expired. Raised by the flow once the timeout is recorded
    and the night's summary is published, so the run ends Failed every time: Prefect's server
    fails an expired pause anyway, but only if it gets there before the flow ends, and a run
    that missed its reviewer should alert like a failure. `summary` is the night's summary."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class Decision(RunInput):
    """A reviewer's answer to a paused night (the Prefect UI renders it as the resume form)."""

    approve: bool = Field(description="Promote the challenger to champion?")
    reviewer: str = Field(min_length=1, description="Who decides (recorded on the model version).")
    reason: str = Field(default="", description="Why (recorded on the model version).")


@dataclass(frozen=True)
class RetrievalComparison:
    """What a retriever's approval shows besides its gate: both retrievers' top-K metrics on the
    staging day (MLflow keys `staging_<metric>_at_<k>`; champion None: none, or it is broken)."""

    k: int
    users: int  # staging users with a click (the users the metrics average)
    challenger: dict[str, float]
    champion: dict[str, float] | None


@dataclass(frozen=True)
class ApprovalRequest:
    """Everything the comparison shows: the challenger, the champion it would replace, the gate.
    A ranker's request has a `GateResult`; a retriever's a `RetrievalGate` and `retrieval`."""

    dataset: str
    name: str
    version: str
    arch: str  # the architecture, or the retriever's name
    run_id: str
    experiment_id: str
    gate: GateResult | RetrievalGate
    champion_version: str | None
    champion_run_id: str | None
    champion_experiment_id: str | None
    tracking_uri: str
    staging_day: str
    timeout_s: int
    drift: DriftReport | None = None  # training window vs staging day (None: drift off)
    # The champion's own served dry run (p50, p99 ms; its version tags), when it had one.
    champion_served_ms: tuple[float, float] | None = None
    retrieval: RetrievalComparison | None = None  # set for a retriever

    @property
    def subject(self) -> str:
        """What is approved, as the run name says it: `<dataset>` or `<dataset>-retriever`."""
        return f"{self.dataset}-retriever" if self.retrieval is not None else self.dataset

    @property
    def run_name(self) -> str:
        return approval_run_name(self.subject, self.version)

    @property
    def pause_key(self) -> str:
        """The pause's key (Prefect allows lowercase letters, digits and dashes only)."""
        return f"approve-{'retriever-' if self.retrieval is not None else ''}v{self.version}"


def champion_served_ms(client: MlflowClient, name: str, version: str | None) -> tuple[float, float] | None:
    """(p50, p99) of a version's own dry run, from its `dryrun.*` tags; None without one."""
    if version is None:
        return None
    tags = client.get_model_version(name, version).tags
    try:
        return float(tags["dryrun.p50_ms"]), float(tags["dryrun.p99_ms"])
    except (KeyError, ValueError):
        return None


def build_request(
    client: MlflowClient, night: Night, outcome: StagingOutcome, candidates: list[Candidate],
    tracking_uri: str, staging_day: str, timeout_s: int,
) -> ApprovalRequest:
    """The request for the version the staging step registered (its gate passed)."""
    cand = next(c for c in candidates if c.arch == outcome.selected)
    champ_run = outcome.champion.run_id if outcome.champion else None
    champ_exp = client.get_run(champ_run).info.experiment_id if champ_run else None
    return ApprovalRequest(
        dataset=night.dataset, name=night.model_name, version=str(outcome.version),
        arch=cand.arch, run_id=cand.run_id, experiment_id=client.get_run(cand.run_id).info.experiment_id,
        gate=outcome.version_gate, champion_version=outcome.champion.version if outcome.champion else None,
        champion_run_id=champ_run, champion_experiment_id=champ_exp, tracking_uri=tracking_uri,
        staging_day=staging_day, timeout_s=timeout_s, drift=outcome.drift,
        champion_served_ms=champion_served_ms(client, night.model_name,
                                              outcome.champion.version if outcome.champion else None),
    )


def build_retriever_request(client: MlflowClient, night: Night, summary: RetrievalSummary, tracking_uri: str,
                            staging_day: str, timeout_s: int) -> ApprovalRequest:
    """The request for the retriever version the retrieval stage registered (its gate passed)."""
    name = registry.retriever_model_name(night.dataset)
    champ = summary.champion_before
    champ_run = client.get_model_version(name, champ).run_id if champ else None
    return ApprovalRequest(
        dataset=night.dataset, name=name, version=str(summary.registered_version), arch=str(summary.selected),
        run_id=summary.registered_run_id, experiment_id=client.get_run(summary.registered_run_id).info.experiment_id,
        gate=summary.gate, champion_version=champ, champion_run_id=champ_run,
        champion_experiment_id=client.get_run(champ_run).info.experiment_id if champ_run else None,
        tracking_uri=tracking_uri, staging_day=staging_day, timeout_s=timeout_s,
        retrieval=RetrievalComparison(summary.k, summary.users, summary.challenger_metrics, summary.champion_metrics),
    )


def _run_link(uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """A clickable MLflow UI link when the tracking store is a server, else the run id."""
    if run_id is None:
        return "-"
    url = tracking.run_url(uri, experiment_id, run_id)
    return f"[{run_id}]({url})" if url else f"`{run_id}`"


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def comparison_markdown(req: ApprovalRequest, flow_run_id: str) -> str:
    """The Prefect artifact (and resume-form description) a reviewer decides on. Narrow on
    purpose: the UI's resume form is a modal a few hundred pixels wide, so the table has three
    columns (metric | challenger | champion) and the deltas with their interval are a list."""
    g = req.gate
    moves = (f"approving moves `champion` {'from v' + req.champion_version + ' ' if req.champion_version else ''}"
             f"to v{req.version}.")
    champ_col = f"champion v{req.champion_version}" if req.champion_version else "champion (none yet)"
    body = _retrieval_lines(req, champ_col, moves) if req.retrieval is not None else _ranking_lines(req, champ_col,
                                                                                                    moves)
    lines = [
        f"## Approval needed: {req.name} v{req.version} ({req.arch})",
        "",
        *body,
        "**Gate checks**",
        "",
        *[f"- {'ok' if c.passed else 'FAILED'} {c.name}: {c.detail}" for c in g.checks],
        "",
        *([drift_markdown(req.drift), ""] if req.retrieval is None else []),
        f"**MLflow runs:** challenger {_run_link(req.tracking_uri, req.experiment_id, req.run_id)}, "
        f"champion {_run_link(req.tracking_uri, req.champion_experiment_id, req.champion_run_id)} "
        f"(tracking `{req.tracking_uri}`)",
        "",
        # Inline code, not a code block: a block does not wrap and would need a sideways scroll.
        "**Decide** with the Resume button of this flow run in the Prefect UI, or with "
        f"`recloop approve {flow_run_id} --reviewer NAME --reason TEXT` "
        f"(`recloop reject` takes the same arguments).",
        "",
        f"Without a decision within {timedelta(seconds=req.timeout_s)} the champion stays and "
        f"v{req.version} loses the `challenger` alias.",
    ]
    return "\n".join(lines)


def _ranking_lines(req: ApprovalRequest, champ_col: str, moves: str) -> list[str]:
    """A ranker's comparison: AUC, logloss, calibration (and served latency) of both models."""
    g, champ = req.gate, req.gate.champion
    deltas = []
    if g.delta_auc is not None:
        ci = (f", 95% CI [{g.delta_auc_low:+.4f}, {g.delta_auc_high:+.4f}]"
              if g.delta_auc_low is not None else "")
        deltas = ["**Challenger - champion**", "",
                  f"- Δ AUC {g.delta_auc:+.4f}{ci}",
                  f"- Δ logloss {_num(g.delta_logloss, '+.4f')}", ""]
    served, champ_ms = g.dry_run, req.champion_served_ms
    latency, latency_note = [], []
    if served is not None:
        latency = [f"| served p50 ms | {_num(served.p50_ms, '.1f')} | {_num(champ_ms and champ_ms[0], '.1f')} |",
                   f"| served p99 ms | {_num(served.p99_ms, '.1f')} | {_num(champ_ms and champ_ms[1], '.1f')} |"]
        latency_note = [f"Served: the registered version behind a real scoring server on 127.0.0.1, {served.rows} "
                        f"staging rows in requests of {served.request_rows}, p99 budget {served.p99_budget_ms:g} ms; "
                        "the champion's latency is from its own night's dry run.", ""]
    return [
        f"Staging day {req.staging_day} ({g.challenger.rows} rows, neither model trained on it). "
        f"The challenger passed the staging gate; {moves}",
        "",
        f"| staging day | challenger v{req.version} | {champ_col} |",
        "|---|---|---|",
        f"| AUC | {g.challenger.auc:.4f} | {_num(champ and champ.auc, '.4f')} |",
        f"| logloss | {g.challenger.logloss:.4f} | {_num(champ and champ.logloss, '.4f')} |",
        f"| calibration | {g.challenger.calibration:.3f} | {_num(champ and champ.calibration, '.3f')} |",
        *latency,
        "",
        *deltas,
        "Calibration: mean prediction / observed CTR.",
        "",
        *latency_note,
    ]


def _retrieval_lines(req: ApprovalRequest, champ_col: str, moves: str) -> list[str]:
    """A retriever's comparison: Recall and NDCG at 10 and K of both retrievers on the staging
    day's users, the paired bootstrap interval of the Recall@K difference."""
    r, g = req.retrieval, req.gate
    champ = r.champion or {}
    rows = [f"| {label}@{k} | {_num(r.challenger.get(f'staging_{key}_at_{k}'), '.4f')} | "
            f"{_num(champ.get(f'staging_{key}_at_{k}'), '.4f')} |"
            for k in sorted({10, r.k}) for key, label in (("recall", "Recall"), ("ndcg", "NDCG"))]
    deltas = []
    if g.delta is not None:
        deltas = ["**Challenger - champion**", "",
                  f"- Δ Recall@{g.k} {g.delta:+.4f}, 95% CI [{g.delta_low:+.4f}, {g.delta_high:+.4f}] "
                  "(paired bootstrap over users)", ""]
    return [
        f"Staging day {req.staging_day} ({r.users} users with a click, neither retriever trained on it). "
        f"The challenger passed the retrieval gate; {moves}",
        "",
        f"| staging day | challenger v{req.version} | {champ_col} |",
        "|---|---|---|",
        *rows,
        f"| coverage@{r.k} | {_num(r.challenger.get(f'staging_coverage_at_{r.k}'), '.3f')} | "
        f"{_num(champ.get(f'staging_coverage_at_{r.k}'), '.3f')} |",
        "",
        *deltas,
        "Coverage: share of the catalogue recommended to anyone.",
        "",
    ]


def mark_pending(client: MlflowClient, name: str, version: str, flow_run_id: str, timeout_s: int,
                 night_run_id: str | None = None) -> None:
    """Tag the challenger as waiting on the paused run `flow_run_id` (the one a reviewer resumes)
    of the night `night_run_id` (the process that will record the decision)."""
    expires = (datetime.now(UTC) + timedelta(seconds=timeout_s)).isoformat(timespec="seconds")
    tags = {"approval.decision": PENDING, "approval.flow_run_id": flow_run_id, "approval.expires_at": expires}
    if night_run_id is not None:
        tags["approval.night_run_id"] = night_run_id
    registry.set_tags(client, name, version, tags)


def apply_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: Decision | None,
    flow_run_id: str,
    timeout_s: int,
    compared_champion: str | None,
) -> tuple[str, registry.Promotion | None]:
    """Approve: promote, if the champion is still the one the comparison was made against
    (`compared_champion`); if it moved during the pause the approval is recorded as stale and
    nothing moves. Reject or no decision (timeout): the champion stays. In every case but a
    promotion the version loses the `challenger` alias (nothing waits on it any more)."""
    common = {"approval.flow_run_id": flow_run_id, "approval.at": registry.utc_stamp()}
    if decision is None:
        outcome, by, reason = TIMEOUT, "nobody", f"no decision within {timeout_s} s"
    elif not decision.approve:
        outcome, by, reason = REJECTED, decision.reviewer, decision.reason
    else:
        current = registry.alias_version(client, name, registry.CHAMPION)
        now = str(current.version) if current is not None else None
        # `version` itself: an earlier attempt of this (retried) task already promoted it.
        if now in (compared_champion, str(version)):
            promotion = registry.promote(client, name, version, approved_by=decision.reviewer,
                                         reason=decision.reason or "approved without a reason")
            registry.set_tags(client, name, version, common)
            return APPROVED, promotion
        outcome, by = STALE, decision.reviewer
        reason = (f"approved ({decision.reason or 'no reason'}), but the champion moved from "
                  f"{_v(compared_champion)} to {_v(now)} while waiting: the comparison no longer "
                  f"holds; run the night again")
    registry.set_tags(client, name, version, {**common, "approval.decision": outcome, "approval.by": by,
                                              "approval.reason": reason})
    registry.remove_alias_if(client, name, registry.CHALLENGER, version)
    return outcome, None


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"


@task(name="approval-decision", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def decision_task(client: MlflowClient, name: str, version: str, decision: Decision | None,
                  flow_run_id: str, timeout_s: int, compared_champion: str | None,
                  ) -> tuple[str, registry.Promotion | None]:
    """Record the reviewer's decision on the version and promote when approved (retried: registry I/O)."""
    return apply_decision(client, name, version, decision, flow_run_id, timeout_s, compared_champion)


# --------------------------------------------------------------------------- abandoned approvals
@dataclass(frozen=True)
class RunState:
    """What the Prefect API says about a flow run: state type (`StateType` value, e.g.
    "CRASHED"), state name (e.g. "AwaitingConcurrencySlot") and message."""

    type: str
    name: str
    message: str = ""

    @property
    def final(self) -> bool:
        return self.type in FINAL_STATE_TYPES


# flow run id -> its state, or None when the API has no such run.
ReadRunState = Callable[[str], "RunState | None"]
# (paused approval run id, why) -> None: end a paused run nobody waits on any more.
CloseRun = Callable[[str, str], None]


def prefect_run_states(prefect_client) -> ReadRunState:
    """`read_run_state` over a sync Prefect client (`get_client(sync_client=True)`)."""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound

    def read(flow_run_id: str) -> RunState | None:
        try:
            run = prefect_client.read_flow_run(UUID(flow_run_id))
        except (ObjectNotFound, ValueError):
            return None
        if run.state is None:
            return RunState("NONE", "without state")
        return RunState(run.state.type.value, run.state.name, run.state.message or "")

    return read


def prefect_close_run(prefect_client) -> CloseRun:
    """`close_waiting` over a sync Prefect client: the paused run becomes Cancelled, so the UI
    stops offering a Resume that nothing would act on."""
    from uuid import UUID

    from prefect.states import Cancelled

    def close(flow_run_id: str, why: str) -> None:
        prefect_client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=why), force=True)

    return close


def mark_abandoned(client: MlflowClient, name: str, version: str, reason: str) -> str:
    """The night waiting on `version` is gone: tag it `crashed` with the reason, drop its
    `challenger` alias, and record the reason on the night's MLflow parent run (terminated
    FAILED if a killed process left it RUNNING). Returns a note saying what was done."""
    mv = client.get_model_version(name, version)
    registry.set_tags(client, name, version, {"approval.decision": CRASHED, "approval.by": "nobody",
                                              "approval.reason": reason, "approval.at": registry.utc_stamp()})
    registry.remove_alias_if(client, name, registry.CHALLENGER, version)
    parent = mv.tags.get("parent_run_id")
    if parent:
        try:
            client.set_tag(parent, "failure.reason", f"v{version} {CRASHED}: {reason}")
            if client.get_run(parent).info.status == RunStatus.to_string(RunStatus.RUNNING):
                client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
        except MlflowException:  # the run was deleted: the version tags still say why
            pass
    return f"{name} v{version}: approval.decision={CRASHED} ({reason}); not promoted, `challenger` removed"


def pending_versions(client: MlflowClient, name: str) -> list:
    """Versions of `name` tagged `approval.decision=pending`."""
    try:
        return list(client.search_model_versions(f"name = '{name}' and tags.`approval.decision` = '{PENDING}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def reconcile_abandoned(client: MlflowClient, name: str, read_run_state: ReadRunState,
                        close_waiting: CloseRun | None = None) -> list[str]:
    """Mark the versions of `name` that wait for a decision nobody will record: tagged
    `approval.decision=pending`, but the night that would record it (`approval.night_run_id`,
    else the paused run itself for versions from before the approval subflow) is in a final
    state or unknown to the Prefect API. A night that still runs is left alone, also when its
    approval run just ended (it is recording the decision). With `close_waiting`, an approval
    run still paused for such a night is ended too. Returns one note per version fixed."""
    notes = []
    for mv in pending_versions(client, name):
        waiting = mv.tags.get("approval.flow_run_id")
        owner = mv.tags.get("approval.night_run_id") or waiting
        if not owner:
            continue
        state = read_run_state(owner)
        if state is not None and not state.final:
            continue
        found = f"is {state.name}" if state is not None else "is not known to the Prefect API"
        said = f" ({state.message})" if state is not None and state.message else ""
        reason = f"flow run {owner} {found}{said} while v{mv.version} waited for a decision"
        notes.append(mark_abandoned(client, name, str(mv.version), reason))
        if close_waiting is not None and waiting and waiting != owner:
            waiting_state = read_run_state(waiting)
            if waiting_state is not None and waiting_state.type == "PAUSED":
                close_waiting(waiting, f"night {owner} {found}: nothing would record a decision")
    return notes


def latest_abandoned(client: MlflowClient, name: str):
    """The newest version of `name` when it is tagged `approval.decision=crashed` (a night died
    while it waited), else None: a newer version means a later night took over."""
    try:
        newest = client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if newest and newest[0].tags.get("approval.decision") == CRASHED:
        return newest[0]
    return None
