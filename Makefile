# Two commands on a fresh machine: `make demo` (install, then train + evaluate digits) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned here and in pyproject: a bare `torch` requirement pulls gigabytes of CUDA wheels.
TORCH  := torch==2.13.0
WORK_DIR ?= work_dirs/digits_cnn
NPROC  ?= 2

.PHONY: install system-deps demo test test-fast lint bench clean

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

test: install system-deps
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m 'not e2e'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/trainer_overhead.py

clean:
	rm -rf $(VENV) work_dirs .pytest_cache .ruff_cache
