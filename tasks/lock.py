"""One night per dataset at a time: an exclusive lock file under RECLOOP_HOME.

`flock` on `<home>/locks/<dataset>.lock`: the kernel releases it when the holder's process
dies, however it dies, so a crashed night never blocks the next one. The file also records
who holds it (host, pid, flow run, MLflow parent run); a clean release empties it. A night
that takes the lock and finds a record left behind knows its predecessor died mid-night, and
which runs to reconcile. On the served stack the deployment's `concurrency_limit: 1` serializes
nights across workers as well; this lock covers every process sharing a RECLOOP_HOME (the CLI,
the demo, a worker).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.processes import this_process, utc_now


class LockTimeout(RuntimeError):
    """Another night of the same dataset held the lock for longer than we may wait."""


@dataclass(frozen=True)
class Holder:
    dataset: str
    host: str
    pid: int
    pid_start: str
    since: str
    run_date: str = ""
    flow_run_id: str = ""
    parent_run_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"night {self.run_date} " if self.run_date else ""
        run = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"{what}(pid {self.pid} on {self.host} since {self.since}{run})"


class NightLock:
    """`with NightLock(home, dataset).hold(...) as lock:`; `lock.stale` is the record of a
    holder that died without releasing (None after a clean release)."""

    def __init__(self, home: Path, dataset: str):
        self.path = Path(home) / "locks" / f"{dataset}.lock"
        self.dataset = dataset
        self._fd: int | None = None
        self.holder: Holder | None = None
        self.stale: Holder | None = None

    def acquire(self, wait_s: float, log: Callable[[str], None] = print, poll_s: float = 1.0,
                **info: str) -> NightLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        next_note = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                other = _read(fd)
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"another night of {self.dataset} holds {self.path}: "
                                      f"{other.describe() if other else 'holder unknown'}; waited {wait_s:.0f} s "
                                      "(RECLOOP_LOCK_WAIT_S)") from None
                if time.monotonic() >= next_note:
                    log(f"waiting for the {self.dataset} lock, held by {other.describe() if other else 'another night'}")
                    next_note = time.monotonic() + 60
                time.sleep(poll_s)
        self._fd = fd
        self.stale = _read(fd)
        self.update(**info)
        return self

    def update(self, **info: str) -> None:
        """Record (more of) who holds the lock, e.g. the MLflow parent run once it exists."""
        assert self._fd is not None, "lock not held"
        base = self.holder or Holder(self.dataset, *this_process(), utc_now())
        known = {k: v for k, v in info.items() if k in Holder.__dataclass_fields__}
        self.holder = Holder(**{**asdict(base), **known})
        payload = json.dumps(asdict(self.holder)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, payload, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a clean end leaves no record behind
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> NightLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> Holder | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    try:
        return Holder(**json.loads(os.pread(fd, size, 0)))
    except (ValueError, TypeError):
        return None
