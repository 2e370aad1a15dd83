"""Alerts: a night that failed, a challenger that timed out waiting for a decision, was rejected
or approved too late (stale), a promotion and a rollback each send one message through a Prefect
notification block: a generic JSON webhook (`RECLOOP_ALERTS_WEBHOOK_URL`, Prefect's
`CustomWebhookNotificationBlock`) or a block the user saved (`RECLOOP_ALERTS_BLOCK`, e.g.
`slack-webhook/oncall`: any apprise-based kind, Slack, email, Teams, PagerDuty, ...).

Sent from where the thing happens (the night's process, its failure/crash hooks, the CLI's
rollback), not by server-side Automations: the same alerts in Prefect's ephemeral mode and on
the served stack, also for a rollback that runs outside any flow, with the registry's facts
(versions, champion before/after, reviewer) in the message. Delivery is best effort: it never
raises, and it gives up after `timeout_s` (a warning says why), so an alert can neither fail nor
stall a night or a promotion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")

# Event names, as RECLOOP_ALERTS_EVENTS spells them.
FAILED = "failed"  # the night ended Failed or Crashed (any exception; a killed process)
TIMEOUT = "timeout"  # nobody approved or rejected the challenger in time
REJECTED = "rejected"
STALE = "stale"  # approved, but the champion moved during the wait: nothing promoted
PROMOTED = "promoted"  # `champion` moved to a new version (auto gate or a reviewer)
ROLLED_BACK = "rolled_back"  # `recloop rollback`
EVENTS = (FAILED, TIMEOUT, REJECTED, STALE, PROMOTED, ROLLED_BACK)

HEADLINES = {
    FAILED: "night FAILED",
    TIMEOUT: "approval timed out, champion unchanged",
    REJECTED: "challenger rejected, champion unchanged",
    STALE: "approval stale (champion moved while waiting), champion unchanged",
    PROMOTED: "new champion",
    ROLLED_BACK: "champion rolled back",
}


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go (`RECLOOP_ALERTS_*`; the defaults live here only). Neither `webhook_url`
    nor `block` set: no alerts. `webhook_url`: JSON POST to this URL (fields `subject`, `body`,
    `text` and the structured ones of `Alert.fields`); `block`: a saved Prefect notification
    block, `<block-type-slug>/<block-name>` (e.g. `slack-webhook/oncall`), used instead;
    `events`: which to send (default all of `EVENTS`); `timeout_s`: give up delivering after it."""

    webhook_url: str | None = None
    block: str | None = None
    events: tuple[str, ...] = EVENTS
    timeout_s: float = 10.0

    def __post_init__(self):
        for name in ("webhook_url", "block"):  # an empty variable (docker-compose passes one) is unset
            if not getattr(self, name):
                object.__setattr__(self, name, None)
        unknown = sorted(set(self.events) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown alert events {unknown}; valid: {', '.join(EVENTS)}")
        if self.webhook_url and self.block:
            raise ValueError("set webhook_url or block, not both (a block replaces the webhook)")
        if self.block and self.block.count("/") != 1:
            raise ValueError(f"block {self.block!r} must be <block-type-slug>/<block-name>, e.g. slack-webhook/oncall")
        if self.timeout_s <= 0:
            raise ValueError("need timeout_s > 0")

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.block)

    def wants(self, event: str) -> bool:
        return self.enabled and event in self.events


@dataclass(frozen=True)
class Alert:
    """What happened, to whom, and where to look. Versions are numbers as strings; None: unknown
    or not applicable (no version registered, no champion yet)."""

    event: str
    dataset: str
    model: str
    run_date: str | None = None
    version: str | None = None
    arch: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    reason: str = ""  # the exception line, or who decided and why
    flow_run_url: str | None = None
    mlflow_run: str | None = None  # a URL with a tracking server, else "run <id> (<store>)"
    state: str | None = None  # the flow run's final state name for a failure (Failed, Crashed)

    def subject(self) -> str:
        when = f" {self.run_date}" if self.run_date else ""
        return f"[recloop] {self.dataset}{when}: {HEADLINES[self.event]}"

    def body(self) -> str:
        arch = f" ({self.arch})" if self.arch else ""
        model = f"{self.model} v{self.version}{arch}" if self.version else f"{self.model} (no version registered)"
        before, after = _v(self.champion_before), _v(self.champion_after)
        moved = "unchanged" if self.champion_before == self.champion_after else "moved"
        lines = [
            f"Event: {self.event}" + (f" (flow run {self.state})" if self.state else ""),
            f"Dataset: {self.dataset}" + (f", run date {self.run_date}" if self.run_date else ""),
            f"Model: {model}",
            f"Champion: {before} -> {after} ({moved})",
            f"Reason: {self.reason or '-'}",
        ]
        if self.flow_run_url:
            lines.append(f"Prefect flow run: {self.flow_run_url}")
        if self.mlflow_run:
            lines.append(f"MLflow: {self.mlflow_run}")
        return "\n".join(lines)

    def fields(self) -> dict[str, str]:
        """The structured part of the webhook's JSON (receivers route on `event`, `dataset`)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "reason"}


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


# ------------------------------------------------------------------------------- delivery
def webhook_block(url: str, alert: Alert, timeout_s: float):
    """Prefect's generic webhook block: POST JSON with the message and the alert's fields."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    # Only our own values go in literally; free text (reasons, exception lines) reaches the
    # payload through {{subject}} / {{body}}, which the block substitutes without templating it.
    literal = {k: v.replace("{{", "{ {") for k, v in alert.fields().items()}
    return CustomWebhookNotificationBlock(
        name="recloop", url=url, timeout=timeout_s,
        json_data={**literal, "subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
    )


def saved_block(name: str):
    """A notification block the user saved in Prefect (`<block-type-slug>/<block-name>`)."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    block = Block.load(name)
    if not isinstance(block, NotificationBlock):
        raise TypeError(f"block {name!r} is a {type(block).__name__}, not a notification block")
    return block


def deliver(config: AlertConfig, alert: Alert) -> None:
    """Send now (raises on failure): the saved block, else the webhook."""
    block = saved_block(config.block) if config.block else webhook_block(config.webhook_url, alert, config.timeout_s)
    with block.raise_on_failure():  # apprise blocks otherwise only log a failed send
        block.notify(alert.body(), subject=alert.subject())


def send(config: AlertConfig, event: str, build: Callable[[], Alert],
         warn: Callable[[str], None] | None = None) -> bool:
    """Build the alert and deliver it, when `config` wants `event`. Never raises and returns
    within about `config.timeout_s`: building reads the registry and delivering talks to the
    network, so both run in a daemon thread that is abandoned when late. False (and one
    `warn` line saying why) when nothing was delivered."""
    if not config.wants(event):
        return False
    outcome: dict[str, BaseException | Alert] = {}

    def work():
        try:
            outcome["alert"] = build()
            deliver(config, outcome["alert"])
            outcome["done"] = outcome["alert"]
        except BaseException as exc:  # reported below; an alert must not take its caller down
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"recloop-alert-{event}", daemon=True)
    thread.start()
    # The block's own request timeout is timeout_s; as long again for reading the registry and a block.
    thread.join(2 * config.timeout_s)
    if "done" in outcome:
        return True
    target = f"block {config.block}" if config.block else f"webhook {_redacted(config.webhook_url)}"
    if thread.is_alive():
        why = f"no answer within {2 * config.timeout_s:g} s"
    else:
        why = " ".join(f"{type(outcome['error']).__name__}: {outcome['error']}".split())
        if config.webhook_url:  # httpx names the URL in its errors
            why = why.replace(config.webhook_url, _redacted(config.webhook_url))
        why = why[:300]
    if warn is not None:
        warn(f"alert '{event}' not delivered to {target}: {why}")
    return False


def _redacted(url: str | None) -> str:
    """The webhook's scheme and host only: its path is often the secret (Slack, Teams)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}/..." if parts.netloc else "(no host)"


# ------------------------------------------------------------------------------- facts
def flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI, when the API (hence the UI) address is known."""
    if not flow_run_id:
        return None
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=flow_run_id)


def mlflow_run(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """A link to the run in the MLflow UI with a tracking server, else its id and store."""
    from tasks.tracking import run_url

    if not run_id:
        return None
    return run_url(tracking_uri, experiment_id, run_id) or f"run {run_id} ({tracking_uri})"


def _try(read: Callable[[], T], default: T) -> T:
    """A registry read for an alert's message: on failure (the store being down may be why the
    night failed), the alert goes out without that fact."""
    try:
        return read()
    except Exception:
        return default


def _champion(client, name: str) -> str | None:
    from tasks import registry

    mv = _try(lambda: registry.alias_version(client, name, registry.CHAMPION), None)
    return str(mv.version) if mv is not None else None


def version_alert(client, tracking_uri: str, event: str, name: str, version: str,
                  champion_before: str | None) -> Alert:
    """A decision on `version` (promoted, rejected, timeout, stale, rolled back to it): who and
    why come from the tags the registry wrote, so the alert says what the registry says."""
    mv = _try(lambda: client.get_model_version(name, version), None)
    tags = dict(mv.tags) if mv is not None else {}
    prefix = "rollback" if event == ROLLED_BACK else "approval"
    reason = f"by {tags.get(prefix + '.by', '?')}: {tags.get(prefix + '.reason') or 'no reason given'}"
    # The night's MLflow parent run, else the version's own run.
    run_id = tags.get("parent_run_id") or (mv.run_id if mv is not None else None)
    experiment_id = _try(lambda: client.get_run(run_id).info.experiment_id, None) if run_id else None
    return Alert(
        event=event, dataset=tags.get("dataset") or name.removesuffix("-ranker"), model=name,
        run_date=tags.get("run_date"), version=str(version), arch=tags.get("arch") or tags.get("retriever"), champion_before=champion_before,
        champion_after=_champion(client, name), reason=reason,
        # A rollback happens outside any flow run; the version's night is not what happened.
        flow_run_url=flow_run_url(tags.get("flow_run_id")) if event != ROLLED_BACK else None,
        mlflow_run=mlflow_run(tracking_uri, experiment_id, run_id),
    )


def failure_alert(client, tracking_uri: str, dataset: str, run_date: str | None, flow_run_id: str,
                  reason: str, state: str) -> Alert:
    """A night that ended Failed or Crashed: what it had got to, found by its flow run id (the
    night's MLflow runs and any version it registered carry the `flow_run_id` tag)."""
    from tasks import registry

    name = registry.registered_model_name(dataset)
    champion = _champion(client, name)
    found = _try(lambda: client.search_model_versions(f"name = '{name}' and tags.flow_run_id = '{flow_run_id}'"), [])
    mv = max(found, key=lambda m: int(m.version)) if found else None
    exp = _try(lambda: client.get_experiment_by_name(dataset), None)
    runs = _try(lambda: client.search_runs([exp.experiment_id], f"tags.flow_run_id = '{flow_run_id}'"), []) if exp else []
    parent = next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), None)
    return Alert(
        event=FAILED, dataset=dataset, model=name,
        run_date=run_date or (parent.data.tags.get("run_date") if parent else None),
        version=str(mv.version) if mv else None, arch=mv.tags.get("arch") if mv else None,
        champion_before=champion, champion_after=champion, reason=reason, flow_run_url=flow_run_url(flow_run_id),
        mlflow_run=mlflow_run(tracking_uri, exp.experiment_id if parent else None, parent.info.run_id if parent else None),
        state=state,
    )


# ------------------------------------------------------------------------------- hooks
def send_night_failed(flow, flow_run, state) -> None:
    """The nightly flow's on_failure / on_crashed hook: the night ended Failed (any exception) or
    Crashed (its process died; the worker runs this hook then): send the `failed` alert with the
    exception line and what the night had got to. A night failed by ApprovalExpired is left out:
    its `timeout` alert went out when the timeout was recorded."""
    from mlflow import MlflowClient
    from prefect.logging.loggers import flow_run_logger

    from feature_store.spec import DEFAULT_DATASET, load_spec
    from tasks import approval
    from tasks.settings import get_settings  # imports this module: not at the top

    log = flow_run_logger(flow_run, flow)
    try:
        settings = get_settings()
    except Exception as exc:  # the night may have failed on exactly this
        log.warning(f"alert not sent: the settings do not load ({exc})")
        return
    if not settings.alerts.wants(FAILED):
        return
    reason = state.message or state.name
    if state.is_failed():
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # the message says it too
            exc = None
        if isinstance(exc, approval.ApprovalExpired):
            return
        if isinstance(exc, BaseException):
            reason = f"{type(exc).__name__}: {exc}"
    params = flow_run.parameters or {}
    dataset = str(params.get("dataset") or DEFAULT_DATASET)
    try:
        dataset = load_spec(dataset, settings.spec_dirs).name
    except Exception:  # a spec that does not load is maybe why it failed: name what was asked for
        pass
    run_date = str(params["run_date"]) if params.get("run_date") else None

    def build() -> Alert:
        client = MlflowClient(settings.resolved_tracking_uri, settings.resolved_registry_uri)
        return failure_alert(client, settings.resolved_tracking_uri, dataset, run_date, str(flow_run.id),
                             reason[:2000], state.name)

    send(settings.alerts, FAILED, build, log.warning)
