"""Named points where a night can be killed on purpose, to rehearse crashes.

`RECLOOP_FAULT=<point>` makes the process SIGKILL itself when it reaches that point: no
`finally`, no atexit, no Prefect hook runs, exactly like the OOM killer or a lost machine.
The crash tests use it to check that every point leaves a registry and a tracking store that
`recloop doctor` (or the next night) can put right; an operator can use it the same way.
"""

from __future__ import annotations

import os
import signal

ENV = "RECLOOP_FAULT"

# Where a kill is most interesting, in the order a night reaches them.
POINTS = (
    "after_first_epoch",  # training: parent and child runs RUNNING, nothing registered
    "after_version_created",  # registered with its gate tags, no alias yet
    "during_dry_run",  # the registered version's scoring server is up, the dry run unfinished
    "before_champion_alias",  # promotion intent written, `champion` not moved yet
    "after_champion_alias",  # `champion` moved, the promotion's tags not written yet
)


RANK_POINT = "rank{rank}_after_first_epoch"  # a training process (DDP rank; 0 with one process)


def rank_epoch(rank: int, epoch: int) -> None:
    """The trainer's per-rank hook (`fit(on_rank_epoch=...)`, run inside every training
    process): RECLOOP_FAULT=rank<R>_after_first_epoch SIGKILLs rank R after its first epoch,
    a worker lost mid-training while the night's own process lives on."""
    if epoch == 1 and os.environ.get(ENV) == RANK_POINT.format(rank=rank):
        os.kill(os.getpid(), signal.SIGKILL)


def point(name: str) -> None:
    """SIGKILL this process when RECLOOP_FAULT names this point (read at every call)."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r} (known: {', '.join(POINTS)})")
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
