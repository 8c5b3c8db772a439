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
import os
from pathlib import Path

import yaml

from tfk8s.instructor import namespaces
from tfk8s.kube import kubectl, pins
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
# The controller's image, as the kustomization's `images` names it. Both are pulled by the digests of
# pinned-images.yaml once `make instructor-pin-images` resolved them, by their tags until then (one warning).
CONTROLLER_IMAGE = f"quay.io/argoproj/workflow-controller:{VERSION}"
EXECUTOR_USER = 8737
# Each of a step pod's init and wait containers: docs/workflow-controller-configmap.yaml's example sizes (v4.1.2),
# and the node's disk as the LimitRange's default for a container (namespaces.CONTAINER).
EXECUTOR_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}}
# A finished pipeline (its Workflow, pods and logs) is kept this long, then deleted (ttlStrategy).
TTL_SECONDS = 7200
# A succeeded pipeline's pods are deleted this long after it finished (podGC OnWorkflowSuccess).
POD_GC_DELAY = "10m"


def config_text(the_pins=None):
    """The workshop's workflow-controller-configmap (templated/instructor/argo-config.yaml.j2), the executor's
    image by the digest of `the_pins` (default: pinned-images.yaml's), its tag while it has none."""
    the_pins = pins.read() if the_pins is None else the_pins
    return namespaces.ENVIRONMENT.get_template("argo-config.yaml.j2").render(
        executor_image=pins.pinned(EXECUTOR_IMAGE, the_pins), executor_user=EXECUTOR_USER,
        executor_resources=EXECUTOR_RESOURCES, ttl_seconds=TTL_SECONDS, pod_gc_delay=POD_GC_DELAY)


def config(text=None):
    """The controller's configuration as it reads it (config/config.go, v4.1.2): each key of the ConfigMap's
    data parsed as YAML; the workshop's by default, or that of the ConfigMap `text`."""
    data = yaml.safe_load(config_text() if text is None else text)["data"]
    return {key: yaml.safe_load(value) for key, value in data.items()}


def overlay(manifests, the_pins, directory):
    """A kustomization, to be written in `directory`, over `manifests` that sets the controller's image to the
    digest of `the_pins`; None while the pins have no digest for it (the manifests' tag is pulled then). A local
    base is named relative to `directory`: kustomize refuses an absolute one."""
    pinned = pins.pinned(CONTROLLER_IMAGE, the_pins)
    if "@" not in pinned:
        return None
    name, digest = CONTROLLER_IMAGE.rpartition(":")[0], pinned.partition("@")[2]
    base = str(manifests) if "://" in str(manifests) else os.path.relpath(Path(manifests).resolve(),
                                                                           Path(directory).resolve())
    return yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                           "resources": [base], "images": [{"name": name, "digest": digest}]}, sort_keys=False)


def install(out, manifests=KUSTOMIZATION, pins_path=pins.PINS):
    """Install Argo's controller and the workshop's configmap, Argo's images by their pinned digests; only render
    without a cluster."""
    the_pins = pins.read(pins_path)
    pins.warn(pins.unpinned([CONTROLLER_IMAGE, EXECUTOR_IMAGE], the_pins), pins_path)
    files = {"argo-config.yaml": config_text(the_pins)}
    pinned = overlay(manifests, the_pins, Path(out) / "argo")
    if pinned is not None:
        files["argo/kustomization.yaml"] = pinned
        manifests = Path(out) / "argo"
    namespaces.write_files(files, out)
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
