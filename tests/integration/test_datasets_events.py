"""`recloop datasets import-events`: a user's own CSV or parquet event log, with epoch or ISO
timestamps, cut into day partitions of the dataset a spec outside the package describes;
bad input (a missing column, a timestamp that does not parse) names the file, the row and the
column, and leaves the data root as it was; and the imported days run through a real night
with `recloop run --spec`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from feature_store.datasets import events, store
from feature_store.errors import DataError, ParameterError
from feature_store.generators.synthetic import generate_day, make_world
from feature_store.partitions import available_days, partition_files, read_day
from feature_store.spec import SPEC_DIR, load_spec
from feature_store.validation import validate_frame

NAME = "my_clicks"
START = dt.date(2026, 3, 1)
DAYS = 4
ROWS_PER_DAY = 1500
CHUNK = 1000  # several chunks per file, so days span chunks and chunks span days


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    """The synthetic spec under another name, outside the package (as a user would write it)."""
    raw = yaml.safe_load((SPEC_DIR / "synthetic_clicks.yaml").read_text())
    path = tmp_path_factory.mktemp("my_specs") / "clicks.yaml"
    path.write_text(yaml.safe_dump({**raw, "name": NAME}))
    return path


@pytest.fixture(scope="module")
def spec(spec_path):
    return load_spec(spec_path)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    """DAYS days of synthetic impressions as one event log without a day column, rows shuffled
    a little (a real log is only roughly in time order)."""
    world = make_world(3)
    frames = [generate_day(world, START + dt.timedelta(days=k), ROWS_PER_DAY, 3) for k in range(DAYS)]
    frame = pd.concat(frames, ignore_index=True).drop(columns=["day"])
    rng = np.random.default_rng(0)
    jitter = rng.integers(0, 3 * ROWS_PER_DAY, len(frame))
    return frame.iloc[np.argsort(np.arange(len(frame)) + jitter, kind="stable")].reset_index(drop=True)


def expected_days(ts: pd.Series, timezone: str = "UTC") -> pd.Series:
    return pd.to_datetime(ts, unit="s", utc=True).dt.tz_convert(timezone).dt.strftime("%Y-%m-%d")


def snapshot(root: Path) -> dict[str, float]:
    """Every file under the data root (hidden staging directories too) with its mtime."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in sorted(root.rglob("*"))} if root.exists() else {}


def test_csv_with_epoch_seconds(tmp_path, spec, log):
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    root = tmp_path / "data"
    seen = []
    summary = events.import_events(path, spec, root, unit="s", chunk_rows=CHUNK, on_chunk=seen.append)

    truth = expected_days(log["ts"]).value_counts().sort_index().to_dict()
    assert summary.days == truth and summary.rows == len(log) == sum(seen)
    assert [str(d) for d in available_days(root, NAME)] == list(truth)
    assert len(partition_files(root, NAME, START)) > 1  # the day spans chunks
    day = read_day(root, NAME, START, spec=spec)
    assert set(day["day"]) == {str(START)}
    # The same rows, in file order, with every column as it was.
    original = log[expected_days(log["ts"]) == str(START)].reset_index(drop=True)
    pd.testing.assert_frame_equal(day.drop(columns=["day"]), original, check_like=True)
    assert validate_frame(day, spec, str(START)).ok
    manifest = store.read_manifest(root, NAME)
    assert manifest["rows"] == len(log) and manifest["rows_by_day"] == truth
    assert manifest["timestamp_column"] == "ts" and str(path.resolve()) in manifest["source"]


def test_parquet_with_iso_timestamps_and_a_time_zone(tmp_path, spec, log):
    frame = log.copy()
    # Offsets other than the partition time zone's: the instant counts, not the wall clock.
    instants = pd.to_datetime(frame["ts"], unit="s", utc=True)
    frame["event_time"] = instants.dt.tz_convert("Asia/Kolkata").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=700)
    root = tmp_path / "data"
    summary = events.import_events(path, spec, root, timestamp="event_time", unit="iso",
                                   timezone="America/New_York", chunk_rows=CHUNK)

    truth = expected_days(frame["ts"], "America/New_York").value_counts().sort_index().to_dict()
    assert summary.days == truth
    assert min(truth) == str(START - dt.timedelta(days=1))  # UTC early hours are the day before
    first = read_day(root, NAME, min(truth))
    assert (expected_days(first["ts"], "America/New_York") == min(truth)).all()


def test_naive_iso_is_wall_time_and_parquet_timestamps_work(tmp_path, spec, log):
    small = log.head(50).copy()
    small["local"] = "2026-03-05 23:59:59"  # no offset: the day is its date, in any time zone
    summary = events.import_events(_csv(tmp_path, small), spec, tmp_path / "a", timestamp="local",
                                   unit="iso", timezone="Asia/Tokyo")
    assert summary.days == {"2026-03-05": 50}

    small["when"] = pd.to_datetime(small["ts"], unit="s", utc=True)  # a parquet timestamp[tz] column
    path = tmp_path / "typed.parquet"
    small.to_parquet(path, index=False)
    summary = events.import_events(path, spec, tmp_path / "b", timestamp="when")
    assert summary.days == expected_days(small["ts"]).value_counts().sort_index().to_dict()


def test_a_column_typed_differently_by_two_chunks_gets_one_type(tmp_path, spec, log):
    frame = log.head(3 * CHUNK).copy()
    frame["campaign"] = np.arange(len(frame))  # ints, but empty in the last chunk -> float there
    frame.loc[2 * CHUNK:, "campaign"] = np.nan
    frame["note"] = "7"
    frame.loc[CHUNK:, "note"] = "seven"  # a number in chunk 1, text after
    root = tmp_path / "data"
    events.import_events(_csv(tmp_path, frame), spec, root, chunk_rows=CHUNK)
    files = [f for d in available_days(root, NAME) for f in partition_files(root, NAME, d)]
    schemas = {str(pq.read_schema(f).remove_metadata()) for f in files}
    assert len(schemas) == 1, schemas
    schema = pq.read_schema(files[0])
    assert str(schema.field("campaign").type) == "double" and str(schema.field("note").type) == "string"


def test_a_missing_column_names_file_rows_column_and_rule(tmp_path, spec, log):
    path = _csv(tmp_path, log.drop(columns=["device"]))
    with pytest.raises(DataError) as info:
        events.import_events(path, spec, tmp_path / "data", chunk_rows=CHUNK)
    assert str(info.value) == (
        f"{path}: rows 1-{CHUNK}: column 'device' fails rule 'required column present': "
        f"columns found: {sorted(set(log.columns) - {'device'})}"
    )
    with pytest.raises(DataError, match="column 'when' fails rule 'timestamp column present'"):
        events.import_events(path, spec, tmp_path / "data", timestamp="when")


@pytest.mark.parametrize(
    ("value", "rule"),
    [("soon", "seconds since 1970-01-01 UTC (--unit s)"), ("", "timestamp present (not null)")],
)
def test_a_bad_timestamp_names_the_row_and_leaves_the_data_root_as_it_was(tmp_path, spec, log, value, rule):
    frame = log.astype({"ts": object})
    frame.loc[2500, "ts"] = value  # in the third chunk: two chunks are already staged by then
    path = _csv(tmp_path, frame)
    root = tmp_path / "data"
    root.mkdir()
    (root / "other").mkdir()
    before = snapshot(root)
    with pytest.raises(DataError) as info:
        events.import_events(path, spec, root, chunk_rows=CHUNK)
    found = "null" if value == "" else repr(value)
    assert str(info.value) == f"{path}: row 2501 (line 2502): column 'ts' fails rule '{rule}': found {found}"
    assert snapshot(root) == before  # no dataset, no staging left behind


def test_an_existing_dataset_stays_without_force_and_survives_a_failed_replacement(tmp_path, spec, log):
    root = tmp_path / "data"
    good = _csv(tmp_path, log, "good.csv")
    events.import_events(good, spec, root)
    before = snapshot(root)

    with pytest.raises(DataError, match="pass --force"):
        events.import_events(good, spec, root)
    bad = log.astype({"ts": object})
    bad.loc[len(bad) - 1, "ts"] = "2026-03-01"  # ISO text in an epoch column, in the last chunk
    with pytest.raises(DataError, match="row 6000"):
        events.import_events(_csv(tmp_path, bad, "bad.csv"), spec, root, force=True, chunk_rows=CHUNK)
    assert snapshot(root) == before

    replaced = events.import_events(_csv(tmp_path, log.head(10), "small.csv"), spec, root, force=True)
    assert store.read_manifest(root, NAME)["rows"] == replaced.rows == 10


def test_parameters_are_checked_before_reading(tmp_path, spec, log):
    path = _csv(tmp_path, log.head(5))
    with pytest.raises(ParameterError, match="unknown time zone 'Mars/Olympus'"):
        events.import_events(path, spec, tmp_path / "d", timezone="Mars/Olympus")
    with pytest.raises(ParameterError, match="one of: s, ms, us, ns, iso"):
        events.import_events(path, spec, tmp_path / "d", unit="minutes")
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(DataError, match="unknown type"):
        events.import_events(tmp_path / "log.json", spec, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "log.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# --- the real CLI -------------------------------------------------------------------------


def invoke(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_import_events_and_its_errors(recloop_home, tmp_path, spec_path, log):
    path = _csv(tmp_path, log)
    result = invoke("datasets", "import-events", str(path), "--spec", str(spec_path), "--chunk-rows", "2000")
    assert result.exit_code == 0, result.output
    assert f"wrote {len(log):,} rows as {DAYS} day partitions" in result.output
    assert str(recloop_home / "data" / NAME) in result.output
    assert f"recloop run --spec {spec_path} --date {START + dt.timedelta(days=DAYS)}" in result.output

    again = invoke("datasets", "import-events", str(path), "--spec", str(spec_path))
    assert again.exit_code == 2 and "pass --force" in again.output

    missing = _csv(tmp_path, log.drop(columns=["price"]), "no_price.csv")
    broken = invoke("datasets", "import-events", str(missing), "--spec", str(spec_path), "--force")
    assert broken.exit_code == 2
    assert f"{missing}: rows 1-" in broken.output and "column 'price' fails rule 'required column present'" in broken.output

    listed = invoke("datasets", "specs")
    assert listed.exit_code == 0 and "synthetic_clicks" in listed.output


def test_cli_specs_lists_spec_dirs_and_shadowing(recloop_home, tmp_path, monkeypatch, spec_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "adult.yaml").write_text((SPEC_DIR / "adult.yaml").read_text())
    (mine / f"{NAME}.yaml").write_text(spec_path.read_text())
    monkeypatch.setenv("RECLOOP_SPEC_DIRS", str(mine))
    out = invoke("datasets", "specs").output.replace("\n", " ")
    assert str(mine / "adult.yaml") in out and str(SPEC_DIR / "adult.yaml") in out  # shadowed
    assert NAME in out and "absent" in out
    assert f"searched, in order: {mine}; {SPEC_DIR}" in out


@pytest.mark.slow
def test_imported_log_runs_a_night_through_recloop_run_spec(recloop_home, tmp_path, monkeypatch,
                                                             spec_path, log, prefect_server):
    from mlflow import MlflowClient

    from tasks import registry

    monkeypatch.setenv("RECLOOP_WINDOW_DAYS", "3")
    monkeypatch.setenv("RECLOOP_TRAIN_BATCH_SIZE", "64")  # 3,000 training rows: enough steps in 1 epoch
    imported = invoke("datasets", "import-events", str(_csv(tmp_path, log)), "--spec", str(spec_path))
    assert imported.exit_code == 0, imported.output

    run_date = START + dt.timedelta(days=DAYS)
    out_json = tmp_path / "night.json"
    night = invoke("run", "--spec", str(spec_path), "--date", str(run_date), "--arch", "wide",
                   "--epochs", "1", "--json", str(out_json))
    assert night.exit_code == 0, night.output
    assert f"{NAME}: night of {run_date}" in night.output and str(spec_path) not in night.output
    summary = json.loads(out_json.read_text())
    assert summary["dataset"] == NAME and summary["staging_day"] == str(run_date - dt.timedelta(days=1))
    assert summary["promoted"], summary["rows"]

    uri = f"sqlite:///{recloop_home / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    assert client.get_experiment_by_name(NAME) is not None
    champion = registry.alias_version(client, f"{NAME}-ranker", registry.CHAMPION)
    assert champion is not None and str(champion.version) == summary["champion_after"]
