"""`make instructor-status`: a row per attendee from one kubectl call per kind, and a --watch that Ctrl-C ends.

The stand-in kubectl answers with two attendees: alice half-way through the
labs (a trained Job, a running TFJob, a sweep with one failed trial, serving
scaled to 2 of 4 with labelled versions), bob stuck on an image he never
pushed and a claim that is not bound.
"""
import signal
import subprocess
import sys
import time

import pytest

from conftest import kubectl_objects
from support import SRC, make
from tfk8s.cli import child_env

IMAGE = "europe-docker.pkg.dev/p/workshop/alice-mnist:v1"
MODELS = """model_config_list { config { name: "mnist" base_path: "/mnt/nfs/exports/mnist"
  model_platform: "tensorflow" model_version_policy { specific { versions: 1767225600 versions: 1767312000 } }
  version_labels { key: "stable" value: 1767225600 } version_labels { key: "canary" value: 1767312000 } } }"""


def meta(name, namespace, **labels):
    return {"name": name, "namespace": namespace, "labels": labels}


def conditions(*types):
    return {"conditions": [{"type": t, "status": "True" if i == len(types) - 1 else "False"}
                           for i, t in enumerate(types)]}


def cluster():
    return {
        "namespaces": [{"metadata": meta("alice", None, **{"mnist-workshop/attendee": "true"})},
                       {"metadata": meta("bob", None, **{"mnist-workshop/attendee": "true"})}],
        "persistentvolumeclaims": [{"metadata": meta("mnist-nfs", "alice"), "status": {"phase": "Bound"}},
                                   {"metadata": meta("mnist-nfs", "bob"), "status": {"phase": "Pending"}}],
        "pods": [
            {"metadata": meta("tensorboard-1", "alice"), "spec": {"containers": [{"name": "tensorboard"}]},
             "status": {"phase": "Running", "containerStatuses": [
                 {"name": "tensorboard", "imageID": "europe-docker.pkg.dev/p/workshop/alice-mnist@sha256:1",
                  "state": {"running": {}}}]}},
            {"metadata": meta("mnist-train-x", "bob"), "spec": {"containers": [{"name": "trainer"}]},
             "status": {"phase": "Pending", "containerStatuses": [
                 {"name": "trainer", "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}],
        "jobs": [{"metadata": meta("mnist-train", "alice"), "status": {"conditions": [
            {"type": "Complete", "status": "True"}]}},
                 {"metadata": meta("mnist-train", "bob"), "status": {"active": 1}}],
        "tfjobs": [{"metadata": meta("mnist-tfjob", "alice"), "status": conditions("Created", "Running")},
                   *[{"metadata": meta(f"mnist-sweep-t0{i}", "alice", sweep="mnist-sweep", trial=f"t0{i}"),
                      "status": conditions("Created", "Running", state)}
                     for i, state in enumerate(("Succeeded", "Succeeded", "Failed", "Running"), 1)]],
        "deployments": [{"metadata": meta("mnist-serving", "alice"), "spec": {"replicas": 4},
                         "status": {"availableReplicas": 2}},
                        {"metadata": meta("jupyterlab", "alice"), "spec": {"replicas": 1},
                         "status": {"availableReplicas": 1}}],
        "workflows": [{"metadata": meta(f"pipeline-20260102-03040{i}-abcd", "alice"), "status": {"phase": phase}}
                      for i, phase in enumerate(("Succeeded", "Failed", "Running"))],
        "configmaps": [{"metadata": meta("mnist-model-config", "alice"), "data": {"models.config": MODELS}}],
        "resourcequotas": [{"metadata": meta("workshop", n), "status": {
            "hard": {"requests.cpu": "8100m", "requests.memory": "14848Mi", "pods": "11"},
            "used": {"requests.cpu": cpu, "requests.memory": memory, "pods": count}}}
            for n, cpu, memory, count in (("alice", "5100m", "8704Mi", "8"), ("bob", "1", "2Gi", "1"))],
    }


def test_one_row_per_attendee_from_one_call_per_kind(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, cluster())
    result = make("instructor-status", path=path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith(".venv")]
    header, *rows = lines
    assert header.split() == ["NAMESPACE", "STORAGE", "IMAGE", "JOB", "TFJOB", "PS", "SERVING", "SWEEP", "LAB",
                              "PIPELINES", "CPU", "MEM", "PODS"]
    alice, bob = rows
    assert alice.split() == ["alice", "Bound", "pulled", "Complete", "Running", "-", "2/4",
                             "canary=1767312000,stable=1767225600", "3/4", "(1", "failed)", "1/1", "2/3", "(1",
                             "failed)", "5.1/8.1", "8.5/14.5", "8/11"]
    assert bob.split() == ["bob", "Pending", "ImagePullBackOff", "Running", "-", "-", "-", "-", "-", "-", "1/8.1",
                           "2/14.5", "1/11"]
    gets = [c["args"] for c in calls() if c["args"][:1] == ["get"]]
    kinds = [args[1] for args in gets]
    assert sorted(kinds) == sorted(cluster())  # each kind once, whatever the number of attendees
    assert all("--all-namespaces" in args for args in gets if args[1] != "namespaces")
    assert not [c for c in calls() if "--namespace" in c["args"]]


@pytest.mark.parametrize("kind, columns, said", [("tfjobs", slice(4, 8), ["no", "operator"] * 2),
                                                 ("workflows", slice(12, 14), ["no", "Argo"])])
def test_without_the_operator_or_argo_their_columns_say_so(fake_kubectl, tmp_path, kind, columns, said):
    path, _ = fake_kubectl
    objects = cluster()
    del objects[kind]
    kubectl_objects(tmp_path, objects)
    result = make("instructor-status", path=path)
    assert result.returncode == 0, result.stderr
    (alice,) = [line.split() for line in result.stdout.splitlines() if line.startswith("alice")]
    assert alice[columns] == said


def test_watch_refreshes_until_ctrl_c_and_ends_quietly(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, cluster())
    process = subprocess.Popen([sys.executable, str(SRC / "instructor.py"), "status", "--watch", "--interval", "0.2"],
                               env={**child_env(), "PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        while len([c for c in calls() if c["args"][:2] == ["get", "namespaces"]]) < 4:  # 3 tables printed
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err and err == ""
    assert out.count("(Ctrl-C stops)") >= 3 and out.count("alice") >= 3


def test_a_kubectl_that_cannot_reach_the_cluster_is_one_line(fake_kubectl, tmp_path):
    path, _ = fake_kubectl
    bad = tmp_path / "bin" / "kubectl"
    bad.write_text(f"#!{sys.executable}\nimport sys\n"
                   "sys.exit('Unable to connect to the server: dial tcp: i/o timeout')\n")
    result = subprocess.run([sys.executable, str(SRC / "instructor.py"), "status"], env={**child_env(), "PATH": path},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: kubectl get namespaces --selector mnist-workshop/attendee --output json: "
        "Unable to connect to the server: dial tcp: i/o timeout"]
