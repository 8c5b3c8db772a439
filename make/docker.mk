# Containers here: the trainer image built and run on this machine (a Docker engine: make/docker.sh start).
# Included by the Makefile; `make help` lists the targets.

# The image the pods run here: `make build` makes it (any IMAGE works here; nothing is pushed).
DOCKER_IMAGE     ?= $(IMAGE):$(TAG)
# Appended to every container's arguments: the shipped mini data and a few hundred steps (2 cores here).
DOCKER_RUN_FLAGS ?= --dataset mini --steps 300 --eval_every 100 --checkpoint_every 100
# Workers beside the Chief in tfjob-docker (kube/tfjob.yaml has 2; each container may use 2 CPUs).
DOCKER_WORKERS   ?= 1
DOCKER_RUN        = $(PYTHON) src/docker_run.py

.PHONY: job-docker
job-docker: venv ## kube/job.yaml's pod as a container of IMAGE:TAG (make build first): its user, read-only root, limits, mounts (runs/docker)
	rm -rf $(RUNS)/docker/mnist-train
	$(DOCKER_RUN) kube/job.yaml --image $(DOCKER_IMAGE) --root $(RUNS)/docker/mnist-train -- $(DOCKER_RUN_FLAGS)

.PHONY: tfjob-docker
tfjob-docker: venv ## kube/tfjob.yaml as containers: Chief + DOCKER_WORKERS Workers on one network, by the operator's Service names and TF_CONFIG
	rm -rf $(RUNS)/docker/mnist-tfjob
	$(DOCKER_RUN) kube/tfjob.yaml --image $(DOCKER_IMAGE) --replicas Worker=$(DOCKER_WORKERS) \
	  --root $(RUNS)/docker/mnist-tfjob -- $(DOCKER_RUN_FLAGS)

# The instructor's base: src/Dockerfile's `runtime` stage (Python, the dependencies, the full data), pushed
# once to BASE_REPO. Attendees build on it (BASE_IMAGE=<the printed reference>) and push only their code.
BASE_REPO ?= $(IMAGE)-base

.PHONY: instructor-base
instructor-base: check-image ## Instructor, once: build and push the base attendees build on (BASE_REPO:TAG); prints BASE_IMAGE, pinned by digest
	make/docker.sh build --platform $(PLATFORM) --target runtime -t $(BASE_REPO):$(TAG)
	docker push $(BASE_REPO):$(TAG)
	@mkdir -p $(RUNS)
	@docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' $(BASE_REPO):$(TAG) \
	  | grep -m1 '^$(BASE_REPO)@sha256:' > $(RUNS)/base-image
	@echo "attendees build on it with: export BASE_IMAGE=$$(cat $(RUNS)/base-image)   (also in $(RUNS)/base-image)"

# The attendees' JupyterLab: src/Dockerfile's `notebook` target (the trainer's image with JupyterLab, and the
# seed of their workspace), pushed once to NOTEBOOK_REPO. Every attendee's JupyterLab pod and every step of their
# pipelines runs it, by the digest recorded in $(RUNS)/notebook-image (NOTEBOOK_IMAGE for instructor-namespaces).
NOTEBOOK_REPO ?= $(IMAGE)-notebook

.PHONY: instructor-notebook
instructor-notebook: check-image ## Instructor, once: build and push the attendees' JupyterLab image (NOTEBOOK_REPO:TAG); prints NOTEBOOK_IMAGE, pinned by digest
	make/docker.sh build --platform $(PLATFORM) --target notebook -t $(NOTEBOOK_REPO):$(TAG)
	docker push $(NOTEBOOK_REPO):$(TAG)
	@ref=$$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' $(NOTEBOOK_REPO):$(TAG) \
	  | grep -m1 '^$(NOTEBOOK_REPO)@sha256:') \
	  || { echo "error: the push left no digest of $(NOTEBOOK_REPO):$(TAG): nothing recorded in $(RUNS)/notebook-image" >&2; exit 1; }; \
	  mkdir -p $(RUNS) && echo "$$ref" > $(RUNS)/notebook-image \
	  && echo "NOTEBOOK_IMAGE=$$ref   (recorded in $(RUNS)/notebook-image)"
