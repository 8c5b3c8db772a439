"""The rehearsal the day before (`make instructor-preflight`): one table, a row per check, against the real
project and cluster, and a non-zero exit when any row failed.

    python src/instructor.py preflight --project P --kubeconfigs runs/instructor

- every pinned image resolves to a digest in its registry (`crane digest`, or `docker manifest inspect
  --verbose` without crane), the digest it is pinned to: the trainer's base (src/Dockerfile), TensorFlow
  Serving (kube/serving.yaml) and the NFS server (namespaces.NFS_IMAGE) at the digests of pinned-images.yaml,
  Katib's Deployments when Katib is installed;
- the cloud APIs the workshop uses are enabled (`gcloud services list --enabled`), and the region's CPU
  quota holds the plan's nodes (`gcloud compute regions describe`);
- the training operator (its CRD, its Deployment ready) and, if installed, Katib and Argo Workflows (its
  controller ready, the workshop's workflow-controller-configmap in place, its images resolved) (kubectl);
- for every <name>.kubeconfig, the rights it has (`kubectl auth can-i --list` with that kubeconfig) in its
  own namespace against what the labs need (the Roles of namespace.yaml.j2 and katib.yaml.j2) and what
  it must never have, and that it has none in another namespace.

Each failing row says what to fix.

    python src/instructor.py pin-images     # the digests of pinned-images.yaml, resolved and written there
"""
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tfk8s.cli import UserError
from tfk8s.instructor import argo, katib, namespaces, plan, tools
from tfk8s.kube import pins, render
from tfk8s.paths import KUBE, REPO

OK, FAIL, SKIP = "ok", "FAIL", "-"
APIS = ("container.googleapis.com", "compute.googleapis.com", "artifactregistry.googleapis.com")
FILESTORE_API = "file.googleapis.com"
# What an attendee must never be able to do in their namespace, whatever else they were given: read
# credentials, run commands in pods, give themselves rights, open the network policy, change their quota,
# limits or their namespace's Pod Security labels, or mint tokens.
NEVER = (("secrets", "get"), ("secrets", "list"), ("pods/exec", "create"), ("pods/attach", "create"),
         ("roles.rbac.authorization.k8s.io", "create"), ("rolebindings.rbac.authorization.k8s.io", "create"),
         ("networkpolicies.networking.k8s.io", "delete"), ("networkpolicies.networking.k8s.io", "create"),
         ("resourcequotas", "update"), ("limitranges", "delete"), ("namespaces", "patch"),
         ("serviceaccounts/token", "create"), ("persistentvolumes", "create"), ("nodes", "get"),
         ("workflows.argoproj.io", "create"), ("workflowtaskresults.argoproj.io", "create"))
# What every identity may do anywhere (system:basic-user, system:public-info-viewer, discovery).
EVERYONE = {"selfsubjectaccessreviews.authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io"}
OTHER_NAMESPACE = plan.STORAGE_NAMESPACE


@dataclass
class Row:
    check: str
    result: str
    detail: str


# ---------------------------------------------------------------- images

def dockerfile_base():
    """The image src/Dockerfile's first FROM starts from, its build arguments' defaults filled in (FROM ${BASE})."""
    defaults = {}
    for line in (REPO / "src" / "Dockerfile").read_text().splitlines():
        if line.startswith("ARG ") and "=" in line:
            name, _, value = line[4:].strip().partition("=")
            defaults[name] = value
        if line.startswith("FROM "):
            image = line.split()[1]
            return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)
    raise UserError("src/Dockerfile has no FROM line")


def serving_image():
    """The image kube/serving.yaml names (its tag: the digest is in pinned-images.yaml)."""
    return next(c["image"] for d in render.load([KUBE / "serving.yaml"]) if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"])


def pinned_images(rwx_storage_class=None, the_pins=None):
    """[(what, image reference as the nodes pull it)] of every image the workshop pins, but Katib's: the serving
    and NFS images by the digest pinned-images.yaml (or `the_pins`) records, their tag while it has none."""
    the_pins = pins.read() if the_pins is None else the_pins
    found = [("trainer base (src/Dockerfile)", dockerfile_base()),
             ("serving (kube/serving.yaml)", pins.pinned(serving_image(), the_pins))]
    if not rwx_storage_class:
        found.append(("NFS server (namespaces.NFS_IMAGE)", pins.pinned(namespaces.NFS_IMAGE, the_pins)))
    return found


def resolve(reference):
    """(digest, None) or (None, why not) for an image reference, through crane or docker."""
    if tools.installed("crane"):
        result = tools.call("crane", "digest", reference)
        digest = result.stdout.strip()
        if result.returncode == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return digest, None
        return None, tools.complaint(result)
    if not tools.installed("docker"):
        return None, "neither crane nor docker is installed here: install one to resolve images"
    result = tools.call("docker", "manifest", "inspect", "--verbose", reference)
    if result.returncode != 0:
        return None, tools.complaint(result)
    try:
        found = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None, "docker manifest inspect did not answer JSON"
    # One manifest: its digest. A list (multi-platform): the linux/amd64 one, what GKE's nodes pull.
    entries = found if isinstance(found, list) else [found]
    for entry in entries:
        descriptor = entry.get("Descriptor") or {}
        platform = descriptor.get("platform") or {}
        if len(entries) == 1 or (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
            return descriptor.get("digest"), None
    return None, "no linux/amd64 image in its manifest list"


def image_row(what, reference, fix=None):
    """The row of one image: it resolves, and to the digest it is pinned to; `fix` says how to pin a tag."""
    digest, why = resolve(reference)
    if digest is None:
        return Row(f"image: {what}", FAIL, f"{reference}: {why}: pin a version that exists in its registry")
    pinned = reference.partition("@")[2]
    if pinned and pinned != digest:
        return Row(f"image: {what}", FAIL, f"{reference} resolves to {digest}: the pin names another image")
    if pinned:
        return Row(f"image: {what}", OK, f"{reference}")
    return Row(f"image: {what}", OK, f"{reference} is {digest} (the tag only is pinned: "
                                     f"{fix or f'pin {reference}@{digest}'})")


def pin_images(path=pins.PINS):
    """`make instructor-pin-images`: every image of pinned-images.yaml resolved to its digest in its registry and
    written there (the file replaced at once); one table. An image that does not resolve is one line naming it,
    and the file is left as it was."""
    before = pins.read(path)
    if not (tools.installed("crane") or tools.installed("docker")):
        raise UserError(f"neither crane nor docker is installed here: install one to resolve the images of {path}")
    digests, failed = {}, []
    for pin in before:
        digest, why = resolve(pin.reference)
        if digest is None or not pins.DIGEST.fullmatch(digest):
            failed.append(f"{pin.what}: {pin.reference}: {why or f'answered {digest!r}, not a digest'}")
        else:
            digests[pin.reference] = digest
    if failed:
        raise UserError(f"{'; '.join(failed)}: pin a version that exists in its registry ({path} is unchanged)")
    after = pins.with_digests(before, digests)
    pins.write(after, path)
    print(table([Row(f"image: {new.what}", OK, new.pinned() + (f" (was {old.digest})" if old.digest and
                                                               old.digest != new.digest else ""))
                 for old, new in zip(before, after, strict=True)]))
    print(f"{len(after)} images pinned by digest in {path}")


# ---------------------------------------------------------------- the cloud project

def api_rows(project, rwx_storage_class=None):
    result = tools.call("gcloud", "services", "list", "--enabled", "--project", project,
                        "--format=value(config.name)")
    needed = APIS + ((FILESTORE_API,) if rwx_storage_class else ())
    if result.returncode != 0:
        return [Row("cloud APIs", FAIL, f"gcloud services list: {tools.complaint(result)}: gcloud auth login, "
                                        f"and check the project {project}")]
    enabled = set(result.stdout.split())
    return [Row(f"API {api}", OK, "enabled") if api in enabled else
            Row(f"API {api}", FAIL, f"not enabled: gcloud services enable {api} --project {project}")
            for api in needed]


def quota_row(project, the_plan):
    region, metric = the_plan.region, the_plan.machine.quota_metric
    need = the_plan.nodes * the_plan.machine.vcpus
    result = tools.call("gcloud", "compute", "regions", "describe", region, "--project", project, "--format=json")
    if result.returncode != 0:
        return Row(f"CPU quota {metric} in {region}", FAIL, f"gcloud compute regions describe: "
                                                             f"{tools.complaint(result)}")
    try:
        quotas = {q["metric"]: q for q in json.loads(result.stdout).get("quotas", [])}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return Row(f"CPU quota {metric} in {region}", FAIL, "gcloud compute regions describe did not answer "
                                                             "the quotas as JSON")
    if metric not in quotas:
        return Row(f"CPU quota {metric} in {region}", FAIL, f"the region reports no quota {metric}")
    limit, usage = quotas[metric].get("limit", 0), quotas[metric].get("usage", 0)
    detail = (f"limit {limit:g}, in use {usage:g}; the plan needs {need} ({the_plan.nodes} x "
              f"{the_plan.machine.name})")
    if limit < need:
        return Row(f"CPU quota {metric} in {region}", FAIL, f"{detail}: ask for {need} {metric} in {region} "
                                                             "(IAM & Admin > Quotas) before the day")
    return Row(f"CPU quota {metric} in {region}", OK, detail)


# ---------------------------------------------------------------- the cluster

def kubectl(*args, kubeconfig=None):
    return tools.call("kubectl", *(["--kubeconfig", kubeconfig] if kubeconfig else []), *args)


def deployment_ready(namespace, name):
    """None when ready, else why not."""
    result = kubectl("--namespace", namespace, "get", "deployment", name, "--output", "json")
    if result.returncode != 0:
        return tools.complaint(result)
    status = json.loads(result.stdout).get("status") or {}
    wanted, ready = status.get("replicas", 0), status.get("readyReplicas", 0)
    return None if wanted and ready >= wanted else f"{ready} of {wanted} replicas ready"


def has_crd(name):
    return kubectl("get", "crd", name, "--output", "name").returncode == 0


def operator_row():
    if not has_crd("tfjobs.kubeflow.org"):
        return Row("training operator", FAIL, "no TFJob CRD: make instructor-operator")
    why = deployment_ready("kubeflow", "training-operator")
    if why:
        return Row("training operator", FAIL, f"deployment/training-operator: {why}: kubectl --namespace "
                                              "kubeflow describe deployment training-operator")
    return Row("training operator", OK, "CRD tfjobs.kubeflow.org, deployment/training-operator ready")


@cache
def katib_installed():
    return has_crd("experiments.kubeflow.org")


def katib_rows():
    """Katib's Deployments ready, and their images resolved; one row that it is not installed otherwise."""
    if not katib_installed():
        return [Row("Katib", SKIP, "not installed (optional: make instructor-katib)")]
    rows, images = [], []
    for name in katib.DEPLOYMENTS:
        why = deployment_ready("kubeflow", name)
        rows.append(Row(f"Katib {name}", FAIL, f"{why}: kubectl --namespace kubeflow describe deployment {name}")
                    if why else Row(f"Katib {name}", OK, "ready"))
        result = kubectl("--namespace", "kubeflow", "get", "deployment", name, "--output", "json")
        if result.returncode == 0:
            spec = json.loads(result.stdout)["spec"]["template"]["spec"]
            images += [(f"Katib {name}", c["image"]) for c in spec.get("containers", [])]
    return rows + [image_row(what, image) for what, image in images]


def argo_rows():
    """Argo's controller ready, the workshop's workflow-controller-configmap in place, the images of both
    resolved; one row that it is not installed otherwise."""
    if not has_crd("workflows.argoproj.io"):
        return [Row("Argo Workflows", SKIP, "not installed (notebook pipelines: make instructor-argo)")]
    why = deployment_ready(argo.NAMESPACE, argo.CONTROLLER)
    rows = [Row(f"Argo {argo.CONTROLLER}", FAIL, f"{why}: kubectl --namespace {argo.NAMESPACE} describe "
                                                 f"deployment {argo.CONTROLLER}") if why else
            Row(f"Argo {argo.CONTROLLER}", OK, "ready")]
    result = kubectl("--namespace", argo.NAMESPACE, "get", "configmap", "workflow-controller-configmap",
                     "--output", "json")
    found = None
    if result.returncode == 0:
        found = {k: yaml.safe_load(v) for k, v in (json.loads(result.stdout).get("data") or {}).items()}
    if found == argo.config():
        rows.append(Row("Argo config", OK, "workflow-controller-configmap is the workshop's (restricted executor, "
                                           "clean-up)"))
    else:
        rows.append(Row("Argo config", FAIL, "workflow-controller-configmap is not the workshop's: step pods would "
                                             "be refused under restricted or never cleaned up: make instructor-argo"))
    images = [("Argo executor", argo.config()["executor"]["image"])]
    result = kubectl("--namespace", argo.NAMESPACE, "get", "deployment", argo.CONTROLLER, "--output", "json")
    if result.returncode == 0:
        spec = json.loads(result.stdout)["spec"]["template"]["spec"]
        images += [(f"Argo {argo.CONTROLLER}", c["image"]) for c in spec.get("containers", [])]
    return rows + [image_row(what, image) for what, image in images]


# ---------------------------------------------------------------- what each kubeconfig may do

@cache
def role_rules(name):
    """The rules the attendee's Roles grant (namespace.yaml.j2, and katib.yaml.j2 where Katib runs)."""
    texts = [namespaces.render_namespace(name)] + ([katib.render(name)] if katib_installed() else [])
    return [rule for text in texts for doc in yaml.safe_load_all(text)
            if doc and doc["kind"] == "Role" for rule in doc["rules"]]


@cache
def needed(name):
    """{(resource[.group], verb)} the labs need in the attendee's namespace."""
    return {(f"{res}.{group}" if group else res, verb) for rule in role_rules(name)
            for group in rule["apiGroups"] for res in rule["resources"] for verb in rule["verbs"]}


def parse_list(text):
    """`kubectl auth can-i --list` as {resource: {verbs}} (non-resource URLs left out)."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("Resources")), None)
    if header is None:
        raise ValueError("no table")
    starts = [lines[header].index(column) for column in ("Non-Resource URLs", "Resource Names", "Verbs")]
    found = {}
    for line in lines[header + 1:]:
        resource = line[:starts[0]].strip()
        verbs = line[starts[2]:].strip().strip("[]").split()
        if resource:
            found.setdefault(resource, set()).update(verbs)
    return found


def allowed(granted, resource, verb):
    verbs = granted.get(resource, set()) | granted.get("*.*", set()) | granted.get("*", set())
    return verb in verbs or "*" in verbs


def rights(kubeconfig, namespace):
    result = kubectl("auth", "can-i", "--list", "--namespace", namespace, kubeconfig=kubeconfig)
    if result.returncode != 0:
        return None, tools.complaint(result)
    try:
        return parse_list(result.stdout), None
    except ValueError:
        return None, "kubectl auth can-i --list printed no table"


def kubeconfig_row(path):
    name = path.name.removesuffix(".kubeconfig")
    check = f"kubeconfig {path.name}"
    granted, why = rights(path, name)
    if granted is None:
        return Row(check, FAIL, f"{why}: make instructor-kubeconfigs ATTENDEES={name} (a fresh token)")
    missing = sorted(f"{verb} {res}" for res, verb in needed(name) if not allowed(granted, res, verb))
    extra = sorted(f"{verb} {res}" for res, verb in NEVER if allowed(granted, res, verb))
    elsewhere, why = rights(path, OTHER_NAMESPACE)
    if elsewhere is None:
        return Row(check, FAIL, f"namespace {OTHER_NAMESPACE}: {why}")
    outside = sorted(res for res in elsewhere if res not in EVERYONE)
    problems = []
    if missing:
        katib_too = f" and make instructor-katib ATTENDEES={name}" if katib_installed() else ""
        problems.append(f"may not {', '.join(missing)} (the labs need it: make instructor-namespaces "
                        f"ATTENDEES={name}{katib_too})")
    if extra:
        problems.append(f"MAY {', '.join(extra)} (never: find the binding with kubectl get rolebindings,"
                        f"clusterrolebindings -A -o wide | grep {name})")
    if outside:
        problems.append(f"has rights in namespace {OTHER_NAMESPACE} ({', '.join(outside)}): remove that binding")
    if problems:
        return Row(check, FAIL, "; ".join(problems))
    return Row(check, OK, f"{len(needed(name))} rights the labs need, none of the {len(NEVER)} it must never "
                          f"have, nothing in {OTHER_NAMESPACE}")


# ---------------------------------------------------------------- the table

def table(rows):
    width = max(len(r.check) for r in rows)
    return "\n".join([f"{'check':<{width}}  {'result':<6}  detail"]
                     + [f"{r.check:<{width}}  {r.result:<6}  {r.detail}" for r in rows])


def kubeconfigs(directory):
    return sorted(Path(directory).glob("*.kubeconfig"))


def checks(project, kubeconfig_dir, attendees=None, machine_type=plan.MACHINE_TYPE, zone="europe-west1-b",
           sweep_parallel=plan.SWEEP_PARALLEL, rwx_storage_class=None, rwx_size="1Ti", pins_path=pins.PINS):
    """Every row, in order."""
    files = kubeconfigs(kubeconfig_dir)
    count = attendees or len(files)
    if not count:
        raise UserError(f"no <name>.kubeconfig in {kubeconfig_dir} (make instructor-namespaces first), "
                        "or say how many attendees to plan for with --attendees")
    the_plan = plan.make_plan(count, machine_type, sweep_parallel, rwx_storage_class, rwx_size or "1Ti",
                              zone=zone)
    the_pins = pins.read(pins_path)
    fix = f"{pins.COMMAND} pins it in {Path(pins_path).name}"
    rows = [image_row(what, ref, fix if ref in {p.reference for p in the_pins} else None)
            for what, ref in pinned_images(rwx_storage_class, the_pins)]
    rows += api_rows(project, rwx_storage_class)
    rows.append(quota_row(project, the_plan))
    rows.append(operator_row())
    rows += katib_rows()
    rows += argo_rows()
    rows += [kubeconfig_row(path) for path in files] or [
        Row("kubeconfigs", FAIL, f"none in {kubeconfig_dir}: make instructor-namespaces ATTENDEES=...")]
    return rows


def main(args, storage):
    if not tools.installed("kubectl"):
        raise UserError("kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/")
    if not tools.installed("gcloud"):
        raise UserError("gcloud is not installed: see https://cloud.google.com/sdk/docs/install")
    rows = checks(args.project, args.kubeconfigs, args.attendees, args.machine_type, args.zone, **storage,
                  pins_path=args.pins)
    print(table(rows))
    failed = [r.check for r in rows if r.result == FAIL]
    if failed:
        raise UserError(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}")
    print(f"all {len(rows)} checks passed")
