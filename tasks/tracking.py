"""MLflow tracking setup and the nightly parent run (one experiment per dataset)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tasks import processes
from tasks.settings import Settings


def run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI when the tracking store is a server; None otherwise
    (a SQLite store has no UI address of its own)."""
    if run_id and experiment_id and tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured stores (called at flow start, never at import)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_registry_uri)
    return MlflowClient(settings.resolved_tracking_uri, settings.resolved_registry_uri)


def code_version() -> str:
    """The git commit of the running code, else the package version. Modified code gets
    '-dirty-<hash of the diff>': two different edits of one commit must not look like the same
    code (a re-run of a night is a no-op only when data, code and config are the same)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=root, capture_output=True, timeout=10).stdout
        return sha + (f"-dirty-{hashlib.sha256(diff).hexdigest()[:8]}" if diff.strip() else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"recloop-{version('recloop')}"


def process_tags() -> dict[str, str]:
    """Who runs this night: host, pid and the pid's start time (a recycled pid has another), so
    `recloop doctor` can tell a night that is still running from one whose process died."""
    host, pid, start = processes.this_process()
    return {PROCESS_HOST: host, PROCESS_PID: str(pid), PROCESS_START: start}


PROCESS_HOST, PROCESS_PID, PROCESS_START = "recloop.host", "recloop.pid", "recloop.pid_start"


def process_alive(tags: dict[str, str]) -> bool | None:
    """True/False when the tags name a process on this host, None when it is another host's."""
    if not tags.get(PROCESS_PID, "").isdigit():
        return None
    return processes.is_alive(tags.get(PROCESS_HOST, ""), int(tags[PROCESS_PID]), tags.get(PROCESS_START, ""))


def artifact_location(settings: Settings) -> str | None:
    """With a local SQLite store, artifacts go under <home>/artifacts (not the current
    directory); a tracking server manages its own artifact store."""
    if settings.resolved_tracking_uri.startswith("sqlite:"):
        return (settings.home / "artifacts").resolve().as_uri()
    return None


def experiment_id(client: MlflowClient, dataset: str, location: str | None = None) -> str:
    exp = client.get_experiment_by_name(dataset)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(dataset, artifact_location=location, tags={"dataset": dataset})


def start_night(
    client: MlflowClient, dataset: str, run_name: str, tags: dict[str, str], location: str | None = None
) -> tuple[str, str]:
    exp_id = experiment_id(client, dataset, location)
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    return exp_id, run.info.run_id


def end_night(client: MlflowClient, run_id: str, ok: bool, reason: str | None = None) -> None:
    """End the parent run; a failed night says why on the run (tag `failure.reason`)."""
    if reason:
        client.set_tag(run_id, "failure.reason", reason[:4000])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))
