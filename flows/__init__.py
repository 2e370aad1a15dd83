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
# CPU-bound process per core ran at 4% of its quiet speed. The trainer's ThreadTuner now trains
# with one thread when the cores are busy (no waits at all), so the spin count matters only
# while two threads pay off, on free cores: there a spin of 3,000 let the partner thread fall
# asleep between a step's kernels and paid a wake-up for each (15% of the quiet samples/s),
# 30,000 bridges those gaps and still sleeps long before libgomp's default would
# (`make bench-train`, spin rows: busy samples/s the same at both). libgomp reads this once,
# when torch is first imported, so it is set here, before anything in this package imports
# torch; a process that imports torch first needs it in its environment (the Makefile and the
# Dockerfile export it).
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

# MKL (torch's float32 matrix products on the CPU) may split the sum of a product with a long
# inner dimension across threads, which changes its last bits with the thread count: on an
# AVX10.1/AMX Xeon it did so for the weight gradient of every model's one-logit head, so
# training with 1 and 2 threads (what the trainer's ThreadTuner switches between) ended in
# different weights. Strict conditional numerical reproducibility makes every GEMM sum in the
# same order at any thread count (no measurable cost on `wide_deep`'s step). MKL reads this at
# its first call, so, like the spin count, it is set here and by the Makefile and the Dockerfile.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
