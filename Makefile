# recloop: the nightly ranking-model loop.
#   make run    generate the embedded synthetic data and run two nights of the loop
#   make test   install everything into .venv and run the test suite
#   make bench  run the loop benchmark (JSON + markdown in benchmarks/results/)
#   make ui     MLflow UI on the local tracking store
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

.PHONY: install dirs run test test-fast bench ui status clean

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

clean:
	rm -rf $(WORKDIR)
