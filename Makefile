# The two commands the README names: `make pipeline` and `make test`. Both create .venv first.
# With npm, setup also builds the offline plots page (`make plots`); without it, DVC's pages load Vega from a CDN.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: setup plots pipeline test test-slow test-all lint

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed
	@if ! command -v npm >/dev/null; then echo "setup: no npm: dvc plots pages will load Vega from a CDN"; \
	elif ! $(MAKE) --no-print-directory --silent plots; then echo "setup: no offline plots page: dvc plots pages will load Vega from a CDN"; fi

# The page and its setting in .dvc/config.local (see tools/offline_plots.py); rebuilt when its inputs change.
PLOTS_PAGE := tools/plots/offline-plots.html

plots: $(PLOTS_PAGE)

$(PLOTS_PAGE): tools/offline_plots.py tools/plots/package-lock.json | $(VENV)/.installed
	python -m tools.offline_plots --output $@

pipeline: setup
	dvc repro

test: setup
	python -m pytest

test-slow: setup
	python -m pytest -m slow

test-all: setup
	python -m pytest -m ""

lint: setup
	ruff check . && ruff format --check .
