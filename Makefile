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

.PHONY: run check test venv lint report dryrun clean-venv paper tex gpu-check

# torch==2.13.0 first: with it present the CPU build satisfies every later pin,
# and no CUDA wheels are pulled in.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/lock.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

# A run killed with kill -9 (or a lost node) leaves Snakemake's lock in .snakemake/locks
# and the next run stops with "Directory cannot be locked": print the fix, keep the failure.
define LOCK_HINT
if [ -n "$$(ls -A $(SMK_DIR).snakemake/locks 2>/dev/null)" ]; then \
  echo "error: the working directory is still locked by an earlier Snakemake run that was" \
    "killed. If no other snakemake runs here, remove the stale lock and rerun:" >&2; \
  echo "    $(BIN)/snakemake --unlock $(SMK_ARGS)" >&2; \
  echo "    make run$(if $(SMK_ARGS), SMK_ARGS='$(SMK_ARGS)')" >&2; \
fi
endef
# Extra snakemake arguments (e.g. --configfile FILE); SMK_DIR: where .snakemake lives
# when SMK_ARGS has --directory DIR (then SMK_DIR=DIR/).
SMK_ARGS ?=
SMK_DIR ?=

# The paper (results/paper/paper.pdf) is part of `make run` where latexmk and pdflatex are
# on PATH (the Snakefile's rule all asks for it only then); `make paper` installs TeX first.
TEX_PACKAGES := texlive-latex-recommended texlive-fonts-recommended latexmk
HAVE_TEX = command -v latexmk >/dev/null 2>&1 && command -v pdflatex >/dev/null 2>&1

run: $(STAMP)
	@$(BIN)/snakemake --cores $(CORES) $(SMK_ARGS) || { rc=$$?; $(LOCK_HINT); exit $$rc; }
	$(BIN)/snakemake --cores $(CORES) $(SMK_ARGS) --report results/report.html
	@echo "Figures: results/figures  Tables: results/tables  Report: results/report.html"
	@if $(HAVE_TEX); then echo "Paper: results/paper/paper.pdf"; else \
	  echo "Paper: skipped, no TeX engine (latexmk and pdflatex) on PATH; 'make paper'" \
	    "installs one and builds it"; fi

# Install TeX with apt-get where this is possible (root, apt-get present); else say what to
# install. Does nothing when latexmk and pdflatex are there.
tex:
	@if $(HAVE_TEX); then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing TeX: apt-get install $(TEX_PACKAGES)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends $(TEX_PACKAGES); \
	else \
	  echo "error: the paper needs latexmk and pdflatex, which are not on PATH. Install" \
	    "them, then rerun 'make paper'. On Debian/Ubuntu:" >&2; \
	  echo "    sudo apt-get install --no-install-recommends $(TEX_PACKAGES)" >&2; \
	  echo "Elsewhere: TeX Live or MiKTeX with latexmk (macOS: MacTeX)." >&2; \
	  exit 1; \
	fi

paper: $(STAMP) tex
	@$(BIN)/snakemake --cores $(CORES) $(SMK_ARGS) results/paper/paper.pdf \
	  || { rc=$$?; $(LOCK_HINT); exit $$rc; }
	@echo "Paper: results/paper/paper.pdf"

# Check a config file without Snakemake; a YAML syntax error is reported with its line and
# column (Snakemake itself says only "Config file is not valid JSON or YAML").
check: $(STAMP)
	$(BIN)/python -m orthskip check $(or $(CONFIG),config/config.yaml)

# The suite on TEST_WORKERS processes (pytest-xdist, one per core by default).
# --dist loadscope sends each test module whole to one worker, so a module's shared
# fixtures (a trained grid, a published DVC repository, the SLURM test cluster) are built
# once. (--dist loadgroup and xdist_group marks do not group under pytest 9.2 with
# pytest-xdist 3.8.0: the group rides on a node-id rewrite that pytest no longer reads.)
TEST_WORKERS ?= $(CORES)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

# On a CUDA machine: the tests marked cuda, then ResNet-20 and the rate pack timed on the GPU
# (bench/gpu_check.py, under 8 minutes); writes results/bench/gpu_check.json and prints a
# table. GPU_CHECK_ARGS='--device cpu --quick' smoke-tests it without a GPU.
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check orthskip tests bench workflow
	$(BIN)/ruff format --check orthskip tests bench workflow
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n

clean-venv:
	rm -rf $(VENV)

# ---- Publish and pull results with DVC (docs/dvc.md) ------------------------------------
# publish: record every output in dvc.lock (`dvc repro` runs Snakemake, which does nothing
#          when the grid is complete) and upload data, checkpoints and results to the remote.
# pull:    download them; Snakemake then has nothing to run (see docs/dvc.md, timestamps).
# figures: redraw every figure and table and the report from results/metrics only. The
#          job records of redrawn outputs keep their published bytes where only the run
#          times changed (`dvc keep-records`), so on unchanged metrics `dvc status` stays
#          clean; the report is a per-run rendering that DVC does not track.
# Nothing here passes --force: DVC refuses to overwrite local results that were not pushed.
.PHONY: publish pull figures dvc-remote-check

# Checks around DVC (orthskip/dvc_check.py): `dvc check push|pull` fails with the remote's
# name and URL when no default remote is set or it cannot be read (pull: or holds nothing);
# `dvc diagnose` (after a failed pull) names every file missing from or corrupt on the remote;
# `dvc keep-records -- CMD` runs CMD and gives back the bytes of the job records it re-timed.
DVC_CHECK := $(BIN)/python -m orthskip dvc

dvc-remote-check: $(STAMP)
	@$(DVC_CHECK) check pull

publish: $(STAMP)
	@$(DVC_CHECK) check push
	$(BIN)/dvc repro
	$(BIN)/dvc push
	@echo "Published. Commit the pointers so that others can pull them: git commit dvc.lock"

pull: dvc-remote-check
	@$(BIN)/dvc pull || { echo "error: dvc pull failed. Files it could not restore (their" \
	  "objects are missing from the remote or do not match the hash in dvc.lock):" >&2; \
	  $(DVC_CHECK) diagnose; \
	  echo "Local results were not touched. Re-publish those files (dvc push where they" \
	  "exist) or regenerate them with snakemake." >&2; exit 1; }
	$(BIN)/snakemake --cores 1 --dry-run --quiet all

figures: $(STAMP)
	$(DVC_CHECK) keep-records -- $(BIN)/snakemake --cores $(CORES) \
	  --forcerun figure figure_setting table findings paper_numbers paper \
	  --allowed-rules figure figure_setting table findings paper_numbers paper
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
