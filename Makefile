# Tidings — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: what running needs (requirements-runtime.lock) and what testing needs on
# top of it (requirements.lock, which pins every runtime package at the same version).
# `make run` installs only the first; `make test` the second, which covers the first.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check lock install clean bench fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml requirements-runtime.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-runtime.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(DEV): pyproject.toml requirements.lock plugins/tidings-webpush/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps -e plugins/tidings-webpush
	touch $@ $(RUNTIME)

## Install everything: running, testing, the Web Push plugin, the benchmarks' tools.
install: $(DEV)

## Run Tidings on its embedded default (SQLite file, no servers) with the example catalog.
run: $(RUNTIME)
	$(BIN)/tidings serve

## Install what is needed and run the whole test suite, then lint, type-check and check
## the layering (the import contracts in pyproject.toml). The tests mostly wait on
## servers, so they run on several workers (a database each test).
TEST_WORKERS ?= 4
test: $(DEV)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

## Measure the standard workloads (W1-W6, single event) and this machine's ceilings in one
## run and print one table (PostgreSQL, fresh database; about ten minutes on two cores).
## BENCH_ARGS: --db sqlite, --only W1,W6, --code <commit>, --full, --markdown PATH, --help.
BENCH_ARGS ?=
bench: $(DEV)
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

## Fuzz every API operation with schemathesis, with many more examples than CI runs.
FUZZ_EXAMPLES ?= 500
fuzz: $(DEV)
	TIDINGS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy src

## Re-resolve requirements.lock from pyproject.toml, then requirements-runtime.lock with
## the same pins (needs network access to PyPI).
lock:
	$(BIN)/python -m pip install --quiet uv
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip compile pyproject.toml --python-version 3.11 -c requirements.lock -o requirements-runtime.lock

clean:
	rm -rf $(VENV) .tidings
