"""The served stack on loopback: Prefect server, MLflow tracking server, a process worker and
the `nightly` deployment (`make up` / `make down`, `recloop stack up|down|status`,
`python -m flows.stack up|down|status`).

    up      start the Prefect server (PostgreSQL when RECLOOP_DB_URL is set, else its SQLite),
            the MLflow server (same PostgreSQL server, else sqlite:///$RECLOOP_HOME/mlflow-server.db;
            artifacts proxied into $RECLOOP_HOME/mlartifacts), create the `recloop-process` work
            pool, start a process worker whose runs log to the MLflow server, `prefect deploy --all`,
            wait for every HTTP health check and print the addresses.
    down    stop exactly the process groups named in $RECLOOP_HOME/stack/*.pid (stale files are
            removed, never acted on).
    status  pid, liveness and health of each service.
    ui      the UI addresses of the running stack (`make ui` starts a local MLflow UI otherwise).

With RECLOOP_DB_URL=postgresql://user@host:port/DB the stack uses two databases on that server,
`DB_prefect` and `DB_mlflow` (each tool keeps its own `alembic_version` table, so they cannot
share one), created when missing; `DB` itself need not exist (they are created from the
server's `postgres` database). MLflow reaches PostgreSQL through psycopg 3 (`psycopg[binary]`;
SQLAlchemy 2.1 made psycopg 3 the default driver of postgresql://, the URL names it explicitly).

`up` writes $RECLOOP_HOME/stack/stack.json; `served_stack` reads it back for the `recloop` CLI,
which then talks to these servers without further variables (flows/cli.py `_servers`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit, urlunsplit

import typer

REPO_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "recloop-process"
DEPLOYMENT = "nightly-retrain/nightly"
HOST = "127.0.0.1"
# Stop order: the worker first (it talks to both servers), then the servers.
SERVICES = ("worker", "mlflow", "prefect")
START_TIMEOUT_S = float(os.environ.get("RECLOOP_STACK_TIMEOUT", "240"))
# The database `ensure_databases` connects to for CREATE DATABASE: every PostgreSQL server has it,
# while the one named in RECLOOP_DB_URL only prefixes the two it creates and may not exist.
ADMIN_DATABASE = "postgres"
# The night the hint of `up` shows: `recloop generate`'s default days (2026-01-01..10) cover it.
HINT_RUN_DATE = "2026-01-10"


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says which service and why."""


# --------------------------------------------------------------------------- configuration
@dataclass
class StackConfig:
    home: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    db_url: str | None = None
    timezone: str | None = None
    repo: Path = REPO_DIR
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, **overrides) -> StackConfig:
        from tasks.settings import get_settings

        s = get_settings()
        cfg = cls(home=s.home, prefect_port=s.prefect_port, mlflow_port=s.mlflow_port,
                  db_url=s.db_url, timezone=s.schedule_timezone)
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        return cfg

    @property
    def run_dir(self) -> Path:
        return self.home / "stack"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    def database_url(self, tool: str) -> str | None:
        """`<db>_<tool>` on the RECLOOP_DB_URL server, with the driver each tool needs."""
        if not self.db_url:
            return None
        parts = urlsplit(self.db_url)
        if not parts.scheme.startswith("postgres"):
            raise StackError(f"RECLOOP_DB_URL must be a postgresql:// URL, got {self.db_url!r}")
        base = parts.path.lstrip("/") or "recloop"
        scheme = "postgresql+asyncpg" if tool == "prefect" else "postgresql+psycopg"
        return urlunsplit((scheme, parts.netloc, f"/{base}_{tool}", parts.query, ""))

    def mlflow_backend_uri(self) -> str:
        return self.database_url("mlflow") or f"sqlite:///{self.home / 'mlflow-server.db'}"

    def env(self) -> dict[str, str]:
        """The environment every process of the stack gets."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_CLI_PROMPT"] = "false"
        env["PREFECT_API_URL"] = self.prefect_api_url
        env["RECLOOP_HOME"] = str(self.home)
        env["RECLOOP_REPO_DIR"] = str(self.repo)
        env["RECLOOP_TRACKING_URI"] = self.mlflow_url
        env.pop("RECLOOP_REGISTRY_URI", None)  # the registry is the tracking server's
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        env.setdefault("GX_ANALYTICS_ENABLED", "false")
        return env


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the project's .venv)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


# --------------------------------------------------------------------------- pid files
def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces: split after its closing parenthesis.
    return [str(pid), raw[raw.index("(") + 1: raw.rindex(")")]] + raw[raw.rindex(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[21] if st else None


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st and st[2] != "Z" and st[4] == str(pgid):
                members.append(int(entry.name))
    return members


def _pidfile(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.pid"


def _read_pidfile(cfg: StackConfig, name: str) -> dict | None:
    path = _pidfile(cfg, name)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"pid": None}


def _is_ours(info: dict | None) -> bool:
    """The pid file names a live process group that we started: same pid AND same start time
    (a recycled pid has another start time), and it still leads its own process group."""
    if not info or not info.get("pid"):
        return False
    pid = int(info["pid"])
    st = _proc_stat(pid)
    if st is None:
        # The leader is gone; members of its group may still run (e.g. uvicorn workers).
        return bool(_group_members(pid)) and info.get("pgid") == pid
    return st[21] == info.get("starttime") and st[4] == str(pid)


def _spawn(cfg: StackConfig, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(cfg.run_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(cmd, cwd=cfg.repo, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _pidfile(cfg, name).write_text(json.dumps({
        "pid": proc.pid, "pgid": proc.pid, "starttime": _start_time(proc.pid), "cmd": cmd,
    }))
    return proc


def _stop(cfg: StackConfig, name: str, timeout: float = 20.0) -> str:
    path = _pidfile(cfg, name)
    info = _read_pidfile(cfg, name)
    if info is None:
        return "not running"
    if not _is_ours(info):
        path.unlink(missing_ok=True)
        return f"stale pid file removed (pid {info.get('pid')} is not running or is another process)"
    pgid = int(info["pid"])
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_members(pgid):
            time.sleep(0.2)
        if not _group_members(pgid):
            break
    path.unlink(missing_ok=True)
    left = _group_members(pgid)
    if left:
        raise StackError(f"{name}: process group {pgid} still has {left} after SIGKILL")
    return f"stopped (process group {pgid})"


# --------------------------------------------------------------------------- health
def _log_tail(cfg: StackConfig, name: str, lines: int = 25) -> str:
    try:
        return "\n".join((cfg.run_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _wait_for(cfg: StackConfig, name: str, proc: subprocess.Popen | None, check, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < START_TIMEOUT_S:
        if check():
            return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{name} exited with status {proc.returncode} before {what}; "
                             f"log {cfg.run_dir / (name + '.log')}:\n{_log_tail(cfg, name)}")
        time.sleep(0.5)
    raise StackError(f"{name}: no {what} after {START_TIMEOUT_S:.0f} s; "
                     f"log {cfg.run_dir / (name + '.log')}:\n{_log_tail(cfg, name)}")


def _worker_online(cfg: StackConfig) -> bool:
    req = urllib.request.Request(f"{cfg.prefect_api_url}/work_pools/{WORK_POOL}/workers/filter",
                                 data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            workers = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(w.get("status") == "ONLINE" for w in workers)


# Prefect 3.8.8's `prefect deploy`, after creating the deployments, asks the server for the
# pool's online workers with `"limit": null`; the 3.8.8 server under the pinned fastapi 0.153
# answers 422 and the command exits 1. The deployment itself is created: verify it instead.
_KNOWN_DEPLOY_422 = "workers/filter"


def _deployment_exists(cfg: StackConfig) -> bool:
    flow, name = DEPLOYMENT.split("/")
    return _http_ok(f"{cfg.prefect_api_url}/deployments/name/{flow}/{name}")


def _health(cfg: StackConfig) -> dict[str, bool]:
    return {
        "prefect": _http_ok(f"{cfg.prefect_api_url}/health"),
        "mlflow": _http_ok(f"{cfg.mlflow_url}/health"),
        "worker": _worker_online(cfg),
    }


# --------------------------------------------------------------------------- databases
def ensure_databases(cfg: StackConfig) -> list[str]:
    """Create `<db>_prefect` and `<db>_mlflow` on the RECLOOP_DB_URL server when missing."""
    if not cfg.db_url:
        return []
    import asyncio

    import asyncpg

    parts = urlsplit(cfg.db_url)
    admin_dsn = urlunsplit(("postgresql", parts.netloc, f"/{ADMIN_DATABASE}", parts.query, ""))
    names = [urlsplit(cfg.database_url(t)).path.lstrip("/") for t in ("prefect", "mlflow")]

    async def _create() -> list[str]:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        created = []
        try:
            for db in names:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
                    await conn.execute(f'CREATE DATABASE "{db}"')
                    created.append(db)
        finally:
            await conn.close()
        return created

    try:
        return asyncio.run(_create())
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackError(f"cannot prepare databases {names} on {admin_dsn}: {exc}") from exc


# --------------------------------------------------------------------------- up / down
def _run(cmd: list[str], cfg: StackConfig, env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cfg.repo, env=env, capture_output=True, text=True, timeout=300)
    with open(cfg.run_dir / "setup.log", "a") as log:
        log.write(f"\n=== {' '.join(cmd)} (exit {res.returncode})\n{res.stdout}{res.stderr}")
    return res


def up(cfg: StackConfig, echo=print) -> dict:
    """Start everything, wait for health, deploy; returns addresses and start-up seconds."""
    infos = {n: _read_pidfile(cfg, n) for n in SERVICES}
    live = [n for n, i in infos.items() if _is_ours(i)]
    if live:
        raise StackError(f"already running: {', '.join(live)} (pid files in {cfg.run_dir}); "
                         "run `make down` first")
    for name, info in infos.items():
        if info is not None:
            _pidfile(cfg, name).unlink(missing_ok=True)
            echo(f"removed stale pid file {name}.pid")
    (cfg.run_dir / "stack.json").unlink(missing_ok=True)  # rewritten once everything is healthy
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.home / "mlartifacts").mkdir(parents=True, exist_ok=True)
    env = cfg.env()
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    try:
        created = ensure_databases(cfg)
        if created:
            echo(f"created databases {', '.join(created)}")
        server_env = dict(env)
        if cfg.db_url:
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = cfg.database_url("prefect")
        t_prefect = time.monotonic()
        prefect = _spawn(cfg, "prefect", [_bin("prefect"), "server", "start", "--host", HOST, "--port",
                                          str(cfg.prefect_port), "--analytics-off"],
                         server_env)
        t_mlflow = time.monotonic()
        mlflow_hosts = ",".join([HOST, f"{HOST}:{cfg.mlflow_port}", "localhost", f"localhost:{cfg.mlflow_port}"])
        mlflow = _spawn(cfg, "mlflow", [
            _bin("mlflow"), "server",
            "--backend-store-uri", cfg.mlflow_backend_uri(),
            "--artifacts-destination", str(cfg.home / "mlartifacts"),
            "--host", HOST, "--port", str(cfg.mlflow_port),
            "--workers", "2",
            "--allowed-hosts", mlflow_hosts,
        ], env)
        echo(f"starting Prefect server on :{cfg.prefect_port} and MLflow server on :{cfg.mlflow_port} ...")
        _wait_for(cfg, "prefect", prefect, lambda: _http_ok(f"{cfg.prefect_api_url}/health"), "healthy /api/health")
        timings["prefect_server_s"] = round(time.monotonic() - t_prefect, 1)
        _wait_for(cfg, "mlflow", mlflow, lambda: _http_ok(f"{cfg.mlflow_url}/health"), "healthy /health")
        timings["mlflow_server_s"] = round(time.monotonic() - t_mlflow, 1)

        res = _run([_bin("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"], cfg, env, "work pool")
        if res.returncode != 0 and "already exists" not in (res.stdout + res.stderr):
            raise StackError(f"prefect work-pool create failed:\n{res.stdout}{res.stderr}")

        t_worker = time.monotonic()
        worker = _spawn(cfg, "worker", [_bin("prefect"), "worker", "start", "--pool", WORK_POOL,
                                        "--type", "process", "--name", f"recloop-{os.uname().nodename}"], env)

        t_deploy = time.monotonic()
        cmd = [_bin("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(cfg.repo / "prefect.yaml")]
        if cfg.timezone:
            cmd += ["--timezone", cfg.timezone]
        res = _run(cmd, cfg, env, "deploy")
        out = res.stdout + res.stderr
        deployed = _deployment_exists(cfg)
        if res.returncode != 0 and not (deployed and _KNOWN_DEPLOY_422 in out and "successfully created" in out):
            raise StackError(f"prefect deploy failed (exit {res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
        if not deployed:
            raise StackError(f"prefect deploy exited 0 but {DEPLOYMENT} is not on the server:\n{out[-3000:]}")
        timings["deploy_s"] = round(time.monotonic() - t_deploy, 1)
        _wait_for(cfg, "worker", worker, lambda: _worker_online(cfg), "ONLINE worker in the work pool")
        timings["worker_s"] = round(time.monotonic() - t_worker, 1)
    except BaseException:
        for name in SERVICES:
            try:
                _stop(cfg, name)
            except StackError:
                pass
        raise
    summary = {
        "prefect_ui": cfg.prefect_ui_url,
        "prefect_api": cfg.prefect_api_url,
        "mlflow_ui": cfg.mlflow_url,
        "prefect_database": "postgresql" if cfg.db_url else "sqlite (PREFECT_HOME)",
        "mlflow_backend": cfg.mlflow_backend_uri(),
        "artifacts": str(cfg.home / "mlartifacts"),
        "work_pool": WORK_POOL,
        "deployment": DEPLOYMENT,
        "seconds": timings,
    }
    (cfg.run_dir / "stack.json").write_text(json.dumps(summary, indent=2))
    return summary


def down(cfg: StackConfig) -> dict[str, str]:
    result = {name: _stop(cfg, name) for name in SERVICES}
    # Stopped on purpose: the CLI goes back to the local stores instead of refusing to guess.
    (cfg.run_dir / "stack.json").unlink(missing_ok=True)
    return result


@dataclass(frozen=True)
class ServedStack:
    """The servers `up` started for one RECLOOP_HOME, as its stack.json records them."""

    prefect_api: str
    mlflow_url: str
    running: bool  # both servers' pid files name live process groups that we started
    stack_file: Path


def served_stack(home: Path) -> ServedStack | None:
    """The stack of this RECLOOP_HOME: None when `up` never completed here (or `down` ran)."""
    cfg = StackConfig(home=home)
    path = cfg.run_dir / "stack.json"
    try:
        info = json.loads(path.read_text())
        prefect_api, mlflow_url = info["prefect_api"], info["mlflow_ui"]
    except (FileNotFoundError, NotADirectoryError):  # no stack here (or no home at all: preflight says so)
        return None
    except (OSError, ValueError, KeyError) as exc:
        raise StackError(f"{path} is unreadable ({exc}): run `make down`, then `make up`") from exc
    running = all(_is_ours(_read_pidfile(cfg, name)) for name in ("prefect", "mlflow"))
    return ServedStack(prefect_api, mlflow_url, running, path)


def status(cfg: StackConfig) -> dict[str, dict]:
    health = _health(cfg)
    out = {}
    for name in SERVICES:
        info = _read_pidfile(cfg, name)
        out[name] = {"pid": info.get("pid") if info else None, "running": _is_ours(info),
                     "healthy": health[name]}
    return out


def run_hint(prefect_api: str) -> str:
    """The shell command `up` prints for a first night (one quick architecture, auto approval)."""
    return (f"PREFECT_API_URL={prefect_api} {_bin('prefect')} deployment run '{DEPLOYMENT}' "
            f"--param run_date={HINT_RUN_DATE} --param approval_mode=auto "
            f"--param architectures='[\"wide_deep\"]' --watch")


@dataclass(frozen=True)
class Servers:
    """Which servers a `recloop` command talks to. None: the local default (SQLite MLflow store
    under RECLOOP_HOME; Prefect's ephemeral mode)."""

    tracking_uri: str | None
    prefect_api_url: str | None


def resolve_servers(home: Path, tracking_uri: str | None, prefect_api_url: str | None,
                    prefect: str = "none") -> Servers:
    """The one rule for the CLI: a store set explicitly (RECLOOP_TRACKING_URI, PREFECT_API_URL)
    wins; else the running stack of this RECLOOP_HOME; else the local defaults, except that a
    stack that was started here and is not running now is not guessed around, and a command
    that needs a Prefect server (`prefect="required"`) does not fall back to ephemeral mode.
    `prefect` is "none" (the command does not use Prefect), "optional" or "required"."""
    stack = served_stack(home)
    down_hint = "" if stack is None else (
        f"the served stack of RECLOOP_HOME={home} is not running ({stack.stack_file} is left from `make up`): "
        "start it again with `make up`, or `make down` to use the local stores")
    if tracking_uri is None and stack is not None:
        if not stack.running:
            raise StackError(f"{down_hint}; or set RECLOOP_TRACKING_URI to the MLflow store to use")
        tracking_uri = stack.mlflow_url
    if prefect != "none" and prefect_api_url is None:
        if stack is not None and stack.running:
            prefect_api_url = stack.prefect_api
        elif stack is not None:
            raise StackError(f"{down_hint}; or set PREFECT_API_URL to the Prefect server to use")
        elif prefect == "required":
            raise StackError("no Prefect server to talk to: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api), "
                             f"or start the served stack of RECLOOP_HOME={home} with `make up`")
    return Servers(tracking_uri, prefect_api_url)


# --------------------------------------------------------------------------- CLI
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The served stack on 127.0.0.1: Prefect server + MLflow server + process worker.")

PrefectPort = Annotated[Optional[int], typer.Option(help="Prefect server port [RECLOOP_PREFECT_PORT, 4200].")]
MlflowPort = Annotated[Optional[int], typer.Option(help="MLflow server port [RECLOOP_MLFLOW_PORT, 5000].")]


@app.command("up")
def up_cmd(
    prefect_port: PrefectPort = None,
    mlflow_port: MlflowPort = None,
    timezone: Annotated[Optional[str], typer.Option(
        help="Time zone of the nightly cron [RECLOOP_SCHEDULE_TIMEZONE; default: prefect.yaml's].")] = None,
) -> None:
    """Start the servers and the worker, register the deployment, wait for health."""
    cfg = StackConfig.from_settings(prefect_port=prefect_port, mlflow_port=mlflow_port, timezone=timezone)
    try:
        s = up(cfg, echo=typer.echo)
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(code=1) from None
    secs = s["seconds"]
    typer.echo(f"Prefect UI   {s['prefect_ui']}   (API {s['prefect_api']}, ready in {secs['prefect_server_s']} s)")
    typer.echo(f"MLflow UI    {s['mlflow_ui']}   (backend {s['mlflow_backend']}, ready in {secs['mlflow_server_s']} s)")
    typer.echo(f"worker       pool {s['work_pool']} online in {secs['worker_s']} s; deployment {s['deployment']}")
    typer.echo(f"logs and pid files in {cfg.run_dir}")
    typer.echo(f"run a night: {run_hint(s['prefect_api'])}")


@app.command("down")
def down_cmd() -> None:
    """Stop the processes named in the stack's pid files (and nothing else)."""
    cfg = StackConfig.from_settings()
    try:
        result = down(cfg)
    except StackError as exc:
        typer.echo(f"stack down failed: {exc}", err=True)
        raise typer.Exit(code=1) from None
    for name, what in result.items():
        typer.echo(f"{name:8s} {what}")


@app.command("status")
def status_cmd() -> None:
    """Pid, liveness and health of each service."""
    cfg = StackConfig.from_settings()
    st = status(cfg)
    urls = {"prefect": cfg.prefect_ui_url, "mlflow": cfg.mlflow_url, "worker": f"pool {WORK_POOL}"}
    for name, s in st.items():
        typer.echo(f"{name:8s} pid {s['pid'] or '-':>7}  running={s['running']!s:5s}  healthy={s['healthy']!s:5s}  {urls[name]}")
    if not all(s["running"] and s["healthy"] for s in st.values()):
        raise typer.Exit(code=1)


@app.command("ui")
def ui_cmd() -> None:
    """The UI addresses of this RECLOOP_HOME's running stack; exit 1 when it is not running."""
    from tasks.settings import get_settings

    found = served_stack(get_settings().home)
    if found is None or not found.running:
        typer.echo("no served stack of this RECLOOP_HOME is running", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"Prefect UI   {found.prefect_api.removesuffix('/api')}")
    typer.echo(f"MLflow UI    {found.mlflow_url}")


if __name__ == "__main__":
    app(prog_name="python -m flows.stack")
