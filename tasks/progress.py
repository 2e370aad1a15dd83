"""Progress of a long stage, where people look: a bar with rows/s and ETA in a terminal (the
CLI), a log line every tenth of the way elsewhere (a worker's log, CI), and a Prefect progress
artifact the UI shows on the flow run, updated as it goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StageProgress:
    """`update(done, total)` as a stage advances; `close()` at its end. Updates are cheap:
    the bar redraws itself at most a few times a second, the artifact at most every `artifact_s`."""

    def __init__(self, stage: str, unit: str = "rows", log: Callable[[str], None] = print,
                 artifact: bool = True, artifact_s: float = 5.0):
        self.stage, self.unit, self.log = stage, unit, log
        self._t0 = time.perf_counter()
        self._next_tenth = 1
        self._artifact_id = None
        self._artifact_at = 0.0
        self._artifact_s = artifact_s
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=stage, unit=unit, unit_scale=True, dynamic_ncols=True, leave=True, file=sys.stderr)
        if artifact:
            self._artifact_id = _create_artifact(stage)

    def update(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        elif total and done * 10 >= self._next_tenth * total:
            self._next_tenth = done * 10 // total + 1
            rate = done / max(elapsed, 1e-9)
            self.log(f"{self.stage}: {done:,}/{total:,} {self.unit} ({100 * done / total:.0f}%), "
                     f"{rate:,.0f} {self.unit}/s, ETA {_eta((total - done) / max(rate, 1e-9))}")
        if self._artifact_id is not None and total and (elapsed - self._artifact_at >= self._artifact_s or done >= total):
            self._artifact_at = elapsed
            _update_artifact(self._artifact_id, 100.0 * done / total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _create_artifact(stage: str):
    """A progress artifact on the current flow run; None outside one (a plain function call)."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    from prefect.artifacts import create_progress_artifact

    key = "".join(c if c.isalnum() else "-" for c in stage.lower()).strip("-")
    try:
        return create_progress_artifact(progress=0.0, key=f"progress-{key}", description=f"{stage}: progress")
    except Exception:  # progress is a courtesy: it never fails a night
        return None


def _update_artifact(artifact_id, percent: float) -> None:
    from prefect.artifacts import update_progress_artifact

    try:
        update_progress_artifact(artifact_id, min(percent, 100.0))
    except Exception:
        pass
