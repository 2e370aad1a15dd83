"""Checks that run before a night does any work: its working directory, its output file, and
the stores it will write to. Each failure is one line naming the setting or argument.

A dead tracking server must be found in seconds, not after ingest, validation and
preprocessing followed by minutes of client retries.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from feature_store.errors import ParameterError

REACH_TIMEOUT_S = 3.0


class StoreUnreachable(RuntimeError):
    """The tracking or registry store does not answer: nothing was done, try again later."""


def check_home(home: Path) -> None:
    """RECLOOP_HOME must be a directory this process can create files in."""
    where = f"RECLOOP_HOME={home}"
    blocker = next((p for p in [home, *home.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ParameterError(f"{where}: not usable, {blocker} is a file, not a directory")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"{where}: cannot be created ({exc.strerror or exc})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=home, prefix=".recloop-write-check-"):
            pass
    except OSError as exc:
        raise ParameterError(f"{where}: not writable ({exc.strerror or exc})") from None


def check_output_file(path: Path | None, option: str = "--json") -> None:
    """An output file must be writable before the night starts: failing to write it after a
    promotion would make a scheduler retry (and promote) a night that succeeded."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ParameterError(f"{option} {path}: is a directory, expected a file path")
    if not folder.is_dir():
        raise ParameterError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ParameterError(f"{option} {path}: folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise ParameterError(f"{option} {path}: file is not writable")


def check_store(uri: str, what: str = "RECLOOP_TRACKING_URI") -> None:
    """Raise `StoreUnreachable` (one line) unless the MLflow store at `uri` answers."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        _check_http(uri, what)
    elif scheme == "sqlite":
        _check_sqlite(uri, what)
    elif scheme.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri, what)
    # Other schemes (databricks, file, plugins): the MLflow client reports problems itself.


def _check_http(uri: str, what: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=REACH_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:  # it answers; 403 is a Host-header refusal
        if exc.code in (401, 403):
            raise StoreUnreachable(f"{what}={uri}: the server refused us (HTTP {exc.code} on /health; "
                                   "for `mlflow server`, check --allowed-hosts)") from None
        return  # an answer all the same: a proxy without /health
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreUnreachable(f"{what}={uri}: no answer within {REACH_TIMEOUT_S:.0f} s ({reason})") from None


def _check_sqlite(uri: str, what: str) -> None:
    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is None or str(path) in ("", ":memory:"):
        return
    if not path.parent.is_dir():
        raise StoreUnreachable(f"{what}={uri}: folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, timeout=REACH_TIMEOUT_S)
        try:
            conn.execute("SELECT 1")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnreachable(f"{what}={uri}: cannot open the SQLite file ({exc})") from None


def _check_database(uri: str, what: str) -> None:
    import sqlalchemy

    args = {"connect_timeout": int(REACH_TIMEOUT_S)} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, pool_pre_ping=False)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # driver errors differ per database
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnreachable(f"{what}={_redact(uri)}: cannot connect ({first})") from None


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@")
    return uri


def check_stores(tracking_uri: str, registry_uri: str) -> None:
    check_store(tracking_uri, "RECLOOP_TRACKING_URI")
    if registry_uri != tracking_uri:
        check_store(registry_uri, "RECLOOP_REGISTRY_URI")
