# Part 1 of the workshop: everything on the laptop (no cluster, no Docker).
# Included by the Makefile; `make help` lists the targets.

# ---------------------------------------------------------------- settings: every terminal, the same cluster
# `make configure` saves the settings the cluster pages ask you to export, into WORKSHOP_ENV (the Makefile reads
# it first), so that a second terminal reaches the same namespace; `make where` shows them and what runs.
WORKSHOP_SETTINGS = NAMESPACE IMAGE TAG KUBECONFIG RWX_CLASS
# Our own processes, for `make where`: the trainer, replicas, servers, TensorBoard and JupyterLab.
OUR_PROCESSES = src/(main|demo|serve|tfjob_local|batch_predict)\.py|templated/run\.sh|bin/tensorboard|jupyter-lab

.PHONY: configure
configure: ## Save NAMESPACE, IMAGE, TAG, KUBECONFIG, RWX_CLASS (as given, or as now) to .workshop.env for every later make, in any terminal
	@case "$(NAMESPACE)" in ""|-*|*-|*[!a-z0-9-]*) echo "error: NAMESPACE '$(NAMESPACE)' is not a namespace name (lower-case letters, digits and '-'): make configure NAMESPACE=<yours>" >&2; exit 1;; esac
	@for f in $(subst :, ,$(KUBECONFIG)); do [ -f "$$f" ] || { echo "error: KUBECONFIG: $$f: no such file (make configure KUBECONFIG=<the kubeconfig file you were given>)" >&2; exit 1; }; done
	@{ echo "# Written by make configure; the Makefile reads it. NAME ?= value: the command line and the environment win."; \
	  echo "NAMESPACE ?= $(NAMESPACE)"; \
	  echo "IMAGE ?= $(IMAGE)"; \
	  echo "TAG ?= $(TAG)"; \
	  echo "KUBECONFIG ?= $(if $(findstring :,$(KUBECONFIG)),$(KUBECONFIG),$(if $(strip $(KUBECONFIG)),$(abspath $(KUBECONFIG))))"; \
	  echo "RWX_CLASS ?= $(RWX_CLASS)"; } > $(WORKSHOP_ENV).tmp && mv $(WORKSHOP_ENV).tmp $(WORKSHOP_ENV)
	@echo "saved to $(WORKSHOP_ENV): every make, in this terminal or another, now uses"
	@grep -v '^#' $(WORKSHOP_ENV) | sed 's/ ?= /=/; s/^/  /'
	@echo "(change one: make configure NAME=value; forget them all: rm $(WORKSHOP_ENV); see them: make where)"

.PHONY: where
where: ## Show where your commands go (kubeconfig, context, namespace, image) and what runs, there and here
	@echo "settings    $(if $(wildcard $(WORKSHOP_ENV)),$(WORKSHOP_ENV) (written by make configure),none saved: make configure saves them for every terminal)"
	@echo "kubeconfig  $(or $(strip $(KUBECONFIG)),~/.kube/config (kubectl's default: KUBECONFIG is not set))"
	@if command -v kubectl >/dev/null; then \
	  echo "context     $$(kubectl config current-context 2>/dev/null || echo 'none (the laptop labs need none)')"; \
	else echo "context     none: kubectl is not installed (the laptop labs need none)"; fi
	@echo "namespace   $(NAMESPACE)"
	@echo "image       $(IMAGE):$(TAG)"
	@echo "RWX_CLASS   $(or $(RWX_CLASS),(none: the NFS server))"
	@echo "running here:"
	@found=$$(ps -eo pid=,args= | grep -E '$(OUR_PROCESSES)' | grep -v -e grep -e ' ps -eo'); \
	  if [ -n "$$found" ]; then echo "$$found" | sed 's/^ */  /' | cut -c1-150; else echo "  nothing of ours"; fi
	@if command -v kubectl >/dev/null && kubectl config current-context >/dev/null 2>&1; then \
	  echo "running in namespace $(NAMESPACE):"; \
	  kubectl --namespace $(NAMESPACE) get deployments,jobs,pods --request-timeout=10s 2>&1 | sed 's/^/  /'; \
	  kubectl --namespace $(NAMESPACE) get tfjobs --request-timeout=10s 2>/dev/null | sed 's/^/  /'; \
	fi; true

# ---------------------------------------------------------------- local: train

# Extra trainer flags for `make train`, e.g. TRAIN_FLAGS="--steps 500 --hidden_layers 3".
TRAIN_FLAGS ?=
TB_PORT     ?= 6006

.PHONY: train
train: venv ## Train on the shipped mini data into runs/local (checkpoints, summaries, export); TRAIN_FLAGS adds flags
	$(PYTHON) src/main.py --model_dir $(RUNS)/local/model --export_dir $(RUNS)/local/export $(TRAIN_FLAGS)

.PHONY: tensorboard-local
tensorboard-local: venv ## TensorBoard on http://localhost:6006 over every local run under runs/ (Ctrl-C stops it)
	@echo "TensorBoard: http://localhost:$(TB_PORT)   (Ctrl-C to stop)"
	$(VENV)/bin/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port $(TB_PORT)

.PHONY: bench-train
bench-train: venv ## Images/s of our trainer vs. plain Keras fit, and test accuracy
	$(PYTHON) src/bench.py train

# bench-distributed: flags for src/bench.py distributed, e.g. --replicas 3 --steps 1000
BENCH_DISTRIBUTED_FLAGS ?=

.PHONY: bench-distributed
bench-distributed: venv ## One process vs. kube/tfjob.yaml's Chief + 1 Worker here: same steps and global batch; accuracy and time
	$(PYTHON) src/bench.py distributed $(BENCH_DISTRIBUTED_FLAGS)

# The whole local path in one command, and the same path as a notebook.
DEMO_STEPS ?= 300
# Extra flags for src/demo.py, e.g. DEMO_FLAGS=--retrain
DEMO_FLAGS ?=
# JupyterLab is not needed by the tests: `make lab` installs this version on first use.
JUPYTERLAB ?= jupyterlab==4.6.6

.PHONY: demo
demo: venv ## Train (or reuse runs/demo), serve locally and predict data/0.png..9.png (DEMO_STEPS=300)
	$(PYTHON) src/demo.py --steps $(DEMO_STEPS) --workdir $(RUNS)/demo $(DEMO_FLAGS)

.PHONY: notebook
notebook: venv ## Run notebooks/walkthrough.ipynb headless; the executed copy goes to runs/notebook/
	@mkdir -p $(RUNS)/notebook
	@echo "running every cell of notebooks/walkthrough.ipynb (about 3 minutes on two cores: it trains for 30 s)"
	$(VENV)/bin/jupyter-execute notebooks/walkthrough.ipynb --kernel_name=python3 --timeout=900 \
	  --output=$(abspath $(RUNS))/notebook/walkthrough
	@echo "executed: $(RUNS)/notebook/walkthrough.ipynb (open it in JupyterLab: make lab)"

# Extra flags for JupyterLab, e.g. LAB_FLAGS="--allow-root" as root (a container, WSL, a cloud VM), or
# LAB_FLAGS="--no-browser --ip 127.0.0.1 --port 8888" on a machine you reach over ssh.
LAB_FLAGS ?=

.PHONY: lab
lab: venv ## Open the walkthrough in JupyterLab (installs JupyterLab into .venv on first use); LAB_FLAGS adds flags, e.g. --allow-root
	@$(VENV)/bin/jupyter-lab --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet $(JUPYTERLAB)
	$(VENV)/bin/jupyter-lab --LabApp.default_url=/lab/tree/notebooks/walkthrough.ipynb $(LAB_FLAGS)

# ---------------------------------------------------------------- local: serve and predict
# The local model server (a development server with TensorFlow Serving's APIs and flags)
# on the newest export of `make train`; the client is src/client.py.
SERVE_EXPORT ?= $(RUNS)/local/export

.PHONY: serve-local
serve-local: venv ## Serve runs/local/export here: gRPC localhost:8500, REST localhost:8501 (Ctrl-C stops it)
	$(PYTHON) src/serve.py --model_name mnist --model_base_path $(SERVE_EXPORT) --port 8500 --rest_api_port 8501

# The sweep's ranking (make sweep-results writes it): serve-best serves its rank 1. Like sweep-results, it takes
# the local sweep, or with SWEEP_TENSORBOARD the cluster sweep, which TensorFlow Serving on the cluster then
# serves (make/cluster.mk: serve_best_cluster).
sweep_name = $(or $(shell sed -n 's/^name: *//p' $(1) 2>/dev/null),$(2))
SWEEP_NAME = $(if $(SWEEP_TENSORBOARD),$(call sweep_name,$(SWEEP_VALUES),mnist-sweep),$(call sweep_name,$(SWEEP_LOCAL_VALUES),mnist-small))
SWEEP_CSV  = $(or $(SWEEP_ROOT),$(if $(SWEEP_TENSORBOARD),runs/sweep,$(RUNS)/tfjob-local)/$(SWEEP_NAME))/$(SWEEP_NAME)-results.csv

define serve_best_local
@export_dir=$$($(PYTHON) -m tfk8s.workshop best-export $(SWEEP_CSV)) || exit 1; \
  echo "serving the sweep's winner, $$export_dir (make predict-local asks it; Ctrl-C stops it)"; \
  exec $(PYTHON) src/serve.py --model_name mnist --model_base_path "$$export_dir" --port 8500 --rest_api_port 8501
endef

.PHONY: serve-best
serve-best: $(if $(SWEEP_TENSORBOARD),check-cluster) sweep-results ## Serve the sweep's winner (rank 1 of sweep-results): here as serve-local (:8500, :8501); with SWEEP_TENSORBOARD, the cluster's on TF Serving (make predict)
	$(if $(SWEEP_TENSORBOARD),$(serve_best_cluster),$(serve_best_local))

.PHONY: predict-local
predict-local: venv ## Classify data/0.png..9.png with the local server of `make serve-local`
	$(PYTHON) src/client.py --host localhost --port 8500 --image data --model mnist --signature_name predict

# A/B here: serve.py with TensorFlow Serving's model config file, as kube/serving.yaml runs
# TensorFlow Serving, and the same src/model_config.py moves as `make canary` and `make promote`.
AB_CONFIG ?= $(RUNS)/local/models.config
AB_PORT   ?= 8510
AB_REST   ?= 8511

.PHONY: serve-ab-local
serve-ab-local: venv ## A/B: serve AB_CONFIG (created from kube/model-config.yaml: the 2 newest exports), read again every 2 s; gRPC :8510, REST :8511
	@[ -f $(AB_CONFIG) ] || $(PYTHON) src/model_config.py init --config $(AB_CONFIG) --base_path $(SERVE_EXPORT)
	$(PYTHON) src/serve.py --model_config_file $(AB_CONFIG) --model_config_file_poll_wait_seconds 2 \
	  --allow_version_labels_for_unavailable_models --port $(AB_PORT) --rest_api_port $(AB_REST)

.PHONY: canary-local
canary-local: venv ## A/B: label the newest version serve-ab-local loaded canary, the one before it stable; wait until served
	$(PYTHON) src/model_config.py canary --config $(AB_CONFIG) --server http://localhost:$(AB_REST)
	$(PYTHON) src/model_config.py wait --config $(AB_CONFIG) --server http://localhost:$(AB_REST)

.PHONY: promote-local
promote-local: venv ## A/B: point stable at the canary's version in AB_CONFIG; wait until serve-ab-local serves it
	$(PYTHON) src/model_config.py promote --config $(AB_CONFIG)
	$(PYTHON) src/model_config.py wait --config $(AB_CONFIG) --server http://localhost:$(AB_REST)

.PHONY: bench-serve
bench-serve: venv ## Latency p50/p99 and throughput of serve.py at 1 to 32 requests in flight, without and with --enable_batching, and a 10k batch
	$(PYTHON) src/bench.py serve

# The overview picture of the README, drawn from its source with Graphviz; the SVG records the source's digest,
# which tests/test_markdown.py compares with the source, so that the picture stays true to it.
OVERVIEW = docs/images/overview

.PHONY: overview
overview: ## Draw docs/images/overview.svg from docs/images/overview.dot (needs Graphviz's dot: apt-get install graphviz)
	@command -v dot >/dev/null || { echo "error: dot not found: install Graphviz (apt-get install graphviz; brew install graphviz)" >&2; exit 1; }
	dot -Tsvg $(OVERVIEW).dot -o $(OVERVIEW).svg.tmp
	sed -i "1a <!-- drawn by make overview from $(OVERVIEW).dot, sha256 $$(sha256sum $(OVERVIEW).dot | cut -d' ' -f1) -->" $(OVERVIEW).svg.tmp
	mv $(OVERVIEW).svg.tmp $(OVERVIEW).svg

.PHONY: samples
samples: venv ## Write data/0.png..9.png again from the shipped test set
	$(PYTHON) src/make_samples.py

.PHONY: clean-local
clean-local: ## Delete runs/ here: every local model, export, sweep and log (refused while a trainer writes there; the cluster's: make clean)
	@$(PYTHON) -m tfk8s.workshop clean $(RUNS)

# ---------------------------------------------------------------- local: distributed (TFJob) runs
# The TFJob manifests of kube/, run here before they go to the cluster: one process per
# replica (src/tfjob_local.py). TFJOB_LOCAL_FLAGS are added to every replica's flags:
# the mini data and a few hundred steps, since all replicas share this machine's cores.
TFJOB_LOCAL_FLAGS ?= --dataset mini --steps 300 --eval_every 100 --checkpoint_every 100

.PHONY: tfjob-check
tfjob-check: venv ## Check kube/tfjob*.yaml offline: the TFJob CRD's schema (strictly) and the operator's rules
	$(PYTHON) src/tfjob_check.py kube/tfjob.yaml kube/tfjob-ps.yaml

.PHONY: tfjob-local
tfjob-local: venv ## Run kube/tfjob.yaml here: chief + 2 workers, one model (afresh in runs/tfjob-local/mnist-tfjob)
	rm -rf $(RUNS)/tfjob-local/mnist-tfjob
	$(PYTHON) src/tfjob_local.py kube/tfjob.yaml --root $(RUNS)/tfjob-local/mnist-tfjob -- $(TFJOB_LOCAL_FLAGS)

.PHONY: tfjob-ps-local
tfjob-ps-local: venv ## Run kube/tfjob-ps.yaml here: chief, 2 workers, 1 parameter server (runs/tfjob-local/mnist-tfjob-ps)
	rm -rf $(RUNS)/tfjob-local/mnist-tfjob-ps
	$(PYTHON) src/tfjob_local.py kube/tfjob-ps.yaml --root $(RUNS)/tfjob-local/mnist-tfjob-ps -- $(TFJOB_LOCAL_FLAGS)

# ---------------------------------------------------------------- local: sweep
# The hyperparameter sweep, one TFJob per combination: previewed as YAML (what `make sweep` submits to the
# cluster: SWEEP_VALUES, the full grid), or run on this machine. Here it runs SWEEP_LOCAL_VALUES, the
# workshop-sized grid (4 trials of the Chief alone: about 5 minutes on two cores); the full grid is one
# variable away: SWEEP_LOCAL_VALUES=templated/values.yaml (9 trials of 3 replicas: about 20 minutes).
# SWEEP_LOCAL_FLAGS are appended to every local trial's trainer flags: the shipped mini data and 300 steps.
# SWEEP_ROOT: the local stand-in for the cluster (default runs/tfjob-local/<sweep>).
# SWEEP_TENSORBOARD: rank a cluster sweep (SWEEP_VALUES) instead, read from its TensorBoard
# (http://localhost:6006 while `make tensorboard` runs).
SWEEP_VALUES       ?= templated/values.yaml
SWEEP_LOCAL_VALUES ?= templated/values-workshop.yaml
SWEEP_LOCAL_FLAGS  ?= --dataset mini --steps 300 --eval_every 100 --checkpoint_every 100
SWEEP_ROOT         ?=
SWEEP_TENSORBOARD  ?=
SWEEP_RUN           = VENV=$(VENV) templated/run.sh --values $(SWEEP_VALUES)
SWEEP_LOCAL_RUN     = VENV=$(VENV) templated/run.sh --values $(SWEEP_LOCAL_VALUES)

.PHONY: sweep-preview
sweep-preview: venv ## Write the cluster sweep's TFJobs (SWEEP_VALUES: one per combination) to runs/sweep-preview; submit nothing
	$(SWEEP_RUN) --dry_run --output_dir $(RUNS)/sweep-preview --namespace $(NAMESPACE) --image $(IMAGE):$(TAG)

.PHONY: sweep-local
sweep-local: venv ## Run the workshop-sized sweep here (SWEEP_LOCAL_VALUES: 4 trials, ~5 min), into runs/tfjob-local/<sweep>
	$(SWEEP_LOCAL_RUN) --local $(if $(SWEEP_ROOT),--root $(SWEEP_ROOT)) -- $(SWEEP_LOCAL_FLAGS)

.PHONY: sweep-results
sweep-results: venv ## Rank the local sweep's trials by validation accuracy, name the export to serve, plot them (SWEEP_TENSORBOARD: a cluster sweep)
	$(if $(SWEEP_TENSORBOARD),$(SWEEP_RUN),$(SWEEP_LOCAL_RUN)) --results $(if $(SWEEP_ROOT),--root $(SWEEP_ROOT)) \
	  $(if $(SWEEP_TENSORBOARD),--tensorboard $(SWEEP_TENSORBOARD))

# The same sweep as Katib runs it (`make katib-sweep` on the cluster): one Experiment,
# checked offline as Katib checks it; here, its grid's trials run one at a time into
# runs/katib-local/<sweep> (KATIB_ROOT), ranked as Katib's collector and rule rank them.
KATIB_ROOT ?=

.PHONY: katib-preview
katib-preview: venv ## Write the cluster sweep's Katib Experiment to runs/katib-preview, checked as Katib checks it; apply nothing
	$(SWEEP_RUN) --katib --dry_run --output_dir $(RUNS)/katib-preview --namespace $(NAMESPACE) --image $(IMAGE):$(TAG)

.PHONY: katib-sweep-local
katib-sweep-local: venv ## Run the workshop-sized sweep's Katib grid here (trials as Katib builds them) and rank them as Katib would
	$(SWEEP_LOCAL_RUN) --katib --local $(if $(KATIB_ROOT),--root $(KATIB_ROOT)) -- $(SWEEP_LOCAL_FLAGS)

# ---------------------------------------------------------------- local: beyond one model
# batch-predict-local: the folder to score; if it holds no image, the 10,000 MNIST test digits are written there first.
BATCH_INPUT  ?= $(RUNS)/batch/in
BATCH_OUTPUT ?= $(RUNS)/batch/predictions.csv

.PHONY: batch-predict-local
batch-predict-local: venv ## Score BATCH_INPUT (default: the 10k test digits) with runs/local/export, no server; CSV to BATCH_OUTPUT
	$(PYTHON) src/batch_predict.py --model_base_path $(RUNS)/local/export --input $(BATCH_INPUT) \
	  --output $(BATCH_OUTPUT) --sample_input
