# Distributed TensorFlow on Kubernetes: every step of the workshop is a target.
# `make help` lists them. Override any variable on the command line:
#   make build push deploy IMAGE=docker.io/you/mnist TAG=v1 NAMESPACE=alice
# or save them once for every terminal: make configure IMAGE=... TAG=... NAMESPACE=... (make where shows them).

# The settings `make configure` saved (NAMESPACE, IMAGE, TAG, KUBECONFIG, RWX_CLASS), as `NAME ?= value`: the
# command line and the environment still win over them. Git ignores the file.
WORKSHOP_ENV ?= .workshop.env
-include $(WORKSHOP_ENV)
# kubectl, in every recipe, reads the kubeconfig saved there (or given).
ifneq ($(strip $(KUBECONFIG)),)
export KUBECONFIG
endif

IMAGE     ?= ghcr.io/example/mnist-trainer
TAG       ?= 0.1.0
NAMESPACE ?= $(or $(shell kubectl config view --minify -o 'jsonpath={..namespace}' 2>/dev/null),default)

PYTHON_BIN ?= python3
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
RUNS       ?= runs

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this list: every target of this file and of make/*.mk, by part of the workshop
	@awk 'FNR == 1 && FILENAME ~ /\.mk$$/ {sub(/^# /, ""); print "\n" $$0} \
	  /^[a-zA-Z0-9_-]+:.*## / {split($$0, a, ":.*## "); printf "  %-22s %s\n", a[1], a[2]}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- setup, tests and lint

$(VENV)/.installed: requirements-dev.lock pyproject.toml make/venv.sh
	make/venv.sh $(PYTHON_BIN) $(VENV) requirements-dev.lock
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv from the hashed lock requirements-dev.lock (with uv; only when it changed)

.PHONY: prerequisites
prerequisites: ## Check the day's tools against their minimum versions (Python 3.11, make, git; kubectl, docker or gcloud): what to install, one line each
	@make/prerequisites.sh "$(PYTHON_BIN)" "$(VENV)" "$(MAKE_VERSION)" "$(IMAGE)"

# uv on PATH, or the one make/venv.sh installed into the venv.
UV = $(or $(shell command -v uv 2>/dev/null),$(VENV)/bin/uv)

.PHONY: lock
lock: venv ## Pin requirements*.txt and every dependency, with hashes, into requirements*.lock (needs the network)
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  requirements.txt -o requirements.lock
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  --constraint requirements.lock --override requirements-dev-overrides.txt requirements-dev.txt \
	  -o requirements-dev.lock
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	  --constraint requirements-dev.lock requirements-notebook.txt -o requirements-notebook.lock

.PHONY: lint
lint: venv ## Lint the Python code with ruff (rules in pyproject.toml)
	$(VENV)/bin/ruff check src tests

# pytest as from a shell: without this make's MAKELEVEL and MAKEFLAGS, so that the make commands the
# tests run print what they print for you (`make: ...`, not `make[1]: ...`).
PYTEST = env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS $(PYTHON) -m pytest

# Tests run in parallel processes (pytest-xdist): they wait on processes and servers more than they compute.
# `make check`: on every core, up to 4. `make test`: two processes, each given whole files (a file's module
# fixtures are set up once), so that at most two trainings share the cores, the costliest files first (the
# order: tests/conftest.py). The README's steps are one of those files; their servers listen on the ports the
# pages name (8500, 8501, 6006), which they hold under a lock a test binding one of those ports takes too.
.PHONY: check
check: lint ## After every change: lint, then every test that trains nothing, on every core (4 to 8 minutes on 2 cores)
	$(PYTEST) -m "not slow and not readme" -n auto --maxprocesses 4

.PHONY: test
test: venv ## Before handing in: every test, the README's steps included (what CI runs; builds .venv first if needed)
	$(PYTEST) -n auto --maxprocesses 2 --dist loadfile --no-loadscope-reorder

.PHONY: readme-steps
readme-steps: venv ## Only the README's local steps, run from README.md and the laptop labs and checked against their Expected output
	$(PYTEST) -m readme tests/test_readme.py

include make/local.mk make/cluster.mk make/docker.mk make/instructor.mk
