"""`recloop serve`: a registered bundle behind MLflow's own scoring server, in this process.

    recloop serve DATASET [--port 5001] [--alias champion] [--host 127.0.0.1]
    python -m tasks.serve --model-uri models:/NAME/VERSION --fd FD [--parent-pid PID]   # the gate's dry run

The protocol is MLflow's (`POST /invocations` with a `dataframe_split`, `dataframe_records`,
CSV or parquet body; `GET /ping`, `/health`, `/version`): the app is `tasks.scoring.app(model)`,
which answers plain JSON requests itself, with MLflow's bytes, and hands everything else to
MLflow's own app (`mlflow.pyfunc.scoring_server.init(model)`). What differs from `mlflow models
serve -m ... --env-manager local` is that fast path and how it runs, chosen for latency on a
small, busy machine:

- one process and one uvicorn worker, the bundle loaded once, no `bash -c exec uvicorn` child
  (`mlflow models serve` starts one worker per core, each loading the model, each with torch's
  default of one intra-op thread per core: on 2 cores that is 4 threads fighting for 2);
- torch set to `threads` intra-op threads (default 1) before the bundle loads: a request of
  1,000 rows is a few ms of matrix work, and a second thread costs more in contention than
  it gains on a shared box;
- no access log line per request; HTTP parsed by httptools (C), not h11 (pure Python);
- the alias is resolved to a version once, at start (a promotion while serving does not swap
  the model under a running server; restart to serve the new champion), and the socket is
  bound before the bundle loads, so a busy port or a missing alias fails in a second with
  one line instead of after the load.

The second form is the staging gate's served dry run: the night binds a free loopback port,
passes the listening socket down and serves one model URI (a registered version) with the
same `load` and `run`, so the dry run measures the server `recloop serve` would be.
"""

from __future__ import annotations

import argparse
import errno
import socket
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

from tasks import registry

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001  # 5000 is the MLflow tracking server of `make up`
DEFAULT_THREADS = 1


class ServeError(RuntimeError):
    """Nothing to serve (no such model, alias or version) or nowhere to serve it (port)."""


@dataclass(frozen=True)
class ServedModel:
    """The registry version a server scores with, pinned at start."""

    name: str
    alias: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(client: MlflowClient, dataset: str, alias: str) -> ServedModel:
    """The version `<dataset>-ranker@alias` points to now; ServeError naming what exists."""
    name = registry.registered_model_name(dataset)
    mv = registry.alias_version(client, name, alias)
    if mv is not None:
        return ServedModel(name, alias, str(mv.version))
    versions = registry.all_versions(client, name)
    if not versions:
        raise ServeError(f"no registered model '{name}': run a night for dataset '{dataset}' first")
    aliases = sorted(client.get_registered_model(name).aliases)  # versions found by search lack them
    raise ServeError(f"{name} has no alias '{alias}' (aliases: {', '.join(aliases) or 'none'}; "
                     f"versions: {', '.join('v' + str(v.version) for v in versions)})")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or ServeError saying why not (in use, not an address
    of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and with Nagle on, every response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "the port is in use (another server? choose --port)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ServeError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def load(served: ServedModel, threads: int = DEFAULT_THREADS) -> Any:
    """The pyfunc bundle, with torch's intra-op threads set first (process-wide)."""
    return load_uri(served.uri, f"{served.name} v{served.version} ({served.alias})", threads)


def load_uri(uri: str, what: str, threads: int = DEFAULT_THREADS) -> Any:
    """`load` for any model URI; `what` names it in the error."""
    import mlflow
    import torch

    torch.set_num_threads(threads)
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise ServeError(f"{what} does not load: {type(exc).__name__}: {first}") from exc


APPS = ("recloop", "mlflow")  # tasks.scoring.app (the fast path) or MLflow's own app, unchanged
HTTP_PARSERS = ("httptools", "h11")


def run(model: Any, sock: socket.socket, log_level: str = "warning", app: str = "recloop",
        http: str = "httptools") -> None:
    """Serve the scoring app for `model` on `sock`; returns after SIGINT/SIGTERM once the
    requests in flight are answered. `app="mlflow"` and `http="h11"` are what `recloop serve`
    ran before its latency work: the serving benchmark's levers (benchmarks/serve_latency.py)."""
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from tasks import scoring

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises a caught signal after its graceful shutdown (the process then
            # dies of it: status -15, or a KeyboardInterrupt traceback); a stop is a normal end.
            self._captured_signals.clear()

    asgi = scoring.app(model) if app == "recloop" else scoring_server.init(model)
    config = uvicorn.Config(asgi, http=http, log_level=log_level, access_log=False, lifespan="off")
    Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """Serve one model URI on an inherited listening socket until SIGTERM (the dry run's server).
    A bundle that does not load is one line on stderr and exit status 1."""
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m tasks.serve", description=main.__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="e.g. models:/NAME/VERSION")
    parser.add_argument("--fd", type=int, required=True, help="a listening TCP socket inherited from the parent")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads")
    parser.add_argument("--parent-pid", type=int, help="die with this process (PR_SET_PDEATHSIG)")
    parser.add_argument("--app", choices=APPS, default=APPS[0], help="mlflow: MLflow's app only (benchmark lever)")
    parser.add_argument("--http", choices=HTTP_PARSERS, default=HTTP_PARSERS[0], help="uvicorn's HTTP parser")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        from tasks.processes import die_with

        die_with(args.parent_pid)
    sock = socket.socket(fileno=args.fd)
    status = 0
    try:
        run(load_uri(args.model_uri, args.model_uri, args.threads), sock, app=args.app, http=args.http)
    except ServeError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        status = 1
    finally:
        sock.close()
    # Every connection is closed by now and the server wrote nothing to keep: skip the
    # interpreter's teardown (atexit hooks and module cleanup of torch, Dask and MLflow), which
    # took 4-13 s of the night's wall time on a busy 2-core machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
