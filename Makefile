# Needs nothing but Python 3.11 and pip. `make quick` sets up and runs the laptop-scale job;
# `make test` runs the test suite (CI runs exactly this, through .ci/run).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv quick smoke test test-slow test-slurm bench

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=23"
	# the pinned torch first, so nothing can pull an unpinned (CUDA) build
	$(BIN)/pip install "$$(grep '^torch==' requirements.txt)"
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Laptop scale: the whole pipeline on config/quick.yaml (every algorithm on PointNav and
# HalfCheetahVel, 3 seeds, TrMRL ablations on PointNav) on every core: tables in results/tables/,
# figures in results/figures/. Its measured cost is in the README.
# Interrupted, it resumes where it stopped (each run from its checkpoint).
quick: venv
	$(BIN)/snakemake all --configfile config/quick.yaml --rerun-incomplete

# The whole Snakemake pipeline at smoke scale (config/smoke.yaml, a few minutes): every rule,
# tables in results/tables/, figures in results/figures/.
smoke: venv
	$(BIN)/snakemake --cores 2 all --configfile config/smoke.yaml

test: venv
	$(BIN)/python -m pytest -q -n auto --dist worksteal

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# The smoke pipeline through profiles/slurm on a private one-node SLURM cluster that the test
# starts and stops (tests/slurm/local-cluster; root, apt-get the first time; ~20 min on 2 busy cores).
test-slurm: venv
	$(BIN)/python -m pytest -q -m slurm -rP

bench: venv
	$(BIN)/metarl bench
