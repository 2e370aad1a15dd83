"""Staging evaluation against the champion, registration, and (automatic) promotion.

Every candidate is scored on the staging day next to the champion, which is scored through
its own registered bundle (its own preprocessing). The candidate with the best validation
AUC among those that pass the gate is registered; the bundle must load back from the store and
reproduce its predictions, and the registered version, served by a real scoring server
(tasks/dryrun.py), must answer the same predictions within the latency budget before it gets
the `challenger` alias. Nothing here touches `champion` unless the gate passed and the approval
step says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlflow
import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feature_store.drift import DriftReport
from tasks import faults, plots, registry
from tasks.drift import drift_check, drift_note
from tasks.dryrun import DISABLED, PENDING, DryRunConfig, pending_check, run_dry_run
from tasks.evaluate import Check, GatePolicy, GateResult, evaluate_gate, reload_check
from tasks.handoff import Candidate, ChampionScore, FrameDay, Night, RawDay, StagingOutcome


def input_columns(bundle) -> list[str] | None:
    """The raw columns a loaded bundle's signature declares (None: no signature, every column)."""
    schema = bundle.metadata.get_input_schema()
    return schema.input_names() if schema is not None else None


def predict_raw(bundle, day: RawDay | FrameDay) -> np.ndarray:
    """Score a day's raw rows with a loaded bundle, a chunk at a time (a staging day of tens of
    millions of rows never sits in memory whole), passing only the columns its signature declares."""
    columns = input_columns(bundle)
    parts = [np.asarray(bundle.predict(chunk[columns] if columns else chunk), dtype=np.float64)
             for chunk in day.chunks(columns)]
    return np.concatenate(parts) if parts else np.empty(0, np.float64)


def score_champion(client: MlflowClient, name: str, holdout_raw: RawDay | FrameDay) -> ChampionScore | None:
    """Predict the staging day with the current champion's own bundle; None if no champion.

    A champion that no longer loads or scores (deleted artifacts, a bundle from an incompatible
    code version, non-finite output) must not block every later night: it is tagged
    `health=broken` with the reason, and the challengers are judged against the absolute floor,
    so a passing one replaces it."""
    mv = registry.alias_version(client, name, registry.CHAMPION)
    if mv is None:
        return None
    try:
        bundle = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
        pred = predict_raw(bundle, holdout_raw)
        if not np.all(np.isfinite(pred)):
            raise ValueError(f"{int(np.sum(~np.isfinite(pred)))} non-finite predictions")
    except Exception as exc:  # whatever broke, the night goes on without it
        reason = f"cannot score the staging day: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        registry.mark_health(client, name, str(mv.version), reason)
        return ChampionScore(str(mv.version), mv.run_id, None, broken=reason)
    registry.mark_health(client, name, str(mv.version), None)
    return ChampionScore(str(mv.version), mv.run_id, pred)


def gate_candidates(
    client: MlflowClient,
    candidates: list[Candidate],
    y: np.ndarray,
    champion: ChampionScore | None,
    policy: GatePolicy,
    extra_checks: Sequence[Check] = (),
) -> dict[str, GateResult]:
    """Gate every candidate and log the staging numbers (the champion's too) on its run.
    `extra_checks` join every candidate's gate (a blocking drift report's `drift` check)."""
    gates = {}
    baseline = champion.pred if champion is not None else None
    for cand in candidates:
        gate = evaluate_gate(y, cand.holdout_pred, baseline, policy)
        for check in extra_checks:
            gate.add_check(check)
        gates[cand.arch] = gate
        for key, value in gate.metrics().items():
            client.log_metric(cand.run_id, key, float(value))
        client.set_tag(cand.run_id, "gate.verdict", gate.verdict)
        if champion:
            client.set_tag(cand.run_id, "champion_version", champion.version)
        scores = {cand.arch: cand.holdout_pred}
        if baseline is not None:
            scores[f"champion v{champion.version}"] = baseline
        if np.all(np.isfinite(cand.holdout_pred)):
            for fig_fn, path in ((plots.roc_figure, "plots/staging_roc.png"),
                                 (plots.calibration_figure, "plots/staging_calibration.png")):
                fig = fig_fn(y, scores, f"{cand.arch}: staging day")
                client.log_figure(cand.run_id, fig, path)
                plots.close(fig)
    return gates


def select_candidate(candidates: list[Candidate], gates: dict[str, GateResult]) -> Candidate | None:
    """Best validation AUC among candidates that passed the gate. Selection uses the validation
    day, not the staging day, so the staging numbers stay an unbiased check."""
    passing = [c for c in candidates if gates[c.arch].passed]
    return max(passing, key=lambda c: c.result.best_val_auc) if passing else None


def register_challenger(
    client: MlflowClient, night: Night, cand: Candidate, gate: GateResult, holdout_raw: RawDay | FrameDay,
    dry_run: DryRunConfig | None = None, log: Callable[[str], None] = print,
) -> tuple[str, GateResult]:
    """Check that the logged bundle loads back and reproduces its predictions, register it with
    its gate result in one write, serve the registered version in a dry run (`dry_run` enabled),
    then alias it `challenger` if every check passed.

    The order is for crashes (a version is visible only with its gate tags, `gate.passed=true`
    only once every check passed, the alias moves last):
    1. the version is created with its gate tags in one write (the store writes a version and
       its tags in one transaction). The reload before it reads the logged model, the very
       artifacts the version points to. With a dry run to come, those tags say not passed:
       check `served_dry_run` pending, `dryrun.result=pending`, `gate.passed=false`;
    2. the dry run serves `models:/<name>/<version>`, the version as `recloop serve` serves it;
    3. its result: `dryrun.*`, `gate.checks`, `gate.verdict`, then `gate.passed`;
    4. `challenger`, if it passed.
    Killed during 2 or 3: a version that never passed and is not challenger, nothing stored is
    removed; `recloop doctor` (every night runs it) records the dry run as interrupted."""
    name = night.model_name
    columns = None
    try:
        reloaded = mlflow.pyfunc.load_model(cand.model_uri)
        columns = input_columns(reloaded)
        gate.add_check(reload_check(predict_raw(reloaded, holdout_raw), cand.holdout_pred))
    except Exception as exc:  # any failure to load or predict is a failed sanity check
        gate.add_check(Check("bundle_reload", False, f"bundle failed to reload from the store: {exc}"))
    reload = next(c for c in gate.checks if c.name == "bundle_reload")
    health = {registry.HEALTH: registry.OK if reload.passed else registry.BROKEN,
              registry.HEALTH_REASON: "" if reload.passed else reload.detail, registry.HEALTH_AT: registry.utc_stamp()}
    serve_it = dry_run is not None and dry_run.enabled and gate.passed
    if serve_it:
        gate.add_check(pending_check())
        status = PENDING
    elif dry_run is None or not dry_run.enabled:
        status = DISABLED
    else:
        status = f"not run: {gate.verdict}"
    mv = registry.register_version(client, name, night.dataset, cand.model_uri, cand.run_id,
                                   {**night.version_tags, "arch": cand.arch, **gate.tags(), **health,
                                    "dryrun.result": status})
    version = str(mv.version)
    faults.point("after_version_created")
    client.set_tag(cand.run_id, "registered_version", version)
    if serve_it:
        result = run_dry_run(f"models:/{name}/{version}", holdout_raw, cand.holdout_pred, columns, dry_run, log)
        gate.record_dry_run(result)
        log(f"dry run of v{version}: {result.check().detail} ({result.seconds:.1f} s)")
        for key, value in result.metrics().items():
            client.log_metric(cand.run_id, key, value)
        registry.set_tags(client, name, version, {**result.tags(), "gate.checks": gate.explanation,
                                                  "gate.verdict": gate.verdict})
        registry.set_tags(client, name, version, {"gate.passed": str(gate.passed).lower()})  # last: the verdict
    if gate.passed:
        client.set_registered_model_alias(name, registry.CHALLENGER, version)
    return version, gate


def run_staging(
    client: MlflowClient,
    night: Night,
    candidates: list[Candidate],
    holdout_raw: RawDay | FrameDay,
    y: np.ndarray,
    policy: GatePolicy,
    log: Callable[[str], None] = print,
    evaluate_only: bool = False,
    drift: DriftReport | None = None,
    dry_run: DryRunConfig | None = None,
) -> StagingOutcome:
    """Gate the candidates against the champion on the staging day, register the choice, serve it
    in a dry run (`dry_run`; None: none, for tests of other stages), alias it `challenger`.
    `drift`: the night's drift report; in mode `block` its flags fail every candidate's gate
    (check `drift`, the reason in its detail), so nothing is registered."""
    champion = score_champion(client, night.model_name, holdout_raw)
    if champion is None:
        log("champion: none yet (absolute floor applies)")
    elif champion.broken:
        log(f"champion v{champion.version} is broken ({champion.broken}): tagged health=broken; "
            "the absolute floor applies, a passing challenger replaces it")
    else:
        log(f"champion: v{champion.version}")
    blocked = drift_check(drift)
    gates = gate_candidates(client, candidates, y, champion, policy, [blocked] if blocked else ())
    outcome = StagingOutcome(gates=gates, champion=champion, drift=drift)
    if champion is not None and champion.broken:
        outcome.notes.append(f"champion v{champion.version} marked health=broken: {champion.broken}")
    if drift_note(drift):
        outcome.notes.append(drift_note(drift))
    if evaluate_only:
        outcome.notes.append("backfill: evaluated only, nothing registered or promoted")
        return outcome
    chosen = select_candidate(candidates, gates)
    if chosen is None:
        why = f" ({blocked.detail})" if blocked else ""
        outcome.notes.append(f"no candidate passed the gate{why}; champion unchanged")
        return outcome
    version, gate = register_challenger(client, night, chosen, gates[chosen.arch], holdout_raw, dry_run, log)
    outcome.selected, outcome.version, outcome.version_gate = chosen.arch, version, gate
    if not gate.passed:
        outcome.notes.append(f"v{version} ({chosen.arch}) failed after registration: {gate.explanation}")
    return outcome


def approve_and_promote(
    client: MlflowClient, night: Night, outcome: StagingOutcome, approval_mode: str
) -> registry.Promotion | None:
    """Mode `auto`: promote when the gate passed. Mode `manual` leaves the `challenger` alias
    for a person to approve."""
    if outcome.version is None or outcome.version_gate is None or not outcome.version_gate.passed:
        return None
    if approval_mode != "auto":
        outcome.notes.append(f"v{outcome.version} is the challenger, waiting for manual approval")
        return None
    return registry.promote(client, night.model_name, outcome.version, approved_by="auto-gate",
                            reason=f"staging gate passed: {outcome.version_gate.explanation}")


@task(name="staging-evaluation", cache_policy=NO_CACHE)
def staging_task(client: MlflowClient, night: Night, candidates: list[Candidate], holdout_raw: RawDay | FrameDay,
                 y: np.ndarray, policy: GatePolicy, dry_run: DryRunConfig, evaluate_only: bool = False,
                 drift: DriftReport | None = None) -> StagingOutcome:
    """Score candidates and the champion on the staging day; register the gate's choice and serve it."""
    return run_staging(client, night, candidates, holdout_raw, y, policy, log=get_run_logger().info,
                       evaluate_only=evaluate_only, drift=drift, dry_run=dry_run)


@task(name="promotion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def promotion_task(client: MlflowClient, night: Night, outcome: StagingOutcome,
                   approval_mode: str) -> registry.Promotion | None:
    """Move the `champion` alias when approved (retried: a registry call can time out)."""
    return approve_and_promote(client, night, outcome, approval_mode)
