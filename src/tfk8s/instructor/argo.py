"""Argo Workflows for the workshop's notebook pipelines (`make instructor-argo`): install it once per cluster.

    python src/instructor.py argo --output_dir runs/instructor

Argo Workflows v4.1.2 from its own manifests at the tag (templated/instructor/argo/kustomization.yaml: the CRDs,
the workflow controller and its RBAC; not argo-server), applied server-side (the full CRDs are too large for a
client-side apply's annotation); then the workshop's workflow-controller-configmap
(templated/instructor/argo-config.yaml.j2: Argo's executor meets Pod Security `restricted`, finished pipelines are
cleaned up), the controller restarted to read it and rolled out. What each attendee needs (the accounts notebook
and pipeline-executor, their Roles, JupyterLab, the NetworkPolicies) comes with their namespace
(`make instructor-namespaces`, templated/instructor/notebook.yaml.j2). Without a cluster in kubectl's context it
only renders the configmap.
"""
import yaml

from tfk8s.instructor import namespaces
from tfk8s.kube import kubectl
from tfk8s.paths import TEMPLATED

VERSION = "v4.1.2"
KUSTOMIZATION = TEMPLATED / "instructor" / "argo"
NAMESPACE = "argo"
CONTROLLER = "workflow-controller"
CRDS = ("workflows.argoproj.io", "workflowtaskresults.argoproj.io")
FIELD_MANAGER = "instructor-argo"
# The executor's image: argoexec's nonroot build, user 8737 (v4.1.2 Dockerfile, target argoexec-nonroot, published
# as quay.io/argoproj/argoexec:<version>-nonroot by .github/workflows/release.yaml;
# docs/workflow-pod-security-context.md).
EXECUTOR_IMAGE = f"quay.io/argoproj/argoexec:{VERSION}-nonroot"
EXECUTOR_USER = 8737
# Each of a step pod's init and wait containers: docs/workflow-controller-configmap.yaml's example sizes (v4.1.2),
# and the node's disk as the LimitRange's default for a container (namespaces.CONTAINER).
EXECUTOR_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}}
# A finished pipeline (its Workflow, pods and logs) is kept this long, then deleted (ttlStrategy).
TTL_SECONDS = 7200
# A succeeded pipeline's pods are deleted this long after it finished (podGC OnWorkflowSuccess).
POD_GC_DELAY = "10m"


def config_text():
    """The workshop's workflow-controller-configmap (templated/instructor/argo-config.yaml.j2)."""
    return namespaces.ENVIRONMENT.get_template("argo-config.yaml.j2").render(
        executor_image=EXECUTOR_IMAGE, executor_user=EXECUTOR_USER, executor_resources=EXECUTOR_RESOURCES,
        ttl_seconds=TTL_SECONDS, pod_gc_delay=POD_GC_DELAY)


def config(text=None):
    """The controller's configuration as it reads it (config/config.go, v4.1.2): each key of the ConfigMap's
    data parsed as YAML; the workshop's by default, or that of the ConfigMap `text`."""
    data = yaml.safe_load(config_text() if text is None else text)["data"]
    return {key: yaml.safe_load(value) for key, value in data.items()}


def install(out, manifests=KUSTOMIZATION):
    """Install Argo's controller and the workshop's configmap; only render without a cluster."""
    namespaces.write_files({"argo-config.yaml": config_text()}, out)
    if not kubectl.has_context():
        print(f"no cluster in kubectl's context: rendered only. Apply: kubectl apply --server-side -k {manifests}"
              f" && kubectl apply --server-side --force-conflicts -f {out}/argo-config.yaml")
        return
    print(kubectl.run("apply", "--server-side", "--force-conflicts", "-k", manifests, timeout=600).strip())
    print(kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager", FIELD_MANAGER,
                      "-f", out / "argo-config.yaml").strip())
    print(kubectl.run("--namespace", NAMESPACE, "rollout", "restart", f"deployment/{CONTROLLER}").strip())
    print(kubectl.run("--namespace", NAMESPACE, "rollout", "status", f"deployment/{CONTROLLER}",
                      "--timeout=10m", timeout=630).strip())
    print(kubectl.run("get", "crd", *CRDS).strip())
