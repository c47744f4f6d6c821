# The two commands the README names: `make pipeline` and `make test`. Both create .venv first.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
export PATH := $(BIN):$(PATH)

.PHONY: setup pipeline test test-slow test-all lint

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

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
