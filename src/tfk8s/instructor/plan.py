"""The workshop's capacity plan, computed from the manifests the attendees apply.

    python src/instructor.py plan --attendees 20 --machine_type e2-standard-8

For every step of the labs, the pods one attendee runs at once are summed as
the quota counts them (requests and limits of every container, init
containers as Kubernetes counts them): the standing pods (TensorBoard,
TensorFlow Serving at its autoscaler's maximum, since `make autoscale` may be
on at any step, and JupyterLab), plus the step's own pods: the Job, the TFJobs, the sweep's
SWEEP_PARALLEL trials (kube/tfjob.yaml with templated/values.yaml's Worker
count), Katib's busiest moment (its parallel trials, each Chief with Katib's metrics collector,
and the suggestion pod, as tfk8s.kube.cluster_model builds them from Katib's code), the retrain,
the batch Job, and a notebook pipeline's two steps side by side (each with Argo's init and wait containers, as
the cluster model builds them from Argo's code). The largest of each figure over the
steps is the attendee's ResourceQuota (templated/instructor/namespace.yaml.j2
gets it from here). Then the cluster: every attendee at a step at once, plus
the NFS servers of the storage namespace and the cluster's own add-ons,
packed first-fit onto nodes of the machine type after GKE's reservations and
the system DaemonSets; the node count is the largest over the steps and never
below what the attendees' quotas add up to. There is no gang scheduling: a
TFJob whose last pod finds no room holds the others' CPUs until its deadline,
so the cluster is sized for all of them at once.
"""
import math
import re
from dataclasses import dataclass

import yaml

from tfk8s.cli import UsageError
from tfk8s.kube import render
from tfk8s.kube.resources import (
    FIELDS,
    GI,
    MI,
    Usage,
    container_amount,
    cores,
    cpu_text,
    gib,
    memory_text,
    millicores,
    pod_usage,
    total,
    whole,
    workload_pods,
)
from tfk8s.paths import KUBE, TEMPLATED
from tfk8s.sweep import trials
from tfk8s.sweep import values as sweep_values

MACHINE_TYPE = "e2-standard-16"  # the docs' cluster (fewest nodes for the fewest vCPUs at 20 attendees)
SWEEP_PARALLEL = 2      # make/cluster.mk's default (tests/test_instructor.py keeps them equal)
NFS_DISK = "10Gi"       # each attendee's NFS server disk (templated/instructor/nfs-server.yaml.j2)
STORAGE_NAMESPACE = "workshop-storage"
# Filestore's storage classes on GKE and the smallest instance each makes: a claim asking for less is
# rounded up to it, and a quota counts only what the claim asks for. standard-rwx (basic HDD) starts at
# 100 GiB on recent GKE versions but at 1 TiB on older ones, and uses 1 TiB of Filestore quota either way.
FILESTORE_MINIMUM = {"standard-rwx": "1Ti", "premium-rwx": "2560Gi", "enterprise-rwx": "1Ti",
                     "zonal-rwx": "1Ti", "enterprise-multishare-rwx": "10Gi"}
# GKE runs DaemonSets on every node (anetd for Dataplane V2, fluentbit, metrics agent, the disk and
# Filestore CSI nodes, gke-metadata-server for Workload Identity, ...): about 0.4 vCPU and 0.6 GiB of
# requests; measure yours with `kubectl describe node` (Non-terminated Pods) and pass --daemonset_*.
DAEMONSETS = ("400m", "600Mi")
# Cluster-wide add-ons that land on some node: kube-dns (two replicas), and a budget for the rest
# (metrics-server, konnectivity agents, event exporter; the training operator requests nothing). Argo's
# workflow-controller requests nothing either (manifests/base/workflow-controller/workflow-controller-deployment.yaml,
# v4.1.2, no resources): it is counted as a pod, inside the add-ons' budget.
ADDONS = [("kube-dns", "260m", "110Mi")] * 2 + [("other add-ons", "300m", "512Mi"),
                                                ("Argo workflow-controller", "0", "0")]
# Notebook pipelines: the Workflows an attendee's namespace may hold at once. A finished one is deleted with its
# pods after the controller's ttlStrategy (instructor/argo.py TTL_SECONDS, two hours): room for a pipeline every
# six minutes, all day. Each step leaves a WorkflowTaskResult that the controller deletes when the Workflow
# finishes (operator.go deleteTaskResults); counted as if every kept Workflow still held the lab's.
PIPELINES = 20
# GCE machine families: memory per vCPU in MiB by type, the vCPU counts offered, the regional quota metric.
FAMILIES = {
    "e2": ({"standard": 4096, "highmem": 8192, "highcpu": 1024}, (2, 4, 8, 16, 32), "CPUS"),
    "n2": ({"standard": 4096, "highmem": 8192, "highcpu": 1024}, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128), "N2_CPUS"),
    "n2d": ({"standard": 4096, "highmem": 8192, "highcpu": 1024}, (2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224),
            "N2D_CPUS"),
    "n1": ({"standard": 3840, "highmem": 6656}, (1, 2, 4, 8, 16, 32, 64, 96), "CPUS"),
}
MACHINE = re.compile(r"([a-z0-9]+)-([a-z]+)-([0-9]+)")
EVICTION = 100 * MI     # the kubelet's memory.available<100Mi hard eviction threshold


@dataclass
class Machine:
    name: str
    vcpus: int
    memory: int          # bytes, as GCE sells it (GiB)
    quota_metric: str

    def allocatable(self):
        """(millicores, bytes) GKE leaves to pods: the reservations of GKE's own node predictions (the
        cluster autoscaler's), Container-Optimized OS on amd64, no image streaming."""
        milli = self.vcpus * 1000
        cpu_reserved = bracketed(milli, [(0, 0.06), (1000, 0.01), (2000, 0.005), (4000, 0.0025)])
        mib = self.memory // MI
        # What the kernel keeps before the kubelet sees the memory (its capacity is MemTotal, not the machine's).
        kernel = self.memory / 64 + 16 * MI + (64 * MI if self.memory > 3 * GI else 0) \
            + (8 * MI if self.memory <= 8 * GI else 0) + min(0.00175 * self.memory, 248 * MI)
        # GKE's kube-reserved: 25% of the first 4 GB, 20% of the next 4, 10% of the next 8, 6% up to 128, 2% above,
        # with GB counted as 1000 MiB, as GKE does.
        reserved = bracketed(mib, [(0, 0.25), (4000, 0.2), (8000, 0.1), (16000, 0.06), (128000, 0.02)]) * MI
        return milli - int(cpu_reserved), int(self.memory - int(kernel) - reserved - EVICTION)


def bracketed(capacity, brackets):
    """Reserved = each bracket's rate times the part of the capacity inside it."""
    reserved = 0.0
    for i, (threshold, rate) in enumerate(brackets):
        top = brackets[i + 1][0] if i + 1 < len(brackets) else capacity
        reserved += max(0, min(capacity, top) - threshold) * rate
    return int(reserved)


def machine(name):
    """A Machine for e2/n2/n2d/n1 standard, highmem and highcpu types; UsageError for anything else."""
    match = MACHINE.fullmatch(name or "")
    family = FAMILIES.get(match.group(1)) if match else None
    if not match or not family or match.group(2) not in family[0] or int(match.group(3)) not in family[1]:
        raise UsageError(f"unknown machine type {name!r}: use an e2, n2, n2d or n1 type such as e2-standard-8, "
                         "n2-standard-16 or e2-highmem-4")
    vcpus = int(match.group(3))
    return Machine(name, vcpus, vcpus * family[0][match.group(2)] * MI, family[2])


# ---------------------------------------------------------------- what one attendee runs

@dataclass
class Step:
    name: str        # what the attendee is doing
    targets: str     # the make targets that start it
    pods: list       # [Usage] of the step's own pods, beside the standing ones


def manifest(name):
    return render.load([KUBE / name])


def only(docs, kind):
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def pods_of(doc, replicas=None):
    return [usage for _, usage in workload_pods(doc, replicas)]


def sweep_trial():
    """One trial of the sweep as templated/run.sh builds it from templated/values.yaml (its Worker count)."""
    values = sweep_values.load(TEMPLATED / "values.yaml")
    return trials.tfjob(trials.load_base(), {}, render.TRAINER_IMAGE, values["workers"], [])


def hpa_maximum():
    return only(manifest("serving-autoscale.yaml"), "HorizontalPodAutoscaler")["spec"]["maxReplicas"]


STAND_IN_NOTEBOOK = f"{render.TRAINER_IMAGE}@sha256:{'0' * 64}"  # the plan's JupyterLab: any image will do


def standing_pods():
    """TensorBoard, TensorFlow Serving at its autoscaler's maximum, and JupyterLab."""
    from tfk8s.kube import cluster_model  # the instructor's template renders JupyterLab
    return (pods_of(only(manifest("tensorboard.yaml"), "Deployment"))
            + pods_of(only(manifest("serving.yaml"), "Deployment"), replicas=hpa_maximum())
            + pods_of(cluster_model.jupyterlab("default", STAND_IN_NOTEBOOK)))


def lab_pipeline():
    """The lab pipeline's Workflow (tfk8s.kube.cluster_model.lab_pipeline) from the plan's JupyterLab."""
    from tfk8s.kube import cluster_model
    return cluster_model.lab_pipeline("default", STAND_IN_NOTEBOOK)


def pipeline_pods():
    """A notebook pipeline at its widest: the lab pipeline's largest stage, its steps side by side, each pod as
    Argo's controller makes it (main, and the init and wait containers of the workshop's executor config)."""
    from tfk8s.kube import cluster_model
    workflow = lab_pipeline()
    pods = {p["metadata"]["annotations"]["workflows.argoproj.io/node-name"].rsplit(".", 1)[1]: p
            for p in cluster_model.workflow_pods(workflow, cluster_model.argo_config())}
    tasks = workflow["spec"]["templates"][0]["dag"]["tasks"]
    stages = {}
    for task in tasks:
        stages.setdefault(tuple(task.get("dependencies") or ()), []).append(pods[task["name"]])
    widest = max(stages.values(), key=len)
    return [pod_usage(p["spec"], p["metadata"]["name"]) for p in widest]


def katib_pods():
    """Katib's busiest moment (step 9b): the Experiment `make katib-sweep` creates from templated/values.yaml,
    as the cluster runs it: parallelTrialCount trials, each Chief with Katib's metrics collector, and the
    suggestion pod (sweep.katib_cluster.pods, from the cluster model); and parallelTrialCount."""
    from tfk8s.kube import cluster_model  # the Experiment renders through the sweep's modules
    from tfk8s.sweep import katib_cluster
    return katib_cluster.pods(cluster_model.workshop_experiment("default", f"{render.TRAINER_IMAGE}:0.1.0"))


def steps(sweep_parallel=SWEEP_PARALLEL):
    """Every step of the labs with its own pods (the standing pods are added by `peaks`)."""
    trial = pods_of(sweep_trial())
    katib, katib_parallel = katib_pods()
    return [
        Step("serve, predict, A/B (standing pods only)", "serve predict autoscale canary", []),
        Step("deploy: the training Job", "deploy job", pods_of(only(manifest("job.yaml"), "Job"))),
        Step("TFJob, Chief + 2 Workers", "tfjob", pods_of(only(manifest("tfjob.yaml"), "TFJob"))),
        Step("PS TFJob, Chief + 2 Workers + PS", "tfjob-ps", pods_of(only(manifest("tfjob-ps.yaml"), "TFJob"))),
        Step(f"sweep, {sweep_parallel} trials at once", "sweep", trial * sweep_parallel),
        Step(f"Katib, {katib_parallel} trials + collectors + suggestion", "katib-sweep", katib),
        Step("retrain now (a Job of the CronJob)", "retrain-now",
             pods_of(only(manifest("retrain-cronjob.yaml"), "CronJob"))),
        Step("batch prediction Job", "batch-predict", pods_of(only(manifest("batch-predict.yaml"), "Job"))),
        Step("notebook pipeline: two steps side by side", "jupyter (flow.py run)", pipeline_pods()),
    ]


def peaks(sweep_parallel=SWEEP_PARALLEL):
    """[(Step, Usage of the standing pods plus the step's)] for one attendee."""
    standing = standing_pods()
    return [(step, total(standing + step.pods)) for step in steps(sweep_parallel)]


def claim_size(rwx_storage_class=None, rwx_size=None):
    """The storage the attendee's claim mnist-nfs asks for, in bytes, as the quota counts it."""
    if rwx_storage_class:
        return whole(rwx_size)
    return whole(only(manifest("storage.yaml"), "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"])


def check_rwx_size(rwx_storage_class, rwx_size):
    """A Filestore claim below its class's smallest instance would cost more than the quota counts: refuse it."""
    try:
        size = whole(rwx_size)
    except ValueError:
        raise UsageError(f"--rwx_size {rwx_size!r} is not a size such as 1Ti or 100Gi") from None
    minimum = FILESTORE_MINIMUM.get(rwx_storage_class)
    if minimum and size < whole(minimum):
        raise UsageError(f"--rwx_size {rwx_size} is below the smallest {rwx_storage_class} volume ({minimum}): "
                         f"Filestore would make {minimum} and the quota would count {rwx_size}; ask for {minimum}")


def quota(sweep_parallel=SWEEP_PARALLEL):
    """The per-attendee ResourceQuota figures: the largest of each over the steps (a Usage)."""
    found = [usage for _, usage in peaks(sweep_parallel)]
    return Usage(**{key: max(getattr(u, key) for u in found) for key in FIELDS})


# The quota's key for counting the objects of each kind: the core ones by their own names, the others as
# count/<resource>.<group> (Kubernetes' object count quota).
COUNT_KEYS = {"Service": "services", "ConfigMap": "configmaps", "Secret": "secrets",
              "PersistentVolumeClaim": "persistentvolumeclaims", "Deployment": "count/deployments.apps",
              "ReplicaSet": "count/replicasets.apps", "Job": "count/jobs.batch", "CronJob": "count/cronjobs.batch",
              "HorizontalPodAutoscaler": "count/horizontalpodautoscalers.autoscaling",
              "PodDisruptionBudget": "count/poddisruptionbudgets.policy", "TFJob": "count/tfjobs.kubeflow.org",
              "Experiment": "count/experiments.kubeflow.org", "Workflow": "count/workflows.argoproj.io",
              "WorkflowTaskResult": "count/workflowtaskresults.argoproj.io"}
# Kubernetes' root-CA publisher puts the ConfigMap kube-root-ca.crt into every namespace.
NAMESPACE_CONFIGMAPS = 1
# `make retrain-now` Jobs beyond the CronJob's own history: they are the CronJob's too (ownerReference), so its
# history limits clean them up; one more may be running (concurrencyPolicy Forbid holds only scheduled ones).
RETRAIN_NOW_RUNNING = 1


def grid_size():
    """The sweep's trials: one TFJob per combination of templated/values.yaml's grid."""
    return math.prod(len(v) for v in sweep_values.load(TEMPLATED / "values.yaml")["grid"].values())


def katib_trials():
    """The TFJobs of the Katib Experiment: its maxTrialCount, the grid's size by default (sweep/katib.py)."""
    katib = sweep_values.load(TEMPLATED / "values.yaml").get("katib") or {}
    return katib.get("maxTrialCount", grid_size())


def replicas(tfjob):
    return sum(r.get("replicas", 1) for r in tfjob["spec"]["tfReplicaSpecs"].values())


def object_counts():
    """{kind: the most objects of that kind one attendee's namespace holds}, every step done and none cleaned up:
    what the manifests create, what the controllers make of them (a Deployment's ReplicaSets, its revision
    history included; a CronJob's Jobs, its history limits; the training operator's headless Service per TFJob
    replica, kept with the finished pods under cleanPodPolicy Running), the sweep's trials (a new sweep deletes
    the last one's), the Katib Experiment with its trials and its suggestion (a Deployment and a Service)."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    docs = render.load(sorted(KUBE.glob("*.yaml")))
    tfjobs = [d for d in docs if d["kind"] == "TFJob"]
    trial = sweep_trial()
    for doc in docs:
        if doc["kind"] in counts:
            counts[doc["kind"]] += 1
    counts["ConfigMap"] += NAMESPACE_CONFIGMAPS
    counts["TFJob"] += grid_size() + katib_trials()
    counts["Experiment"] += 1
    counts["Deployment"] += 1   # Katib's suggestion for the Experiment
    counts["Service"] += 1      # ... and its Service
    counts["Service"] += sum(replicas(t) for t in tfjobs) + (grid_size() + katib_trials()) * replicas(trial)
    counts["ReplicaSet"] = sum((d["spec"].get("revisionHistoryLimit", 10) + 1) for d in docs
                               if d["kind"] == "Deployment") + 11  # the suggestion's, at Kubernetes' default 10
    # Notebook pipelines (templated/instructor/notebook.yaml.j2): JupyterLab's Deployment and its ReplicaSets, the
    # executor's token Secret; the Workflows and their task results (PIPELINES).
    from tfk8s.instructor import namespaces
    counts["Deployment"] += 1
    counts["ReplicaSet"] += namespaces.JUPYTERLAB_REVISIONS + 1
    counts["Secret"] += 1
    counts["Workflow"] = PIPELINES
    counts["WorkflowTaskResult"] = PIPELINES * len(lab_pipeline()["spec"]["templates"][0]["dag"]["tasks"])
    for cron in (d for d in docs if d["kind"] == "CronJob"):
        counts["Job"] += (cron["spec"].get("successfulJobsHistoryLimit", 3) + cron["spec"].get("failedJobsHistoryLimit",
                                                                                               1) + 1
                          + RETRAIN_NOW_RUNNING)
    return counts


def ephemeral_maximum():
    """The largest ephemeral-storage limit of one container the workshop runs (kube/*.yaml, and the pods Katib
    makes and mutates, as the cluster model builds them): the LimitRange's max."""
    from tfk8s.kube import cluster_model
    katib = cluster_model.experiment_objects(cluster_model.workshop_experiment(
        "default", f"{render.TRAINER_IMAGE}:0.1.0"), cluster_model.katib_config())
    katib += [cluster_model.jupyterlab("default", STAND_IN_NOTEBOOK)]
    katib += cluster_model.workflow_pods(lab_pipeline(), cluster_model.argo_config())
    containers = [c for d in render.load(sorted(KUBE.glob("*.yaml"))) + katib for t in pod_specs(d)
                  for c in t.get("containers", []) + t.get("initContainers", [])]
    return max(container_amount(c, "limits", "ephemeral-storage") for c in containers)


def pod_specs(doc):
    """The pod specs of a workload (a TFJob's replicas, a CronJob's job template)."""
    spec = doc.get("spec") or {}
    if doc["kind"] == "TFJob":
        return [r["template"]["spec"] for r in spec["tfReplicaSpecs"].values()]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] == "Pod":
        return [spec]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def quota_hard(sweep_parallel=SWEEP_PARALLEL, rwx_storage_class=None, rwx_size=None):
    """The ResourceQuota's `hard` map for namespace.yaml.j2 (strings, in Kubernetes quantities)."""
    most = quota(sweep_parallel)
    hard = {"requests.cpu": cpu_text(most.requests_cpu), "requests.memory": memory_text(most.requests_memory),
            "limits.cpu": cpu_text(most.limits_cpu), "limits.memory": memory_text(most.limits_memory),
            "requests.ephemeral-storage": memory_text(most.requests_ephemeral),
            "limits.ephemeral-storage": memory_text(most.limits_ephemeral),
            "pods": str(most.pods), "persistentvolumeclaims": "1",
            "requests.storage": memory_text(claim_size(rwx_storage_class, rwx_size)),
            "services.loadbalancers": "0", "services.nodeports": "0"}
    counts = object_counts()
    for kind, key in COUNT_KEYS.items():
        if kind != "PersistentVolumeClaim":  # the one claim, above
            hard[key] = str(counts[kind])
    # No Filestore instance of another class: a small claim would quietly become a large instance.
    for storage_class in FILESTORE_MINIMUM:
        allowed = "1" if storage_class == rwx_storage_class else "0"
        hard[f"{storage_class}.storageclass.storage.k8s.io/persistentvolumeclaims"] = allowed
    return hard


# ---------------------------------------------------------------- the cluster

def storage_pods(attendees, rwx_storage_class=None):
    """The NFS servers of the storage namespace (one per attendee), none with Filestore."""
    if rwx_storage_class:
        return []
    from tfk8s.instructor import namespaces  # the template renders the server's pod
    server = only(list(yaml.safe_load_all(namespaces.render_nfs_server("x"))), "Deployment")
    return [pod_usage(server["spec"]["template"]["spec"], "nfs")] * attendees


def addon_pods():
    return [Usage(millicores(cpu), whole(memory), pods=1, names=[name]) for name, cpu, memory in ADDONS]


def nodes_for(demand, largest, capacity):
    """Nodes of `capacity` on which pods adding up to `demand`, none larger than `largest`, always find room,
    in whatever order and on whatever node the scheduler puts them: a pod is refused only when every node has
    less free than it asks, i.e. when more than nodes x (capacity - pod) is already used, so
    (demand - largest) <= nodes x (capacity - largest) rules that out (per resource: CPU, memory)."""
    if largest >= capacity:
        return None
    return max(1, math.ceil((demand - largest) / (capacity - largest)))


@dataclass
class Plan:
    attendees: int
    machine: Machine
    sweep_parallel: int
    rows: list             # [(Step, Usage)] per attendee
    quota: Usage
    per_node: tuple        # (millicores, bytes) for the workshop's pods on one node
    nodes: int
    demand: Usage          # every quota full, plus the shared pods
    largest: Usage         # the largest pod (CPU and memory)
    shared: Usage          # NFS servers and add-ons
    rwx_storage_class: str
    rwx_size: str
    zone: str

    @property
    def region(self):
        return self.zone.rsplit("-", 1)[0]

    def create_command(self):
        """The cluster's creation: Dataplane V2 (NetworkPolicy enforced), Workload Identity, fixed size; no
        Service externalIPs (GKE's DenyServiceExternalIPs admission: an attendee's Service cannot claim another
        address, CVE-2020-8554), no kubelet read-only port (10255, unauthenticated: every pod spec on the node)."""
        addons = " --addons GcpFilestoreCsiDriver" if self.rwx_storage_class else ""
        return (f"gcloud container clusters create workshop --zone {self.zone} --release-channel regular \\\n"
                f"  --machine-type {self.machine.name} --num-nodes {self.nodes} --enable-dataplane-v2 \\\n"
                f"  --no-enable-service-externalips --no-enable-insecure-kubelet-readonly-port \\\n"
                f'  --workload-pool "$PROJECT.svc.id.goog"{addons}')


def make_plan(attendees, machine_type, sweep_parallel=SWEEP_PARALLEL, rwx_storage_class=None, rwx_size="1Ti",
              daemonsets=DAEMONSETS, zone="europe-west1-b"):
    if attendees < 1:
        raise UsageError(f"--attendees {attendees}: plan for at least one attendee")
    if sweep_parallel < 1:
        raise UsageError(f"--sweep_parallel {sweep_parallel}: at least one trial runs at a time")
    if rwx_storage_class:
        check_rwx_size(rwx_storage_class, rwx_size)
    node = machine(machine_type)
    try:
        reserved = (millicores(daemonsets[0]), whole(daemonsets[1]))
    except ValueError as err:
        raise UsageError(f"--daemonset_cpu/--daemonset_memory: {err}") from None
    cpu, memory = node.allocatable()
    per_node = (cpu - reserved[0], memory - reserved[1])
    rows = peaks(sweep_parallel)
    most = quota(sweep_parallel)
    shared = storage_pods(attendees, rwx_storage_class) + addon_pods()
    everyone = [most] * attendees + shared
    demand = total(everyone)
    pods = standing_pods() + [p for step, _ in rows for p in step.pods] + shared
    largest = Usage(max(p.requests_cpu for p in pods), max(p.requests_memory for p in pods))
    counts = (nodes_for(demand.requests_cpu, largest.requests_cpu, per_node[0]),
              nodes_for(demand.requests_memory, largest.requests_memory, per_node[1]))
    if None in counts:
        raise UsageError(f"a pod asking for {cores(largest.requests_cpu)} CPU and {gib(largest.requests_memory)} GiB "
                         f"does not fit one {machine_type} node beside its DaemonSets: choose a larger type")
    return Plan(attendees, node, sweep_parallel, rows, most, per_node, max(counts), demand, largest,
                total(shared), rwx_storage_class, rwx_size, zone)


def report(plan):
    """The plan as the instructor reads it."""
    trial = sweep_trial()["spec"]["tfReplicaSpecs"]
    shape = " + ".join(f"{r.get('replicas', 1)} {t}{'s' if r.get('replicas', 1) > 1 else ''}"
                       for t, r in trial.items())
    lines = [f"Capacity plan: {plan.attendees} attendees on {plan.machine.name} nodes, "
             f"SWEEP_PARALLEL={plan.sweep_parallel} (a trial: {shape})", "",
             f"Per attendee, each step beside the standing pods (TensorBoard, serving at its autoscaler's "
             f"maximum of {hpa_maximum()}, JupyterLab):",
             f"  {'step':<42} {'make':<30} {'pods':>4} {'CPU':>5} {'GiB':>5} {'CPU lim':>7} {'GiB lim':>7}"]
    busiest = max(plan.rows, key=lambda row: (row[1].requests_cpu, row[1].requests_memory))[0].name
    for step, usage in plan.rows:
        mark = "  <- busiest" if step.name == busiest else ""
        lines.append(f"  {step.name:<42} {step.targets:<30} {usage.pods:>4} {cores(usage.requests_cpu):>5} "
                     f"{gib(usage.requests_memory):>5} {cores(usage.limits_cpu):>7} {gib(usage.limits_memory):>7}"
                     f"{mark}")
    hard = quota_hard(plan.sweep_parallel, plan.rwx_storage_class, plan.rwx_size)
    lines += ["", "Quota per attendee (the largest of each column): "
              + ", ".join(f"{k} {hard[k]}" for k in ("requests.cpu", "requests.memory", "limits.cpu",
                                                       "limits.memory", "pods", "requests.storage")),
              "  disk (ephemeral-storage, the largest over the steps): "
              + ", ".join(f"{k} {hard[k]}" for k in ("requests.ephemeral-storage", "limits.ephemeral-storage")),
              "  objects (every step done, nothing cleaned up): "
              + ", ".join(f"{k.removeprefix('count/')} {hard[k]}" for k in COUNT_KEYS.values()
                          if k != "persistentvolumeclaims"), ""]
    cpu, memory = plan.machine.allocatable()
    servers = "" if plan.rwx_storage_class else f"{plan.attendees} NFS servers and "
    lines += [f"Cluster, every attendee's quota full at once, with {servers}the cluster add-ons "
              f"({cores(plan.shared.requests_cpu)} CPU, {gib(plan.shared.requests_memory)} GiB): "
              f"{cores(plan.demand.requests_cpu)} CPU, {gib(plan.demand.requests_memory)} GiB of requests",
              f"  one {plan.machine.name}: {plan.machine.vcpus} vCPU, {gib(plan.machine.memory)} GiB; allocatable "
              f"{cores(cpu)} CPU, {gib(memory)} GiB after GKE's reservations; {cores(plan.per_node[0])} CPU, "
              f"{gib(plan.per_node[1])} GiB after the DaemonSets",
              f"  nodes: {plan.nodes}, so that every pod finds a node whatever the order and the spread of the "
              f"others (no gang scheduling: a TFJob short of one pod would hold the rest); "
              f"{cores(plan.nodes * plan.per_node[0])} CPU, {gib(plan.nodes * plan.per_node[1])} GiB for pods, "
              f"the largest pod {cores(plan.largest.requests_cpu)} CPU, {gib(plan.largest.requests_memory)} GiB",
              f"  regional CPU quota: {plan.nodes * plan.machine.vcpus} {plan.machine.quota_metric} in {plan.region} "
              f"({plan.nodes} x {plan.machine.vcpus} vCPU), and as many CPUS_ALL_REGIONS"]
    if plan.rwx_storage_class:
        lines.append(f"  storage: {plan.attendees} Filestore volumes of class {plan.rwx_storage_class}, "
                     f"{plan.rwx_size} each")
    else:
        lines.append(f"  storage: {plan.attendees} persistent disks of {NFS_DISK} (one NFS server each, "
                     f"namespace {STORAGE_NAMESPACE})")
    lines += ["", "Create it with:", plan.create_command()]
    return "\n".join(lines)
