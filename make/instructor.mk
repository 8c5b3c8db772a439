# The instructor's part: the cluster's operator, one namespace per attendee, and clean-up.
# Included by the Makefile; `make help` lists the targets.

# The instructor's part: attendees (namespace names), where their files go, token lifetime.
ATTENDEES      ?=
INSTRUCTOR_DIR ?= $(RUNS)/instructor
TOKEN_DURATION ?= 24h
# The Kubeflow training operator v1.9 (the last line that runs TFJobs), its newest
# patch. The repository was kubeflow/training-operator until 2025; GitHub redirects.
TRAINING_OPERATOR ?= github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=v1.9.4
# Katib v0.19.0, its standalone install (controller, DB, UI, webhooks in the namespace kubeflow).
KATIB ?= github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=v0.19.0

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

.PHONY: instructor-katib
instructor-katib: check-cluster venv ## Instructor, once per cluster, after instructor-operator: install Katib v0.19; with ATTENDEES, give them Katib
	@kubectl get crd tfjobs.kubeflow.org >/dev/null 2>&1 || { echo "error: no TFJob CRD: install the training operator first (make instructor-operator); Katib watches TFJobs only if their CRD exists when it starts" >&2; exit 1; }
	kubectl apply -k "$(KATIB)"
	@for d in katib-mysql katib-db-manager katib-controller katib-ui; do \
	  kubectl --namespace kubeflow rollout status deployment/$$d --timeout=10m || exit 1; done
	kubectl get crd experiments.kubeflow.org trials.kubeflow.org suggestions.kubeflow.org
	$(if $(ATTENDEES),$(PYTHON) src/katib_access.py --output_dir $(INSTRUCTOR_DIR) $(ATTENDEES))
	@for a in $(ATTENDEES); do \
	  kubectl get namespace $$a >/dev/null || { echo "error: no namespace $$a: make instructor-namespaces ATTENDEES=$$a first" >&2; exit 1; }; \
	  kubectl apply --server-side --field-manager instructor-katib -f $(INSTRUCTOR_DIR)/$$a-katib.yaml || exit 1; \
	done
