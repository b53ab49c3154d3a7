# Every target builds its own virtualenv from pyproject.toml; nothing relies on what is installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Oracle Linux 9's python3 is 3.9: when such an interpreter exists here (pyenv or PATH),
# `make test` also runs the fast tests on it. The slow end-to-end tests run once.
PY39 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9*/bin/python3.9) $(shell command -v python3.9 2>/dev/null))
VENV39 ?= .venv39

.PHONY: all venv test test39 lint demo soak bench clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(VENV39)/.installed: pyproject.toml
	$(PY39) -m venv $(VENV39)
	$(VENV39)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check atomsync tests
	$(BIN)/ruff format --check atomsync tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -m "not soak"
ifneq ($(PY39),)
	$(MAKE) --no-print-directory test39
else
	@echo "no Python 3.9 interpreter found: the 3.9 run is skipped"
endif

test39: $(VENV39)/.installed
	$(VENV39)/bin/python -m pytest -q -m "not slow and not soak"

demo: $(STAMP)
	$(BIN)/atomsync demo

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak

# Performance figures against baselines measured in the same run (docs/performance.md);
# a few minutes, never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) $(VENV39) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
