# Each target bootstraps .venv itself, so a fresh clone needs only python3 (≥ 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make serve PORT=8123 HOST=0.0.0.0`
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.server-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server,dev]'
	touch $@ $(VENV)/.server-installed

serve: $(VENV)/.server-installed
	$(BIN)/lrkeeper serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.engine
	$(BIN)/python -m bench.client
	$(BIN)/python -m bench.service
	$(BIN)/python -m bench.access
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.history

# The client as a wheel (dist/lrkeeper-*.whl): `pip install dist/lrkeeper-*.whl` brings httpx and
# tenacity only. tests/client/test_packaging.py builds it with the same command.
dist: | $(BIN)/python
	$(BIN)/pip wheel --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dist build
