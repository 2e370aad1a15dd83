"""Shared fixtures: a temporary RECLOOP_HOME per test module and one Prefect test server per session."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
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
