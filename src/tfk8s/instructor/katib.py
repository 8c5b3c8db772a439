"""Katib for the workshop (`make instructor-katib`): install it once per cluster, then give attendees access.

    python src/instructor.py katib --output_dir runs/instructor alice bob

Katib's controller watches TFJobs only if their CRD exists when it starts, so
the training operator must be there first (one line otherwise). Then Katib's
standalone manifests, pinned, and the label that puts Katib's pod webhook over its
own namespace taken off again (the webhook would refuse katib-controller's own
next pod); the workshop's katib-config over the stock one
(templated/instructor/katib-config.yaml.j2: what Katib builds in an attendee's
namespace passes Pod Security `restricted`, it watches TFJobs only) and
katib-controller restarted to read it; the workshop's admission policies
(templated/instructor/admission.yaml.j2: an attendee's trials are inline TFJobs); its
four Deployments rolled out; and per
attendee templated/instructor/katib.yaml.j2, rendered to
<output_dir>/<name>-katib.yaml and applied server-side with a field manager of
its own: the namespace label Katib's webhooks need (the namespace's other
labels stay as they are), the Role attendee-katib and the two NetworkPolicies
Katib's connections need. Without a cluster in
kubectl's context it only renders the files.
"""
from tfk8s.cli import UserError
from tfk8s.instructor import namespaces
from tfk8s.kube import cluster_model, katib_check, kubectl
from tfk8s.sweep.katib import ALGORITHMS

# Katib v0.19.0, its standalone install (controller, DB, UI, webhooks in the namespace kubeflow).
STANDALONE = "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=v0.19.0"
DEPLOYMENTS = ("katib-mysql", "katib-db-manager", "katib-controller", "katib-ui")
CRDS = ("experiments.kubeflow.org", "trials.kubeflow.org", "suggestions.kubeflow.org")
FIELD_MANAGER = "instructor-katib"
# The suggestion images have no USER (their Dockerfiles, cmd/suggestion/*/v1beta1, v0.19.0): run them as nobody.
SUGGESTION_USER = 65534


def config_text():
    """The workshop's katib-config ConfigMap (the KatibConfig under data.katib-config.yaml)."""
    stock = cluster_model.STANDALONE_CONFIG["runtime"]
    algorithms = [a for a in stock["suggestions"] if a["algorithmName"] in ALGORITHMS]
    return namespaces.ENVIRONMENT.get_template("katib-config.yaml.j2").render(
        algorithms=algorithms, collectors=stock["metricsCollectors"], suggestion_user=SUGGESTION_USER)


render_admission = namespaces.render_admission  # applied again here: Katib's Experiments are what one of them checks


def render(namespace):
    """The YAML that lets the attendee of `namespace` run Katib Experiments there."""
    return namespaces.ENVIRONMENT.get_template("katib.yaml.j2").render(namespace=namespace)


def install(names, out, manifests=STANDALONE):
    """Install Katib (after the training operator), then each attendee's access; only render without a cluster."""
    files = {f"{name}-katib.yaml": render(name) for name in names}
    namespaces.write_files({**files, "katib-config.yaml": config_text(), "admission.yaml": render_admission()}, out)
    if not kubectl.has_context():
        print(f"no cluster in kubectl's context: rendered only. Apply: kubectl apply --server-side "
              f"--field-manager {FIELD_MANAGER} -f {out}/<name>-katib.yaml")
        return
    if kubectl.get_optional("crd", "tfjobs.kubeflow.org") is None:
        raise UserError("no TFJob CRD: install the training operator first (make instructor-operator); Katib "
                        "watches TFJobs only if their CRD exists when it starts")
    print(kubectl.run("apply", "-k", manifests, timeout=600).strip())
    # The standalone install labels its own namespace for Katib's pod webhook (v0.19.0,
    # manifests/v1beta1/components/namespace/namespace.yaml), which fails closed (webhooks.yaml: no failurePolicy,
    # so Fail) and exempts only katib-controller's own requests. A katib-controller pod made by its ReplicaSet
    # (the first one, if the webhook is registered first; the one after an eviction, a node drain, the down-resize,
    # a GKE upgrade) would be refused, with nothing left to answer the webhook, and then every pod in kubeflow and
    # in every attendee namespace. Nobody runs Experiments in kubeflow: the label goes, after every apply -k.
    print(kubectl.run("label", "namespace", "kubeflow", f"{katib_check.NAMESPACE_LABEL[0]}-").strip())
    print(kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager", FIELD_MANAGER,
                      "-f", out / "katib-config.yaml").strip())
    print(kubectl.run("apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", out / "admission.yaml").strip())
    # katib-controller reads init.controller (injectSecurityContext, trialResources) only when it starts.
    print(kubectl.run("--namespace", "kubeflow", "rollout", "restart", "deployment/katib-controller").strip())
    for deployment in DEPLOYMENTS:
        print(kubectl.run("--namespace", "kubeflow", "rollout", "status", f"deployment/{deployment}",
                          "--timeout=10m", timeout=630).strip())
    print(kubectl.run("get", "crd", *CRDS).strip())
    for name, file in zip(names, files, strict=True):
        if kubectl.get_optional("namespace", name) is None:
            raise UserError(f"no namespace {name}: make instructor-namespaces ATTENDEES={name} first")
        print(kubectl.run("apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", out / file).strip())
