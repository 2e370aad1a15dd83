"""Manual approval: what the reviewer sees, what they send back, and what it does to the registry.

In approval mode `manual`, a candidate that passed the staging gate carries the `challenger`
alias and the flow pauses (`pause_flow_run(wait_for_input=Decision)`) until a person approves
or rejects it in the Prefect UI or with `recloop approve/reject`. Every outcome (approved,
rejected, timeout) is written on the model version as `approval.*` tags. The pause itself
lives in the flow: Prefect can only pause a flow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field

from tasks import registry
from tasks.evaluate import GateResult
from tasks.stage import StagingOutcome
from tasks.train import Candidate

FLOW_NAME = "nightly-retrain"  # the flow that pauses; `recloop pending` lists its paused runs
APPROVED, REJECTED, TIMEOUT, PENDING = "approved", "rejected", "timeout", "pending"
# Approved, but the champion moved while the run waited (a rollback or another night): the
# reviewer approved a comparison against a model that is no longer in production.
STALE = "stale"


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
class ApprovalRequest:
    """Everything the comparison shows: the challenger, the champion it would replace, the gate."""

    dataset: str
    name: str
    version: str
    arch: str
    run_id: str
    experiment_id: str
    gate: GateResult
    champion_version: str | None
    champion_run_id: str | None
    champion_experiment_id: str | None
    tracking_uri: str
    staging_day: str
    timeout_s: int


def build_request(
    client: MlflowClient, dataset: str, outcome: StagingOutcome, candidates: list[Candidate],
    tracking_uri: str, staging_day: str, timeout_s: int,
) -> ApprovalRequest:
    """The request for the version the staging step registered (its gate passed)."""
    cand = next(c for c in candidates if c.arch == outcome.selected)
    champ_run = outcome.champion.run_id if outcome.champion else None
    champ_exp = client.get_run(champ_run).info.experiment_id if champ_run else None
    return ApprovalRequest(
        dataset=dataset, name=registry.registered_model_name(dataset), version=str(outcome.version),
        arch=cand.arch, run_id=cand.run_id, experiment_id=client.get_run(cand.run_id).info.experiment_id,
        gate=outcome.version_gate, champion_version=outcome.champion.version if outcome.champion else None,
        champion_run_id=champ_run, champion_experiment_id=champ_exp, tracking_uri=tracking_uri,
        staging_day=staging_day, timeout_s=timeout_s,
    )


def _run_link(uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """A clickable MLflow UI link when the tracking store is a server, else the run id."""
    if run_id is None:
        return "-"
    if uri.startswith(("http://", "https://")) and experiment_id is not None:
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}`"


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def comparison_markdown(req: ApprovalRequest, flow_run_id: str) -> str:
    """The Prefect artifact (and resume-form description) a reviewer decides on."""
    g, champ = req.gate, req.gate.champion
    ci = (f" [95% CI {g.delta_auc_low:+.4f}, {g.delta_auc_high:+.4f}]"
          if g.delta_auc_low is not None else "")
    champ_col = f"champion v{req.champion_version}" if req.champion_version else "champion (none yet)"
    lines = [
        f"## Approval needed: {req.name} v{req.version} ({req.arch})",
        "",
        f"Staging day {req.staging_day} ({g.challenger.rows} rows, neither model trained on it). "
        f"The challenger passed the staging gate; approving moves `champion` "
        f"{'from v' + req.champion_version + ' ' if req.champion_version else ''}to v{req.version}.",
        "",
        f"| | challenger v{req.version} | {champ_col} | Δ (challenger - champion) |",
        "|---|---|---|---|",
        f"| staging AUC | {g.challenger.auc:.4f} | {_num(champ and champ.auc, '.4f')} | "
        f"{_num(g.delta_auc, '+.4f')}{ci} |",
        f"| staging logloss | {g.challenger.logloss:.4f} | {_num(champ and champ.logloss, '.4f')} | "
        f"{_num(g.delta_logloss, '+.4f')} |",
        f"| calibration (mean prediction / CTR) | {g.challenger.calibration:.3f} | "
        f"{_num(champ and champ.calibration, '.3f')} | |",
        "",
        "**Gate checks**",
        "",
        *[f"- {'ok' if c.passed else 'FAILED'} {c.name}: {c.detail}" for c in g.checks],
        "",
        f"**MLflow runs:** challenger {_run_link(req.tracking_uri, req.experiment_id, req.run_id)}, "
        f"champion {_run_link(req.tracking_uri, req.champion_experiment_id, req.champion_run_id)} "
        f"(tracking `{req.tracking_uri}`)",
        "",
        "**Decide** with the Resume button of this flow run in the Prefect UI, or:",
        "",
        f"    recloop approve {flow_run_id} --reviewer NAME [--reason TEXT]",
        f"    recloop reject {flow_run_id} --reviewer NAME --reason TEXT",
        "",
        f"Without a decision within {timedelta(seconds=req.timeout_s)} the champion stays and "
        f"v{req.version} loses the `challenger` alias.",
    ]
    return "\n".join(lines)


def mark_pending(client: MlflowClient, name: str, version: str, flow_run_id: str, timeout_s: int) -> None:
    """Tag the challenger as waiting on this flow run (so `recloop pending` can name it)."""
    expires = (datetime.now(UTC) + timedelta(seconds=timeout_s)).isoformat(timespec="seconds")
    registry.set_tags(client, name, version, {"approval.decision": PENDING, "approval.flow_run_id": flow_run_id,
                                              "approval.expires_at": expires})


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
