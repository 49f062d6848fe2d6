# One entry point for set-up, tests, the demo run and benchmarks. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hes-installed

.PHONY: install test lint run bench bench-cluster clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tools.licence_check

run: install
	$(BIN)/hes demo

bench: install
	$(BIN)/hes bench --out bench/results.json

# Issue 15's scale-out bench: collector nodes in network namespaces (needs root).
bench-cluster: install
	$(BIN)/python -m bench.cluster_bench --out bench/cluster_bench.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis hes.db hes.db-wal hes.db-shm
