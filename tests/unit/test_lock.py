"""The per-dataset night lock: a second night waits and then names the holder; a holder killed
with SIGKILL releases it at once and leaves the record the next night reconciles from; a clean
release leaves nothing behind. The holder is a real second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.lock import LockTimeout, NightLock

REPO = Path(__file__).resolve().parents[2]


def _holder(home: Path) -> subprocess.Popen:
    script = ("import sys, time; from pathlib import Path; from tasks.lock import NightLock\n"
              f"lock = NightLock(Path({str(home)!r}), 'ds').acquire(0, run_date='2026-01-10', flow_run_id='fr-1',"
              " parent_run_id='run-1')\nprint('held', flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_night_waits_then_names_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        notes: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            NightLock(tmp_path, "ds").acquire(1.5, log=notes.append, poll_s=0.1)
        assert time.monotonic() - t0 >= 1.5
        message = str(info.value)
        assert f"pid {proc.pid}" in message and "night 2026-01-10" in message and "fr-1" in message
        assert notes and "waiting for the ds lock" in notes[0]
        # Another dataset is not blocked.
        NightLock(tmp_path, "other").acquire(0).release()
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_releases_the_lock_and_leaves_its_record(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = NightLock(tmp_path, "ds").acquire(0)
    try:
        assert lock.stale is not None
        assert (lock.stale.pid, lock.stale.parent_run_id, lock.stale.flow_run_id) == (proc.pid, "run-1", "fr-1")
        assert lock.holder.pid == os.getpid()
    finally:
        lock.release()
    again = NightLock(tmp_path, "ds").acquire(0)  # a clean release leaves no record
    assert again.stale is None
    again.release()
