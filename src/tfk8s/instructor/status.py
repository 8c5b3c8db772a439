"""Where every attendee is, at a glance: one row per attendee namespace.

    python src/instructor.py status            # make instructor-status
    python src/instructor.py status --watch    # refreshed every 10 s until Ctrl-C

Built on one `kubectl get KIND --all-namespaces --output json` per kind
(namespaces, claims, pods, Jobs, TFJobs, Deployments, the model config
ConfigMaps, quotas), never one call per attendee: twenty attendees cost
the same eight calls as one. Columns:

    STORAGE   the claim mnist-nfs: Bound, or why not
    IMAGE     the trainer image on the attendee's pods: pulled, pulling, or the pull error
    JOB, TFJOB, PS  mnist-train, mnist-tfjob, mnist-tfjob-ps: their current state
    SERVING   mnist-serving's available/desired pods, and the versions its model config serves
    SWEEP     the sweep's TFJobs (label `sweep`): finished/total, failed ones counted
    LAB       JupyterLab's Deployment: available/desired pods
    PIPELINES the notebook pipelines' Workflows (Argo): finished/total, failed ones counted
    CPU, MEM, PODS  the quota workshop: used/hard
"""
import time
from datetime import UTC, datetime

from tfk8s.cli import UserError
from tfk8s.kube import kubectl, render
from tfk8s.kube.resources import cores, gib, millicores, whole
from tfk8s.paths import KUBE
from tfk8s.serving import model_config

ATTENDEE_LABEL = "mnist-workshop/attendee"
WORKSHOP = "app.kubernetes.io/part-of=mnist-workshop"
JOB, TFJOB, TFJOB_PS, SERVING = "mnist-train", "mnist-tfjob", "mnist-tfjob-ps", "mnist-serving"
MODEL_CONFIG = "mnist-model-config"
PULL_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
JUPYTERLAB = "jupyterlab"
COLUMNS = ("NAMESPACE", "STORAGE", "IMAGE", "JOB", "TFJOB", "PS", "SERVING", "SWEEP", "LAB", "PIPELINES", "CPU", "MEM",
           "PODS")


def trainer_containers():
    """The names of the containers that run the trainer image in kube/ (trainer, tensorflow, tensorboard, ...)."""
    names = set()
    for doc in render.load(sorted(KUBE.glob("*.yaml"))):
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if str(node.get("image", "")).startswith(render.TRAINER_IMAGE) and "name" in node:
                    names.add(node["name"])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return names


def by_namespace(objects):
    found = {}
    for obj in objects:
        found.setdefault(obj["metadata"].get("namespace"), []).append(obj)
    return found


def named(objects, name):
    return next((o for o in objects if o["metadata"]["name"] == name), None)


def tfjob_state(tfjob):
    """The TFJob's current state: its last condition that is true (Created, Running, Restarting, Succeeded...)."""
    if tfjob is None:
        return "-"
    true = [c["type"] for c in (tfjob.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    return true[-1] if true else "Pending"


def job_state(job):
    if job is None:
        return "-"
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return "Running" if status.get("active") else "Pending"


def image_state(pods, containers):
    """pulled, pulling, or the pull error of the trainer image on these pods ('-' without any)."""
    seen, errors = False, []
    for pod in pods:
        status = pod.get("status") or {}
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            if c.get("name") not in containers:
                continue
            reason = ((c.get("state") or {}).get("waiting") or {}).get("reason", "")
            if reason in PULL_ERRORS:
                errors.append(reason)
            elif c.get("imageID"):
                seen = True
    if errors:
        return errors[0]
    if seen:
        return "pulled"
    return "pulling" if any(c.get("name") in containers for p in pods
                            for c in (p.get("spec") or {}).get("containers", [])) else "-"


def serving_state(deployment, configmap):
    if deployment is None:
        return "-"
    status = deployment.get("status") or {}
    text = f"{status.get('availableReplicas', 0)}/{(deployment.get('spec') or {}).get('replicas', 1)}"
    if configmap is None:
        return text
    try:
        m = model_config.model(model_config.parse(configmap.get("data", {}).get(model_config.CONFIGMAP_KEY, "")))
    except UserError:
        return f"{text} (bad model config)"
    kind, value = model_config.version_policy(m)
    labels = ",".join(f"{k}={v}" for k, v in sorted(m.version_labels.items()))
    served = labels or (f"newest {value}" if kind == "latest" else "all" if kind == "all" else
                        ",".join(map(str, value)))
    return f"{text} {served}"


def sweep_state(tfjobs):
    trials = [t for t in tfjobs if "sweep" in (t["metadata"].get("labels") or {})]
    if not trials:
        return "-"
    states = [tfjob_state(t) for t in trials]
    failed = states.count("Failed")
    text = f"{states.count('Succeeded') + failed}/{len(trials)}"
    return f"{text} ({failed} failed)" if failed else text


def lab_state(deployment):
    if deployment is None:
        return "-"
    return f"{(deployment.get('status') or {}).get('availableReplicas', 0)}/{deployment['spec'].get('replicas', 1)}"


def pipelines_state(workflows):
    """finished/total of the Workflows (Argo's status.phase), the failed (Failed or Error) counted."""
    if not workflows:
        return "-"
    phases = [(w.get("status") or {}).get("phase", "Pending") for w in workflows]
    failed = sum(p in ("Failed", "Error") for p in phases)
    text = f"{phases.count('Succeeded') + failed}/{len(phases)}"
    return f"{text} ({failed} failed)" if failed else text


def quota_state(quotas):
    quota = named(quotas, "workshop")
    if quota is None:
        return "-", "-", "-"
    status = quota.get("status") or {}
    used, hard = status.get("used") or {}, status.get("hard") or {}
    return (f"{cores(millicores(used.get('requests.cpu', '0')))}/{cores(millicores(hard.get('requests.cpu', '0')))}",
            f"{gib(whole(used.get('requests.memory', '0')))}/{gib(whole(hard.get('requests.memory', '0')))}",
            f"{used.get('pods', '0')}/{hard.get('pods', '-')}")


def collect():
    """The rows: [[namespace, storage, image, ...]] for every attendee namespace, from one call per kind."""
    names = [n["metadata"]["name"] for n in kubectl.items("namespaces", "--selector", ATTENDEE_LABEL)]
    everywhere = ("--all-namespaces",)
    claims = by_namespace(kubectl.items("persistentvolumeclaims", *everywhere))
    pods = by_namespace(kubectl.items("pods", *everywhere, "--selector", WORKSHOP))
    jobs = by_namespace(kubectl.items("jobs", *everywhere, "--selector", WORKSHOP))
    try:
        tfjobs = by_namespace(kubectl.items("tfjobs", *everywhere))
        operator = True
    except UserError:  # no TFJob kind: the operator is not installed
        tfjobs, operator = {}, False
    deployments = by_namespace(kubectl.items("deployments", *everywhere, "--selector", WORKSHOP))
    configmaps = by_namespace(kubectl.items("configmaps", *everywhere, "--field-selector",
                                            f"metadata.name={MODEL_CONFIG}"))
    quotas = by_namespace(kubectl.items("resourcequotas", *everywhere))
    try:
        workflows = by_namespace(kubectl.items("workflows", *everywhere))
        argo = True
    except UserError:  # no Workflow kind: Argo is not installed
        workflows, argo = {}, False
    containers = trainer_containers()
    rows = []
    for name in sorted(names):
        claim = named(claims.get(name, []), render.CLAIM)
        mine = tfjobs.get(name, [])
        rows.append([name, (claim.get("status") or {}).get("phase", "?") if claim else "missing",
                     image_state(pods.get(name, []), containers), job_state(named(jobs.get(name, []), JOB)),
                     tfjob_state(named(mine, TFJOB)) if operator else "no operator",
                     tfjob_state(named(mine, TFJOB_PS)) if operator else "no operator",
                     serving_state(named(deployments.get(name, []), SERVING),
                                   named(configmaps.get(name, []), MODEL_CONFIG)),
                     sweep_state(mine), lab_state(named(deployments.get(name, []), JUPYTERLAB)),
                     pipelines_state(workflows.get(name, [])) if argo else "no Argo",
                     *quota_state(quotas.get(name, []))])
    return rows


def table(rows):
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [COLUMNS, *rows])


def render_table():
    rows = collect()
    return table(rows) if rows else f"no attendee namespace (label {ATTENDEE_LABEL}) on this cluster"


def show(watch=False, interval=10.0, out=print):
    """Print the table once, or every `interval` seconds until Ctrl-C with `watch` (which ends it quietly)."""
    if not watch:
        out(render_table())
        return
    try:
        while True:
            text = render_table()
            out(f"\033[H\033[2J{datetime.now(UTC):%H:%M:%S} UTC, every {interval:g} s (Ctrl-C stops)\n{text}")
            time.sleep(interval)
    except KeyboardInterrupt:
        return
