"""The nightly retraining flow: orchestration only, the work is in `tasks/`.

ingest -> validate (GX) -> preprocess (NVTabular) -> train each architecture (PyTorch)
-> staging evaluation vs the champion -> register -> approval -> promotion (registry alias)
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run

from feature_store.spec import DEFAULT_DATASET, load_spec
from flows.console import quiet_expected_stops
from tasks import approval, doctor, guards, preflight, registry, report, tracking
from tasks.evaluate import GatePolicy
from tasks.ingest import ingest_task
from tasks.lock import NightLock
from tasks.preprocess import preprocess_task
from tasks.settings import get_settings
from tasks.stage import promotion_task, staging_task
from tasks.train import check_architectures, train_config, train_task
from tasks.validate import validate_task

DEFAULT_ARCHITECTURES = ["wide", "deep", "wide_deep"]


@flow(name=approval.FLOW_NAME, log_prints=True)
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
) -> dict:
    """Retrain on the window before `run_date`, gate against the champion, maybe promote.

    `backfill`: a night whose staging day the champion trained on only evaluates (registers
    nothing); without it such a night is refused. `force`: run even when this very night
    (same data, code and config) already produced the champion."""
    log = get_run_logger()
    quiet_expected_stops()
    settings = get_settings(approval_mode=approval_mode, epochs=epochs, data_root=data_root,
                            approval_timeout_s=approval_timeout_s)
    run_date = run_date or date.today()
    architectures = architectures or DEFAULT_ARCHITECTURES
    spec = load_spec(dataset, settings.spec_dirs)
    check_architectures(architectures, hparams)
    preflight.check_home(settings.home)
    preflight.check_stores(settings.resolved_tracking_uri, settings.resolved_registry_uri)
    client = tracking.configure(settings)
    with NightLock(settings.home, spec.name).acquire(
        settings.lock_wait_s, log=log.info, run_date=str(run_date), flow_run_id=str(flow_run.id)
    ) as lock:
        repairs = doctor.reconcile_task(client, spec.name, lock.stale)
        summary = _night(client, settings, spec, run_date, architectures, hparams, backfill, force, lock)
        summary["notes"][:0] = [r.line() for r in repairs]
    if summary["decision"] == approval.TIMEOUT:
        raise approval.ApprovalExpired(
            f"no decision on v{summary['registered_version']} within {settings.approval_timeout_s} s: "
            f"champion unchanged ({'v' + summary['champion_after'] if summary['champion_after'] else 'none'})",
            summary)
    return summary


def _night(client, settings, spec, run_date: date, architectures: list[str], hparams, backfill: bool,
           force: bool, lock: NightLock) -> dict:
    log = get_run_logger()
    stage_seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - t0
        return out

    name = registry.registered_model_name(spec.name)
    champion = registry.alias_version(client, name, registry.CHAMPION)
    backfill_note = guards.check_staging_day(champion, run_date - timedelta(days=1), run_date, backfill)
    window = timed("ingest", ingest_task, settings.resolved_data_root, spec, run_date, settings.window_days)
    config = train_config(settings)
    code = tracking.code_version()
    night_config = guards.night_config(architectures, hparams, config, settings.window_days)
    if not (force or backfill) and guards.rerun_of_champion(champion, window.fingerprint, code, night_config):
        note = (f"nothing to do: champion v{champion.version} came from this very night (data fingerprint "
                f"{window.fingerprint}, code {code}, config {night_config}); pass force=True (--force) to retrain")
        log.info(note)
        return _noop_summary(spec.name, run_date, window, str(champion.version), note)
    timed("validate", validate_task, window, spec)
    data = timed("preprocess", preprocess_task, window, spec)
    log.info(f"window {window.data_window}, staging day {window.holdout_day}: "
             f"{len(data.train['label'])} train / {len(data.val['label'])} val / {len(data.holdout_labels)} staging rows")

    run_tags = {
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
    }
    exp_id, parent_id = tracking.start_night(
        client, spec.name, f"night-{run_date}", run_tags, tracking.artifact_location(settings)
    )
    lock.update(parent_run_id=parent_id)
    ok, failure = False, None
    try:
        candidates = [
            timed("train", train_task, arch, data, spec, config, (hparams or {}).get(arch),
                  exp_id, parent_id, run_tags)
            for arch in architectures
        ]
        policy = GatePolicy.from_settings(settings)
        outcome = timed("staging", staging_task, client, spec.name, candidates, data.holdout_raw,
                        data.holdout_labels, policy, {**run_tags, "parent_run_id": parent_id},
                        evaluate_only=backfill_note is not None)
        if backfill_note:
            outcome.notes.insert(0, backfill_note)
        promotion = timed("promotion", promotion_task, client, spec.name, outcome, settings.approval_mode)
        decision = approval.APPROVED if promotion is not None else None
        if settings.approval_mode == "manual" and outcome.version_gate is not None and outcome.version_gate.passed:
            decision, promotion = timed("approval", _manual_approval, client, settings, spec.name, outcome,
                                        candidates, str(window.holdout_day))
        oracle = (data.holdout_raw[spec.oracle_column].to_numpy(dtype=float)
                  if spec.oracle_column and spec.oracle_column in data.holdout_raw else None)
        rows = report.comparison_rows(candidates, outcome, data.holdout_labels, oracle)
        champion_after = registry.alias_version(client, name, registry.CHAMPION)
        summary = {
            "dataset": spec.name,
            "run_date": str(run_date),
            "data_window": window.data_window,
            "staging_day": str(window.holdout_day),
            "parent_run_id": parent_id,
            "experiment_id": exp_id,
            "rows": rows,
            "selected": outcome.selected,
            "registered_version": outcome.version,
            "promoted": promotion is not None,
            "decision": decision,
            "noop": False,
            "backfill": backfill_note is not None,
            "champion_before": outcome.champion.version if outcome.champion else None,
            "champion_after": str(champion_after.version) if champion_after else None,
            "notes": outcome.notes,
            "stage_seconds": stage_seconds,
            "preprocess_rows_per_s": data.transform_rows_per_s,
            "preprocess_fit_seconds": data.fit_seconds,
            "oracle_val": report.oracle_scores(window.frames[window.val_day], spec),
        }
        create_markdown_artifact(
            key=f"{spec.name.replace('_', '-')}-comparison",
            markdown=_artifact_markdown(summary),
            description=f"Challengers vs champion on {window.holdout_day}",
        )
        for key, secs in stage_seconds.items():
            client.log_metric(parent_id, f"stage_seconds_{key}", secs)
        client.set_tag(parent_id, "outcome", "promoted" if promotion else "champion kept")
        if decision is not None:
            client.set_tag(parent_id, "approval.decision", decision)
        ok = True
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        tracking.end_night(client, parent_id, ok, failure)
    return summary


def _noop_summary(dataset: str, run_date: date, window, champion: str, note: str) -> dict:
    return {
        "dataset": dataset, "run_date": str(run_date), "data_window": window.data_window,
        "staging_day": str(window.holdout_day), "parent_run_id": None, "experiment_id": None, "rows": [],
        "selected": None, "registered_version": None, "promoted": False, "decision": None, "noop": True,
        "backfill": False, "champion_before": champion, "champion_after": champion, "notes": [note],
        "stage_seconds": {},
    }


def _manual_approval(client, settings, dataset: str, outcome, candidates, staging_day: str):
    """Publish the comparison, pause until a reviewer decides (or the pause times out), record
    the decision. Pause, not suspend: the process keeps the trained candidates and the open
    MLflow run in memory, and a resume continues here instead of re-running the night."""
    log = get_run_logger()
    run_id = str(flow_run.id)
    req = approval.build_request(client, dataset, outcome, candidates, settings.resolved_tracking_uri,
                                 staging_day, settings.approval_timeout_s)
    markdown = approval.comparison_markdown(req, run_id)
    create_markdown_artifact(key=f"{dataset.replace('_', '-')}-approval", markdown=markdown,
                             description=f"Approve {req.name} v{req.version}?")
    approval.mark_pending(client, req.name, req.version, run_id, settings.approval_timeout_s)
    log.info(f"v{req.version} waits for a decision (up to {settings.approval_timeout_s} s): Resume in the "
             f"Prefect UI, or `recloop approve|reject {run_id} --reviewer NAME --reason TEXT`")
    try:
        decision = pause_flow_run(
            wait_for_input=approval.Decision.with_initial_data(description=markdown),
            timeout=settings.approval_timeout_s, poll_interval=settings.approval_poll_s,
            key=f"approve-v{req.version}",
        )
    except FlowPauseTimeout:
        # The registry records the timeout; the flow raises ApprovalExpired at its end.
        log.warning(f"no decision on v{req.version} within {settings.approval_timeout_s} s; champion unchanged")
        decision = None
    verdict, promotion = approval.decision_task(client, req.name, req.version, decision, run_id,
                                                settings.approval_timeout_s, req.champion_version)
    if verdict == approval.STALE:
        log.warning(f"v{req.version} not promoted: the champion changed while it waited for a decision")
    who = f" by {decision.reviewer}" if decision is not None else ""
    outcome.notes.append(f"v{req.version} {verdict}{who}" + (f": {decision.reason}" if decision and decision.reason else ""))
    return verdict, promotion


def _artifact_markdown(summary: dict) -> str:
    head = (f"## Nightly retrain: {summary['dataset']} for {summary['run_date']}\n\n"
            f"Training window {summary['data_window']}, staging day {summary['staging_day']}.\n\n")
    outcome = (f"\n\n**Champion:** v{summary['champion_before'] or '-'} -> v{summary['champion_after'] or '-'}"
               f" ({'promoted' if summary['promoted'] else 'unchanged'})\n")
    notes = "".join(f"\n- {n}" for n in summary["notes"])
    return head + report.markdown_table(summary["rows"]) + outcome + notes
