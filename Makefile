# The two quick-start commands: `make run` and `make test`. Each one creates or
# refreshes the virtual environment itself, so either can be typed first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc 2>/dev/null || echo 2)
STAMP := $(VENV)/.installed
# Rules call the `orthskip` CLI: put the environment first on PATH for every target.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test venv lint report dryrun clean-venv

# torch==2.13.0 first: with it present the CPU build satisfies every later pin,
# and no CUDA wheels are pulled in.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/lock.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
	@echo "Figures: results/figures  Tables: results/tables  Report: results/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check orthskip tests bench
	$(BIN)/ruff format --check orthskip tests bench
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n

clean-venv:
	rm -rf $(VENV)
