# The instructor's part: plan the cluster, the operator, one namespace per attendee, status and clean-up.
# Included by the Makefile; `make help` lists the targets.

# Attendees: their names (namespace names), or with instructor-plan their number.
ATTENDEES      ?=
INSTRUCTOR_DIR ?= $(RUNS)/instructor
TOKEN_DURATION ?= 24h
# The nodes the capacity plan counts (e2, n2, n2d or n1; standard, highmem or highcpu).
MACHINE_TYPE   ?= e2-standard-16
# WATCH=1: instructor-status refreshes until Ctrl-C.
WATCH          ?=
# The Kubeflow training operator v1.9 (the last line that runs TFJobs), its newest
# patch. The repository was kubeflow/training-operator until 2025; GitHub redirects.
TRAINING_OPERATOR ?= github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=v1.9.4
INSTRUCTOR = $(PYTHON) src/instructor.py
# JupyterLab's image (IMAGE@sha256:...); empty: what `make instructor-notebook` recorded in runs/notebook-image,
# and without that the attendees get no JupyterLab.
NOTEBOOK_IMAGE ?=
NOTEBOOK_FLAG = $(if $(NOTEBOOK_IMAGE), --notebook_image "$(NOTEBOOK_IMAGE)")
# Argo Workflows v4.1.2: its controller, CRDs and RBAC from its own manifests at the tag (no argo-server).
ARGO ?= templated/instructor/argo

.PHONY: instructor-plan
instructor-plan: venv ## Instructor, first: per-attendee quota, nodes and CPU quota for ATTENDEES=N on MACHINE_TYPE
	$(INSTRUCTOR) plan --attendees "$(ATTENDEES)" --machine_type "$(MACHINE_TYPE)" --sweep_parallel $(SWEEP_PARALLEL)$(RWX_FLAGS)

# Katib v0.19.0, its standalone install (controller, DB, UI, webhooks in the namespace kubeflow).
KATIB ?= github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=v0.19.0

.PHONY: instructor-operator
instructor-operator: check-cluster ## Instructor, once per cluster: install the Kubeflow training operator v1.9
	kubectl apply --server-side -k "$(TRAINING_OPERATOR)"
	kubectl --namespace kubeflow rollout status deployment/training-operator --timeout=5m
	kubectl get crd tfjobs.kubeflow.org

.PHONY: instructor-namespaces
instructor-namespaces: venv ## Instructor: per attendee a namespace, quota, role, network policy, storage, JupyterLab (NOTEBOOK_IMAGE) and kubeconfig (ATTENDEES="alice bob")
	$(INSTRUCTOR) create --pins $(PINNED_IMAGES) --output_dir $(INSTRUCTOR_DIR) --duration $(TOKEN_DURATION) --sweep_parallel $(SWEEP_PARALLEL)$(RWX_FLAGS)$(NOTEBOOK_FLAG) $(ATTENDEES)

.PHONY: instructor-kubeconfigs
instructor-kubeconfigs: venv ## Instructor: fresh tokens, INSTRUCTOR_DIR/<name>.kubeconfig for each of ATTENDEES
	$(INSTRUCTOR) kubeconfigs --output_dir $(INSTRUCTOR_DIR) --duration $(TOKEN_DURATION) $(ATTENDEES)

.PHONY: instructor-render
instructor-render: venv ## Instructor: write every object instructor-namespaces applies for ATTENDEES to OUT=DIR
	$(INSTRUCTOR) render --pins $(PINNED_IMAGES) --output_dir "$(OUT)" --sweep_parallel $(SWEEP_PARALLEL)$(RWX_FLAGS)$(NOTEBOOK_FLAG) $(ATTENDEES)

.PHONY: instructor-status
instructor-status: venv ## Instructor: a row per attendee: storage, image, Job/TFJobs, serving, sweep, quota (WATCH=1 refreshes)
	$(INSTRUCTOR) status$(if $(WATCH), --watch)

.PHONY: instructor-clean
instructor-clean: venv ## Instructor: delete the attendees' namespaces, volumes and NFS servers, with all they hold (ATTENDEES=...)
	$(INSTRUCTOR) delete $(ATTENDEES)

.PHONY: instructor-katib
instructor-katib: venv ## Instructor, once per cluster, after instructor-operator: install Katib v0.19; with ATTENDEES, give them Katib
	$(INSTRUCTOR) katib --manifests "$(KATIB)" --output_dir $(INSTRUCTOR_DIR) $(ATTENDEES)

.PHONY: instructor-argo
instructor-argo: venv ## Instructor, once per cluster: install Argo Workflows v4.1.2 (controller only) and its restricted executor config
	$(INSTRUCTOR) argo --pins $(PINNED_IMAGES) --manifests "$(ARGO)" --output_dir $(INSTRUCTOR_DIR)

# The registry: NAME=EMAIL per attendee (their Google account), the project, the nodes' service account.
ACCOUNTS          ?=
PROJECT           ?= $(shell gcloud config get-value project 2>/dev/null)
REGISTRY_LOCATION ?= europe
NODE_SA           ?=

.PHONY: instructor-registry
instructor-registry: venv ## Instructor: a registry repository per attendee (ACCOUNTS="alice=alice@example.com ..."), immutable tags, writer only there
	$(INSTRUCTOR) registry --project "$(PROJECT)" --location $(REGISTRY_LOCATION) --node_service_account "$(NODE_SA)" $(ACCOUNTS)

.PHONY: instructor-pin-images
instructor-pin-images: venv ## Instructor, the day before, where the registries are reachable: the digests of the upstream images, into pinned-images.yaml
	$(INSTRUCTOR) pin-images --pins $(PINNED_IMAGES)

.PHONY: instructor-preflight
instructor-preflight: venv ## Instructor, the day before: one table of pinned images, cloud APIs, CPU quota, operator, Katib and every kubeconfig's rights
	$(INSTRUCTOR) preflight --pins $(PINNED_IMAGES) --project "$(PROJECT)" --machine_type "$(MACHINE_TYPE)" --kubeconfigs $(INSTRUCTOR_DIR) --sweep_parallel $(SWEEP_PARALLEL)$(RWX_FLAGS)
