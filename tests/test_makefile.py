"""The Makefile's cluster targets: self-documenting, driven by IMAGE, TAG and NAMESPACE, plain about what is missing.

There is no cluster here. `make -n` shows the commands a target would run;
for the deploy flow, a stand-in `kubectl` at the front of PATH records every
call and every manifest piped into it (and answers like an API server
would), so the test sees exactly what `make deploy` sends, in which order.
"""
import re
import subprocess

import yaml

from conftest import REPO, make, makefile_text
from test_manifests import VERSIONS, validate

CLUSTER_TARGETS = ("check-cluster", "build", "push", "deploy", "storage", "job", "tensorboard", "tfjob", "tfjob-ps",
                   "logs", "serve", "predict", "sweep", "clean", "clean-storage", "instructor-operator",
                   "instructor-namespaces", "instructor-clean")
EXAMPLE = {"IMAGE": "registry.example.com/me/mnist", "TAG": "v9", "NAMESPACE": "alice"}



def cluster_section():
    text = makefile_text()
    return text[text.index("# " + "-" * 64 + " cluster"):]


def test_help_lists_every_cluster_target_with_a_description():
    result = make("help")
    lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines()
    listed = {line.split()[0]: line for line in lines if line.strip()}
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
    renders = [line.split(" | ")[0] for line in out.splitlines()
               if "src/render_manifests.py" in line and " | kubectl" in line]
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
    operator = r'kubectl apply --server-side -k "github.com/kubeflow/\S+/manifests/overlays/standalone\?ref=v1\.9\.\d+"'
    assert re.search(operator, out)


def test_instructor_namespaces_without_a_cluster_renders_the_files_only(tmp_path):
    result = make("instructor-namespaces", "ATTENDEES=alice bob", f"INSTRUCTOR_DIR={tmp_path}",
                  path=str(tmp_path / "nothing"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "alice.yaml").exists() and (tmp_path / "bob.yaml").exists()
    assert "rendered only" in result.stdout
    assert make("instructor-namespaces").returncode != 0
