# The two set-up commands of README.md. Both install into .venv first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: install demo test test-quick lint clean

install: $(BIN)/raydx

$(BIN)/raydx: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## The main job on the embedded synthetic data (a few minutes on 2 cores).
demo: install
	$(BIN)/raydx tune --space search_spaces/cnn.yaml --data synthetic --trials 4 --folds 3 --epochs 10

## Every test except those that need a GPU (what CI runs).
test: install
	$(BIN)/ruff check raydx tests $(wildcard bench)
	$(BIN)/mypy raydx
	$(BIN)/pytest -m "not gpu"

## Quick subset for local iteration.
test-quick: install
	$(BIN)/pytest -m "not slow and not gpu" -x -q

lint: install
	$(BIN)/ruff check raydx tests $(wildcard bench)
	$(BIN)/ruff format --check raydx tests $(wildcard bench)
	$(BIN)/mypy raydx

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
