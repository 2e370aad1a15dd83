"""The served dry run's pieces that need no server: its settings, the seeded sample of the
staging day, the request body, and how its result becomes a gate check, tags and metrics."""

import json

import numpy as np
import pandas as pd
import pytest

from feature_store.errors import ParameterError
from tasks.dryrun import DryRunConfig, pending_check, request_body, sample_rows
from tasks.evaluate import DryRunResult, GatePolicy, evaluate_gate
from tasks.handoff import FrameDay


def test_settings_read_the_dryrun_section_and_name_a_bad_value(recloop_home, monkeypatch):
    from tasks.settings import get_settings

    assert DryRunConfig().enabled and DryRunConfig().p99_budget_ms == 250.0  # on by default outside the tests
    monkeypatch.setenv("RECLOOP_DRYRUN_P99_BUDGET_MS", "0.001")
    monkeypatch.setenv("RECLOOP_DRYRUN_REQUEST_ROWS", "50")
    monkeypatch.setenv("RECLOOP_DRYRUN_ENABLED", "true")
    got = get_settings().dryrun
    assert (got.enabled, got.p99_budget_ms, got.request_rows, got.sample_rows) == (True, 0.001, 50, 2000)
    monkeypatch.setenv("RECLOOP_DRYRUN_REQUEST_ROWS", "0")
    with pytest.raises(ParameterError, match="RECLOOP_DRYRUN_REQUEST_ROWS='0'.*1 <= request_rows"):
        get_settings()


def _day(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"row": np.arange(n), "user_id": [f"u{i % 37}" for i in range(n)],
                          "price": rng.random(n), "click": rng.integers(0, 2, n)})
    frame.loc[3, "price"] = np.nan
    frame.loc[4, "user_id"] = None
    return frame


def test_the_sample_is_seeded_in_day_order_and_crosses_chunks():
    frame = _day()
    idx, rows = sample_rows(FrameDay(frame, chunk_rows=64), 300, 0, ["row", "user_id", "price"])
    assert len(idx) == 300 and np.all(np.diff(idx) > 0)
    assert list(rows.columns) == ["row", "user_id", "price"]
    pd.testing.assert_frame_equal(rows, frame.iloc[idx][["row", "user_id", "price"]].reset_index(drop=True))
    again, _ = sample_rows(FrameDay(frame, chunk_rows=1000), 300, 0, None)  # other chunks, same rows
    other, _ = sample_rows(FrameDay(frame, chunk_rows=64), 300, 1, None)
    assert np.array_equal(idx, again) and not np.array_equal(idx, other)
    every, all_rows = sample_rows(FrameDay(frame.head(50)), 300, 0, None)
    assert np.array_equal(every, np.arange(50)) and len(all_rows) == 50


def test_the_request_body_is_a_dataframe_split_with_nulls():
    rows = _day().iloc[2:6][["user_id", "price"]]
    body = json.loads(request_body(rows))
    split = body["dataframe_split"]
    assert split["columns"] == ["user_id", "price"] and len(split["data"]) == 4
    assert split["data"][1][1] is None and split["data"][2][0] is None  # NaN and None -> null
    assert split["data"][0][1] == rows["price"].iloc[0]  # doubles survive the round trip


def _gate():
    rng = np.random.default_rng(1)
    p = rng.beta(2, 12, size=3000)
    y = (rng.random(p.size) < p).astype(float)
    return evaluate_gate(y, p, None, GatePolicy())


def _result(**kw) -> DryRunResult:
    base = dict(uri="models:/m/3", rows=2000, requests=20, request_rows=100, p50_ms=4.21, p99_ms=6.789,
                max_abs_diff=0.0, seconds=5.5, p99_budget_ms=250.0)
    return DryRunResult(**{**base, **kw})


def test_a_pending_dry_run_fails_the_gate_until_its_result_replaces_it():
    gate = _gate()
    assert gate.passed
    gate.add_check(pending_check())
    assert not gate.passed and gate.verdict == "fail (served_dry_run)" and "pending" in gate.explanation
    gate.record_dry_run(_result())
    assert gate.passed and [c.name for c in gate.checks].count("served_dry_run") == 1
    tags = gate.tags()
    assert (tags["dryrun.result"], tags["dryrun.p50_ms"], tags["dryrun.p99_ms"]) == ("passed", "4.21", "6.79")
    assert "p50 4.2 ms, p99 6.8 ms (budget 250)" in tags["gate.checks"]


def test_a_failed_dry_run_names_every_reason_and_keeps_what_it_measured():
    slow = _result(p99_ms=300.0, max_abs_diff=2e-3,
                   failures=("predictions differ: max |served - in-memory| 2.00e-03 > 1e-06",
                             "p99 over budget: 300.00 ms > 250 ms"))
    assert slow.result == ("failed: predictions differ: max |served - in-memory| 2.00e-03 > 1e-06; "
                           "p99 over budget: 300.00 ms > 250 ms")
    assert slow.tags()["dryrun.p99_ms"] == "300.00" and not slow.check().passed
    dead = _result(p50_ms=None, p99_ms=None, max_abs_diff=None, failures=("server did not start: exited with status 1",))
    assert dead.tags() == {"dryrun.result": "failed: server did not start: exited with status 1"}
    assert dead.metrics() == {"dryrun_seconds": 5.5}
    assert set(_result().metrics()) == {"dryrun_seconds", "dryrun_p50_ms", "dryrun_p99_ms", "dryrun_max_abs_diff"}


def test_the_inherited_socket_keeps_its_tcp_proto():
    """The server rebuilds the night's listening socket from its fd: it must still say
    IPPROTO_TCP, or asyncio leaves Nagle on and every answer waits ~40 ms (tasks/serve.py)."""
    import socket

    from tasks.serve import bind

    listening = bind("127.0.0.1", 0)
    inherited = socket.socket(fileno=listening.detach())
    try:
        assert inherited.proto == socket.IPPROTO_TCP and inherited.type == socket.SOCK_STREAM
    finally:
        inherited.close()
