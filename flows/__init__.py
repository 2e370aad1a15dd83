"""The Prefect flows and the `recloop` command line."""

import os

# With PREFECT_API_URL unset, running a flow (`recloop run`/`demo`, the benchmarks) starts
# Prefect's ephemeral server, which migrates a fresh SQLite database on its first start: 26 s
# on a 2-core machine, past Prefect's 20 s default, and the night dies before it begins. Set
# here, before any module of this package imports Prefect (it reads its settings on import).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
