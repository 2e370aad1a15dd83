"""Shared fixtures: a temporary RECLOOP_HOME per test module and one Prefect test server per session."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as flows/__init__.py: GEMMs sum alike at any thread count
# The streamed data path at CI sizes: transformed splits in many small row groups, shuffled
# through small buffers, staging days scored in several chunks (the code that runs at scale).
os.environ.setdefault("RECLOOP_STREAM_ROW_GROUP_ROWS", "1024")
os.environ.setdefault("RECLOOP_STREAM_SHUFFLE_ROW_GROUPS", "4")
os.environ.setdefault("RECLOOP_STREAM_CHUNK_ROWS", "2500")
os.environ.setdefault("RECLOOP_STREAM_PART_SIZE", "256KB")
# The served dry run costs a night 5-10 s (a server process starting); the ~35 test nights that
# are about something else skip it. tests/integration/test_dry_run.py and the e2e demo turn it on.
os.environ.setdefault("RECLOOP_DRYRUN_ENABLED", "false")
# Likewise the retrieval stage (a few seconds a night): tests/integration/test_retrieval_*.py
# run it, and so does test_drift_planted.py (a blocking drift report fails the retrievers too).
os.environ.setdefault("RECLOOP_RETRIEVAL_ENABLED", "false")
warnings.filterwarnings("ignore", module=r"merlin\..*")


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect API for tests that run flows (started once: ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def recloop_home(tmp_path, monkeypatch):
    """An isolated working directory: data, SQLite MLflow store and artifacts live under it."""
    home = tmp_path / "home"
    monkeypatch.setenv("RECLOOP_HOME", str(home))
    for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_APPROVAL_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RECLOOP_SETTINGS_FILE", str(tmp_path / "absent.env"))
    return home


@pytest.fixture(scope="session")
def movielens_root():
    """The data root holding fetched MovieLens-100k partitions, or skip the test.

    Looked up in $RECLOOP_MOVIELENS_ROOT, else the default data root ($RECLOOP_DATA_ROOT, else
    $RECLOOP_HOME/data), which is where `make test` fetches it. Its licence forbids
    redistribution, so it is never in the repository."""
    from pathlib import Path

    from feature_store.datasets.movielens import ENV_ROOT, SKIP_REASON, locate_fetched
    from tasks.settings import get_settings

    configured = os.environ.get(ENV_ROOT)
    root = Path(configured) if configured else get_settings().resolved_data_root
    found = locate_fetched(root)
    if found is None:
        pytest.skip(f"{SKIP_REASON} (looked in {root}; set {ENV_ROOT} to another data root)")
    return found
