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
from typing import Annotated, Literal, NoReturn, Optional

import typer
from rich.console import Console

from flows.console import print_error, rebind_prefect_console, stdout_console
from flows.spec_options import SpecOption, dataset_names, dataset_spec

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
    rebind_prefect_console()


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

    settings = _checked_settings()
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
    part_rows: Annotated[Optional[int], typer.Option(
        help="Rows per part file (default 1,000,000): a bigger day is streamed into several files "
             "(bounded memory; its rows differ from a one-file day's, see the generator).")] = None,
) -> None:
    """Write the embedded synthetic click log as day partitions."""
    _quiet_libraries()
    from feature_store.generators.synthetic import DEFAULT_PART_ROWS, generate_synthetic

    if part_rows is not None and part_rows < 1:
        _bad_argument("--part-rows", part_rows, "must be at least 1")
    root = data_root or _settings().resolved_data_root
    with console.status(f"generating {days} days x {rows_per_day} rows into {root}"):
        paths = generate_synthetic(root, start=date.fromisoformat(start), days=days,
                                   rows_per_day=rows_per_day, seed=seed,
                                   part_rows=part_rows or DEFAULT_PART_ROWS)
    console.print(f"wrote {days} day partitions ({len(paths)} files) under {root}/synthetic_clicks")


def _bad_argument(option: str, value, rule: str) -> NoReturn:
    """One line naming the argument and the rule, exit status 2 (nothing was done)."""
    print_error(f"{option} {value!r}: {rule}")
    raise typer.Exit(code=2)


def _parse_date(value: str, option: str = "--date") -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        _bad_argument(option, value, f"not a date YYYY-MM-DD ({exc})")


@app.command()
def run(
    run_date: Annotated[str, typer.Option("--date", help="Run date D: trains on days before D-1, stages on D-1.")],
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name (RECLOOP_SPEC_DIRS, then the package's specs); default synthetic_clicks.")] = None,
    spec: SpecOption = None,
    arch: Annotated[Optional[list[str]], typer.Option(help="Architecture (repeatable).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Max epochs, >= 1 (early stopping may stop sooner).")] = None,
    approval: Annotated[Optional[str], typer.Option(help="auto | manual (default from settings).")] = None,
    warm_start: Annotated[Optional[str], typer.Option(help="auto: challengers of the champion's architecture start "
                                                           "from its weights; off: cold (default from settings).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary as JSON.")] = None,
    backfill: Annotated[bool, typer.Option(help="Allow a staging day the champion trained on: evaluate only, "
                                                "register and promote nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Retrain even when the champion came from this very night "
                                             "(same data, code and config).")] = False,
) -> None:
    """Run one night of the loop (Prefect flow `nightly-retrain`).

    Exit status: 0 done (promoted or not), 2 bad input or arguments (nothing stored), 3 a
    manual night got no decision in time, 4 a store does not answer (nothing done), 1 other."""
    _quiet_libraries()
    from feature_store.spec import DEFAULT_DATASET

    day = _parse_date(run_date)
    if epochs is not None and epochs < 1:
        _bad_argument("--epochs", epochs, "must be at least 1")
    if approval is not None and approval not in ("auto", "manual"):
        _bad_argument("--approval", approval, "must be auto or manual")
    if warm_start is not None and warm_start not in ("auto", "off"):
        _bad_argument("--warm-start", warm_start, "must be auto or off")
    with _servers(prefect="optional"):
        settings = _checked_settings(train={"epochs": epochs}, approval_mode=approval, warm_start=warm_start)
        resolved = dataset_spec(dataset, spec, default=DEFAULT_DATASET)
        _checked(lambda: _preflight(settings, json_out, (resolved.name, day, backfill)))
        with _prefect(settings):
            summary = _run_night(day, resolved.reference, arch, epochs, approval, backfill=backfill, force=force,
                                 warm_start=warm_start)
    if json_out:
        _write_json(json_out, summary)
    if summary.decision == "timeout":  # the Prefect run ended Failed (ApprovalExpired)
        raise typer.Exit(code=3)


def _checked_settings(**overrides):
    from feature_store.errors import ParameterError

    try:
        return _settings(**overrides)
    except ParameterError as exc:
        print_error(str(exc))
        raise typer.Exit(code=2) from None


def _preflight(settings, json_out: Path | None, night: tuple[str, date, bool] | None = None) -> None:
    """Before any work: the home directory, the output file, the stores (seconds, one line),
    and for a night (dataset name, run date, backfill) whether the champion allows it (the
    flow checks again; here it costs no Prefect server start)."""
    from tasks import preflight

    preflight.check_home(settings.home)
    preflight.check_output_file(json_out)
    preflight.check_stores(settings.resolved_tracking_uri, settings.resolved_registry_uri)
    if night is not None:
        from tasks import guards, registry

        dataset, day, backfill = night
        name = registry.registered_model_name(dataset)
        champion = registry.alias_version(_mlflow_client(), name, registry.CHAMPION)
        guards.check_staging_day(champion, day - timedelta(days=1), day, backfill)


def _checked(fn):
    """Run `fn`; the errors a night can stop on become one line and their exit status."""
    from feature_store.errors import RecloopInputError
    from tasks.lock import LockTimeout
    from tasks.preflight import StoreUnreachable

    try:
        return fn()
    except RecloopInputError as exc:
        print_error(str(exc))
        raise typer.Exit(code=2) from None
    except StoreUnreachable as exc:
        print_error(f"{exc} (nothing was done; try again when it answers)")
        raise typer.Exit(code=4) from None
    except LockTimeout as exc:
        print_error(str(exc))
        raise typer.Exit(code=1) from None


def _write_json(path: Path, summary) -> None:
    """Write atomically; a failure here must not turn a finished night into a failed one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        os.replace(tmp, path)
    except OSError as exc:
        console.print(f"[yellow]warning: the night finished, but --json {path} could not be written: {exc}[/]")


def _prefect(settings):
    """The Prefect API for this command: the configured one, else a private local server that
    dies with this process (flows/local_prefect.py)."""
    from flows.local_prefect import prefect_api

    return prefect_api(settings.home / "logs", echo=lambda m: console.print(m, style="dim", highlight=False))


def _run_night(run_date: date, dataset: str, arch, epochs, approval, backfill: bool = False,
               force: bool = False, warm_start: str | None = None):
    """Run the flow, print its table and verdict; returns its `NightSummary`."""
    from flows.nightly import nightly_retrain
    from tasks.approval import ApprovalExpired
    from tasks.report import drift_lines, rich_table

    expired = None
    try:
        summary = _checked(lambda: nightly_retrain(run_date=run_date, dataset=dataset, architectures=arch or None,
                                                   approval_mode=approval, epochs=epochs, backfill=backfill,
                                                   force=force, warm_start=warm_start))
    except ApprovalExpired as exc:
        summary, expired = exc.summary, exc
    if summary.noop:
        for note in summary.notes:
            console.print(note, highlight=False)
        return summary
    console.print(rich_table(summary.rows, f"{summary.dataset}: night of {run_date} (staging day {summary.staging_day})"))
    for line in drift_lines(summary.drift):
        console.print(line, highlight=False)
    before, after = summary.champion_before, summary.champion_after
    verdict = (f"promoted v{after} (was {'v' + before if before else 'none'})" if summary.promoted
               else f"champion unchanged ({'v' + after if after else 'none'})")
    console.print(f"[bold]{verdict}[/bold]")
    for note in summary.notes:
        console.print(f"  - {note}", highlight=False)
    if summary.retrieval is not None:
        from tasks.report import pipeline_line, retrieval_rich_table

        r = summary.retrieval
        console.print(retrieval_rich_table(r, f"{summary.dataset}: retrievers, top-{r.k} ({r.users:,} staging users)"))
        console.print(f"retriever champion v{r.champion_before or '-'} -> v{r.champion_after or '-'}; "
                      + pipeline_line(r), highlight=False)
        for note in r.notes:
            console.print(f"  - {note}", highlight=False)
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
    settings = _checked_settings()
    _checked(lambda: _preflight(settings, None))
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
    with _prefect(settings):
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
    """Champion, challenger and the newest version per dataset: gate, health, approval."""
    _quiet_libraries()
    from rich.table import Table

    from tasks import registry

    names = dataset_names(dataset, spec)
    with _servers(prefect="optional"):
        client = _mlflow_client()
        for note in _reconcile_if_prefect(client, names):
            console.print(f"[bold yellow]{note}[/]", highlight=False)
    table = Table(title=f"registry ({_settings().resolved_registry_uri})")
    for col in ("registered model", "role", "version", "arch", "trained on", "staging AUC / recall", "gate", "health",
                "approval"):
        table.add_column(col, overflow="fold")
    notes = []
    for ds in names:
        for st in [*registry.status(client, ds), *registry.status(client, ds, registry.retriever_model_name(ds))]:
            t = st.tags
            health = t.get(registry.HEALTH, "unchecked")
            if health == registry.BROKEN:
                notes.append(f"{st.name} v{st.version} is broken: {t.get(registry.HEALTH_REASON, '')}")
            decision = t.get("approval.decision", "")
            approval = f"{decision} by {t['approval.by']}" if decision and t.get("approval.by") else decision
            if decision in ("crashed", "timeout", "stale") and t.get("approval.reason"):
                notes.append(f"{st.name} v{st.version} approval {decision}: {t['approval.reason']}")
            staging = t.get("gate.staging_auc") or (f"Recall@{t['gate.k']} {t['gate.staging_recall']}"
                                                    if "gate.staging_recall" in t else "")
            table.add_row(st.name, st.role, f"v{st.version}", t.get("arch", t.get("retriever", "")),
                          t.get("data_window", ""), staging, t.get("gate.verdict", ""), health, approval)
    if table.row_count == 0:
        console.print(f"no registered models in {_settings().resolved_registry_uri}")
        return
    console.print(table)
    for note in notes:
        console.print(f"  - {note}", highlight=False, soft_wrap=True)


@app.command()
def doctor(
    dataset: Annotated[Optional[list[str]], typer.Option(help="Dataset (repeatable); default: all specs.")] = None,
    spec: SpecOption = None,
) -> None:
    """End runs left RUNNING by a dead night and finish interrupted registry writes.

    Every night does this for its dataset before it starts; run it by hand after a crash to see
    the state put right now. A dataset whose night is running is left alone."""
    _quiet_libraries()
    with _servers(prefect="optional"):
        settings = _checked_settings()
        _checked(lambda: _preflight(settings, None))
        client = _mlflow_client()
        total = _doctor(client, settings, dataset_names(dataset, spec))
    console.print(f"[bold]{total} repair(s)[/]" if total else "nothing to repair")


def _doctor(client, settings, datasets: list[str]) -> int:
    from tasks import doctor as doc
    from tasks.lock import LockTimeout, NightLock

    total = 0
    with _prefect(settings):
        flow_runs = doc.FlowRuns()
        try:
            for ds in datasets:
                try:
                    with NightLock(settings.home, ds).acquire(0, log=lambda m: None) as lock:
                        repairs = doc.reconcile(client, ds, flow_runs, lock.stale, log=lambda m: None)
                except LockTimeout as exc:
                    console.print(f"{ds}: skipped, {exc}", highlight=False)
                    continue
                for r in repairs:
                    console.print(f"{ds}: {r.line()}", highlight=False)
                total += len(repairs)
        finally:
            flow_runs.close()
    return total


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


def _reconcile(client, read_state, close_waiting=None, datasets: list[str] | None = None) -> list[str]:
    """approval.reconcile_abandoned for every dataset's registered models (ranker, retriever); a
    registry that does not answer is a note, not a failure (the Prefect side is still worth showing)."""
    from tasks import approval, registry

    notes = []
    for ds in datasets or dataset_names(None, None):
        try:
            for name in registry.model_names(ds):
                notes += approval.reconcile_abandoned(client, name, read_state, close_waiting)
        except Exception as exc:  # MLflow raises several types for an unreachable server
            return notes + [f"registry not checked for abandoned approvals: {exc}"]
    return notes


def _reconcile_if_prefect(client, datasets: list[str]) -> list[str]:
    """`_reconcile` when a Prefect API is configured (or the stack runs); without one there is no
    run state to judge by, and starting a server for a status line is not worth it."""
    from prefect import get_client
    from prefect.settings import get_current_settings

    from tasks import approval

    if not get_current_settings().api.url:
        return []
    try:
        with get_client(sync_client=True) as prefect_client:
            return _reconcile(client, approval.prefect_run_states(prefect_client),
                              approval.prefect_close_run(prefect_client), datasets)
    except Exception as exc:  # the Prefect API does not answer: show the registry as it is
        return [f"approvals not checked, the Prefect API did not answer: {exc}"]


def _abandoned_lines(client) -> list[str]:
    """One line per model whose newest version was abandoned: its night died while it waited."""
    from tasks import approval, registry

    lines = []
    for name in (name for ds in dataset_names(None, None) for name in registry.model_names(ds)):
        try:
            mv = approval.latest_abandoned(client, name)
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
    reviewer: Annotated[str, typer.Option(help="Who rolls back (recorded on both versions).")],
    reason: Annotated[str, typer.Option(help="Why (recorded on both versions).")],
    dataset: Annotated[Optional[str], typer.Argument(help="Dataset whose champion goes back one promotion (or --spec).")] = None,
    spec: SpecOption = None,
    to_version: Annotated[Optional[int], typer.Option(help="Restore this version instead of the previous "
                                                           "champion (it must have passed its gate).")] = None,
    retriever: Annotated[bool, typer.Option("--retriever", help="Roll back `<dataset>-retriever` instead of "
                                                                "the ranker.")] = False,
) -> None:
    """Move `champion` back to the version it replaced (its `previous_champion` tag), or to --to-version."""
    _quiet_libraries()
    from tasks import alerts, registry

    ds = dataset_spec(dataset, spec).name
    name = registry.retriever_model_name(ds) if retriever else registry.registered_model_name(ds)
    # A saved notification block is read from the Prefect API: the stack's when it runs.
    with _servers(prefect="optional" if _checked_settings().alerts.block else "none"):
        client = _mlflow_client()
        try:
            done = registry.rollback(client, name, reviewer, reason,
                                     to_version=str(to_version) if to_version is not None else None)
        except registry.RollbackError as exc:
            _fail(f"rollback refused: {exc}")
        console.print(f"[bold]{done.name}: champion v{done.previous} -> v{done.version}[/] (rolled back by {reviewer})")
        settings = _settings()
        alerts.send(settings.alerts, alerts.ROLLED_BACK,
                    lambda: alerts.version_alert(client, settings.resolved_tracking_uri, alerts.ROLLED_BACK,
                                                 done.name, done.version, done.previous),
                    warn=lambda line: console.print(f"[yellow]warning: {line}[/]", highlight=False))


@app.command()
def serve(
    dataset: Annotated[Optional[str], typer.Argument(help="Dataset whose ranker to serve (or --spec).")] = None,
    spec: SpecOption = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port [default: 5001].", show_default=False)] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [default: 127.0.0.1].",
                                                show_default=False)] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to serve, resolved to a version at start.")] = "champion",
    threads: Annotated[Optional[int], typer.Option(help="Torch intra-op threads [default: 1].", min=1,
                                                   show_default=False)] = None,
) -> None:
    """Serve `<dataset>-ranker@<alias>` with MLflow's scoring protocol: POST raw rows as
    `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` to /invocations, get
    `{"predictions": [click probabilities]}`. Stops on Ctrl-C / SIGTERM."""
    _quiet_libraries()
    from tasks import serve as srv

    port = srv.DEFAULT_PORT if port is None else port  # the defaults live in tasks/serve.py
    host = host or srv.DEFAULT_HOST
    threads = threads or srv.DEFAULT_THREADS
    name = dataset_spec(dataset, spec).name
    with _servers():  # the stack's registry when `make up` runs, else the configured one
        client = _mlflow_client()
        try:
            served = srv.resolve(client, name, alias)
        except srv.ServeError as exc:
            _fail(f"serve: {exc} (registry {_settings().resolved_registry_uri})")
        try:
            sock = srv.bind(host, port)
        except srv.ServeError as exc:
            _fail(f"serve: {exc}")
        try:
            with console.status(f"loading {served.name} v{served.version} ({served.alias})"):
                model = srv.load(served, threads)
            console.print(f"serving {served.name} v{served.version} ({served.alias}) on "
                          f"http://{host}:{port}/invocations (Ctrl-C stops)", highlight=False)
            srv.run(model, sock)
            console.print(f"stopped serving {served.name} v{served.version}", highlight=False)
        except srv.ServeError as exc:
            _fail(f"serve: {exc}")
        finally:
            sock.close()


def main(argv: list[str] | None = None) -> None:
    """The `recloop` entry point: a usage error (unknown option, a value of the wrong type) is
    one line and exit status 2, like every other bad argument."""
    try:
        code = app(args=argv if argv is not None else sys.argv[1:], prog_name="recloop", standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # typer's click exceptions: usage errors, bad values
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print_error(" ".join(message.split()) + " (see --help)")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
