"""Training-serving skew and drift: the training window against the staging day, per feature.

The profiles come from preprocessing (`feature_store.drift`: the window's from the fit's own
chunk reads, the staging day's binned on the window's quantiles); this stage compares them,
logs `drift.<measure>.<feature>` metrics, the tags `drift.mode` / `drift.flagged`, the plot
`plots/drift.png` and `drift/report.json` on the night's parent run, and warns about what it
flagged. In mode `block` a flagged feature becomes a failing `drift` check of every
candidate's staging gate (`drift_check`), so nothing is registered and the champion stays.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feature_store.drift import DriftPolicy, DriftReport, Profile, compare
from tasks import plots
from tasks.evaluate import Check
from tasks.handoff import Night, PreparedData

CHECK = "drift"  # the gate check's name
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_TAG_CHARS = 5000  # MLflow's limit of a tag value


def flagged_tag(report: DriftReport) -> str:
    """`drift.flagged`: 'measure:feature, ...' most severe first, or 'none'."""
    text = ", ".join(f"{f.measure}:{f.feature}" for f in report.flags) or "none"
    return text if len(text) <= _TAG_CHARS else text[: _TAG_CHARS - 3] + "..."


def log_report(client: MlflowClient, run_id: str, report: DriftReport) -> None:
    """Metrics, tags, plot and the full report (JSON) on the night's parent run."""
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in report.metrics().items()]
    tags = [RunTag("drift.mode", report.mode), RunTag("drift.flagged", flagged_tag(report))]
    for i in range(0, max(len(metrics), 1), _BATCH):
        client.log_batch(run_id, metrics=metrics[i: i + _BATCH], tags=tags if i == 0 else [])
    fig = plots.drift_figure(report)
    client.log_figure(run_id, fig, "plots/drift.png")
    plots.close(fig)
    client.log_dict(run_id, dataclasses.asdict(report), "drift/report.json")


def check_drift(client: MlflowClient, night: Night, train: Profile | None, staging: Profile | None,
                policy: DriftPolicy, warn: Callable[[str], None] = print) -> DriftReport | None:
    """Compare the profiles, log the result on the parent run, warn about flagged features.
    None when drift is off (or preprocessing made no profiles)."""
    if policy.mode == "off" or train is None or staging is None:
        return None
    report = compare(train, staging, policy)
    log_report(client, night.parent_run_id, report)
    if report.flags:
        consequence = "every candidate fails the gate" if report.blocks else "the night goes on (mode warn)"
        warn(f"{len(report.flags)} drift flag(s) between the training window and the staging day, "
             f"{consequence}: {report.reason}")
    return report


def drift_check(report: DriftReport | None) -> Check | None:
    """The failing gate check a blocking report adds to every candidate, else None."""
    if report is None or not report.blocks:
        return None
    return Check(CHECK, False, report.reason)


def drift_note(report: DriftReport | None) -> str | None:
    """The night's note when drift was flagged but not gated (mode warn), else None; a blocking
    report names its reason in the gate's note ('no candidate passed the gate (drift: ...)')."""
    if report is None or not report.flags or report.blocks:
        return None
    return (f"drift: {len(report.flags)} measure(s) over their thresholds, not gated in mode "
            f"{report.mode} (see the Drift section)")


@task(name="drift", cache_policy=NO_CACHE)
def drift_task(client: MlflowClient, night: Night, data: PreparedData, policy: DriftPolicy) -> DriftReport | None:
    """Training window vs staging day, per feature; logged on the night's parent run."""
    return check_drift(client, night, data.train_profile, data.staging_profile, policy,
                       warn=get_run_logger().warning)
