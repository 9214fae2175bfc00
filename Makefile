# MedMeta Workbench — two commands: `make run` and `make test` (both set up a .venv first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medmeta-installed
ARGS   ?=

.PHONY: setup run smoke test lint typecheck pytest lab bench browser-deps clean

# Idempotent set-up: re-installs only when pyproject.toml changes. torch is pinned in pyproject
# (torch==2.13.0, the CPU wheel on CPU-only machines); see README "Using a GPU".
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## the main job: all notebooks headless on the offline synthetic default → runs/<timestamp>/
run: setup
	$(BIN)/medmeta run $(ARGS)

## the whole chain with tiny parameters (a few minutes)
smoke: setup
	$(BIN)/medmeta run --smoke $(ARGS)

## every check: lint (incl. notebooks), format, import contracts, types, tests
test: setup browser-deps lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest $(ARGS)

lab: setup
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: setup
	$(BIN)/python bench/run_all.py

# Debian's chromium for the real-browser JupyterLab test; skipped (the test then skips with a
# reason) where it cannot be installed, e.g. without root or without a package registry.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "browser-deps: could not install chromium; the browser test will skip"; \
	  else echo "browser-deps: chromium missing and not installable here; the browser test will skip"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
