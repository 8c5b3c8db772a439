# Distributed TensorFlow on Kubernetes: every step of the workshop is a target.
# `make help` lists them. Override any variable on the command line:
#   make build push deploy IMAGE=docker.io/you/mnist TAG=v1 NAMESPACE=alice

IMAGE     ?= ghcr.io/example/mnist-trainer
TAG       ?= 0.1.0
NAMESPACE ?= default

PYTHON_BIN ?= python3
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
RUNS       ?= runs

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- local: setup and tests

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON_BIN) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the pinned requirements (only when they changed)

.PHONY: test
test: venv ## Run the whole test suite (builds .venv first if needed)
	$(PYTHON) -m pytest

# ---------------------------------------------------------------- local: train

.PHONY: train
train: venv ## Train on the shipped mini data into runs/local (model_dir and export)
	$(PYTHON) src/main.py --model_dir $(RUNS)/local/model --export_dir $(RUNS)/local/export

.PHONY: bench-train
bench-train: venv ## Images/s of our trainer vs. plain Keras fit, and test accuracy
	$(PYTHON) src/bench_train.py

# ---------------------------------------------------------------- local: serve and predict

# ---------------------------------------------------------------- local: distributed (TFJob) runs

# ---------------------------------------------------------------- local: sweep

# ---------------------------------------------------------------- cluster
