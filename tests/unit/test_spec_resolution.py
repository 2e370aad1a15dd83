"""Where a dataset spec comes from: a name is looked up in RECLOOP_SPEC_DIRS, in order, then in
the package; a path is used as it is; and whatever was given, the dataset (its registered
model, its data directory, the CLI's output) is named by the `name:` inside the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from feature_store.errors import ParameterError, SpecError
from feature_store.spec import (
    SPEC_DIR,
    known_specs,
    load_spec,
    resolve_spec,
    select_spec,
    spec_catalog,
)
from tasks import registry
from tasks.settings import get_settings

SYNTHETIC = yaml.safe_load((SPEC_DIR / "synthetic_clicks.yaml").read_text())


def _register(name: str, dataset: str) -> None:
    """One version in the registry, so `status` has something to list."""
    from tasks import tracking

    client = tracking.configure(get_settings())
    exp = tracking.experiment_id(client, dataset, tracking.artifact_location(get_settings()))
    run = client.create_run(exp)
    registry.register_version(client, name, dataset, f"runs:/{run.info.run_id}/model", run.info.run_id,
                              {"gate.passed": "true", "gate.verdict": "pass"})


def write_spec(directory: Path, file_name: str, name: str) -> Path:
    """A copy of the synthetic spec under another dataset name."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    path.write_text(yaml.safe_dump({**SYNTHETIC, "name": name}))
    return path


def test_a_name_is_found_in_the_spec_dirs_in_order_before_the_package(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    mine = write_spec(first, "adult.yaml", "adult")  # shadows the package's Adult spec
    write_spec(second, "adult.yaml", "adult")
    only_second = write_spec(second, "clicks.yml", "clicks")

    found = resolve_spec("adult", [first, second])
    assert found.path == mine and found.by_name and found.reference == "adult"
    assert found.spec.label == "click"  # the synthetic copy, not the package's Adult spec
    assert resolve_spec("clicks", [first, second]).path == only_second
    assert resolve_spec("adult").path == SPEC_DIR / "adult.yaml"  # no spec dirs: the package

    catalog = spec_catalog([first, second])
    assert catalog.found["adult"] == mine and catalog.found["clicks"] == only_second
    assert catalog.shadowed["adult"] == (second / "adult.yaml", SPEC_DIR / "adult.yaml")
    assert {"synthetic_clicks", "criteo", "movielens_100k"} <= set(known_specs([first, second]))


def test_a_path_is_used_as_it_is_and_the_name_comes_from_the_file(tmp_path):
    path = write_spec(tmp_path / "x", "foo.yaml", "bar")
    found = resolve_spec(path)
    assert (found.name, found.path, found.by_name) == ("bar", path, False)
    assert found.reference == str(path.resolve())
    assert load_spec(path).name == "bar"
    assert registry.registered_model_name(found.name) == "bar-ranker"


def test_an_unknown_name_lists_the_known_datasets_and_every_place_looked(tmp_path):
    present = tmp_path / "specs"
    write_spec(present, "mine.yaml", "mine")
    absent = tmp_path / "nope"
    with pytest.raises(SpecError) as info:
        load_spec("no_such_dataset", [present, absent])
    message = str(info.value)
    for fragment in (
        "no_such_dataset",
        "'mine'",
        "'synthetic_clicks'",
        f"{present} (RECLOOP_SPEC_DIRS)",
        f"{absent} (RECLOOP_SPEC_DIRS, does not exist)",
        f"{SPEC_DIR} (package)",
        "--spec PATH",
    ):
        assert fragment in message, f"{fragment!r} not in {message}"


def test_a_spec_found_by_name_must_carry_that_name(tmp_path):
    write_spec(tmp_path, "foo.yaml", "bar")
    with pytest.raises(SpecError, match="found for dataset 'foo' but declares name: 'bar'"):
        resolve_spec("foo", [tmp_path])


def test_something_that_is_neither_a_name_nor_a_spec_file(tmp_path):
    with pytest.raises(SpecError, match="neither a dataset name"):
        resolve_spec(str(tmp_path / "foo"))
    with pytest.raises(SpecError, match="no such spec file"):
        resolve_spec(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="ends in .yaml or .yml"):
        select_spec(None, tmp_path / "spec.txt")


def test_dataset_and_spec_together_must_agree(tmp_path):
    path = write_spec(tmp_path, "foo.yaml", "bar")
    assert select_spec("bar", path).path == path
    with pytest.raises(SpecError, match="declares name: 'bar', but --dataset says 'foo'"):
        select_spec("foo", path)
    assert select_spec(None, None, default="adult").name == "adult"
    with pytest.raises(ParameterError, match="give a dataset name or a spec file"):
        select_spec(None, None)


def test_spec_dirs_setting_is_a_path_list(tmp_path, monkeypatch):
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    monkeypatch.delenv("RECLOOP_SPEC_DIRS", raising=False)
    assert get_settings().spec_dirs == []
    monkeypatch.setenv("RECLOOP_SPEC_DIRS", f"{tmp_path / 'a'}:{tmp_path / 'b'}:")
    assert get_settings().spec_dirs == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.delenv("RECLOOP_SPEC_DIRS")
    env_file = tmp_path / "recloop.env"
    env_file.write_text(f"RECLOOP_SPEC_DIRS={tmp_path / 'c'}\n")
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(env_file))
    assert get_settings().spec_dirs == [tmp_path / "c"]


# --- the real CLI on a temporary SQLite registry --------------------------------------------


def invoke(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_rollback_and_status_name_the_model_after_the_spec(recloop_home, tmp_path):
    path = write_spec(tmp_path / "x", "foo.yaml", "bar")

    rollback = invoke("rollback", "--spec", str(path), "--reviewer", "carol", "--reason", "bad night")
    assert rollback.exit_code == 1, rollback.output
    assert "bar-ranker has no champion" in rollback.output
    assert "foo.yaml-ranker" not in rollback.output

    _register(registry.registered_model_name("bar"), "bar")
    status = invoke("status", "--spec", str(path))
    assert status.exit_code == 0, status.output
    assert "bar-ranker" in status.output and "foo" not in status.output

    clash = invoke("rollback", "foo", "--spec", str(path), "--reviewer", "c", "--reason", "r")
    assert clash.exit_code == 2 and "--dataset says 'foo'" in clash.output


def test_cli_status_lists_the_spec_dirs_too_and_unknown_names_exit_2(recloop_home, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    write_spec(mine, "bar.yaml", "bar")
    monkeypatch.setenv("RECLOOP_SPEC_DIRS", str(mine))

    for ds in ("bar", "synthetic_clicks"):
        _register(registry.registered_model_name(ds), ds)
    status = invoke("status")
    assert status.exit_code == 0, status.output
    for model in ("bar-ranker", "synthetic_clicks-ranker"):
        assert model in status.output
    assert "adult-ranker" not in status.output  # known, but nothing registered: no empty rows

    unknown = invoke("status", "--dataset", "nope")
    assert unknown.exit_code == 2
    assert f"{mine} (RECLOOP_SPEC_DIRS)" in unknown.output and "(package)" in unknown.output

    run = invoke("run", "--date", "2026-01-10", "--dataset", "nope")
    assert run.exit_code == 2 and "unknown dataset" in run.output
