# Every target builds its own virtualenv from pyproject.toml; nothing relies on what is installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all venv test lint unit demo bench soak clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check atomsync tests
	$(BIN)/ruff format --check atomsync tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -m "not soak"

demo: $(STAMP)
	$(BIN)/atomsync demo

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
