# recloop: the nightly ranking-model loop.
#   make run    generate the embedded synthetic data and run two nights of the loop
#   make test   install everything into .venv and run the test suite
#   make bench  run the loop benchmark (JSON + markdown in benchmarks/results/)
#   make ui     MLflow UI on the local tracking store
#   make up     served stack on 127.0.0.1: Prefect server + MLflow server + process worker + deployment
#   make down   stop exactly what `make up` started (pid files in $(RECLOOP_HOME)/stack)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORKDIR ?= .recloop
export RECLOOP_HOME ?= $(abspath $(WORKDIR))
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(abspath $(WORKDIR))/prefect
export PYTHONWARNINGS ?= ignore::UserWarning:merlin.dtypes.mappings.tf,ignore::UserWarning:merlin.dtypes.mappings.triton
PYTEST_ARGS ?=

.PHONY: install dirs run test test-fast bench ui status clean up down stack-status

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
	@touch $(STAMP)

run: install
	$(BIN)/recloop demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.loop_benchmark

status: install
	$(BIN)/recloop status

ui: install
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
