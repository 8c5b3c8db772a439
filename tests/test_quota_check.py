"""A TFJob target checks the quota's headroom first: when the TFJob cannot fit, one line says what to stop, and
nothing is created (no half-scheduled TFJob holding CPUs while its last replica waits).

The namespace is a stand-in kubectl answering with pods built from the
workshop's own manifests (their real requests) and a ResourceQuota whose
`used` is what those pods add up to, as the quota controller would count it.
"""
import pytest
import yaml

from conftest import kubectl_objects
from support import KUBE, make, pushed_record, rendered
from tfk8s.instructor import plan
from tfk8s.kube.resources import cpu_text, memory_text, pod_usage, total

EXAMPLE = ("IMAGE=registry.example.com/me/mnist", "TAG=v9", "NAMESPACE=alice")


def pushed(tmp_path):
    return f"PUSHED_IMAGE={pushed_record(tmp_path)}"


def pods(manifest, count=None, **labels):
    """Running pods of a kube/ manifest (its rendered templates), labelled as their controller labels them."""
    found = []
    for doc in rendered([KUBE / manifest]):
        if doc["kind"] == "TFJob":
            name = labels.pop("job", doc["metadata"]["name"])
            for rtype, spec in doc["spec"]["tfReplicaSpecs"].items():
                for i in range(spec.get("replicas", 1)):
                    found.append(pod(f"{name}-{rtype.lower()}-{i}", spec["template"],
                                     {"training.kubeflow.org/job-name": name}))
        elif doc["kind"] == "Deployment":
            for i in range(count or 1):
                found.append(pod(f"{doc['metadata']['name']}-7d9f-{i}", doc["spec"]["template"], {},
                                 owner={"kind": "ReplicaSet", "name": f"{doc['metadata']['name']}-7d9f"}))
        elif doc["kind"] == "Job":
            found.append(pod(f"{doc['metadata']['name']}-x1", doc["spec"]["template"],
                             {"batch.kubernetes.io/job-name": doc["metadata"]["name"]}))
    return found


def pod(name, template, labels, owner=None):
    meta = {"name": name, "namespace": "alice", "labels": {**template["metadata"]["labels"], **labels}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta, "spec": template["spec"], "status": {"phase": "Running"}}


def namespace(running, tfjobs=(), quota=True):
    """The objects kubectl answers with: the pods, the TFJobs, the quota (hard from the plan, used from the pods)."""
    used = total(pod_usage(p["spec"]) for p in running)
    hard = plan.quota_hard()
    objects = {"pods": running, "tfjobs": list(tfjobs), "resourcequotas": []}
    if quota:
        objects["resourcequotas"] = [{
            "metadata": {"name": "workshop", "namespace": "alice"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": {
                "requests.cpu": cpu_text(used.requests_cpu), "requests.memory": memory_text(used.requests_memory),
                "limits.cpu": cpu_text(used.limits_cpu), "limits.memory": memory_text(used.limits_memory),
                "pods": str(used.pods), "requests.storage": "10Gi", "persistentvolumeclaims": "1"}}}]
    return objects


def jupyterlab():
    """The attendee's JupyterLab pod (templated/instructor/notebook.yaml.j2), a standing pod as the plan counts it."""
    from tfk8s.instructor import namespaces
    docs = yaml.safe_load_all(namespaces.render_notebook("alice", "r.example.com/nb@sha256:" + "0" * 64))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    return [pod("jupyterlab-5c6d-0", deployment["spec"]["template"], {},
                owner={"kind": "ReplicaSet", "name": "jupyterlab-5c6d"})]


def standing():
    return pods("tensorboard.yaml") + pods("serving.yaml", count=plan.hpa_maximum()) + jupyterlab()


def sweep_running():
    trials = [pods("tfjob.yaml", job=f"mnist-sweep-t0{i}") for i in (1, 2)]
    tfjobs = [{"metadata": {"name": f"mnist-sweep-t0{i}", "namespace": "alice",
                            "labels": {"sweep": "mnist-sweep", "trial": f"t0{i}"}}} for i in (1, 2)]
    return [p for trial in trials for p in trial], tfjobs


def created(calls):
    return [d["kind"] for c in calls() if c["stdin"] for d in yaml.safe_load_all(c["stdin"]) if d]


def errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_tfjob_beside_a_running_sweep_is_refused_in_one_line_naming_the_sweep_and_nothing_is_created(
        fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    trials, tfjobs = sweep_running()
    kubectl_objects(tmp_path, namespace(standing() + trials, tfjobs))
    result = make("tfjob", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = errors(result)
    assert line == ("error: TFJob mnist-tfjob needs requests.cpu 3, requests.memory 6Gi, limits.cpu 6, "
                    "limits.memory 12Gi, pods 3 but the quota workshop has requests.cpu 0.15, requests.memory 0Gi, "
                    "limits.cpu 1.5, limits.memory 2.1Gi, pods 1 free: stop the sweep mnist-sweep first (Ctrl-C its "
                    "make sweep, then kubectl delete tfjobs --selector sweep=mnist-sweep)")
    assert created(calls) == []  # nothing deleted, nothing applied


def test_ps_tfjob_beside_a_running_tfjob_names_that_tfjob(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, namespace(standing() + pods("tfjob.yaml")))
    result = make("tfjob-ps", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    (line,) = errors(result)
    assert "TFJob mnist-tfjob-ps needs requests.cpu 4" in line and "free: stop TFJob mnist-tfjob first " \
        "(kubectl delete tfjob mnist-tfjob)" in line
    assert created(calls) == []


def test_a_running_job_is_named_before_tensorboard_or_serving(fake_kubectl, tmp_path):
    path, _ = fake_kubectl
    kubectl_objects(tmp_path, namespace(standing() + pods("tfjob-ps.yaml") + pods("job.yaml")))
    result = make("tfjob", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    (line,) = errors(result)
    # 2 CPU short: the Job (1 CPU) is not enough, the PS TFJob (4) is; both before any Deployment.
    assert line.endswith("stop TFJob mnist-tfjob-ps first (kubectl delete tfjob mnist-tfjob-ps)")


@pytest.mark.parametrize("running", ["nothing", "its own previous run", "the Job"])
def test_a_tfjob_that_fits_is_replaced_and_applied(fake_kubectl, tmp_path, running):
    path, calls = fake_kubectl
    extra = {"nothing": [], "its own previous run": pods("tfjob.yaml"), "the Job": pods("job.yaml")}[running]
    kubectl_objects(tmp_path, namespace(standing() + extra))
    result = make("tfjob", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TFJob mnist-tfjob fits the quota (requests.cpu 3, requests.memory 6Gi" in result.stdout
    assert created(calls) == ["TFJob", "TFJob"]  # the old one deleted, the new one applied


def test_without_a_quota_nothing_is_checked(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, namespace([], quota=False))
    result = make("tfjob", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    assert result.returncode == 0, result.stderr
    assert "no ResourceQuota in namespace alice, nothing to check" in result.stdout


def test_finished_pods_free_their_quota(fake_kubectl, tmp_path):
    """Completed pods count toward nothing: a sweep whose trials have finished does not block a TFJob."""
    path, _ = fake_kubectl
    trials, tfjobs = sweep_running()
    for p in trials:
        p["status"]["phase"] = "Succeeded"
    objects = namespace(standing(), tfjobs)
    objects["pods"] += trials
    kubectl_objects(tmp_path, objects)
    result = make("tfjob", *EXAMPLE, pushed(tmp_path), path=path, env={"FAKE_CONTEXT_NAMESPACE": "alice"})
    assert result.returncode == 0, result.stderr


def test_a_pods_usage_is_counted_as_kubernetes_counts_it():
    """PodRequests/PodLimits: a limit without a request is the request too (the API server's defaulting); init
    containers run one at a time, a sidecar (restartPolicy: Always) beside what follows it; plus the overhead."""
    spec = {
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "500m"}}}],
        "initContainers": [
            {"name": "setup", "resources": {"requests": {"cpu": "2", "memory": "64Mi"},
                                            "limits": {"cpu": "2", "memory": "64Mi"}}},
            {"name": "proxy", "restartPolicy": "Always",
             "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "32Mi"}}},
            {"name": "late", "resources": {"limits": {"cpu": "3"}}}],
        "overhead": {"cpu": "10m", "memory": "8Mi"}}
    usage = pod_usage(spec)
    mi = 2**20
    assert (usage.requests_cpu, usage.limits_cpu) == (3000 + 100 + 10, 3000 + 200 + 10)  # "late" beside the proxy
    assert usage.requests_memory == (1024 + 128 + 32 + 8) * mi  # the containers and the proxy outweigh "setup"
    assert usage.limits_memory == (1024 + 32 + 8) * mi
    assert (usage.pods, usage.requests_ephemeral) == (1, 0)
    # Without the init containers: the containers' sum, the limit-only container counted at its limit.
    plain = pod_usage({"containers": spec["containers"]})
    assert (plain.requests_cpu, plain.requests_memory) == (1250, (1024 + 128) * mi)
