# Two entry points (see README): `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench dagster-ui serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	@touch $@

## Install everything and run the whole pipeline on the bundled sample workbook.
run: $(VENV)/.installed
	$(BIN)/segmentation run

## Install what the tests need and run the test suite (this is what CI runs).
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	sh scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_pipeline.py --rows 100000

## The Dagster UI on http://127.0.0.1:3000 (webserver, daemon, the code location of pyproject.toml's [tool.dg]),
## showing the runs of `make run` too: both use dagster.yaml's instance (.dagster_home/) unless DAGSTER_HOME is set.
dagster-ui: $(VENV)/.installed
	$(BIN)/dg dev

clean:
	rm -rf $(VENV) data/warehouse.duckdb data/reports
