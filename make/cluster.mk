# Part 2 of the workshop: the attendee's steps on the cluster.
# Included by the Makefile; `make help` lists the targets.

# ---------------------------------------------------------------- cluster
# The cluster path (README, "On the cluster"): `make build push deploy`, then
# one target per step. Every manifest goes through src/render_manifests.py,
# which writes IMAGE:TAG and NAMESPACE into it: nobody edits YAML by hand.
# Targets that talk to the cluster first run check-cluster.

# GKE nodes are amd64: an image built on an arm64 laptop would not start there.
PLATFORM  ?= linux/amd64
# A managed ReadWriteMany storage class (standard-rwx: Filestore on GKE) that the
# instructor chose instead of an NFS server per attendee; empty: the NFS server.
RWX_CLASS ?=
RWX_SIZE  ?= 1Ti
RWX_FLAGS = $(if $(RWX_CLASS), --rwx_storage_class $(RWX_CLASS) --rwx_size $(RWX_SIZE))
# Sweep trials (TFJobs) running at once: the quota (`make instructor-plan`) holds this many beside the rest.
SWEEP_PARALLEL ?= 2
# The names the manifests give their workloads (tests/test_makefile.py keeps them in step).
JOB       ?= mnist-train
TFJOB     ?= mnist-tfjob
SERVING   ?= mnist-serving

KUBECTL = kubectl --namespace $(NAMESPACE)
# What `make push` pushed, by digest: one line IMAGE:TAG@sha256:... Every object applied runs the trainer image
# by that digest, so no later push under the same tag (yours or anyone's) changes what a node pulls.
# PLACEHOLDER_DIGEST=1 (`make render` without a push, to review the objects): sha256:000...0, which no registry serves.
PUSHED_IMAGE ?= $(RUNS)/pushed-image
PLACEHOLDER_DIGEST ?=
DIGEST_FLAGS = $(if $(PLACEHOLDER_DIGEST),--placeholder_digest,--pushed_image $(PUSHED_IMAGE))
# The upstream images (TensorFlow Serving) by the digests the instructor pinned (make instructor-pin-images).
PINNED_IMAGES ?= pinned-images.yaml
RENDER_ANY = $(PYTHON) src/render_manifests.py --image $(IMAGE) --tag $(TAG) --namespace $(NAMESPACE) --pins $(PINNED_IMAGES)$(RWX_FLAGS)
RENDER  = $(RENDER_ANY) $(DIGEST_FLAGS)
# The pushed reference IMAGE:TAG@sha256:... for the sweep's --image (one line and exit 1 without a push):
# `ref=$$($(IMAGE_REFERENCE)) && COMMAND --image "$$ref"`.
IMAGE_REFERENCE = $(RENDER) --print_reference
# Everything an attendee's steps apply (kube/*.yaml); all of it but the storage is what `make clean` deletes.
ATTENDEE_MANIFESTS = $(sort $(wildcard kube/*.yaml))
STEP_MANIFESTS     = $(filter-out kube/storage.yaml,$(ATTENDEE_MANIFESTS))
# The steps that are more than one command (loops, a port-forward held while another command runs).
STEPS = make/cluster.sh

# Step 3 (deploy), first: the claim mnist-nfs (kube/storage.yaml), created if it
# is missing (the instructor creates it with your namespace), then Bound to the
# instructor's volume. A Filestore claim (RWX_CLASS) binds only when the first
# pod mounts it: TensorBoard, next.
define storage_steps
@echo "== storage: the claim mnist-nfs (kube/storage.yaml) in namespace $(NAMESPACE)"
$(KUBECTL) get persistentvolumeclaim mnist-nfs --output name 2>/dev/null || $(RENDER) kube/storage.yaml | $(KUBECTL) apply -f -
$(if $(RWX_CLASS),@echo "the claim mnist-nfs binds when TensorBoard first mounts it",@$(KUBECTL) wait --for=jsonpath='{.status.phase}'=Bound persistentvolumeclaim/mnist-nfs --timeout=2m || { echo "error: the claim mnist-nfs is not Bound: with Filestore, export RWX_CLASS (the instructor says which); else its volume mnist-nfs-$(NAMESPACE) is missing: ask for 'make instructor-namespaces ATTENDEES=$(NAMESPACE)'" >&2; exit 1; })
endef

# Step 3 (deploy), second: TensorBoard over /mnt/nfs/runs.
define tensorboard_steps
@echo "== TensorBoard: kube/tensorboard.yaml"
$(RENDER) kube/tensorboard.yaml | $(KUBECTL) apply -f -
$(KUBECTL) rollout status deployment/tensorboard --timeout=10m
endef

# Step 3 (deploy), last: the training Job. A Job's pod template cannot change, so the
# previous run's Job is deleted first; the new one resumes from its checkpoints.
define job_steps
@echo "== training: kube/job.yaml"
$(RENDER) kube/job.yaml | $(KUBECTL) delete --ignore-not-found -f -
$(RENDER) kube/job.yaml | $(KUBECTL) apply -f -
endef

# A TFJob, checked offline first (src/tfjob_check.py), then against what the
# namespace's quota has left (src/quota_check.py: the operator would create
# some replicas and leave the rest refused, holding the first ones' CPUs), then
# replaced as a Job is.
define tfjob_steps
$(PYTHON) src/tfjob_check.py $(1)
$(PYTHON) src/quota_check.py --namespace $(NAMESPACE) $(1)
$(RENDER) $(1) | $(KUBECTL) delete --ignore-not-found -f -
$(RENDER) $(1) | $(KUBECTL) apply -f -
@echo "follow its chief:  make logs TFJOB=$(2)"
endef

.PHONY: check-cluster
check-cluster: ## Step 1: check that kubectl is installed and its context is your namespace
	@$(STEPS) check-cluster $(NAMESPACE)

.PHONY: check-image
check-image:
	@if [ "$(IMAGE)" = "ghcr.io/example/mnist-trainer" ]; then echo "error: IMAGE is the placeholder $(IMAGE): give a registry you can push to, e.g. export IMAGE=europe-docker.pkg.dev/PROJECT/workshop-$(NAMESPACE)/mnist" >&2; exit 1; fi

# Before anything that runs the trainer image: the record of its push (one line and exit 1 without it).
.PHONY: check-pushed
check-pushed: check-image venv
	@$(IMAGE_REFERENCE) >/dev/null

# The instructor's published base (make instructor-base; the instructor gives it, pinned by digest): with
# it, a build adds only your code to it, and a push uploads only that layer. Empty: the whole image is built
# here (Python, TensorFlow, the data: over a gigabyte to push).
BASE_IMAGE ?=
BUILD_ARGS  = --platform $(PLATFORM)$(if $(BASE_IMAGE), --build-arg RUNTIME=$(BASE_IMAGE))

.PHONY: build
build: check-image ## Step 2: build the trainer image IMAGE:TAG for PLATFORM (on BASE_IMAGE, the instructor's base, if given)
	@command -v docker >/dev/null 2>&1 || { echo "error: docker is not installed: see https://docs.docker.com/get-docker/ (or build in the cloud: make build-remote)" >&2; exit 1; }
	make/docker.sh build $(BUILD_ARGS) -t $(IMAGE):$(TAG)

# Cloud Build: the same Dockerfile, the same tag, built and pushed by Google Cloud; what is uploaded is
# what .gcloudignore lets through (the files the image copies). The pushed digest goes where `make push`
# writes it, for the steps that apply the image.
GCLOUD ?= gcloud

.PHONY: build-remote
build-remote: check-image ## Step 2 without Docker: build and push IMAGE:TAG with Cloud Build (gcloud builds submit; src/cloudbuild.yaml)
	@command -v $(GCLOUD) >/dev/null 2>&1 || { echo "error: gcloud is not installed: see docs/cluster/01-connect.md" >&2; exit 1; }
	@mkdir -p $(RUNS)
	$(GCLOUD) builds submit --config src/cloudbuild.yaml \
	  --substitutions _IMAGE=$(IMAGE),_TAG=$(TAG),_RUNTIME=$(or $(BASE_IMAGE),runtime) \
	  --format 'value(results.images[0].digest)' . > $(RUNS)/.build-remote-digest
	@digest=$$(tr -d '[:space:]' < $(RUNS)/.build-remote-digest); rm -f $(RUNS)/.build-remote-digest; \
	  echo "$$digest" | grep -Eqx 'sha256:[0-9a-f]{64}' || { \
	    echo "error: Cloud Build reported no image digest ('$$digest'): see the build's log above" >&2; exit 1; }; \
	  echo "$(IMAGE):$(TAG)@$$digest" > $(RUNS)/pushed-image; echo "pushed $(IMAGE):$(TAG)@$$digest"

.PHONY: push
push: check-image ## Step 2: push IMAGE:TAG to its registry (log in to it first); its digest goes to PUSHED_IMAGE
	@$(STEPS) push $(IMAGE):$(TAG) $(PUSHED_IMAGE)

.PHONY: deploy
deploy: check-cluster check-pushed ## Step 3: storage (the claim mnist-nfs), then TensorBoard, then training (the Job)
	$(storage_steps)
	$(tensorboard_steps)
	$(job_steps)
	@echo "deployed. Follow the training: kubectl logs -f --pod-running-timeout=5m job/$(JOB); watch it: make tensorboard"

.PHONY: storage
storage: check-cluster venv ## Step 3's storage alone: the shared claim mnist-nfs, Bound to the instructor's volume
	$(storage_steps)

.PHONY: job
job: check-cluster check-pushed ## Step 3's training again: a new Job (kube/job.yaml), following its logs
	$(job_steps)
	$(KUBECTL) logs --follow --pod-running-timeout=10m job/$(JOB)

.PHONY: tensorboard
tensorboard: check-cluster ## Step 4: TensorBoard on a free local port kubectl picks (a port-forward; Ctrl-C stops it)
	@$(STEPS) with-port-forward $(NAMESPACE) tensorboard 6006 \
	  sh -c 'echo "TensorBoard: http://localhost:$$FORWARDED_PORT   (Ctrl-C to stop)"; while :; do sleep 3600; done'

# `make jupyter`'s local port: empty, a free one kubectl picks; JUPYTER_PORT=8888 keeps one address across runs.
JUPYTER_PORT ?=

.PHONY: jupyter
jupyter: check-cluster ## Step 12: your JupyterLab (the instructor installs it), its port forwarded: prints the URL with its token (Ctrl-C stops)
	@$(STEPS) jupyter $(NAMESPACE) $(JUPYTER_PORT)

.PHONY: tfjob
tfjob: check-cluster check-pushed ## Step 5: train on 3 replicas at once (kube/tfjob.yaml)
	$(call tfjob_steps,kube/tfjob.yaml,mnist-tfjob)

.PHONY: tfjob-ps
tfjob-ps: check-cluster check-pushed ## Step 6: train with a parameter server (kube/tfjob-ps.yaml)
	$(call tfjob_steps,kube/tfjob-ps.yaml,mnist-tfjob-ps)

.PHONY: logs
logs: check-cluster ## Follow the chief of TFJOB (default mnist-tfjob; TFJOB=mnist-tfjob-ps for step 6)
	@$(STEPS) logs $(NAMESPACE) $(TFJOB)

.PHONY: serve
serve: check-cluster venv model-config ## Step 7: serve the newest export with TensorFlow Serving (kube/serving.yaml; its model config: make model-config)
	$(RENDER) kube/serving.yaml | $(KUBECTL) apply -f -
	$(KUBECTL) rollout status deployment/$(SERVING) --timeout=10m

# What `make predict` asks serving (src/client.py's flags): the images of data/ by default; a load test with
# PREDICT_FLAGS="--num_tests 20000 --concurrency 32", a label with PREDICT_FLAGS="--image data --version_label canary".
PREDICT_FLAGS ?= --image data

.PHONY: predict
predict: check-cluster venv ## Step 8: classify data/*.png with the served model, from this laptop (other client flags: PREDICT_FLAGS=...)
	$(STEPS) with-port-forward $(NAMESPACE) $(SERVING) 8500 \
	  sh -c 'exec $(PYTHON) src/client.py --host 127.0.0.1 --port $$FORWARDED_PORT --model mnist --signature_name predict $(PREDICT_FLAGS)'

.PHONY: sweep
sweep: check-cluster check-pushed ## Step 9: the hyperparameter sweep, one TFJob per trial, SWEEP_PARALLEL at once (a new run each time)
	@ref=$$($(IMAGE_REFERENCE)) && echo "sweep of $$ref" && $(SWEEP_RUN) --namespace $(NAMESPACE) --image "$$ref" --parallel $(SWEEP_PARALLEL)

# Step 9b: the same sweep on Katib (the instructor installed it: make instructor-katib).
KATIB_RUN = $(SWEEP_RUN) --katib --namespace $(NAMESPACE)

.PHONY: katib-sweep
katib-sweep: check-cluster check-pushed ## Step 9b: the same sweep as one Katib Experiment: checked, created, followed to its end; prints the best trial
	@ref=$$($(IMAGE_REFERENCE)) && echo "Katib sweep of $$ref" && $(KATIB_RUN) --image "$$ref"

.PHONY: katib-results
katib-results: check-cluster venv ## Step 9b: the Katib trials ranked by validation accuracy (CSV and plot in runs/katib), the export to serve
	$(KATIB_RUN) --results --output_dir $(RUNS)/katib

.PHONY: katib-clean
katib-clean: check-cluster venv ## Delete the Katib Experiment with its trials and their TFJobs (their files stay on the volume)
	$(KATIB_RUN) --delete

.PHONY: clean
clean: check-cluster venv ## Delete all your steps created (training, sweep, Katib, TensorBoard, serving, autoscaler, CronJob, batch Job); keeps the storage
	$(RENDER_ANY) --placeholder_digest $(STEP_MANIFESTS) | $(KUBECTL) delete --ignore-not-found -f -
	$(KUBECTL) delete tfjobs --selector sweep --ignore-not-found
	$(KUBECTL) delete jobs --selector app.kubernetes.io/part-of=mnist-workshop --ignore-not-found
	@$(STEPS) clean-katib $(NAMESPACE)

.PHONY: render
render: venv ## Write every object your steps apply, as applied (NAMESPACE, IMAGE, TAG), to OUT=DIR; the sweep's trials to OUT/sweep, its Katib Experiment to OUT/katib, what the cluster makes of them to OUT/cluster-made
	$(RENDER) --output_dir "$(OUT)" $(ATTENDEE_MANIFESTS)
	ref=$$($(IMAGE_REFERENCE)) \
	  && $(PYTHON) src/cluster_model.py --namespace $(NAMESPACE) --image $(IMAGE) --tag $(TAG) --digest "$${ref##*@}" --output_dir "$(OUT)/cluster-made" \
	  && $(SWEEP_RUN) --dry_run --output_dir $(OUT)/sweep --namespace $(NAMESPACE) --image "$$ref" \
	  && $(SWEEP_RUN) --katib --dry_run --output_dir $(OUT)/katib --namespace $(NAMESPACE) --image "$$ref"

# ---------------------------------------------------------------- beyond one model
# Retrain on a schedule, score a folder without a server, serve more users as
# traffic grows, and try a new version on part of the traffic before it
# replaces the old one. The cluster targets use the cluster section's
# KUBECTL, RENDER, SERVING and check-cluster (below).

# canary: the version to try (the `exported /mnt/nfs/exports/mnist/<version>` line of a retrain's log);
# empty: the newest of the versions serving has loaded, with the one before it as stable.
CANARY ?=
MODEL_CONFIG ?= mnist-model-config
# Change the live model config through src/model_config.py ACTION, then wait until serving (its REST port
# forwarded to a free local port; `--server forwarded` names it) serves it: $(call model_config,ACTION FLAGS).
model_config = $(STEPS) model-config $(NAMESPACE) $(MODEL_CONFIG) $(PYTHON) $(1)
with_rest = $(STEPS) with-port-forward $(NAMESPACE) $(SERVING) 8501

.PHONY: retrain-schedule
retrain-schedule: check-cluster check-pushed ## Retrain every night at 03:00 UTC (the CronJob of kube/retrain-cronjob.yaml)
	$(RENDER) kube/retrain-cronjob.yaml | $(KUBECTL) apply -f -
	$(KUBECTL) get cronjob mnist-retrain

.PHONY: retrain-now
retrain-now: retrain-schedule ## Retrain now: a Job from the CronJob mnist-retrain, following its log to the new version
	@$(STEPS) retrain-now $(NAMESPACE)

.PHONY: batch-predict
batch-predict: check-cluster check-pushed ## Score /mnt/nfs/batch/in with the newest export (a Job, no server); CSV to BATCH_OUTPUT
	$(RENDER) kube/batch-predict.yaml | $(KUBECTL) delete --ignore-not-found -f -
	$(RENDER) kube/batch-predict.yaml | $(KUBECTL) apply -f -
	@$(STEPS) batch-predict $(NAMESPACE) $(BATCH_OUTPUT)

.PHONY: autoscale
autoscale: check-cluster venv ## Autoscale serving: 1 to 4 pods at 60% CPU, and a disruption budget (kube/serving-autoscale.yaml)
	$(RENDER) kube/serving-autoscale.yaml | $(KUBECTL) apply -f -
	$(KUBECTL) get hpa $(SERVING)

.PHONY: watch-hpa
watch-hpa: check-cluster ## Watch the autoscaler: CPU use against its target, and the number of serving pods (Ctrl-C stops)
	$(KUBECTL) get hpa $(SERVING) --watch

.PHONY: model-config
model-config: check-cluster venv ## Create the ConfigMap mnist-model-config (TF Serving's versions and labels) if it does not exist
	@$(KUBECTL) get configmap $(MODEL_CONFIG) >/dev/null 2>&1 || { \
	  echo "$(RENDER) kube/model-config.yaml | $(KUBECTL) apply -f -"; \
	  $(RENDER) kube/model-config.yaml | $(KUBECTL) apply -f -; }

.PHONY: model-config-reset
model-config-reset: check-cluster venv ## Serve the two newest versions again, without labels (kube/model-config.yaml as written)
	$(RENDER) kube/model-config.yaml | $(KUBECTL) apply -f -

# `make serve-best SWEEP_TENSORBOARD=...` (make/local.mk) on the cluster: the ranking's winner (its export
# directory on the shared volume) becomes the model config's base path, the serving pods restart on it (a pod
# is Ready once TensorFlow Serving reports a version AVAILABLE: kube/serving.yaml's probe), and the wait
# confirms it through the REST API. The ConfigMap applied stays in SERVE_BEST_CONFIG.
SERVE_BEST_CONFIG ?= $(RUNS)/serve-best/$(MODEL_CONFIG).yaml
define serve_best_cluster
@export_dir=$$($(PYTHON) -m tfk8s.workshop best-export --cluster $(SWEEP_CSV)) || exit 1; \
  mkdir -p $(dir $(SERVE_BEST_CONFIG)) && $(RENDER) kube/model-config.yaml \
  | $(PYTHON) src/model_config.py serve --base_path "$$export_dir" --configmap - > $(SERVE_BEST_CONFIG) || exit 1; \
  echo "serving the sweep's winner, $$export_dir: $(KUBECTL) apply -f $(SERVE_BEST_CONFIG)"; \
  $(KUBECTL) apply -f - < $(SERVE_BEST_CONFIG)
$(RENDER) kube/serving.yaml | $(KUBECTL) apply -f -
$(KUBECTL) rollout restart deployment/$(SERVING)
$(KUBECTL) rollout status deployment/$(SERVING) --timeout=10m
@$(with_rest) sh -c 'exec $(PYTHON) src/model_config.py wait --configmap $(SERVE_BEST_CONFIG) --server http://127.0.0.1:$$FORWARDED_PORT'
@echo "deployment/$(SERVING) serves the sweep's winner as model mnist (service/$(SERVING): gRPC 8500, REST 8501); ask it: make predict"
@echo "back to your own training's newest export: make model-config-reset"
endef

.PHONY: canary
canary: check-cluster venv ## A/B: serve two versions labelled stable and canary (CANARY=<version>; default: the newest loaded)
	$(if $(CANARY),$(with_rest) $(call model_config,load --version $(CANARY) --server forwarded))
	$(with_rest) $(call model_config,canary $(if $(CANARY),--canary $(CANARY)) --server forwarded)

.PHONY: promote
promote: check-cluster venv ## A/B: point the label stable at the canary's version (the ConfigMap mnist-model-config)
	$(with_rest) $(call model_config,promote)
