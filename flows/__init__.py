"""The Prefect flows and the `recloop` command line."""

import os

# With PREFECT_API_URL unset, running a flow (`recloop run`/`demo`, the benchmarks) starts
# Prefect's ephemeral server, which migrates a fresh SQLite database on its first start: 26 s
# on a 2-core machine, past Prefect's 20 s default, and the night dies before it begins. Set
# here, before any module of this package imports Prefect (it reads its settings on import).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# torch's OpenMP runtime (libgomp) makes a thread that waits at the end of a parallel region
# spin for 300,000 iterations before it sleeps. On cores shared with other busy processes (a
# Dask worker, a scoring server, another night) the thread it waits for is often descheduled,
# so the spinning burns the time slice that thread needed: training on 2 cores with one
# CPU-bound process per core ran at 4% of its quiet speed. A short spin keeps 40% or more
# (`make bench-deepctr`, busy rows). libgomp reads this once, when torch is first imported,
# so it is set here, before anything in this package imports torch; a process that imports
# torch first needs it in its environment (the Makefile and the Dockerfile export it).
os.environ.setdefault("GOMP_SPINCOUNT", "3000")
