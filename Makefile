# The two commands the README names: `make pipeline` and `make test`. Both create .venv first.
# setup installs the locked dependencies and the project itself (editable) into .venv, so every process started
# from that venv imports `stages` and `fmnist` from any directory. With npm it also builds the offline plots page.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: setup plots pipeline test test-slow test-all lint lock

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed
	@if ! command -v npm >/dev/null; then echo "setup: no npm: dvc plots pages will load Vega from a CDN"; \
	elif ! $(MAKE) --no-print-directory --silent plots; then echo "setup: no offline plots page: dvc plots pages will load Vega from a CDN"; fi

# The page and its setting in .dvc/config.local (see fmnist/offline_plots.py); rebuilt when its inputs change.
PLOTS_PAGE := fmnist/plots_page/offline-plots.html

plots: $(PLOTS_PAGE)

$(PLOTS_PAGE): fmnist/offline_plots.py fmnist/plots_page/package-lock.json | $(VENV)/.installed
	python -m fmnist.offline_plots --output $@

pipeline: setup
	dvc repro

# Three pytest workers on the developers' two cores: the tests wait on servers, sockets and polls often enough that a
# third keeps both cores busy. Each module is one xdist group (tests/conftest.py), so it stays on one worker, as its
# module fixtures expect.
PYTEST := python -m pytest -n 3 --dist loadgroup

test: setup
	$(PYTEST)

test-slow: setup
	$(PYTEST) -m slow

test-all: setup
	$(PYTEST) -m ""

lint: setup
	ruff check . && ruff format --check .

# Re-resolve requirements.lock from pyproject.toml, keeping every pin that still fits (pip-tools' pip-compile).
lock: setup
	python -m pip install --quiet pip-tools
	python -m piptools compile --quiet --all-extras --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file=requirements.lock pyproject.toml
