"""The instructor's per-attendee setup: valid objects, a role for every step and nothing more, a quota the steps fit in.

The Role is checked against the manifests themselves: every kind that the
attendee's `make` targets apply must be allowed, and nothing an attendee
could use to reach beyond the namespace (secrets, RBAC, exec, cluster-scoped
objects) may be.
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, assert_one_line_error, makefile_text
from test_manifests import KUBE, VERSIONS, containers, pod_templates, validate
from tfk8s.instructor import namespaces
from tfk8s.kube import render

SCRIPT = REPO / "src" / "instructor.py"

# kind -> (API group, resource) for what the workshop's manifests hold.
RESOURCES = {"Deployment": ("apps", "deployments"), "Service": ("", "services"), "Job": ("batch", "jobs"),
             "TFJob": ("kubeflow.org", "tfjobs"), "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
             "ConfigMap": ("", "configmaps"), "CronJob": ("batch", "cronjobs"),
             "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
             "PodDisruptionBudget": ("policy", "poddisruptionbudgets")}
APPLY = ("get", "list", "watch", "create", "update", "patch", "delete")  # what kubectl apply and delete use


def objects(namespace="alice", **options):
    return [d for d in yaml.safe_load_all(namespaces.render_namespace(namespace, **options)) if d]


def role(namespace="alice"):
    return next(d for d in objects(namespace) if d["kind"] == "Role")


def allows(role_doc, group, resource, verb):
    return any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
               for rule in role_doc["rules"])


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def quantity(value):
    """A Kubernetes quantity as a number (cores or bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


@pytest.mark.parametrize("privileged_storage", [True, False])
@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_objects_pass_strict_validation(version, privileged_storage):
    docs = objects(privileged_storage=privileged_storage)
    assert [d["kind"] for d in docs] == ["Namespace", "ResourceQuota", "LimitRange", "ServiceAccount", "Role",
                                         "RoleBinding"]
    for doc in docs:
        validate(doc, version)


def test_role_is_namespaced_and_bound_in_the_same_namespace_to_the_attendee_only():
    docs = {d["kind"]: d for d in objects("bob")}
    assert "ClusterRole" not in docs and "ClusterRoleBinding" not in docs
    binding = docs["RoleBinding"]
    assert docs["Role"]["metadata"]["namespace"] == binding["metadata"]["namespace"] == "bob"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "attendee"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "attendee", "namespace": "bob"}]
    assert docs["ServiceAccount"]["metadata"]["namespace"] == "bob"


def test_role_grants_no_secrets_no_rbac_no_exec_and_no_wildcards():
    for rule in role()["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert "secrets" not in rule["resources"], rule
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"], rule
        assert not {"pods/exec", "pods/attach", "serviceaccounts/token", "persistentvolumes", "nodes",
                    "namespaces"} & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "resourceNames" not in rule


def test_role_can_apply_and_delete_every_kind_the_attendees_steps_apply():
    kinds = {d["kind"] for d in render.render(render.load(sorted(KUBE.glob("*.yaml"))),
                                                          "r.example.com/mnist", "v1", "alice", scope="namespaced")}
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim"} <= kinds
    the_role = role()
    for kind in kinds:
        assert kind in RESOURCES, f"{kind} in kube/: add it to the attendee Role (and to RESOURCES here)"
        group, resource = RESOURCES[kind]
        for verb in APPLY:
            assert allows(the_role, group, resource, verb), f"{verb} {resource}"


def test_role_can_follow_logs_port_forward_and_read_why_a_pod_waits():
    the_role = role()
    for group, resource, verb in [("", "pods", "list"), ("", "pods", "watch"), ("", "pods/log", "get"),
                                  ("", "pods/portforward", "create"), ("", "events", "list"),
                                  ("", "resourcequotas", "get"), ("apps", "replicasets", "list")]:
        assert allows(the_role, group, resource, verb), f"{verb} {resource}"
    assert not allows(the_role, "", "pods", "create")  # pods come from Jobs, TFJobs and Deployments only
    assert not allows(the_role, "", "secrets", "get")


def test_pod_security_is_restricted_unless_the_nfs_server_runs_in_the_namespace():
    labels = lambda **o: next(d for d in objects(**o) if d["kind"] == "Namespace")["metadata"]["labels"]
    assert labels(privileged_storage=True)["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels(privileged_storage=False)["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels(privileged_storage=True)["pod-security.kubernetes.io/warn"] == "restricted"


def pods_of(*names):
    """Every pod the named manifests run at once, replicas counted."""
    docs = render.render(render.load([KUBE / n for n in names if (KUBE / n).exists()]),
                                   "r.example.com/mnist", "v1", "alice")
    pods = []
    for doc in docs:
        if doc["kind"] == "TFJob":
            for spec in doc["spec"]["tfReplicaSpecs"].values():
                pods += [spec["template"]] * spec.get("replicas", 1)
        else:
            count = doc["spec"].get("replicas", doc["spec"].get("parallelism", 1)) if "spec" in doc else 0
            pods += [template for _, template in pod_templates(doc)] * count
    return pods


def test_quota_fits_the_always_on_pods_plus_the_biggest_training_step():
    """NFS server, TensorBoard and serving stay up; one training step at a time runs beside them."""
    hard = next(d for d in objects() if d["kind"] == "ResourceQuota")["spec"]["hard"]
    always_on = pods_of("nfs.yaml", "tensorboard.yaml", "serving.yaml")
    sweep_parallel = int(re.search(r"^SWEEP_PARALLEL \?= (\d+)", makefile_text(), re.M).group(1))
    steps = [pods_of(name) for name in ("job.yaml", "tfjob.yaml", "tfjob-ps.yaml")]
    steps.append(pods_of("tfjob.yaml") * sweep_parallel)  # a sweep trial is kube/tfjob.yaml with new flags
    for step in steps:
        pods = always_on + step
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                total = sum(quantity(c["resources"][bound][resource])
                            for t in pods for kind, c in containers(t) if kind == "containers")
                assert total <= quantity(hard[f"{bound}.{resource}"]), f"{bound}.{resource}: {total:g} needed"
        assert len(pods) <= int(hard["pods"])


def test_no_workshop_container_exceeds_the_limit_range():
    limit = next(d for d in objects() if d["kind"] == "LimitRange")["spec"]["limits"][0]["max"]
    for template in pods_of(*[p.name for p in KUBE.glob("*.yaml")]):
        for _, c in containers(template):
            for resource in ("cpu", "memory"):
                assert quantity(c["resources"]["limits"][resource]) <= quantity(limit[resource]), c["name"]


def test_script_writes_one_file_per_attendee(tmp_path):
    result = run("--out", tmp_path, "alice", "bob")
    assert result.returncode == 0, result.stderr
    for name in ("alice", "bob"):
        docs = [d for d in yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()) if d]
        assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {name}


@pytest.mark.parametrize("names,fragment", [
    (["Alice"], "cannot be a namespace name"),
    (["kube-system"], "cannot be a namespace name"),
    (["alice", "alice"], "named twice"),
    (["--duration", "2 days", "alice"], "hours or minutes"),
])
def test_script_rejects_bad_names_in_one_line(tmp_path, names, fragment):
    assert_one_line_error(run("--out", tmp_path, *names), fragment)


FAKE_KUBECTL = """#!{python}
import json, sys
args = sys.argv[1:]
if args[:2] == ["config", "view"]:
    print(json.dumps({{"clusters": [{{"name": "gke_proj_europe-west1_workshop",
        "cluster": {{"server": "https://203.0.113.10", "certificate-authority-data": "Q0EgREFUQQ=="}}}}]}}))
elif args[:2] == ["create", "token"]:
    print("token-for-" + args[args.index("--namespace") + 1] + "-" + args[args.index("--duration") + 1])
else:
    sys.exit("unexpected: " + " ".join(args))
"""


def test_kubeconfigs_hold_a_token_per_attendee_and_open_in_their_namespace(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.format(python=sys.executable))
    (bin_dir / "kubectl").chmod(0o755)
    out = tmp_path / "out"
    result = run("--out", out, "--kubeconfigs", "--duration", "12h", "alice", "bob",
                 env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    for name in ("alice", "bob"):
        path = out / f"{name}.kubeconfig"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = yaml.safe_load(path.read_text())
        (context,) = config["contexts"]
        assert config["current-context"] == context["name"] and context["context"]["namespace"] == name
        assert config["users"][0]["user"] == {"token": f"token-for-{name}-12h"}
        assert config["clusters"][0]["cluster"] == {"server": "https://203.0.113.10",
                                                    "certificate-authority-data": "Q0EgREFUQQ=="}
        kubectl = shutil.which("kubectl")
        if kubectl:
            # A real kubectl reads it back: the context, its namespace and the server.
            view = subprocess.run([kubectl, "config", "view", "--minify", "--output", "json", "--kubeconfig", path],
                                  capture_output=True, text=True, timeout=60)
            assert json.loads(view.stdout)["contexts"][0]["context"]["namespace"] == name


def test_kubeconfigs_need_kubectl(tmp_path):
    result = run("--out", tmp_path, "--kubeconfigs", "alice", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, "kubectl is not installed")
