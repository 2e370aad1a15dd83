"""Peak resident memory of a process and all its descendants (Dask workers, a Prefect server
a night starts), sampled in a background thread: psutil, RSS summed over the tree."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


def tree_rss(*pids: int) -> int:
    """Bytes resident in the processes `pids` and all their descendants now (each process
    counted once; 0 for the ones that are gone)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    total = 0
    for proc in procs.values():
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # exited between the listing and the reading
    return total


@dataclass
class TreeSampler:
    """`with TreeSampler([pid, ...]) as s: ...` then s.peak_bytes (max of the RSS summed over
    the trees of `pids`) and s.samples. Samples every `interval` seconds (0.2-0.5 s catches a worker's peak well enough
    for a night that runs minutes; a shorter spike can be missed)."""

    pids: list[int]
    interval: float = 0.25
    peak_bytes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        rss = tree_rss(*self.pids)
        self.peak_bytes = max(self.peak_bytes, rss)
        self.samples += 1
        return rss

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def wait_sampled(proc, also: list[int] = (), interval: float = 0.25) -> tuple[int, float, float]:
    """Wait for a started subprocess.Popen while sampling its tree (and the trees of `also`,
    e.g. external Dask workers): (exit status, wall seconds since this call, peak MiB)."""
    t0 = time.perf_counter()
    with TreeSampler([proc.pid, *also], interval) as sampler:
        code = proc.wait()
    return code, time.perf_counter() - t0, sampler.peak_mb
