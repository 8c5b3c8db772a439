# The instructor's part: the cluster's operator, one namespace per attendee, and clean-up.
# Included by the Makefile; `make help` lists the targets.

# The instructor's part: attendees (namespace names), where their files go, token lifetime.
ATTENDEES      ?=
INSTRUCTOR_DIR ?= $(RUNS)/instructor
TOKEN_DURATION ?= 24h
# The Kubeflow training operator v1.9 (the last line that runs TFJobs), its newest
# patch. The repository was kubeflow/training-operator until 2025; GitHub redirects.
TRAINING_OPERATOR ?= github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=v1.9.4

.PHONY: instructor-operator
instructor-operator: check-cluster ## Instructor, once per cluster: install the Kubeflow training operator v1.9
	kubectl apply --server-side -k "$(TRAINING_OPERATOR)"
	kubectl --namespace kubeflow rollout status deployment/training-operator --timeout=5m
	kubectl get crd tfjobs.kubeflow.org

.PHONY: instructor-namespaces
instructor-namespaces: venv ## Instructor: per attendee a namespace, quota, role, storage and kubeconfig (ATTENDEES="alice bob")
	@[ -n "$(ATTENDEES)" ] || { echo 'error: name the attendees: make instructor-namespaces ATTENDEES="alice bob"' >&2; exit 2; }
	$(PYTHON) src/instructor.py --out $(INSTRUCTOR_DIR)$(if $(RWX_CLASS), --rwx-storage-class $(RWX_CLASS)) $(ATTENDEES)
	@if ! command -v kubectl >/dev/null 2>&1 || ! kubectl config current-context >/dev/null 2>&1; then \
	  echo "no cluster in kubectl's context: rendered only. Apply: kubectl apply -f $(INSTRUCTOR_DIR)/<name>.yaml"; exit 0; fi; \
	for a in $(ATTENDEES); do \
	  kubectl apply -f $(INSTRUCTOR_DIR)/$$a.yaml || exit 1; \
	  $(MAKE) --no-print-directory storage NAMESPACE=$$a || exit 1; \
	done; \
	$(PYTHON) src/instructor.py --out $(INSTRUCTOR_DIR) --kubeconfigs --duration $(TOKEN_DURATION) $(ATTENDEES)

.PHONY: instructor-clean
instructor-clean: check-cluster ## Instructor: delete the attendees' namespaces and volumes, with all they hold (ATTENDEES=...)
	@[ -n "$(ATTENDEES)" ] || { echo 'error: name the attendees: make instructor-clean ATTENDEES="alice bob"' >&2; exit 2; }
	for a in $(ATTENDEES); do \
	  kubectl delete namespace $$a --ignore-not-found && kubectl delete persistentvolume mnist-nfs-$$a --ignore-not-found || exit 1; \
	done
