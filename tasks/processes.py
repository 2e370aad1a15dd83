"""Which process is this, and is that one still alive: pid plus start time, since a pid alone
is recycled; and children that die with their parent. Linux /proc and prctl; no heavy imports
(the night lock reads it before anything else)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """Start time of a live process in clock ticks since boot (/proc/<pid>/stat field 22);
    None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces
    return None if fields[0] == "Z" else fields[19]


def this_process() -> tuple[str, int, str]:
    """(host, pid, start time) of the calling process."""
    return socket.gethostname(), os.getpid(), process_start_time(os.getpid()) or ""


def is_alive(host: str, pid: int, start: str) -> bool | None:
    """True/False for a process of this host; None when it ran on another host (unknowable here)."""
    if host != socket.gethostname():
        return None
    return process_start_time(pid) == start


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int]:
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


def die_with(parent: int) -> None:
    """Called in a child process: the kernel sends it SIGTERM the moment `parent` (the pid that
    started it) dies, however it dies (also SIGKILL, when no `finally` runs); a parent already
    gone ends it at once. The signal follows the thread that started the child: start it from a
    thread that outlives it."""
    _prctl()(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def die_with_parent(parent: int) -> Callable[[], None]:
    """`die_with` as a `preexec_fn` for `subprocess.Popen`, for children that are not our code.
    `parent` is the caller's pid (`os.getpid()`). prctl is looked up here, in the parent: after a
    fork in a threaded process the child must not load libraries (another thread may have held
    the loader's lock)."""
    prctl = _prctl()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def stop_session(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a child started with `start_new_session=True` and everything it started: SIGTERM
    its process group, SIGKILL it if it is not gone within `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
