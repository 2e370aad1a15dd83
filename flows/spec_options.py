"""`--dataset NAME` / `--spec PATH`: how every recloop command that takes a dataset finds its spec.

A name is looked up in RECLOOP_SPEC_DIRS, then in the package's specs; a path is used as it is
(`feature_store.spec.select_spec`). Whatever was given, the commands name the dataset, its
registered model and its data directory after the spec's `name:`. Typer only at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from flows.console import print_error

if TYPE_CHECKING:
    from feature_store.spec import ResolvedSpec

SpecOption = Annotated[
    Optional[Path],
    typer.Option(
        "--spec",
        help="A dataset spec YAML anywhere (not only the package's); the dataset is the `name:` in it.",
        show_default=False,
    ),
]


def _spec_dirs() -> list[Path]:
    from tasks.settings import get_settings

    return get_settings().spec_dirs


def _exit_with(exc: Exception) -> None:
    print_error(str(exc))
    raise typer.Exit(code=2)


def dataset_spec(dataset: str | None, spec: Path | None, default: str | None = None) -> ResolvedSpec:
    """The spec a command works on; an unknown, bad or contradicting one: one message, exit 2."""
    from feature_store.errors import RecloopInputError
    from feature_store.spec import select_spec

    try:
        return select_spec(dataset, spec, _spec_dirs(), default=default)
    except RecloopInputError as exc:
        _exit_with(exc)


def dataset_names(datasets: list[str] | None, spec: Path | None) -> list[str]:
    """The datasets a listing command covers: each `--dataset` and the `--spec`, or, with
    neither, every spec known in RECLOOP_SPEC_DIRS and the package (names from the specs)."""
    from feature_store.errors import RecloopInputError
    from feature_store.spec import known_specs, resolve_spec, select_spec

    spec_dirs = _spec_dirs()
    try:
        if not datasets and spec is None:
            return [resolve_spec(name, spec_dirs).name for name in known_specs(spec_dirs)]
        resolved = [resolve_spec(name, spec_dirs) for name in datasets or []]
        if spec is not None:
            resolved.append(select_spec(None, spec, spec_dirs))
    except RecloopInputError as exc:
        _exit_with(exc)
    return list(dict.fromkeys(r.name for r in resolved))
