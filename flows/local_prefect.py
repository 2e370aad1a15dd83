"""A private Prefect server for one CLI command, tied to the command's life.

With no Prefect API configured, Prefect starts an "ephemeral" server as a child process and
stops it at exit. A command killed with SIGKILL never reaches that exit, and the server lives on
as an orphan (holding a port and the SQLite database). Here the server is started by us with
PR_SET_PDEATHSIG: the kernel sends it SIGTERM the moment its parent dies, however it dies. It
is the same server (the API of `prefect server start`, the same database in PREFECT_HOME), so
run history and paused runs are where Prefect's own local mode puts them.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.processes import die_with_parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _drain() -> None:
    """Send queued logs and events while the server is still up (as Prefect's test harness does)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for drain_fn in (lambda: APILogWorker.instance().drain(), EventsWorker.drain_all):
            try:
                result = drain_fn()
                if inspect.isawaitable(result):
                    await result
            except RuntimeError:  # that worker never started
                pass

    run_coro_as_sync(drain())


@contextmanager
def prefect_api(log_dir: Path, echo=print) -> Iterator[str]:
    """Yield the Prefect API URL to use: the configured one, else a private server's."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        yield configured
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    env = {**os.environ, "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with open(log_dir / "prefect-local.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--no-services", "--no-ui"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(os.getpid()),
        )
    try:
        t0 = time.monotonic()
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the local Prefect server exited with status {proc.returncode}; "
                                   f"see {log_dir / 'prefect-local.log'}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f} s "
                                   "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); "
                                   f"see {log_dir / 'prefect-local.log'}")
            time.sleep(0.25)
        echo(f"local Prefect server on {url} (stops with this command; set PREFECT_API_URL to use another)")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
