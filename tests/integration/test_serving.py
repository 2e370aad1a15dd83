"""A registered champion served over HTTP: the bundle carries its own code (it loads and scores
in a process that cannot import the checkout), `recloop serve` and `mlflow models serve` answer
MLflow's scoring protocol with the in-process bundle's probabilities, and the clear errors
(no model, no alias, a busy port)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from feature_store.generators.synthetic import generate_day, make_world
from feature_store.spec import load_spec
from feature_store.workflow import Preprocessor
from flows.cli import main
from models import build_model
from models.schema import InputSchema
from models.trainer import TrainConfig, fit
from tasks import registry, tracking
from tasks.bundle import log_bundle
from tasks.features import to_batch
from tasks.settings import get_settings

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Champion:
    env: dict[str, str]  # RECLOOP_HOME and the tracking URI, for child processes
    raw: pd.DataFrame  # raw rows with an unseen id, a null string and a null number
    expected: np.ndarray  # the in-process bundle's probabilities for `raw`


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> Champion:
    """A small wide_deep trained for one epoch on a synthetic day, logged, registered, champion."""
    home = tmp_path_factory.mktemp("serve") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home.parent / "absent.env"))
        for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        settings = get_settings()
        client = tracking.configure(settings)
        spec = load_spec(DATASET)
        world = make_world(3)
        train = generate_day(world, date(2026, 3, 1), 3000, 3)
        pre = Preprocessor.fit(spec, train)
        model = build_model("wide_deep", InputSchema.from_layout(pre.layout), seed=0)
        batch = to_batch(pre.transform(train), train[spec.label])
        fit(model, batch, batch, TrainConfig(epochs=1, batch_size=256, threads=1, seed=0))
        exp_id = tracking.experiment_id(client, DATASET, tracking.artifact_location(settings))
        with mlflow.start_run(experiment_id=exp_id) as run:
            uri = log_bundle(model, pre, spec, train.head(5))
        mv = registry.register_version(client, NAME, DATASET, uri, run.info.run_id, {"arch": "wide_deep"})
        registry.promote(client, NAME, mv.version, approved_by="test", reason="serve it")

        raw = generate_day(world, date(2026, 3, 2), 40, 4)[spec.feature_columns]
        raw.loc[0, "user_id"] = "never-seen-user"
        raw.loc[1, "device"] = None
        raw.loc[2, "price"] = np.nan
        expected = np.asarray(mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(raw), np.float64)
        env = {"RECLOOP_HOME": str(home), "RECLOOP_SETTINGS_FILE": str(home.parent / "absent.env"),
               "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri}
    return Champion(env, raw, expected)


def _child_env(champion: Champion) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_DATA_ROOT"}}
    # `uvicorn` (started by `mlflow models serve`) lives next to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **champion.env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


_OUTSIDE = textwrap.dedent("""
    import importlib.util, json, sys
    from pathlib import Path
    # The venv's editable install of recloop is a meta-path finder: drop it, so the checkout is
    # reachable by no route at all (no sys.path entry holds it either; the cwd is empty).
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
    sys.path_importer_cache.clear()
    before = {m: importlib.util.find_spec(m) is not None for m in ("feature_store", "models", "tasks")}
    import mlflow, pandas as pd, numpy as np
    bundle = mlflow.pyfunc.load_model(sys.argv[1])
    p = np.asarray(bundle.predict(pd.read_parquet(sys.argv[2])), np.float64)
    import feature_store, tasks.bundle
    print(json.dumps({"before": before, "predictions": p.tolist(),
                      "feature_store": feature_store.__file__, "bundle": tasks.bundle.__file__}))
""")


def test_bundle_loads_and_scores_where_the_checkout_is_not_importable(champion, tmp_path):
    rows = tmp_path / "rows.parquet"
    champion.raw.to_parquet(rows)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-c", _OUTSIDE, f"models:/{NAME}@champion", str(rows)],
                          cwd=empty, env=_child_env(champion), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] == {"feature_store": False, "models": False, "tasks": False}
    for module in ("feature_store", "bundle"):  # imported from the bundle's own code directory
        assert "/code/" in out[module] and not out[module].startswith(str(REPO)), out[module]
    np.testing.assert_allclose(out["predictions"], champion.expected, rtol=0, atol=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_healthy(proc: subprocess.Popen, port: int, deadline_s: float = 180) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"server exited with {proc.returncode}: {err[-3000:]} {out[-1000:]}")
        try:
            if _request(port, "GET", "/ping")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no healthy /ping on port {port} within {deadline_s} s")


def _dataframe_split(raw: pd.DataFrame) -> bytes:
    split = json.loads(raw.to_json(orient="split", index=False))  # NaN and None -> null
    return json.dumps({"dataframe_split": split}).encode()


def _assert_serves_the_champion(champion: Champion, port: int) -> None:
    status, body = _request(port, "POST", "/invocations", _dataframe_split(champion.raw))
    assert status == 200, body[:2000]
    predictions = np.asarray(json.loads(body)["predictions"], np.float64)
    assert predictions.shape == champion.expected.shape
    assert np.max(np.abs(predictions - champion.expected)) <= 1e-6


def test_recloop_serve_answers_the_scoring_protocol(champion, tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", DATASET, "--port", str(port)],
                            cwd=REPO, env={**_child_env(champion), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(proc, port)
        _assert_serves_the_champion(champion, port)
        status, body = _request(port, "POST", "/invocations", b'{"dataframe_split": {"columns": ["hour"], '
                                                             b'"data": [[3]]}}')
        assert status == 400 and b"missing inputs" in body and b"user_id" in body, body  # the signature's check
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert f"serving {NAME} v1 (champion) on http://127.0.0.1:{port}/invocations" in out


def test_mlflow_models_serve_answers_the_same(champion, tmp_path):
    port = _free_port()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=empty, env={**_child_env(champion), "MLFLOW_MODELS_WORKERS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_healthy(proc, port)
        _assert_serves_the_champion(champion, port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the CLI and the uvicorn it execs
        proc.communicate(timeout=60)


def _serve_error(capsys, champion: Champion, *argv: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in champion.env.items():
            mp.setenv(key, value)
        mp.setenv("RECLOOP_TRACKING_URI", champion.env["MLFLOW_TRACKING_URI"])
        with pytest.raises(SystemExit) as info:
            main(["serve", *argv])
    out = capsys.readouterr()
    return info.value.code, " ".join((out.out + out.err).split())


def test_serve_names_what_is_missing_or_busy(champion, capsys):
    code, text = _serve_error(capsys, champion, DATASET, "--alias", "canary", "--port", str(_free_port()))
    assert code == 1 and f"{NAME} has no alias 'canary' (aliases: champion; versions: v1)" in text, text

    code, text = _serve_error(capsys, champion, "adult", "--port", str(_free_port()))
    assert code == 1 and "no registered model 'adult-ranker'" in text, text

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, text = _serve_error(capsys, champion, DATASET, "--port", str(port))
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}: the port is in use" in text, text


def test_served_connections_get_tcp_nodelay():
    """asyncio turns Nagle off only on sockets whose proto is TCP; with Nagle on, every response
    waited ~40 ms for the client's delayed ACK (measured: /ping 44 ms -> 0.6 ms)."""
    import asyncio

    from tasks.serve import bind

    sock = bind("127.0.0.1", 0)
    seen: list[int] = []

    async def main_() -> None:
        def on_connect(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main_())
    assert seen and seen[0] != 0


@contextlib.contextmanager
def _served_in_thread(app) -> Iterator[int]:
    """`app` under uvicorn (httptools, as `recloop serve` runs it) on a free loopback port."""
    import uvicorn

    from tasks.serve import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _exchange(port: int, method: str, path: str, body: bytes | None, content_type: str | None) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type"), resp.read()
    finally:
        conn.close()


def test_the_fast_path_answers_byte_for_byte_as_mlflows_app(champion):
    """`tasks.scoring.app` (what `recloop serve` runs) and MLflow's own scoring app, side by side on
    the real bundle: the same status, content type and body for plain requests (the fast path) and
    for everything it hands to MLflow's app (other formats, routes and every kind of bad input)."""
    from mlflow.pyfunc import scoring_server

    from tasks.scoring import FastFrame, app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", champion.env["MLFLOW_TRACKING_URI"])
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    raw = champion.raw
    records = json.dumps({"dataframe_records": json.loads(raw.to_json(orient="records"))}).encode()
    reordered = _dataframe_split(raw[raw.columns[::-1]])
    as_string = json.loads(_dataframe_split(raw.head(3)))
    as_string["dataframe_split"]["data"][0][list(raw.columns).index("hour")] = "7"
    cases = [
        ("POST", "/invocations", _dataframe_split(raw), "application/json"),
        ("POST", "/invocations", _dataframe_split(raw.head(1)), "application/json; charset=utf-8"),
        ("POST", "/invocations", records, "application/json"),
        ("POST", "/invocations", reordered, "application/json"),
        ("POST", "/invocations", json.dumps(as_string).encode(), "application/json"),  # MLflow casts "7"
        ("POST", "/invocations", raw.to_csv(index=False).encode(), "text/csv"),
        ("POST", "/invocations", b'{"dataframe_split": {"columns": ["hour"], "data": [[3]]}}', "application/json"),
        ("POST", "/invocations", b'{"dataframe_split": ', "application/json"),
        ("POST", "/invocations", b'{"rows": []}', "application/json"),
        ("POST", "/invocations", _dataframe_split(raw), "application/xml"),
        ("POST", "/invocations", _dataframe_split(raw), None),
        ("GET", "/invocations", None, None),
        ("GET", "/ping", None, None),
        ("GET", "/health", None, None),
        ("GET", "/version", None, None),
        ("GET", "/nowhere", None, None),
    ]
    fast_frame = FastFrame.for_model(model)  # the first four take the fast path, the fifth does not
    assert fast_frame is not None and [fast_frame.parse(c[2]) is not None for c in cases[:5]] == [True] * 4 + [False]
    answers = []
    with _served_in_thread(app(model)) as fast_port, _served_in_thread(scoring_server.init(model)) as mlflow_port:
        for method, path, body, content_type in cases:
            answers.append(_exchange(fast_port, method, path, body, content_type))
            reference = _exchange(mlflow_port, method, path, body, content_type)
            assert answers[-1] == reference, (method, path, content_type, (body or b"")[:80])
    assert [a[0] for a in answers[:5]] == [200] * 5 and {a[0] for a in answers[6:11]} >= {400, 415}
    predictions = np.asarray(json.loads(answers[0][2])["predictions"], np.float64)
    np.testing.assert_allclose(predictions, champion.expected, rtol=0, atol=1e-9)
