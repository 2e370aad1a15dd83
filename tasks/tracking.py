"""MLflow tracking setup and the nightly parent run (one experiment per dataset)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tasks.settings import Settings


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured stores (called at flow start, never at import)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    mlflow.set_registry_uri(settings.resolved_registry_uri)
    return MlflowClient(settings.resolved_tracking_uri, settings.resolved_registry_uri)


def code_version() -> str:
    """The git commit of the running code (with '-dirty' if modified), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"recloop-{version('recloop')}"


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


def end_night(client: MlflowClient, run_id: str, ok: bool) -> None:
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))
