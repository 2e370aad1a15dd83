"""Serving latency over HTTP on loopback (not a test).

Trains a small synthetic champion (wide_deep, one epoch on a generated day), registers it in a
throw-away registry, starts `recloop serve` on 127.0.0.1 and, over one persistent HTTP/1.1
connection, sends `--requests` timed requests (after `--warmup` untimed ones) of 1, 100 and
1,000 raw rows as MLflow `dataframe_split` JSON, one request at a time. Latency is client-side
wall time per request (serialising the body is done before, parsing the answer is included);
rows/s is rows over the summed latencies. With `--mlflow-serve` the same requests also go to
`mlflow models serve --env-manager local` with its default workers (one per core), the peer.

With `--levers`, the same requests first go to `python -m tasks.serve` (the dry run's server) in
each combination of the two serving levers: the app (MLflow's own FastAPI app, or
`tasks.scoring.app`'s fast path) and uvicorn's HTTP parser (h11 or httptools); MLflow's app on
h11 is what `recloop serve` ran before. The four servers run at once and get each request in
turn (so load changes on the shared machine hit all alike); best p99 of `--runs` runs. Last, the fast path's stages are timed
in-process (no HTTP): JSON -> frame, the bundle's transform, the torch forward, the answer.

Targets (issue 11): 100 rows p99 <= 10 ms, >= 50k rows/s at 1,000 rows. The machine has 2
cores shared with other work: the load average before and after each server's run is
recorded next to its numbers.

    python -m benchmarks.serve_latency [--requests 300] [--warmup 30] [--mlflow-serve] [--levers --runs 2]

Results: `benchmarks/results/serve_latency.{json,md}`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.report import write_results
from tasks.processes import stop_session

RESULTS = Path(__file__).parent / "results"
DATASET = "synthetic_clicks"
SIZES = (1, 100, 1000)
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Measurement:
    server: str
    rows: int  # per request
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rows_per_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def train_champion(home: Path, rows: int, seed: int = 3) -> None:
    """A wide_deep on one synthetic day, registered as `<dataset>-ranker@champion` in home's store."""
    import mlflow

    from feature_store.generators.synthetic import generate_day, make_world
    from feature_store.spec import load_spec
    from feature_store.workflow import Preprocessor
    from models import build_model
    from models.schema import InputSchema
    from models.trainer import TrainConfig, fit
    from tasks import registry, tracking
    from tasks.bundle import log_bundle
    from tasks.features import to_batch
    from tasks.settings import get_settings

    settings = get_settings(home=home)
    client = tracking.configure(settings)
    spec = load_spec(DATASET)
    train = generate_day(make_world(seed), date(2026, 3, 1), rows, seed)
    pre = Preprocessor.fit(spec, train)
    model = build_model("wide_deep", InputSchema.from_layout(pre.layout), seed=0)
    batch = to_batch(pre.transform(train), train[spec.label])
    fit(model, batch, batch, TrainConfig(epochs=1, batch_size=1024, threads=1, seed=0))
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, DATASET, tracking.artifact_location(settings))) as run:
        uri = log_bundle(model, pre, spec, train.head(5))
    name = registry.registered_model_name(DATASET)
    mv = registry.register_version(client, name, DATASET, uri, run.info.run_id, {"arch": "wide_deep"})
    registry.promote(client, name, mv.version, approved_by="bench", reason="serve latency")


def request_bodies(size: int, count: int, seed: int = 11) -> list[bytes]:
    """`count` different `dataframe_split` bodies of `size` raw rows (a day the model never saw)."""
    from feature_store.generators.synthetic import generate_day, make_world
    from feature_store.spec import load_spec

    columns = load_spec(DATASET).feature_columns
    day = generate_day(make_world(3), date(2026, 3, 9), max(size * 8, 2000), seed)[columns]
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        start = int(rng.integers(0, len(day) - size + 1))
        split = json.loads(day.iloc[start:start + size].to_json(orient="split", index=False))
        bodies.append(json.dumps({"dataframe_split": split}).encode())
    return bodies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, port: int, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no healthy /ping on 127.0.0.1:{port} within {deadline_s} s")


def measure(server: str, port: int, requests: int, warmup: int) -> list[Measurement]:
    """Timed requests of every size, one at a time over one keep-alive connection."""
    return measure_interleaved({server: port}, requests, warmup)


def measure_interleaved(servers: dict[str, int], requests: int, warmup: int) -> list[Measurement]:
    """`measure` for several servers at once: request i goes to each server in turn before
    request i + 1, so a change of the machine's load hits every server alike (the levers' runs)."""
    conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for name, port in servers.items()}
    headers = {"Content-Type": "application/json"}
    out = []
    for size in SIZES:
        bodies = request_bodies(size, min(requests, 50))
        load_before = os.getloadavg()
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(warmup + requests):
            body = bodies[i % len(bodies)]
            for name, conn in conns.items():
                t0 = time.perf_counter()
                conn.request("POST", "/invocations", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                predictions = json.loads(payload)["predictions"] if resp.status == 200 else None
                elapsed = time.perf_counter() - t0
                if predictions is None or len(predictions) != size:
                    raise RuntimeError(f"{name}: status {resp.status} for {size} rows: {payload[:500]!r}")
                if i >= warmup:
                    latencies[name].append(elapsed)
        load_after = os.getloadavg()
        for name, times in latencies.items():
            lat = np.asarray(times)
            out.append(Measurement(name, size, requests, round(float(np.percentile(lat, 50)) * 1e3, 2),
                                   round(float(np.percentile(lat, 99)) * 1e3, 2), round(float(lat.max()) * 1e3, 2),
                                   round(size * len(lat) / float(lat.sum())), load_before, load_after))
            print(out[-1], flush=True)
    for conn in conns.values():
        conn.close()
    return out


def _serve(cmd: list[str], env: dict[str, str], cwd: Path, server: str, requests: int, warmup: int,
           port: int, pass_fds: tuple[int, ...] = ()) -> list[Measurement]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, pass_fds=pass_fds)
    try:
        _wait_healthy(proc, port)
        return measure(server, port, requests, warmup)
    finally:
        stop_session(proc, timeout=60)  # our own child's session: the server and what it started


# (label, --app, --http) of `python -m tasks.serve`, the first one what recloop serve ran before
LEVERS = (
    ("before: MLflow's app, h11", "mlflow", "h11"),
    ("MLflow's app, httptools", "mlflow", "httptools"),
    ("fast path, h11", "recloop", "h11"),
    ("fast path, httptools (= recloop serve)", "recloop", "httptools"),
)


def measure_levers(model_uri: str, env: dict[str, str], requests: int, warmup: int, runs: int) -> list[Measurement]:
    """Every lever combination served by its own `python -m tasks.serve`, all up at once and sent
    the same requests interleaved (`measure_interleaved`); per lever and size, the run with the
    lowest p99."""
    from tasks.serve import bind

    per_run = []
    for _ in range(runs):
        procs, ports, socks = [], {}, []
        try:
            for label, app, http_parser in LEVERS:
                sock = bind("127.0.0.1", 0)
                socks.append(sock)
                cmd = [sys.executable, "-m", "tasks.serve", "--model-uri", model_uri, "--fd", str(sock.fileno()),
                       "--app", app, "--http", http_parser]
                procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True,
                                              pass_fds=(sock.fileno(),)))
                ports[label] = sock.getsockname()[1]
            for proc, port in zip(procs, ports.values()):
                _wait_healthy(proc, port)
            per_run.append(measure_interleaved(ports, requests, warmup))
        finally:
            for proc in procs:
                stop_session(proc, timeout=60)  # our own children's sessions
            for sock in socks:
                sock.close()
    best = []
    for label, _, _ in LEVERS:
        for size in SIZES:
            runs_of = [m for run in per_run for m in run if m.server == label and m.rows == size]
            best.append(min(runs_of, key=lambda m: m.p99_ms))
    return best


@dataclass(frozen=True)
class Stages:
    rows: int
    parse_ms: float  # JSON body -> the signature's frame (tasks.scoring.FastFrame)
    transform_ms: float  # the bundle's compiled transform: raw frame -> ids and values
    forward_ms: float  # predict_proba: torch forward under inference_mode
    answer_ms: float  # predictions -> MLflow's JSON bytes
    total_ms: float  # all of the above as one call (the fast path without HTTP)


def measure_stages(model_uri: str, repeats: int = 200) -> list[Stages]:
    """Median in-process CPU time (this thread's, so time spent waiting for a core on a busy
    machine is not counted) of each stage of the fast path, per request size (no HTTP)."""
    import mlflow
    import torch

    from models.trainer import predict_proba
    from tasks.features import to_batch
    from tasks.scoring import FastFrame, _answer

    torch.set_num_threads(1)  # as the server runs
    model = mlflow.pyfunc.load_model(model_uri)
    fast, bundle = FastFrame.for_model(model), model.unwrap_python_model()

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.thread_time()
            fn()
            times.append(time.thread_time() - t0)
        return round(float(np.median(times)) * 1e3, 3)

    def stages(size: int) -> Stages:
        body = request_bodies(size, 1)[0]
        batch = to_batch(bundle.preprocessor.transform(fast.parse(body)))
        predictions = bundle.predict(None, fast.parse(body))
        parse = median_ms(lambda: fast.parse(body))
        # on a fresh frame per call, as a request has: pandas caches column lookups on a frame
        transform = median_ms(lambda: bundle.preprocessor.transform(fast.parse(body))) - parse
        return Stages(size, parse, round(transform, 3), median_ms(lambda: predict_proba(bundle.model, batch)),
                      median_ms(lambda: _answer(predictions)),
                      median_ms(lambda: _answer(bundle.predict(None, fast.parse(body)))))

    out = []
    for size in SIZES:
        out.append(stages(size))
        print(out[-1], flush=True)
    return out


def _lever_table(levers: list[Measurement], runs: int) -> list[str]:
    lines = [
        f"## Levers (`python -m tasks.serve --app A --http H`, all four up at once, requests interleaved; "
        f"best p99 of {runs} runs per size)",
        "",
        "| lever | 1 row p50 / p99 ms | 100 rows p50 / p99 ms | 1,000 rows p50 / p99 ms | rows/s at 1,000 "
        "| load before / after |",
        "|---|---|---|---|---:|---|",
    ]
    by_label: dict[str, dict[int, Measurement]] = {}
    for m in levers:
        by_label.setdefault(m.server, {})[m.rows] = m
    for label, sizes in by_label.items():
        cells = [f"{sizes[n].p50_ms:.2f} / {sizes[n].p99_ms:.2f}" for n in SIZES]
        first, last = sizes[SIZES[0]], sizes[SIZES[-1]]
        lines.append(f"| {label} | {' | '.join(cells)} | {last.rows_per_s:,.0f} | "
                     f"{first.load_before[0]:.2f} / {last.load_after[0]:.2f} |")
    return lines + ["", "Four servers taking turns run each request on a colder cache than one server alone: "
                        "compare the rows of this table with each other, not with the table above.", ""]


def _stage_table(stages: list[Stages]) -> list[str]:
    lines = [
        "## Where the time goes (the fast path in-process, no HTTP; median CPU ms of this thread)",
        "",
        "| rows | JSON -> frame | transform | torch forward | answer JSON | whole fast path |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(f"| {s.rows:,} | {s.parse_ms:.3f} | {s.transform_ms:.3f} | {s.forward_ms:.3f} | "
                     f"{s.answer_ms:.3f} | {s.total_ms:.3f} |")
    return lines + ["", *NOT_ADOPTED, ""]


# Measured while building the fast path (exploration runs, 200 requests per size, load 0.7-1.4);
# kept here so the table above is read with them.
NOT_ADOPTED = [
    "Also measured while building the fast path (exploration runs, 150-200 requests per size, load 0.7-1.4; "
    "p50 / p99 ms at 1 / 100 / 1,000 rows):",
    "",
    "- MLflow's app on h11: 9.75 / 14.51, 12.88 / 20.67, 22.64 / 32.40. A lean ASGI app calling MLflow's own "
    "`invocations` (no FastAPI, middleware or thread hop), h11: 10.13 / 15.75, 12.22 / 19.27, 19.19 / 25.76; "
    "the same with the thread hop: 9.54 / 15.63, 11.39 / 17.43, 22.21 / 33.60. The framework was not the "
    "cost; MLflow's per-request data handling was. In-process at 1 row (no HTTP): `invocations()` 4.7 ms, "
    "of which JSON -> DataFrame with the signature's casts 0.9, schema enforcement again in "
    "`PyFuncModel.predict` ~0.45, the bundle 2.6; the fast path's typed parse is 0.1 ms.",
    "- uvloop instead of asyncio's loop (fast path, httptools): 3.31 / 7.70, 4.53 / 8.76, 10.89 / 17.35 vs "
    "3.46 / 5.73, 4.86 / 8.30, 9.71 / 15.52: no gain, not adopted (one more dependency).",
    "- Nagle / delayed ACK: not in play. The server's sockets have TCP_NODELAY (tests/integration/"
    "test_serving.py) and http.client sends headers and body in one send; `GET /ping` round trip 0.25 ms p50.",
    "- The serving transform (in-process CPU, 1 row, a fresh request frame): 1.8-1.9 -> 0.8 ms, the bundle's "
    "whole predict 2.9 -> 1.6 ms: categorify batches of <= 1,024 rows looked up in a dict "
    "(`feature_store/categorify.py` `Lookup`), crosses of <= 256 strings hashed without pandas' factorize "
    "(`feature_store/stable_ops.py`), the dtype-kind check cached, the all-null check on the prepared Series.",
]


def markdown(rows: list[Measurement], meta: dict, levers: list[Measurement] = (),
             stages: list[Stages] = ()) -> str:
    lines = [
        "# Serving latency (HTTP on 127.0.0.1, one request at a time, keep-alive)",
        "",
        f"Model: {meta['model']}. {meta['requests']} timed requests per size after {meta['warmup']} "
        f"warm-up ones; client-side wall time per request. {meta['cpus']} cores shared with other work: "
        "load average (1 min) before / after each size.",
        "",
        "| server | rows/request | p50 ms | p99 ms | max ms | rows/s | load before / after |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.server} | {r.rows:,} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} | "
                     f"{r.rows_per_s:,.0f} | {r.load_before[0]:.2f} / {r.load_after[0]:.2f} |")
    lines += ["", "Targets: 100 rows p99 <= 10 ms; >= 50,000 rows/s at 1,000 rows/request.", "",
              f"Load average (1, 5, 15 min) at the start: {_load(meta['load_start'])}; at the end: "
              f"{_load(meta['load_end'])}.", ""]
    if levers:
        lines += _lever_table(levers, meta["runs"])
    if stages:
        lines += _stage_table(stages)
    return "\n".join(lines)


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per size")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests per size first")
    parser.add_argument("--train-rows", type=int, default=20_000, help="rows of the champion's training day")
    parser.add_argument("--mlflow-serve", action="store_true",
                        help="also measure `mlflow models serve --env-manager local` (default workers)")
    parser.add_argument("--levers", action="store_true",
                        help="also measure each lever combination (app x HTTP parser) and time the stages")
    parser.add_argument("--runs", type=int, default=2, help="runs per lever combination (the best is kept)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 5000 or not 0 <= args.warmup <= 1000 or not 1 <= args.runs <= 5:
        parser.error("--requests must be in 1..5000, --warmup in 0..1000 and --runs in 1..5 (the run must stay short)")
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="recloop-bench-serve-") as tmp:
        home = Path(tmp) / "home"
        print(f"training a wide_deep champion on {args.train_rows:,} synthetic rows ...", flush=True)
        train_champion(home, args.train_rows)
        from tasks.settings import get_settings

        tracking_uri = get_settings(home=home).resolved_tracking_uri
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECLOOP_")}
        env.update({"RECLOOP_HOME": str(home), "RECLOOP_SETTINGS_FILE": str(Path(tmp) / "absent.env"),
                    "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
        rows: list[Measurement] = []
        levers: list[Measurement] = []
        stages: list[Stages] = []
        if args.levers:
            levers = measure_levers(f"models:/{DATASET}-ranker/1", env, args.requests, args.warmup, args.runs)
        port = _free_port()
        rows += _serve([sys.executable, "-m", "flows.cli", "serve", DATASET, "--port", str(port)], env, REPO,
                       "recloop serve (1 worker, 1 torch thread)", args.requests, args.warmup, port)
        if args.mlflow_serve:
            port = _free_port()
            name = f"{DATASET}-ranker"
            rows += _serve([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
                            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env, Path(tmp),
                           f"mlflow models serve ({os.cpu_count()} workers, default)", args.requests,
                           args.warmup, port)
        if args.levers:
            stages = measure_stages(f"models:/{DATASET}-ranker/1")
    meta = {"model": f"wide_deep on {args.train_rows:,} synthetic_clicks rows, 1 epoch",
            "requests": args.requests, "warmup": args.warmup, "cpus": os.cpu_count(), "runs": args.runs,
            "load_start": load_start, "load_end": os.getloadavg()}
    write_results(args.out, "serve_latency",
                  {**meta, "measurements": [asdict(r) for r in rows], "levers": [asdict(r) for r in levers],
                   "stages": [asdict(s) for s in stages]},
                  markdown(rows, meta, levers, stages))


if __name__ == "__main__":
    main()
