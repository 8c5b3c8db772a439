"""The Makefile's cluster section: self-documenting, driven by IMAGE, TAG and NAMESPACE, and plain about what is missing.

There is no cluster here. `make -n` shows the commands a target would run;
for the deploy flow, a stand-in `kubectl` at the front of PATH records every
call and every manifest piped into it (and answers like an API server
would), so the test sees exactly what `make deploy` sends, in which order.
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

from conftest import REPO
from test_manifests import VERSIONS, validate

MAKE = shutil.which("make")
CLUSTER_TARGETS = ("check-cluster", "build", "push", "deploy", "storage", "job", "tensorboard", "tfjob", "tfjob-ps",
                   "logs", "serve", "predict", "sweep", "clean", "clean-storage", "instructor-operator",
                   "instructor-namespaces", "instructor-clean")
EXAMPLE = {"IMAGE": "registry.example.com/me/mnist", "TAG": "v9", "NAMESPACE": "alice"}

FAKE_KUBECTL = """#!{python}
# Stands in for kubectl: logs each call (and what was piped into it), answers like a cluster would.
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "-" in args else ""
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "stdin": stdin}}) + "\\n")
words = [a for i, a in enumerate(args) if a != "--namespace" and (i == 0 or args[i - 1] != "--namespace")]
if words[:2] == ["config", "current-context"]:
    context = os.environ.get("FAKE_CONTEXT", "workshop")
    print(context) if context else sys.exit("error: current-context is not set")
elif words[:2] == ["config", "view"]:
    print(os.environ.get("FAKE_CONTEXT_NAMESPACE", ""), end="")
elif words[:3] == ["auth", "can-i", "create"]:
    sys.exit(0 if os.environ.get("FAKE_CAN_CREATE_PV") == "yes" else 1)
elif words[:3] == ["get", "service", "nfs-server"]:
    print("10.96.7.7", end="")
elif words[0] == "wait":
    sys.exit(int(os.environ.get("FAKE_WAIT_EXIT", "0")))
elif words[0] in ("apply", "delete"):
    for doc in (d for d in __import__("yaml").safe_load_all(stdin) if d):
        print(doc["kind"].lower() + "/" + doc["metadata"]["name"], "configured" if words[0] == "apply" else "deleted")
"""


def make(*args, env=None, path=None):
    """Run make in the repository (never rebuilding .venv) and return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    for name in ("IMAGE", "TAG", "NAMESPACE", "KUBECONFIG", "MAKEFLAGS"):
        full_env.pop(name, None)
    if path is not None:
        full_env["PATH"] = path
    return subprocess.run([MAKE, "--no-print-directory", "-o", ".venv/.installed", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def fake_kubectl(tmp_path):
    """A PATH whose kubectl is the stand-in; returns (PATH, a function reading the calls it logged)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "kubectl.log"
    os.environ["FAKE_KUBECTL_LOG"] = str(log)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    yield f"{bin_dir}:/usr/bin:/bin", calls
    os.environ.pop("FAKE_KUBECTL_LOG")


def cluster_section():
    text = (REPO / "Makefile").read_text()
    return text[text.index("# " + "-" * 64 + " cluster"):]


def test_help_lists_every_cluster_target_with_a_description():
    result = make("help")
    listed = {line.split()[0]: line for line in re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines() if line.strip()}
    for target in CLUSTER_TARGETS:
        assert target in listed and len(listed[target].split()) > 2, target


def test_every_cluster_target_is_phony():
    section = cluster_section()
    phony = set(" ".join(re.findall(r"^\.PHONY: (.+)$", section, re.M)).split())
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", section, re.M))
    assert defined == phony and set(CLUSTER_TARGETS) <= defined


def test_build_push_deploy_dry_run_uses_the_given_image_tag_and_namespace():
    result = make("-n", "build", "push", "deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "docker build --platform linux/amd64 -f src/Dockerfile -t registry.example.com/me/mnist:v9 ." in out
    assert "docker push registry.example.com/me/mnist:v9" in out
    assert "ghcr.io/example/mnist-trainer --tag" not in out and "--namespace default" not in out
    renders = [line.split(" | ")[0] for line in out.splitlines() if "src/render_manifests.py" in line and " | kubectl" in line]
    applied = [line for line in renders if "--scope cluster" not in line]
    # The order deploy documents: storage, then TensorBoard, then training.
    files = [re.search(r"kube/\S+\.yaml", line).group() for line in applied]
    assert files.index("kube/nfs.yaml") < files.index("kube/tensorboard.yaml") < files.index("kube/job.yaml")
    for line in applied:
        assert "--image registry.example.com/me/mnist --tag v9 --namespace alice" in line
        docs = [d for d in yaml.safe_load_all(subprocess.run(line, shell=True, cwd=REPO, capture_output=True,
                                                                text=True, check=True).stdout) if d]
        for doc in docs:
            assert doc["metadata"]["namespace"] == "alice"
            for version in VERSIONS:
                validate(doc, version)
        images = re.findall(r"image: (\S+)", yaml.safe_dump_all(docs))
        assert all(i == "registry.example.com/me/mnist:v9" for i in images if "mnist" in i), images


def test_deploy_applies_storage_then_tensorboard_then_the_job_and_the_volume_points_at_the_nfs_service(fake_kubectl):
    path, calls = fake_kubectl
    result = make("deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()),
                  env={"FAKE_CAN_CREATE_PV": "yes", "FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    applied = [(call["args"], [d for d in yaml.safe_load_all(call["stdin"]) if d])
               for call in calls() if call["args"][-3:] == ["apply", "-f", "-"]]
    kinds = [f"{d['kind']}/{d['metadata']['name']}" for _, docs in applied for d in docs]
    assert kinds.index("Deployment/nfs-server") < kinds.index("PersistentVolume/mnist-nfs-alice") \
        < kinds.index("Deployment/tensorboard") < kinds.index("Job/mnist-train")
    for args, docs in applied:
        for doc in docs:
            for version in VERSIONS:
                validate(doc, version)
            if doc["kind"] == "PersistentVolume":
                assert doc["spec"]["nfs"]["server"] == "10.96.7.7"  # the Service's ClusterIP, not a DNS name
            else:
                assert args[:2] == ["--namespace", "alice"] and doc["metadata"]["namespace"] == "alice"
    waits = [" ".join(c["args"]) for c in calls() if "wait" in c["args"] or "rollout" in c["args"]]
    assert any("deployment/nfs-server" in w for w in waits)
    assert any("persistentvolumeclaim/mnist-nfs" in w for w in waits)
    assert "deployed." in result.stdout


def test_deploy_tells_an_attendee_to_ask_the_instructor_when_the_claim_has_no_volume(fake_kubectl):
    path, calls = fake_kubectl
    result = make("deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()),
                  env={"FAKE_CAN_CREATE_PV": "no", "FAKE_WAIT_EXIT": "1"}, path=path)
    assert result.returncode != 0
    assert "make instructor-namespaces ATTENDEES=alice" in result.stderr
    assert not [c for c in calls() if "PersistentVolume" in c["stdin"] and "kind: PersistentVolume\n" in c["stdin"]]


def test_check_cluster_says_kubectl_is_missing(tmp_path):
    result = make("check-cluster", path=str(tmp_path))
    assert result.returncode != 0
    assert "error: kubectl is not installed" in result.stderr


def test_check_cluster_says_there_is_no_context(fake_kubectl):
    path, _ = fake_kubectl
    result = make("check-cluster", env={"FAKE_CONTEXT": ""}, path=path)
    assert result.returncode != 0
    assert "error: kubectl has no current context: export KUBECONFIG=" in result.stderr


def test_namespace_defaults_to_the_kubeconfigs_and_a_different_one_is_caught(fake_kubectl):
    path, _ = fake_kubectl
    result = make("check-cluster", env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode == 0 and "namespace alice" in result.stdout, result.stdout + result.stderr
    result = make("check-cluster", "NAMESPACE=bob", env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode != 0 and "export NAMESPACE=alice" in result.stderr


def test_build_refuses_the_placeholder_image():
    result = make("build")
    assert result.returncode != 0 and "IMAGE is the placeholder" in result.stderr


def test_the_makefiles_workload_names_are_the_manifests():
    section = cluster_section()
    defaults = dict(re.findall(r"^(JOB|TFJOB|SERVING)\s*\?=\s*(\S+)", section, re.M))
    files = {"JOB": "job.yaml", "TFJOB": "tfjob.yaml", "SERVING": "serving.yaml"}
    for variable, name in files.items():
        path = REPO / "kube" / name
        if not path.exists():
            continue
        names = {d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d}
        assert defaults[variable] in names, f"{variable} ?= {defaults[variable]}, but {name} names {names}"
    for target, name in (("tfjob", "mnist-tfjob"), ("tfjob-ps", "mnist-tfjob-ps")):
        path = REPO / "kube" / f"{target}.yaml"
        if path.exists():
            assert yaml.safe_load(path.read_text())["metadata"]["name"] == name


def test_tfjob_targets_check_the_tfjob_offline_before_applying_it():
    out = make("-n", "tfjob", "tfjob-ps", *(f"{k}={v}" for k, v in EXAMPLE.items())).stdout.splitlines()
    for manifest in ("kube/tfjob.yaml", "kube/tfjob-ps.yaml"):
        check = out.index(f".venv/bin/python src/tfjob_check.py {manifest}")
        apply = next(i for i, line in enumerate(out) if manifest in line and line.endswith("apply -f -"))
        assert check < apply


def test_instructor_operator_installs_a_pinned_v1_9_release():
    out = make("-n", "instructor-operator").stdout
    assert re.search(r'kubectl apply --server-side -k "github.com/kubeflow/\S+/manifests/overlays/standalone\?ref=v1\.9\.\d+"', out)


def test_instructor_namespaces_without_a_cluster_renders_the_files_only(tmp_path):
    result = make("instructor-namespaces", "ATTENDEES=alice bob", f"INSTRUCTOR_DIR={tmp_path}",
                  path=str(tmp_path / "nothing"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "alice.yaml").exists() and (tmp_path / "bob.yaml").exists()
    assert "rendered only" in result.stdout
    assert make("instructor-namespaces").returncode != 0
