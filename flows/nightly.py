"""The nightly retraining flow: orchestration only, the work is in `tasks/`.

ingest -> validate (GX) -> preprocess (NVTabular; drift profiles) -> drift check -> train each
architecture (PyTorch) -> staging evaluation vs the champion -> register -> approval
-> promotion (registry alias) -> for specs with a `retrieval` section: retrievers fitted, gated
and registered (`<dataset>-retriever`), then the retriever -> ranker pipeline evaluated
"""

from __future__ import annotations

import dataclasses
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run

from feature_store.spec import DEFAULT_DATASET, load_spec
from flows.console import quiet_expected_stops
from tasks import alerts, approval, doctor, guards, preflight, registry, report, tracking
from tasks.drift import drift_check, drift_task
from tasks.handoff import Night, NightSummary
from tasks.ingest import ingest_task
from tasks.lock import NightLock
from tasks.preprocess import preprocess_task
from tasks.retrieve import check_retrievers, pipeline_ranker, retrieval_task
from tasks.retrieve import enabled as retrieval_enabled
from tasks.settings import get_settings
from tasks.stage import promotion_task, staging_task
from tasks.train import check_architectures, train_task
from tasks.validate import validate_task
from tasks.warm_start import warm_source_task, warm_start_note
from tasks.workdir import night_workdir

DEFAULT_ARCHITECTURES = ["wide", "deep", "wide_deep"]


def _record_abandoned_approval(flow, flow_run, state) -> None:
    """on_crashed / on_cancellation: a night that dies while its challenger waits for a decision
    (e.g. Prefect cancels it after a failed lease renewal, or the worker reports its process
    killed) marks that version `crashed` and ends its paused approval run. `recloop pending`
    reconciles what no hook got to (approval.reconcile_abandoned)."""
    from prefect import get_client
    from prefect.logging.loggers import flow_run_logger

    settings = get_settings()
    dataset = load_spec((flow_run.parameters or {}).get("dataset") or DEFAULT_DATASET, settings.spec_dirs).name
    client = tracking.configure(settings)
    # The server may not show this state yet; a run in its on_cancellation hook is as good as
    # cancelled (its process is about to end).
    own = approval.RunState("CRASHED" if state.is_crashed() else "CANCELLED", state.name, state.message or "")
    with get_client(sync_client=True) as prefect_client:
        read = approval.prefect_run_states(prefect_client)
        notes = [note for name in registry.model_names(dataset) for note in approval.reconcile_abandoned(
            client, name, lambda run_id: own if run_id == str(flow_run.id) else read(run_id),
            approval.prefect_close_run(prefect_client))]
    for note in notes:
        flow_run_logger(flow_run, flow).warning(note)


def _alert_decision(settings, event: str, client, name: str, version: str, champion_before: str | None) -> None:
    """The alert for a decision on `version` (promoted, rejected, timeout, stale): best effort."""
    alerts.send(settings.alerts, event,
                lambda: alerts.version_alert(client, settings.resolved_tracking_uri, event, name, version,
                                             champion_before),
                get_run_logger().warning)


@flow(name=approval.FLOW_NAME, log_prints=True, on_failure=[alerts.send_night_failed],
      on_crashed=[_record_abandoned_approval, alerts.send_night_failed], on_cancellation=[_record_abandoned_approval])
def nightly_retrain(
    run_date: date | None = None,
    dataset: str = DEFAULT_DATASET,  # a name (RECLOOP_SPEC_DIRS, then the package) or a spec path
    architectures: list[str] | None = None,
    approval_mode: Literal["auto", "manual"] | None = None,
    epochs: int | None = None,
    hparams: dict[str, dict] | None = None,
    data_root: str | None = None,
    approval_timeout_s: int | None = None,
    backfill: bool = False,
    force: bool = False,
    warm_start: Literal["auto", "off"] | None = None,
) -> NightSummary:
    """Retrain on the window before `run_date`, gate against the champion, maybe promote.

    `backfill`: a night whose staging day the champion trained on only evaluates (registers
    nothing); without it such a night is refused. `force`: run even when this very night
    (same data, code and config) already produced the champion. `warm_start`: `auto` starts each
    challenger of the champion's architecture from the champion's weights, `off` starts cold
    (default: the `RECLOOP_WARM_START` setting)."""
    log = get_run_logger()
    quiet_expected_stops()
    settings = get_settings(approval_mode=approval_mode, data_root=data_root, approval_timeout_s=approval_timeout_s,
                            warm_start=warm_start, train={"epochs": epochs})
    run_date = run_date or scheduled_run_date(settings.schedule_timezone)
    architectures = architectures or DEFAULT_ARCHITECTURES
    spec = load_spec(dataset, settings.spec_dirs)
    check_architectures(architectures, hparams)
    check_retrievers(spec)
    preflight.check_home(settings.home)
    preflight.check_stores(settings.resolved_tracking_uri, settings.resolved_registry_uri)
    client = tracking.configure(settings)
    with NightLock(settings.home, spec.name).acquire(
        settings.lock_wait_s, log=log.info, run_date=str(run_date), flow_run_id=str(flow_run.id)
    ) as lock, night_workdir(settings.home, spec.name, run_date, settings.stream.keep_workdir, log.info) as work:
        repairs = doctor.reconcile_task(client, spec.name, lock.stale)
        night = Night(dataset=spec.name, run_date=run_date)
        summary = _night(client, settings, spec, night, work, architectures, hparams, backfill, force, lock)
        summary.notes[:0] = [r.line() for r in repairs]
    retrieval = summary.retrieval
    if summary.decision == approval.TIMEOUT:
        raise approval.ApprovalExpired(
            f"no decision on v{summary.registered_version} within {settings.approval_timeout_s} s: "
            f"champion unchanged ({'v' + summary.champion_after if summary.champion_after else 'none'})",
            summary)
    if retrieval is not None and retrieval.decision == approval.TIMEOUT:
        raise approval.ApprovalExpired(
            f"no decision on {registry.retriever_model_name(spec.name)} v{retrieval.registered_version} within "
            f"{settings.approval_timeout_s} s: retriever champion unchanged "
            f"({'v' + retrieval.champion_after if retrieval.champion_after else 'none'})", summary)
    return summary


def night_date(expected_start: datetime, timezone: str | None) -> date:
    """The run date of a night started without one: the day its run was scheduled to start,
    in the schedule's time zone (a 02:00 Europe/Berlin cron is 01:00 or 00:00 UTC, the same
    date; a 00:30 one is the day before in UTC). No time zone: the machine's local date."""
    if timezone:
        return expected_start.astimezone(ZoneInfo(timezone)).date()
    return expected_start.astimezone().date()


def scheduled_run_date(fallback_timezone: str | None) -> date:
    """The date of this flow run's scheduled start (not the worker's clock: a run that waited
    in the queue past midnight is still the night it was scheduled for), in the time zone of
    the deployment's schedule, else `RECLOOP_SCHEDULE_TIMEZONE`, else local time."""
    return night_date(flow_run.scheduled_start_time, _schedule_timezone() or fallback_timezone)


def _schedule_timezone() -> str | None:
    deployment_id = flow_run.deployment_id
    if not deployment_id:
        return None
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            schedules = client.read_deployment(deployment_id).schedules or []
    except Exception:  # the date still comes from the scheduled start, in the fallback zone
        return None
    zones = [getattr(s.schedule, "timezone", None) for s in schedules]
    return next((z for z in zones if z), None)


def _night(client, settings, spec, night: Night, work: Path, architectures: list[str], hparams, backfill: bool,
           force: bool, lock: NightLock) -> NightSummary:
    log = get_run_logger()
    stage_seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - t0
        return out

    champion = registry.alias_version(client, night.model_name, registry.CHAMPION)
    run_date = night.run_date
    backfill_note = guards.check_staging_day(champion, run_date - timedelta(days=1), run_date, backfill)
    window = timed("ingest", ingest_task, settings.resolved_data_root, spec, run_date, settings.window_days)
    config = settings.train
    code = tracking.code_version()
    night_config = guards.night_config(architectures, hparams, config, settings.window_days, settings.warm_start)
    base = dict(dataset=spec.name, run_date=str(run_date), data_window=window.data_window,
                staging_day=str(window.holdout_day))
    if not (force or backfill) and guards.rerun_of_champion(champion, window.fingerprint, code, night_config):
        note = (f"nothing to do: champion v{champion.version} came from this very night (data fingerprint "
                f"{window.fingerprint}, code {code}, config {night_config}); pass force=True (--force) to retrain")
        log.info(note)
        return NightSummary(**base, champion_before=str(champion.version), champion_after=str(champion.version),
                            notes=[note], noop=True)
    timed("validate", validate_task, window, spec)
    data = timed("preprocess", preprocess_task, window, spec, work, settings.stream, settings.dask, config,
                 settings.drift)
    log.info(f"window {window.data_window}, staging day {window.holdout_day}: {data.train.rows:,} train / "
             f"{data.val.rows:,} val / {data.holdout.rows:,} staging rows; preprocessing fit "
             f"{data.fit_rows_per_s:,.0f} rows/s, transform {data.transform_rows_per_s:,.0f} rows/s")

    night = dataclasses.replace(night, tags={
        "dataset": spec.name,
        "run_date": str(run_date),
        "data_window": window.data_window,
        "validation_day": str(window.val_day),
        "staging_day": str(window.holdout_day),
        "dataset_fingerprint": window.fingerprint,
        "code_version": code,
        guards.NIGHT_CONFIG: night_config,
        "device": data.preprocessor.device,
        "flow_run_id": str(flow_run.id),  # links the MLflow runs to the Prefect run
        **tracking.process_tags(),
    })
    night = night.started(*tracking.start_night(
        client, spec.name, f"night-{run_date}", night.tags, tracking.artifact_location(settings)))
    lock.update(parent_run_id=night.parent_run_id)
    ok, failure = False, None
    try:
        drift = timed("drift", drift_task, client, night, data, settings.drift)
        warm = timed("warm_start", warm_source_task, client, night.model_name, data.preprocessor,
                     settings.warm_start, window.holdout_day)
        candidates = [
            timed("train", train_task, arch, data, spec, config, (hparams or {}).get(arch), night, warm)
            for arch in architectures
        ]
        outcome = timed("staging", staging_task, client, night, candidates, data.holdout_raw,
                        data.holdout_labels, settings.gate, settings.dryrun, evaluate_only=backfill_note is not None,
                        drift=drift)
        if backfill_note:
            outcome.notes.insert(0, backfill_note)
        outcome.notes.append(warm_start_note(candidates))
        promotion = timed("promotion", promotion_task, client, night, outcome, settings.approval_mode)
        decision = approval.APPROVED if promotion is not None else None
        if settings.approval_mode == "manual" and outcome.version_gate is not None and outcome.version_gate.passed:
            request = approval.build_request(client, night, outcome, candidates, settings.resolved_tracking_uri,
                                             str(window.holdout_day), settings.approval_timeout_s)
            decision, promotion = timed("approval", _manual_approval, client, settings, request, outcome.notes)
        if promotion is not None:  # by the gate (auto) or a reviewer (manual)
            _alert_decision(settings, alerts.PROMOTED, client, promotion.name, promotion.version, promotion.previous)
        retrieval = None
        if retrieval_enabled(spec, settings.retrieval):  # candidate generation, then retriever -> ranker
            try:
                retrieval = timed("retrieval", retrieval_task, client, night, spec, window, data, work,
                                  settings.retrieval, settings.approval_mode,
                                  *pipeline_ranker(client, night, candidates, outcome.selected),
                                  chunk_rows=settings.stream.chunk_rows, evaluate_only=backfill_note is not None,
                                  extra_checks=[c for c in [drift_check(drift)] if c is not None])
            except Exception as exc:  # the ranking night stands; the failure is on the run and in the notes
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:500] if str(exc) else ''}"
                log.error(f"retrieval stage failed, the ranking results stand: {why}")
                outcome.notes.append(f"retrieval stage failed: {why}")
                client.set_tag(night.parent_run_id, "retrieval.failure", why)
        if settings.approval_mode == "manual" and retrieval is not None and retrieval.awaits_approval:
            request = approval.build_retriever_request(client, night, retrieval, settings.resolved_tracking_uri,
                                                       str(window.holdout_day), settings.approval_timeout_s)
            verdict, promoted = timed("approval", _manual_approval, client, settings, request, retrieval.notes)
            retrieval.record_decision(verdict, promoted.version if promoted else None)
        if retrieval is not None and retrieval.promoted:  # by its gate (auto) or a reviewer (manual)
            _alert_decision(settings, alerts.PROMOTED, client, registry.retriever_model_name(spec.name),
                            retrieval.registered_version, retrieval.champion_before)
        oracle = report.oracle_column(data.holdout_raw, spec)
        champion_after = registry.alias_version(client, night.model_name, registry.CHAMPION)
        summary = NightSummary(
            **base,
            parent_run_id=night.parent_run_id,
            experiment_id=night.experiment_id,
            rows=report.comparison_rows(candidates, outcome, data.holdout_labels, oracle),
            selected=outcome.selected,
            registered_version=outcome.version,
            promoted=promotion is not None,
            decision=decision,
            backfill=backfill_note is not None,
            champion_before=outcome.champion.version if outcome.champion else None,
            champion_after=str(champion_after.version) if champion_after else None,
            notes=outcome.notes,
            stage_seconds=stage_seconds,
            preprocess_rows_per_s=data.transform_rows_per_s,
            preprocess_fit_seconds=data.fit_seconds,
            oracle_val=report.oracle_scores(window.day(window.val_day), spec),
            stage_rows={"ingest": window.rows([*window.train_days, window.holdout_day]),
                        "validate": window.rows([*window.train_days, window.holdout_day]),
                        "preprocess": data.train.rows + data.val.rows + data.holdout.rows,
                        "train": data.train.rows, "staging": data.holdout.rows},
            preprocess_fit_rows_per_s=data.fit_rows_per_s,
            dask_dashboard=data.dask_dashboard,
            drift=drift,
            retrieval=retrieval,
        )
        create_markdown_artifact(
            key=f"{spec.name.replace('_', '-')}-comparison",
            markdown=_artifact_markdown(summary),
            description=f"Challengers vs champion on {window.holdout_day}",
        )
        for key, secs in stage_seconds.items():
            client.log_metric(night.parent_run_id, f"stage_seconds_{key}", secs)
        client.set_tag(night.parent_run_id, "outcome", "promoted" if promotion else "champion kept")
        if decision is not None:
            client.set_tag(night.parent_run_id, "approval.decision", decision)
        ok = True
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        tracking.end_night(client, night.parent_run_id, ok, failure)
    return summary


@flow(name=approval.APPROVAL_FLOW_NAME, flow_run_name="approve-{request.subject}-v{request.version}",
      log_prints=True)
def nightly_approval(request: approval.ApprovalRequest, night_run_id: str, poll_s: int) -> approval.Decision:
    """Wait for a reviewer's decision on `request.version` of `request.name` (a ranker or a
    retriever). This run pauses (Resume in the Prefect UI, or `recloop approve|reject`); the
    night that called it stays Running. Raises FlowPauseTimeout when nobody decides within `request.timeout_s` (this run ends Failed)."""
    run_id = str(flow_run.id)
    markdown = approval.comparison_markdown(request, run_id)
    create_markdown_artifact(key=f"{request.subject.replace('_', '-')}-approval", markdown=markdown,
                             description=f"Approve {request.name} v{request.version}?")
    # The night's stores: its settings come from the same environment.
    approval.mark_pending(tracking.configure(get_settings()), request.name, request.version, run_id,
                          request.timeout_s, night_run_id)
    get_run_logger().info(
        f"{request.name} v{request.version} waits for a decision (up to {request.timeout_s} s): Resume in the Prefect UI, "
        f"or `recloop approve|reject {run_id} --reviewer NAME --reason TEXT`")
    return pause_flow_run(wait_for_input=approval.Decision.with_initial_data(description=markdown),
                          timeout=request.timeout_s, poll_interval=poll_s, key=request.pause_key)


def _manual_approval(client, settings, req: approval.ApprovalRequest, notes: list[str]):
    """For `req` (a ranker's or a retriever's version): publish the comparison, wait in the
    `nightly-approval` subflow until a reviewer decides (or the pause times out), record the
    decision (a note in `notes`). The night itself never pauses: Prefect revokes a deployment
    run's concurrency lease when the run leaves Running, and the night's next lease renewal
    (every 225 s) would then crash it. Pause, not suspend: the process keeps
    the trained candidates and the open MLflow run in memory, and a resume continues here."""
    log = get_run_logger()
    started = time.monotonic()
    waiting = nightly_approval(req, str(flow_run.id), settings.approval_poll_s, return_state=True)
    if waiting.is_completed():
        decision = waiting.result()
    elif time.monotonic() - started >= settings.approval_timeout_s:
        # Nobody decided: the subflow raised FlowPauseTimeout, and the server may have replaced
        # that Failed state with its own ("never resumed"), so the elapsed time is what tells.
        # The registry records the timeout; the flow raises ApprovalExpired at its end.
        log.warning(f"no decision on {req.name} v{req.version} within {settings.approval_timeout_s} s; champion unchanged")
        decision = None
    else:
        waiting.result()  # raises what ended the approval run early
    run_id = str(waiting.state_details.flow_run_id)  # the approval run: the one a reviewer resumed
    verdict, promotion = approval.decision_task(client, req.name, req.version, decision, run_id,
                                                settings.approval_timeout_s, req.champion_version)
    if verdict == approval.STALE:
        log.warning(f"{req.name} v{req.version} not promoted: the champion changed while it waited for a decision")
    if verdict in (approval.REJECTED, approval.TIMEOUT, approval.STALE):  # the alert's event names
        _alert_decision(settings, verdict, client, req.name, req.version, req.champion_version)
    who = f" by {decision.reviewer}" if decision is not None else ""
    what = f"{req.name} v{req.version}" if req.retrieval is not None else f"v{req.version}"
    notes.append(f"{what} {verdict}{who}" + (f": {decision.reason}" if decision and decision.reason else ""))
    return verdict, promotion


def _artifact_markdown(summary: NightSummary) -> str:
    head = (f"## Nightly retrain: {summary.dataset} for {summary.run_date}\n\n"
            f"Training window {summary.data_window}, staging day {summary.staging_day}.\n\n")
    outcome = (f"\n\n**Champion:** v{summary.champion_before or '-'} -> v{summary.champion_after or '-'}"
               f" ({'promoted' if summary.promoted else 'unchanged'})\n")
    notes = "".join(f"\n- {n}" for n in summary.notes)
    return (head + report.markdown_table(summary.rows) + outcome + notes + "\n\n" + report.drift_markdown(summary.drift)
            + report.retrieval_markdown(summary.retrieval))
