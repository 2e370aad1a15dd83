"""Bad input stops the nightly flow before training with an error that names the file, the
column and the rule, and leaves the registry and the tracking store exactly as they were."""

from __future__ import annotations

import shutil
from datetime import date

import pandas as pd
import pytest

from feature_store.errors import DataError
from feature_store.generators.synthetic import generate_synthetic
from feature_store.partitions import day_dir
from feature_store.validation import ValidationFailed
from tasks import registry

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
START = date(2026, 2, 1)
RUN_DATE = date(2026, 2, 6)  # staging day 02-05, training days 02-01..02-04 (window 4)


@pytest.fixture(scope="module")
def loop(tmp_path_factory, prefect_server):
    """Night 1 on clean data gives a champion; each test then breaks a copy of the data."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_WINDOW_DAYS", "4")
        mp.setenv("RECLOOP_TRAIN_BATCH_SIZE", "256")  # small data: enough optimizer steps in 2 epochs
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        from flows.nightly import nightly_retrain
        from tasks import tracking
        from tasks.settings import get_settings

        clean = home / "clean"
        generate_synthetic(clean, start=START, days=5, rows_per_day=2500, seed=11)
        summary = nightly_retrain(run_date=RUN_DATE, dataset=DATASET, architectures=["wide"], epochs=2,
                                  approval_mode="auto", data_root=str(clean))
        assert summary.promoted, summary.rows
        client = tracking.configure(get_settings())
        yield {"home": home, "clean": clean, "client": client, "flow": nightly_retrain, "mp": mp}


def _store_state(client):
    champion = registry.alias_version(client, NAME, registry.CHAMPION)
    runs = client.search_runs([client.get_experiment_by_name(DATASET).experiment_id])
    return champion.version, len(client.search_model_versions(f"name='{NAME}'")), len(runs)


def _broken_copy(loop, name):
    root = loop["home"] / name
    shutil.copytree(loop["clean"], root)
    return root


def _run(loop, root):
    return loop["flow"](run_date=RUN_DATE, dataset=DATASET, architectures=["wide"], epochs=1,
                        approval_mode="auto", data_root=str(root))


def _first_rows_set(loop, name, day, column, rows, value):
    """A broken copy of the data whose part of `day` has `value` in the first `rows` rows of `column`."""
    root = _broken_copy(loop, name)
    path = _part(root, day)
    df = pd.read_parquet(path)
    df.loc[df.index[:rows], column] = value
    df.to_parquet(path)
    return root, path


def _part(root, day):
    return day_dir(root, DATASET, day) / "part-0.parquet"


def _expect_failure(loop, root, exc_type, *fragments):
    before = _store_state(loop["client"])
    with pytest.raises(exc_type) as info:
        _run(loop, root)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error:\n{message}"
    assert _store_state(loop["client"]) == before
    return message


def test_missing_column(loop):
    root = _broken_copy(loop, "missing_column")
    path = _part(root, date(2026, 2, 3))
    pd.read_parquet(path).drop(columns=["device"]).to_parquet(path)
    _expect_failure(loop, root, ValidationFailed, str(path), "device", "column present")


def test_non_binary_label(loop):
    root, path = _first_rows_set(loop, "bad_label", date(2026, 2, 2), "click", 7, 2)
    message = _expect_failure(loop, root, ValidationFailed, str(path), "click", "values in {0, 1}")
    assert "7 unexpected values" in message.splitlines()[0]


def test_empty_day(loop):
    root = _broken_copy(loop, "empty_day")
    path = _part(root, date(2026, 2, 5))
    pd.read_parquet(path).head(0).to_parquet(path)
    _expect_failure(loop, root, DataError, "day=2026-02-05", "non-empty day")


def test_corrupt_parquet(loop):
    root = _broken_copy(loop, "corrupt")
    path = _part(root, date(2026, 2, 4))
    path.write_bytes(b"PAR1 this is not a parquet file at all")
    _expect_failure(loop, root, DataError, str(path), "readable parquet")


def test_missing_staging_day(loop):
    root = _broken_copy(loop, "no_holdout")
    shutil.rmtree(day_dir(root, DATASET, date(2026, 2, 5)))
    _expect_failure(loop, root, DataError, "2026-02-05")


def test_out_of_range_values_are_listed(loop):
    root = _broken_copy(loop, "ranges")
    path = _part(root, date(2026, 2, 1))
    df = pd.read_parquet(path)
    df.loc[df.index[:3], "hour"] = 31
    df.loc[df.index[:2], "device"] = "smart-fridge"
    df.to_parquet(path)
    message = _expect_failure(loop, root, ValidationFailed)
    # Both failures reported at once, each on its own line naming the file, column and rule.
    lines = message.splitlines()
    assert lines[0].startswith(f"{path}: column 'device' fails rule 'values in {{mobile, desktop, tablet}}'")
    assert "smart-fridge" in lines[0]
    assert lines[-1].strip().startswith(f"{path}: column 'hour' fails rule 'values in [0, 23]'")


# ---- issue 8: inputs that passed validation and broke training, or changed it silently


def test_infinite_price(loop):
    """Before: +inf passed `price >= 1e-06` and the trainer failed with "'cont' contains NaN or
    infinite values", leaving FAILED runs and a logged model behind."""
    root, path = _first_rows_set(loop, "inf_price", date(2026, 2, 3), "price", 4, float("inf"))
    message = _expect_failure(loop, root, ValidationFailed, str(path), "'price'", "finite values (no +/-inf)")
    assert "4 unexpected values" in message.splitlines()[0]


def test_one_label_class_on_the_staging_day(loop):
    """Before: an all-zero staging day passed and the bootstrap failed with "AUC is undefined"."""
    root = _broken_copy(loop, "one_class")
    path = _part(root, date(2026, 2, 5))
    pd.read_parquet(path).assign(click=0).to_parquet(path)
    _expect_failure(loop, root, ValidationFailed,
                    f"{path}: column 'click' fails rule 'both label values present on the staging day'")


def test_missing_day_inside_the_window(loop):
    """Before: the day was dropped and the data_window tag still named 02-01..02-04."""
    root = _broken_copy(loop, "gap")
    shutil.rmtree(day_dir(root, DATASET, date(2026, 2, 2)))
    _expect_failure(loop, root, DataError, str(day_dir(root, DATASET, date(2026, 2, 2))),
                    "every day of the training window present", "misses 2026-02-02")


def test_day_written_twice(loop):
    """Before: a copied part file doubled the day's rows without a word."""
    root = _broken_copy(loop, "twice")
    path = _part(root, date(2026, 2, 4))
    copy = path.with_name("part-0 (copy).parquet")
    shutil.copyfile(path, copy)
    _expect_failure(loop, root, DataError, str(path), str(copy), "no two part files with the same content")


def _cli_run(loop, monkeypatch, root):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("RECLOOP_DATA_ROOT", str(root))
    before = _store_state(loop["client"])
    result = CliRunner().invoke(app, ["run", "--date", str(RUN_DATE), "--arch", "wide", "--epochs", "1",
                                      "--approval", "auto"])
    assert result.exit_code == 2, result.output
    assert _store_state(loop["client"]) == before
    assert "Traceback" not in result.output  # Prefect used to print the traceback twice
    return result.output.splitlines()


def _csv_part_without_ts(root):
    csv = day_dir(root, DATASET, date(2026, 2, 3)) / "part-1.csv"
    pd.read_parquet(_part(root, date(2026, 2, 3))).head(50).drop(columns=["ts"]).to_csv(csv, index=False)
    return csv


def test_cli_names_the_csv_part_that_lacks_a_column(loop, monkeypatch, tmp_path_factory):
    """`recloop run` on bad input: exit 2, and one printed line names the file, column and rule.
    Before, the missing column of a CSV part next to a good parquet part was reported against the
    day folder, as nulls."""
    root = tmp_path_factory.mktemp("c")  # a short path: see the next test
    shutil.copytree(loop["clean"], root, dirs_exist_ok=True)
    csv = _csv_part_without_ts(root)
    lines = _cli_run(loop, monkeypatch, root)
    assert f"error: {csv}: column 'ts' fails rule 'column present': column is missing" in lines, lines


def test_cli_keeps_a_long_error_on_one_line(loop, monkeypatch):
    root = loop["home"] / "a-data-root-as-deep-as-the-ones-real-deployments-use" / "recloop" / "data"
    shutil.copytree(loop["clean"], root)
    csv = _csv_part_without_ts(root)
    lines = _cli_run(loop, monkeypatch, root)
    assert f"error: {csv}: column 'ts' fails rule 'column present': column is missing" in lines, lines
