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
        mp.setenv("RECLOOP_BATCH_SIZE", "256")  # small data: enough optimizer steps in 2 epochs
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        from flows.nightly import nightly_retrain
        from tasks import tracking
        from tasks.settings import get_settings

        clean = home / "clean"
        generate_synthetic(clean, start=START, days=5, rows_per_day=2500, seed=11)
        summary = nightly_retrain(run_date=RUN_DATE, dataset=DATASET, architectures=["wide"], epochs=2,
                                  approval_mode="auto", data_root=str(clean))
        assert summary["promoted"], summary["rows"]
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
    _expect_failure(loop, root, DataError, str(path), "device", "required column")


def test_non_binary_label(loop):
    root = _broken_copy(loop, "bad_label")
    path = _part(root, date(2026, 2, 2))
    df = pd.read_parquet(path)
    df.loc[df.index[:7], "click"] = 2
    df.to_parquet(path)
    message = _expect_failure(loop, root, ValidationFailed, "day=2026-02-02", "click",
                              "expect_column_values_to_be_in_set")
    assert "7 unexpected values" in message


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
    message = _expect_failure(loop, root, ValidationFailed, "hour", "expect_column_values_to_be_between",
                              "device", "smart-fridge")
    assert "2 of" in message  # both failures reported at once, not just the first
