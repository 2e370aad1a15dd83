"""The `recloop` command line: generate data, run a night, run the two-night demo, show status."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flows.console import stdout_console
from flows.spec_options import SpecOption, dataset_names, dataset_spec, flow_dataset_name

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Nightly retraining loop for CTR ranking models.")


class _LazyConsole:
    """A `stdout_console` made at first use, and again whenever sys.stdout changes."""

    _console: Console | None = None

    def __getattr__(self, name):
        if self._console is None or self._console.file is not sys.stdout:
            self._console = stdout_console()
        return getattr(self._console, name)


console = _LazyConsole()

DEMO_START = date(2026, 1, 1)
DEMO_DAYS = 10


def _quiet_libraries() -> None:
    """NVTabular/merlin warn about missing TensorFlow/Triton and CPU mode: expected here."""
    warnings.filterwarnings("ignore", module=r"merlin\..*")
    warnings.filterwarnings("ignore", message=r".*experimental CPU mode.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=r".*Inferred schema contains integer column.*")
    # MLflow warns on every pyfunc log that the wrapper is cloudpickled; that is the design here.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _settings(**overrides):
    from tasks.settings import get_settings

    return get_settings(**overrides)


@app.command()
def generate(
    days: Annotated[int, typer.Option(help="Number of day partitions.")] = DEMO_DAYS,
    rows_per_day: Annotated[int, typer.Option(help="Impressions per day.")] = 20_000,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = str(DEMO_START),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 7,
    data_root: Annotated[Optional[Path], typer.Option(help="Default: $RECLOOP_HOME/data.")] = None,
) -> None:
    """Write the embedded synthetic click log as day partitions."""
    _quiet_libraries()
    from feature_store.generators.synthetic import generate_synthetic

    root = data_root or _settings().resolved_data_root
    with console.status(f"generating {days} days x {rows_per_day} rows into {root}"):
        paths = generate_synthetic(root, start=date.fromisoformat(start), days=days,
                                   rows_per_day=rows_per_day, seed=seed)
    console.print(f"wrote {len(paths)} day partitions under {root}/synthetic_clicks")


@app.command()
def run(
    run_date: Annotated[str, typer.Option("--date", help="Run date D: trains on days before D-1, stages on D-1.")],
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name (RECLOOP_SPEC_DIRS, then the package's specs); default synthetic_clicks.")] = None,
    spec: SpecOption = None,
    arch: Annotated[Optional[list[str]], typer.Option(help="Architecture (repeatable).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Max epochs (early stopping may stop sooner).")] = None,
    approval: Annotated[Optional[str], typer.Option(help="auto | manual (default from settings).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary as JSON.")] = None,
) -> None:
    """Run one night of the loop (Prefect flow `nightly-retrain`)."""
    _quiet_libraries()
    from feature_store.spec import DEFAULT_DATASET
    from tasks.approval import TIMEOUT

    resolved = dataset_spec(dataset, spec, default=DEFAULT_DATASET)
    summary = _run_night(date.fromisoformat(run_date), resolved.reference, arch, epochs, approval)
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2, default=str))
    if summary["decision"] == TIMEOUT:  # the Prefect run ended Failed (ApprovalExpired)
        raise typer.Exit(code=3)


def _run_night(run_date: date, dataset: str, arch, epochs, approval) -> dict:
    from feature_store.errors import RecloopInputError
    from flows.nightly import nightly_retrain
    from tasks.approval import ApprovalExpired
    from tasks.report import rich_table

    expired = None
    try:
        summary = nightly_retrain(run_date=run_date, dataset=dataset, architectures=arch or None,
                                  approval_mode=approval, epochs=epochs)
    except RecloopInputError as exc:
        console.print(f"[bold red]run for {run_date} stopped before training; the registry is unchanged[/]")
        console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(code=2) from None
    except ApprovalExpired as exc:
        summary, expired = exc.summary, exc
    console.print(rich_table(summary["rows"], f"{summary['dataset']}: night of {run_date} (staging day {summary['staging_day']})"))
    before, after = summary["champion_before"], summary["champion_after"]
    verdict = (f"promoted v{after} (was {'v' + before if before else 'none'})" if summary["promoted"]
               else f"champion unchanged ({'v' + after if after else 'none'})")
    console.print(f"[bold]{verdict}[/bold]")
    for note in summary["notes"]:
        console.print(f"  - {note}")
    if expired is not None:  # the Prefect run ended Failed: nobody decided in time
        console.print(f"[bold red]{expired}[/]", highlight=False)
    return summary


@app.command()
def demo(
    fresh: Annotated[bool, typer.Option(help="Start over: delete the synthetic data and the default local MLflow store.")] = True,
    epochs: Annotated[Optional[int], typer.Option(help="Max epochs per architecture.")] = None,
    rows_per_day: Annotated[int, typer.Option(help="Impressions per day.")] = 20_000,
) -> None:
    """Generate the embedded data and run two nights: the first champion, then challengers."""
    _quiet_libraries()
    settings = _settings()
    if fresh:
        # Only what the demo itself makes: the synthetic partitions and the default local
        # store. A configured tracking server or another dataset is never touched.
        targets = [settings.resolved_data_root / "synthetic_clicks"]
        if settings.tracking_uri is None:
            targets += [settings.home / "mlflow.db", settings.home / "artifacts"]
        for target in targets:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            else:
                continue
            console.print(f"removed {target} (demo starts fresh; --no-fresh keeps it)")
    generate(days=DEMO_DAYS, rows_per_day=rows_per_day, start=str(DEMO_START), seed=7, data_root=None)
    last_day = DEMO_START + timedelta(days=DEMO_DAYS - 1)
    for night, run_date in enumerate((last_day, last_day + timedelta(days=1)), start=1):
        console.rule(f"night {night}: run date {run_date}")
        _run_night(run_date, "synthetic_clicks", None, epochs, "auto")
    console.rule("look further")
    console.print(f"  make ui          MLflow UI on {settings.resolved_tracking_uri} (http://127.0.0.1:5000)")
    console.print("  make status      champion / challenger per dataset")
    console.print("  recloop run --date YYYY-MM-DD --arch wide_deep   one more night")


@app.command()
def status(dataset: Annotated[Optional[list[str]], typer.Option(help="Dataset (repeatable); default: all specs.")] = None,
           spec: SpecOption = None) -> None:
    """Champion and challenger versions per dataset."""
    _quiet_libraries()
    from rich.table import Table

    from tasks import registry

    client = _mlflow_client()
    table = Table(title="registry")
    for col in ("registered model", "alias", "version", "arch", "staging AUC", "gate", "approved by"):
        table.add_column(col)
    for ds in dataset_names(dataset, spec):
        for st in registry.status(client, ds):
            table.add_row(st.name, st.alias, st.version or "-", st.tags.get("arch", ""),
                          st.tags.get("gate.staging_auc", ""), st.tags.get("gate.verdict", ""),
                          st.tags.get("approval.by", ""))
    console.print(table)


# --- served stack (`recloop stack up|down|status`; the logic is in flows/stack.py) ---------
from flows.stack import app as _stack_app  # noqa: E402  (typer only: cheap to import)

app.add_typer(_stack_app, name="stack")
# --- end of served stack -------------------------------------------------------------------

from flows.datasets_cli import app as _datasets_app  # noqa: E402  (typer only: cheap to import)

app.add_typer(_datasets_app, name="datasets")


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]{message}[/]")
    raise typer.Exit(code=code)


@app.command()
def pending(limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50) -> None:
    """Nightly runs paused for a manual approval decision (Prefect state Paused)."""
    _quiet_libraries()
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from rich.table import Table

    from tasks import approval, registry

    # sort and limit are passed explicitly: this Prefect server answers 422 to their null defaults.
    with get_client(sync_client=True) as prefect_client:
        runs = prefect_client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[approval.FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=limit,
        )
    if not runs:
        console.print("no nightly run is waiting for approval")
        return
    client = _mlflow_client()
    table = Table(title="waiting for approval")
    for col in ("flow run id", "name", "run date", "dataset", "challenger", "expires (UTC)"):
        table.add_column(col, overflow="fold")
    for run in runs:
        dataset = flow_dataset_name(run.parameters.get("dataset"))
        details = run.state.state_details
        expires = details.pause_timeout
        expired = expires is not None and expires.timestamp() < _utc_now().timestamp()
        table.add_row(str(run.id), run.name, str(run.parameters.get("run_date") or "-"), dataset,
                      _pending_version(client, registry.registered_model_name(dataset), str(run.id)),
                      (f"{expires:%Y-%m-%d %H:%M:%S}" if expires else "-") + (" (expired)" if expired else ""))
    console.print(table)


def _utc_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _mlflow_client():
    from tasks import tracking

    return tracking.configure(_settings())


def _pending_version(client, name: str, flow_run_id: str) -> str:
    """The version the paused run waits on: tagged `approval.flow_run_id` when it paused."""
    try:
        found = client.search_model_versions(f"name='{name}' and tags.`approval.flow_run_id` = '{flow_run_id}'")
    except Exception:  # the registry may be unreachable from here; the run id is still useful
        return "?"
    return ", ".join(f"v{mv.version}" for mv in found) or "?"


def _resume(flow_run_id: str, approve: bool, reviewer: str, reason: str) -> None:
    """Resume a paused nightly run with a decision, or exit non-zero saying why not."""
    from uuid import UUID

    from prefect import get_client
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    from tasks import approval

    try:
        run_uuid = UUID(flow_run_id)
    except ValueError:
        _fail(f"'{flow_run_id}' is not a flow run id (a UUID, see `recloop pending`)", code=2)
    if not reviewer.strip():
        _fail("--reviewer must name a person", code=2)
    decision = approval.Decision(approve=approve, reviewer=reviewer, reason=reason)
    try:
        with get_client(sync_client=True) as prefect_client:
            run = prefect_client.read_flow_run(run_uuid)
            flow_name = prefect_client.read_flow(run.flow_id).name
    except ObjectNotFound:
        _fail(f"no flow run {flow_run_id} on the Prefect API (check PREFECT_API_URL)")
    if flow_name != approval.FLOW_NAME:
        _fail(f"flow run {flow_run_id} belongs to flow '{flow_name}', not '{approval.FLOW_NAME}'")
    if run.state is None or not run.state.is_paused():
        _fail(f"flow run {flow_run_id} ({run.name}) is not paused: it is {run.state.name if run.state else 'without state'}")
    expires = run.state.state_details.pause_timeout
    if expires is not None and expires.timestamp() < _utc_now().timestamp():
        _fail(f"flow run {flow_run_id} ({run.name}): the pause expired at {expires:%Y-%m-%d %H:%M:%S} UTC; "
              "the challenger was not promoted")
    # typer.Exit is a RuntimeError: keep _fail out of this try, or the except below eats it.
    error = None
    try:
        resume_flow_run(run_uuid, run_input=decision.model_dump())
    except NotPausedError:
        error = f"flow run {flow_run_id} is not paused (any more)"
    except FlowPauseTimeout:
        error = f"flow run {flow_run_id}: the pause expired; the challenger was not promoted"
    except RuntimeError as exc:  # the server rejected the resume (e.g. input validation)
        error = f"flow run {flow_run_id} could not be resumed: {exc}"
    if error:
        _fail(error)
    verb = "approved" if approve else "rejected"
    console.print(f"{verb} by {reviewer}: flow run {flow_run_id} ({run.name}) resumes and records the decision")


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="The paused run (see `recloop pending`).")],
    reviewer: Annotated[str, typer.Option(help="Who approves (recorded on the model version).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the model version).")] = "",
) -> None:
    """Approve the challenger a paused nightly run waits on: it becomes the champion."""
    _quiet_libraries()
    _resume(flow_run_id, True, reviewer, reason)


@app.command()
def reject(
    flow_run_id: Annotated[str, typer.Argument(help="The paused run (see `recloop pending`).")],
    reviewer: Annotated[str, typer.Option(help="Who rejects (recorded on the model version).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the model version).")],
) -> None:
    """Reject the challenger a paused nightly run waits on: the champion stays."""
    _quiet_libraries()
    _resume(flow_run_id, False, reviewer, reason)


@app.command()
def rollback(
    reviewer: Annotated[str, typer.Option(help="Who rolls back (recorded on both versions).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on both versions).")],
    dataset: Annotated[Optional[str], typer.Argument(help="Dataset whose champion goes back one promotion (or --spec).")] = None,
    spec: SpecOption = None,
) -> None:
    """Move `champion` back to the version it replaced (its `previous_champion` tag)."""
    _quiet_libraries()
    from tasks import registry

    name = registry.registered_model_name(dataset_spec(dataset, spec).name)
    client = _mlflow_client()
    try:
        done = registry.rollback(client, name, reviewer, reason)
    except registry.RollbackError as exc:
        _fail(f"rollback refused: {exc}")
    console.print(f"[bold]{done.name}: champion v{done.previous} -> v{done.version}[/] (rolled back by {reviewer})")


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="recloop")


if __name__ == "__main__":
    main()
