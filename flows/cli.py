"""The `recloop` command line: generate data, run a night, run the two-night demo, show status."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console

from flows.console import stdout_console

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


@contextmanager
def _servers(prefect: Literal["none", "optional", "required"] = "none") -> Iterator[None]:
    """Talk to the right servers for the rest of the command: every command that reads the
    registry or Prefect runs inside this. The rule is flows.stack.resolve_servers (an explicit
    RECLOOP_TRACKING_URI / PREFECT_API_URL, else the running stack of RECLOOP_HOME, else the
    local defaults); a command it cannot place exits with its one-line reason."""
    from flows.stack import StackError, resolve_servers

    settings = _settings()
    explicit_api = None
    if prefect != "none":
        from prefect.settings import get_current_settings

        explicit_api = get_current_settings().api.url  # env, Prefect profile or a test harness
    try:
        servers = resolve_servers(settings.home, settings.tracking_uri, explicit_api, prefect)
    except StackError as exc:
        _fail(str(exc))
    with ExitStack() as stack:
        if servers.tracking_uri and servers.tracking_uri != settings.tracking_uri:
            # Through the environment, so the settings a flow reads in this process see it too.
            stack.enter_context(_env_var("RECLOOP_TRACKING_URI", servers.tracking_uri))
        if servers.prefect_api_url and servers.prefect_api_url != explicit_api:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: servers.prefect_api_url}))
        yield


@contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


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
    dataset: Annotated[str, typer.Option(help="Dataset spec name.")] = "synthetic_clicks",
    arch: Annotated[Optional[list[str]], typer.Option(help="Architecture (repeatable).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Max epochs (early stopping may stop sooner).")] = None,
    approval: Annotated[Optional[str], typer.Option(help="auto | manual (default from settings).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary as JSON.")] = None,
) -> None:
    """Run one night of the loop (Prefect flow `nightly-retrain`)."""
    _quiet_libraries()
    from tasks.approval import TIMEOUT

    with _servers(prefect="optional"):
        summary = _run_night(date.fromisoformat(run_date), dataset, arch, epochs, approval)
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
    console.print(rich_table(summary["rows"], f"{dataset}: night of {run_date} (staging day {summary['staging_day']})"))
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
    with _servers(prefect="optional"):
        _demo(fresh, epochs, rows_per_day)


def _demo(fresh: bool, epochs: int | None, rows_per_day: int) -> None:
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
def status(dataset: Annotated[Optional[list[str]], typer.Option(help="Dataset (repeatable); default: all specs.")] = None) -> None:
    """Champion and challenger versions per dataset."""
    _quiet_libraries()
    from rich.table import Table

    from feature_store.spec import SPEC_DIR
    from tasks import registry

    with _servers():
        client = _mlflow_client()
    table = Table(title="registry")
    for col in ("registered model", "alias", "version", "arch", "staging AUC", "gate", "approved by"):
        table.add_column(col)
    for ds in dataset or sorted(p.stem for p in SPEC_DIR.glob("*.yaml")):
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
    """Challengers waiting for a manual decision: the paused `nightly-approval` runs. Versions
    whose night died while they waited are marked `crashed` first, and said so."""
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

    from tasks import approval

    with _servers(prefect="required"), get_client(sync_client=True) as prefect_client:
        client = _mlflow_client()
        read_state = approval.prefect_run_states(prefect_client)
        for note in _reconcile(client, read_state, approval.prefect_close_run(prefect_client)):
            console.print(f"[bold yellow]{note}[/]", highlight=False)
        # sort and limit are passed explicitly: this Prefect server answers 422 to their null defaults.
        runs = prefect_client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[approval.APPROVAL_FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=limit,
        )
        rows = []
        for run in runs:
            version = _pending_version(client, str(run.id))
            night = ((version.tags.get("approval.night_run_id") if version else None)
                     or run.parameters.get("night_run_id"))
            night_state = read_state(night) if night else None
            rows.append((run, version, night, night_state))
    for line in _abandoned_lines(client):
        console.print(line, highlight=False)
    if not rows:
        console.print("no challenger is waiting for approval")
        return
    table = Table(title="waiting for approval")
    for col in ("approval run id (approve/reject this)", "challenger", "run date", "night", "expires (UTC)"):
        table.add_column(col, overflow="fold")
    for run, version, night, night_state in rows:
        expires = run.state.state_details.pause_timeout
        expired = expires is not None and expires.timestamp() < _utc_now().timestamp()
        challenger = f"{version.name} v{version.version}" if version else "?"
        night_cell = f"{night or '-'} ({night_state.name if night_state else 'unknown'})"
        table.add_row(str(run.id), challenger, version.tags.get("run_date", "-") if version else "-", night_cell,
                      (f"{expires:%Y-%m-%d %H:%M:%S}" if expires else "-") + (" (expired)" if expired else ""))
    console.print(table)


def _datasets() -> list[str]:
    from feature_store.spec import SPEC_DIR

    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def _reconcile(client, read_state, close_waiting=None) -> list[str]:
    """approval.reconcile_abandoned for every dataset's registered model; a registry that does
    not answer is a note, not a failure (the Prefect side is still worth showing)."""
    from tasks import approval, registry

    notes = []
    for ds in _datasets():
        try:
            notes += approval.reconcile_abandoned(client, registry.registered_model_name(ds), read_state, close_waiting)
        except Exception as exc:  # MLflow raises several types for an unreachable server
            return notes + [f"registry not checked for abandoned approvals: {exc}"]
    return notes


def _abandoned_lines(client) -> list[str]:
    """One line per model whose newest version was abandoned: its night died while it waited."""
    from tasks import approval, registry

    lines = []
    for ds in _datasets():
        try:
            mv = approval.latest_abandoned(client, registry.registered_model_name(ds))
        except Exception:  # reported by _reconcile already
            return lines
        if mv is not None:
            lines.append(f"{mv.name} v{mv.version} was not decided on: approval.decision={approval.CRASHED}, "
                         f"{mv.tags.get('approval.reason', '')}; the next night stages a new candidate")
    return lines


def _utc_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _mlflow_client():
    from tasks import tracking

    return tracking.configure(_settings())


def _pending_version(client, flow_run_id: str):
    """The version waiting on approval run `flow_run_id` (tagged `approval.flow_run_id` when the
    run paused), or None when the registry does not say (or cannot be reached)."""
    try:
        found = client.search_model_versions(f"tags.`approval.flow_run_id` = '{flow_run_id}'")
    except Exception:  # the registry may be unreachable from here; the run id is still useful
        return None
    return found[0] if found else None


def _resume(flow_run_id: str, approve: bool, reviewer: str, reason: str) -> None:
    """Resume a paused approval run with a decision, or exit non-zero saying why not."""
    from uuid import UUID

    try:
        run_uuid = UUID(flow_run_id)
    except ValueError:
        _fail(f"'{flow_run_id}' is not a flow run id (a UUID, see `recloop pending`)", code=2)
    if not reviewer.strip():
        _fail("--reviewer must name a person", code=2)
    with _servers(prefect="required"):
        _resume_run(run_uuid, approve, reviewer, reason)


def _resume_run(run_uuid, approve: bool, reviewer: str, reason: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    from tasks import approval

    flow_run_id = str(run_uuid)
    decision = approval.Decision(approve=approve, reviewer=reviewer, reason=reason)
    with get_client(sync_client=True) as prefect_client:
        try:
            run = prefect_client.read_flow_run(run_uuid)
            flow_name = prefect_client.read_flow(run.flow_id).name
        except ObjectNotFound:
            _fail(f"no flow run {flow_run_id} on the Prefect API (check PREFECT_API_URL)")
        if flow_name == approval.FLOW_NAME:
            # The night's id (e.g. from its page in the UI): it waits in its approval subflow run.
            children = prefect_client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[approval.APPROVAL_FLOW_NAME])),
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_uuid]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
                sort=FlowRunSort.START_TIME_DESC, limit=1)
            if not children:
                state = run.state.name if run.state else "without state"
                _fail(f"night {flow_run_id} ({run.name}) is not waiting for approval: it is {state}")
            run, flow_name = children[0], approval.APPROVAL_FLOW_NAME
            console.print(f"night {flow_run_id} waits in approval run {run.id} ({run.name})", highlight=False)
            flow_run_id = str(run.id)
        if flow_name != approval.APPROVAL_FLOW_NAME:
            _fail(f"flow run {flow_run_id} belongs to flow '{flow_name}', not '{approval.APPROVAL_FLOW_NAME}'")
        if run.state is None or not run.state.is_paused():
            state = run.state.name if run.state else "without state"
            _fail(f"flow run {flow_run_id} ({run.name}) is not paused: it is {state}")
        expires = run.state.state_details.pause_timeout
        if expires is not None and expires.timestamp() < _utc_now().timestamp():
            _fail(f"flow run {flow_run_id} ({run.name}): the pause expired at {expires:%Y-%m-%d %H:%M:%S} UTC; "
                  "the challenger was not promoted")
        # Only the night's process records a decision: resuming for a dead night would be a no-op.
        read_state = approval.prefect_run_states(prefect_client)
        night = run.parameters.get("night_run_id")
        night_state = read_state(night) if night else None
        if night and (night_state is None or night_state.final):
            notes = _reconcile(_mlflow_client(), read_state, approval.prefect_close_run(prefect_client))
            _fail(f"flow run {flow_run_id} ({run.name}) waits for night {night}, which is "
                  f"{night_state.name if night_state else 'gone'}: nothing would record the decision"
                  + "".join(f"\n  {n}" for n in notes))
    # typer.Exit is a RuntimeError: keep _fail out of this try, or the except below eats it.
    error = None
    try:
        resume_flow_run(run.id, run_input=decision.model_dump())
    except NotPausedError:
        error = f"flow run {flow_run_id} is not paused (any more)"
    except FlowPauseTimeout:
        error = f"flow run {flow_run_id}: the pause expired; the challenger was not promoted"
    except RuntimeError as exc:  # the server rejected the resume (e.g. input validation)
        error = f"flow run {flow_run_id} could not be resumed: {exc}"
    if error:
        _fail(error)
    verb = "approved" if approve else "rejected"
    console.print(f"{verb} by {reviewer}: flow run {flow_run_id} ({run.name}) resumes and the night records "
                  "the decision", highlight=False)


@app.command()
def approve(
    flow_run_id: Annotated[str, typer.Argument(help="The paused approval run, or its night (see `recloop pending`).")],
    reviewer: Annotated[str, typer.Option(help="Who approves (recorded on the model version).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the model version).")] = "",
) -> None:
    """Approve the challenger a paused nightly run waits on: it becomes the champion."""
    _quiet_libraries()
    _resume(flow_run_id, True, reviewer, reason)


@app.command()
def reject(
    flow_run_id: Annotated[str, typer.Argument(help="The paused approval run, or its night (see `recloop pending`).")],
    reviewer: Annotated[str, typer.Option(help="Who rejects (recorded on the model version).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on the model version).")],
) -> None:
    """Reject the challenger a paused nightly run waits on: the champion stays."""
    _quiet_libraries()
    _resume(flow_run_id, False, reviewer, reason)


@app.command()
def rollback(
    dataset: Annotated[str, typer.Argument(help="Dataset whose champion goes back one promotion.")],
    reviewer: Annotated[str, typer.Option(help="Who rolls back (recorded on both versions).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on both versions).")],
) -> None:
    """Move `champion` back to the version it replaced (its `previous_champion` tag)."""
    _quiet_libraries()
    from tasks import registry

    with _servers():
        client = _mlflow_client()
    try:
        done = registry.rollback(client, registry.registered_model_name(dataset), reviewer, reason)
    except registry.RollbackError as exc:
        _fail(f"rollback refused: {exc}")
    console.print(f"[bold]{done.name}: champion v{done.previous} -> v{done.version}[/] (rolled back by {reviewer})")


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="recloop")


if __name__ == "__main__":
    main()
