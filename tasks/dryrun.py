"""The served dry run before promotion: the selected candidate's registered version behind a
real scoring server, fed staging rows over HTTP, before it may become `challenger`.

The reload check proves the bundle loads and predicts in this process. The dry run proves what
serving needs on top: that a fresh process (`python -m tasks.serve`, the same `load` and `run`
as `recloop serve`) loads the version from the registry and starts, that MLflow's scoring
protocol hands it raw rows that come back as the same probabilities the gate judged (a
`dataframe_split` body goes through JSON, the signature's type enforcement and the bundle's
own preprocessing), and how long a request of a realistic size takes.

One server per night, for the selected candidate only: the night binds a free port on
127.0.0.1 (port 0), passes the listening socket to the server (no window in which another
process can take the port, and the port is known before the server starts), waits for
`/ping` up to `startup_timeout_s`, sends a seeded sample of the staging day, and stops the
server whatever happened (SIGTERM to its process group, SIGKILL after `STOP_TIMEOUT_S`). The
server sets PR_SET_PDEATHSIG on itself (`--parent-pid`; no `preexec_fn`, which is unsafe in a
threaded night): a night killed with SIGKILL takes it along.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import faults
from tasks.evaluate import DRY_RUN_CHECK, Check, DryRunResult
from tasks.handoff import FrameDay, RawDay
from tasks.processes import stop_session

ATOL = 1e-6  # served vs in-memory probabilities (measured: below 1e-15; JSON carries float32 exactly)
STOP_TIMEOUT_S = 30.0  # SIGTERM, then SIGKILL: uvicorn answers the requests in flight first
REQUEST_TIMEOUT_S = 60.0  # one request; a hung server fails the dry run instead of the night
HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# `dryrun.result` before the result is known; a version left with it was interrupted.
PENDING = "pending"
INTERRUPTED = "failed: interrupted (the night ended during the dry run)"  # what `recloop doctor` writes then
DISABLED = "disabled"


@dataclass(frozen=True)
class DryRunConfig:
    """The served dry run (`RECLOOP_DRYRUN_*`; the defaults live here only).

    `sample_rows`: staging rows sent (a seeded sample); `request_rows`: rows per request;
    `p99_budget_ms`: the gate fails a candidate whose p99 request latency exceeds it;
    `startup_timeout_s`: from start to a healthy `/ping` (load included).

    The budget is generous on purpose: it is a gate on a shared 2-core machine, not the
    serving target. `recloop serve` answers 100-row requests in p99 15.5 ms at load 1.3
    (benchmarks/results/serve_latency.md) and torch work ran 13 times slower here while two other
    CPU-bound processes shared the cores (wide_deep training, 67k vs 5k samples/s), so a healthy
    model can reach 150-200 ms at p99 on a busy night; 250 ms passes it and still fails a model
    an order of magnitude slower than it should be (a per-request reload, an architecture bigger
    than the machine can serve)."""

    enabled: bool = True
    sample_rows: int = 2000
    request_rows: int = 100
    p99_budget_ms: float = 250.0
    startup_timeout_s: float = 120.0
    seed: int = 0

    def __post_init__(self):
        if self.sample_rows < 1 or not 1 <= self.request_rows <= self.sample_rows:
            raise ValueError("need sample_rows >= 1 and 1 <= request_rows <= sample_rows")
        if self.p99_budget_ms <= 0 or self.startup_timeout_s <= 0:
            raise ValueError("need p99_budget_ms > 0 and startup_timeout_s > 0")


class DryRunFailure(RuntimeError):
    """A dry run that could not measure: the reason starts with what failed."""


def pending_check() -> Check:
    """The check a version is registered with before its dry run has a result: not passed, so a
    version whose night dies meanwhile is never promotable (`recloop doctor` then records that)."""
    return Check(DRY_RUN_CHECK, False, f"{PENDING}: the registered version is served before it may become "
                                       "challenger; still pending means the night ended during the dry run")


def sample_rows(day: RawDay | FrameDay, n: int, seed: int, columns: list[str] | None) -> tuple[np.ndarray, pd.DataFrame]:
    """A seeded sample of `n` rows of the day (all when it has fewer), in day order: their row
    numbers and the rows, read chunk by chunk (the day is never in memory whole)."""
    idx = np.sort(np.random.default_rng(seed).choice(day.rows, min(n, day.rows), replace=False))
    parts, start = [], 0
    for chunk in day.chunks(columns):
        lo, hi = np.searchsorted(idx, [start, start + len(chunk)])
        if hi > lo:
            parts.append(chunk.iloc[idx[lo:hi] - start])
        start += len(chunk)
    if start != day.rows:
        raise DryRunFailure(f"sample failed: the staging day has {start} rows, expected {day.rows}")
    return idx, pd.concat(parts, ignore_index=True)


def request_body(rows: pd.DataFrame) -> bytes:
    """MLflow's `dataframe_split` JSON, as a client sends it (NaN and None become null)."""
    split = rows.to_json(orient="split", index=False, double_precision=15, date_format="iso")
    return b'{"dataframe_split": ' + split.encode() + b"}"


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    port: int


def _child_env() -> dict[str, str]:
    """The night's environment, with this checkout first on the path (the server must run this
    code, not another install of the project) and the night's MLflow stores."""
    import mlflow

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.update({"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    env.pop("RECLOOP_FAULT", None)  # a fault rehearsal is for the night, not its server
    return env


def _ping(port: int, timeout: float) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except OSError:  # refused, reset, or not answered yet
        return False
    finally:
        conn.close()


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(line.strip() for line in text[-lines:])[:500] or "no output"


@contextmanager
def scoring_server(model_uri: str, startup_timeout_s: float, threads: int = 1) -> Iterator[ServerProcess]:
    """`python -m tasks.serve` serving `model_uri` on a free loopback port, healthy when this
    yields, stopped when it exits (also on exceptions and KeyboardInterrupt). DryRunFailure
    ("server did not start: ...") when it exits or is not healthy within `startup_timeout_s`."""
    from tasks.serve import ServeError, bind

    try:
        sock = bind(HOST, 0)
    except ServeError as exc:
        raise DryRunFailure(f"server did not start: {exc}") from None
    port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="recloop-dryrun-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log_file:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tasks.serve", "--model-uri", model_uri, "--fd", str(sock.fileno()),
                     "--threads", str(threads), "--parent-pid", str(os.getpid())],
                    pass_fds=(sock.fileno(),), env=_child_env(), cwd=tmp, stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                sock.close()  # the server holds the socket now; a server that dies closes it
        try:
            deadline = time.monotonic() + startup_timeout_s
            while not _ping(port, timeout=min(2.0, max(deadline - time.monotonic(), 0.01))):
                if proc.poll() is not None:
                    raise DryRunFailure(f"server did not start: exited with status {proc.returncode}: "
                                        f"{_tail(log_path)}")
                if time.monotonic() >= deadline:
                    raise DryRunFailure(f"server did not start: no healthy /ping within {startup_timeout_s:g} s")
                time.sleep(0.2)
            yield ServerProcess(proc.pid, port)
        finally:
            stop_session(proc, STOP_TIMEOUT_S)


def _send(port: int, bodies: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """POST every body once over one keep-alive connection (the first one once more before,
    untimed: the first request pays lazy initialisation). Returns per-request latencies in ms
    (client wall time, answer parsed) and the predictions in order."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    latencies, predictions = [], []
    try:
        for i, body in enumerate([bodies[0], *bodies]):
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except OSError as exc:
                raise DryRunFailure(f"request failed: request {i}: {type(exc).__name__}: {exc}") from None
            if resp.status != 200:
                raise DryRunFailure(f"request failed: request {i} answered {resp.status}: "
                                    f"{payload[:300].decode(errors='replace')}")
            try:
                answer = np.asarray(json.loads(payload)["predictions"], np.float64).reshape(-1)
            except (ValueError, KeyError, TypeError) as exc:
                raise DryRunFailure(f"request failed: request {i}: no predictions in the answer "
                                    f"({type(exc).__name__}): {payload[:300].decode(errors='replace')}") from None
            elapsed_ms = (time.perf_counter() - t0) * 1e3
            if i > 0:
                latencies.append(elapsed_ms)
                predictions.append(answer)
    finally:
        conn.close()
    return np.asarray(latencies), np.concatenate(predictions)


def run_dry_run(
    model_uri: str,
    day: RawDay | FrameDay,
    expected: np.ndarray,
    columns: list[str] | None,
    config: DryRunConfig,
    log: Callable[[str], None] = print,
) -> DryRunResult:
    """Serve `model_uri`, send it a sample of `day`, compare with `expected` (the in-memory
    predictions of every row of the day), time it. Never raises for what it checks: a failure
    is in the result's `failures`."""
    t0 = time.perf_counter()
    latencies = served = None
    rows, bodies, failures = (), [], []
    try:
        idx, rows = sample_rows(day, config.sample_rows, config.seed, columns)
        bodies = [request_body(rows.iloc[i:i + config.request_rows])
                  for i in range(0, len(rows), config.request_rows)]
        with scoring_server(model_uri, config.startup_timeout_s) as server:
            log(f"dry run: {model_uri} served on {HOST}:{server.port} (pid {server.pid}); sending {len(rows):,} "
                f"staging rows in {len(bodies)} requests of up to {config.request_rows}")
            faults.point("during_dry_run")
            latencies, served = _send(server.port, bodies)
    except DryRunFailure as exc:
        failures.append(str(exc))
    p50 = p99 = diff = None
    if latencies is not None:
        p50, p99 = (float(v) for v in np.percentile(latencies, [50, 99]))
        want = np.asarray(expected, np.float64)[idx]
        if served.shape != want.shape:
            failures.append(f"predictions differ: {served.size} predictions for {want.size} rows")
        else:
            diff = float(np.max(np.abs(served - want)))
            if not diff <= ATOL:  # also NaN
                failures.append(f"predictions differ: max |served - in-memory| {diff:.2e} > {ATOL:.0e}")
        if p99 > config.p99_budget_ms:
            failures.append(f"p99 over budget: {p99:.2f} ms > {config.p99_budget_ms:g} ms")
    return DryRunResult(uri=model_uri, rows=len(rows), requests=len(bodies), request_rows=config.request_rows,
                        p50_ms=p50, p99_ms=p99, max_abs_diff=diff, seconds=time.perf_counter() - t0,
                        p99_budget_ms=config.p99_budget_ms, failures=tuple(failures))
