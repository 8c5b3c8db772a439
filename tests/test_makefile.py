"""The Makefile's cluster targets: self-documenting, driven by IMAGE, TAG and NAMESPACE, plain about what is missing.

There is no cluster here. `make -n` shows the commands a target would run;
for the deploy flow, a stand-in `kubectl` at the front of PATH records every
call and every manifest piped into it (and answers like an API server
would), so the test sees exactly what `make deploy` sends, in which order.
"""
import os
import re
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import kubectl_objects
from support import (
    KUBE,
    REPO,
    VERSIONS,
    fixed_ports,
    load,
    make,
    make_error,
    makefile_text,
    pushed_record,
    rendered,
    validate,
)

CLUSTER_TARGETS = ("check-cluster", "build", "push", "deploy", "storage", "job", "tensorboard", "tfjob", "tfjob-ps",
                   "logs", "serve", "predict", "sweep", "clean", "render", "instructor-plan", "instructor-operator",
                   "instructor-namespaces", "instructor-kubeconfigs", "instructor-render", "instructor-status",
                   "instructor-clean", "instructor-pin-images")
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


def test_build_push_deploy_dry_run_uses_the_given_image_tag_and_namespace(tmp_path):
    record = pushed_record(tmp_path, "registry.example.com/me/mnist:v9@sha256:" + "5e" * 32)
    result = make("-n", "build", "push", "deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()),
                  f"PUSHED_IMAGE={record}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "make/docker.sh build --platform linux/amd64 -t registry.example.com/me/mnist:v9" in out
    assert f"make/cluster.sh push registry.example.com/me/mnist:v9 {record}" in out
    assert "ghcr.io/example/mnist-trainer --tag" not in out and "--namespace default" not in out
    renders = [line.split(" | ")[0].split(" || ")[-1] for line in out.splitlines()
               if "src/render_manifests.py" in line and " | kubectl" in line]
    # The order deploy documents: storage, then TensorBoard, then training.
    files = [re.search(r"kube/\S+\.yaml", line).group() for line in renders]
    assert files.index("kube/storage.yaml") < files.index("kube/tensorboard.yaml") < files.index("kube/job.yaml")
    for line in renders:
        assert "--image registry.example.com/me/mnist --tag v9 --namespace alice" in line
        docs = [d for d in yaml.safe_load_all(subprocess.run(line, shell=True, cwd=REPO, capture_output=True,
                                                                text=True, check=True).stdout) if d]
        for doc in docs:
            assert doc["metadata"]["namespace"] == "alice"
            for version in VERSIONS:
                validate(doc, version)
        images = re.findall(r"image: (\S+)", yaml.safe_dump_all(docs))
        assert all(i == "registry.example.com/me/mnist:v9@sha256:" + "5e" * 32 for i in images if "mnist" in i), images


def stand_in_docker(tmp_path, output, code=0):
    """A PATH whose docker prints `output` (what `docker push` prints) and exits with `code`; logs its args."""
    bin_dir = tmp_path / "docker-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/docker.log\ncat <<'EOF'\n{output}EOF\n"
                                    f"exit {code}\n")
    (bin_dir / "docker").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


PUSH_OUTPUT = """The push refers to repository [registry.example.com/me/mnist]
5f70bf18a086: Pushed
v9: digest: sha256:{digest} size: 1784
"""


def test_push_records_the_digest_the_registry_stored(tmp_path):
    digest = "a1" * 32
    record = tmp_path / "runs" / "pushed-image"
    result = make("push", *(f"{k}={v}" for k, v in EXAMPLE.items()), f"PUSHED_IMAGE={record}",
                  path=stand_in_docker(tmp_path, PUSH_OUTPUT.format(digest=digest)))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker.log").read_text() == "push registry.example.com/me/mnist:v9\n"
    assert record.read_text() == f"registry.example.com/me/mnist:v9@sha256:{digest}\n"
    # ... and is what render pins.
    ref = subprocess.run([sys.executable, "src/render_manifests.py", "--image", EXAMPLE["IMAGE"], "--tag",
                          EXAMPLE["TAG"], "--pushed_image", record, "--print_reference"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert ref == f"registry.example.com/me/mnist:v9@sha256:{digest}\n"


@pytest.mark.parametrize("output, code, fragment", [
    ("denied: Permission 'artifactregistry.repositories.uploadArtifacts' denied\n", 1,
     "docker push registry.example.com/me/mnist:v9 failed"),
    ("v9: pushed\n", 0, "docker push registry.example.com/me/mnist:v9 printed no digest"),
])
def test_a_failed_push_is_one_line_and_keeps_the_previous_record(tmp_path, output, code, fragment):
    record = pushed_record(tmp_path)
    before = record.read_text()
    result = make("push", *(f"{k}={v}" for k, v in EXAMPLE.items()), f"PUSHED_IMAGE={record}",
                  path=stand_in_docker(tmp_path, output, code))
    assert result.returncode != 0
    make_error(result, fragment)
    assert record.read_text() == before


def test_deploy_without_a_push_of_this_tag_is_one_line_and_applies_no_trainer(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    record = pushed_record(tmp_path, "registry.example.com/me/mnist:v8@sha256:" + "5e" * 32)
    result = make("deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()), f"PUSHED_IMAGE={record}",
                  env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode != 0
    assert "records a push of registry.example.com/me/mnist:v8, not registry.example.com/me/mnist:v9: " \
           "run make push first" in result.stderr
    assert not [c for c in calls() if "mnist-trainer" in c["stdin"] or "registry.example.com" in c["stdin"]]


def test_deploy_applies_the_claim_then_tensorboard_then_the_job(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, {})  # a new namespace: no claim yet
    result = make("deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()), f"PUSHED_IMAGE={pushed_record(tmp_path)}",
                  env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    applied = [(call["args"], [d for d in yaml.safe_load_all(call["stdin"]) if d])
               for call in calls() if call["args"][-3:] == ["apply", "-f", "-"]]
    kinds = [f"{d['kind']}/{d['metadata']['name']}" for _, docs in applied for d in docs]
    assert kinds == ["PersistentVolumeClaim/mnist-nfs", "Deployment/tensorboard", "Service/tensorboard",
                     "Job/mnist-train"]
    for args, docs in applied:
        for doc in docs:
            for version in VERSIONS:
                validate(doc, version)
            assert args[:2] == ["--namespace", "alice"] and doc["metadata"]["namespace"] == "alice"
    (claim,) = applied[0][1]
    assert claim["spec"]["volumeName"] == "mnist-nfs-alice"  # the instructor's volume, reserved for it
    waits = [" ".join(c["args"]) for c in calls() if "wait" in c["args"] or "rollout" in c["args"]]
    assert any("persistentvolumeclaim/mnist-nfs" in w for w in waits)
    assert "deployed." in result.stdout


def test_deploy_leaves_an_existing_claim_alone(fake_kubectl, tmp_path):
    """The instructor created it (maybe of a Filestore class): re-applying another spec would be refused."""
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, {"persistentvolumeclaim": [{"metadata": {"name": "mnist-nfs", "namespace": "alice"}}]})
    result = make("storage", *(f"{k}={v}" for k, v in EXAMPLE.items()), env={"FAKE_CONTEXT_NAMESPACE": "alice"},
                  path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in calls() if "apply" in c["args"]]


def test_deploy_tells_an_attendee_to_ask_the_instructor_when_the_claim_has_no_volume(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    result = make("deploy", *(f"{k}={v}" for k, v in EXAMPLE.items()), f"PUSHED_IMAGE={pushed_record(tmp_path)}",
                  env={"FAKE_WAIT_EXIT": "1"}, path=path)
    assert result.returncode != 0
    assert "make instructor-namespaces ATTENDEES=alice" in result.stderr
    assert not [c for c in calls() if "kind: Job" in c["stdin"]]


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
        names = {d["metadata"]["name"] for d in load(KUBE / name)}
        assert defaults[variable] in names, f"{variable} ?= {defaults[variable]}, but {name} names {names}"
    for target, name in (("tfjob", "mnist-tfjob"), ("tfjob-ps", "mnist-tfjob-ps")):
        (tfjob,) = load(KUBE / f"{target}.yaml")
        assert tfjob["metadata"]["name"] == name


def test_tfjob_targets_check_the_tfjob_offline_then_the_quota_before_applying_it():
    out = make("-n", "tfjob", "tfjob-ps", *(f"{k}={v}" for k, v in EXAMPLE.items())).stdout.splitlines()
    for manifest in ("kube/tfjob.yaml", "kube/tfjob-ps.yaml"):
        check = out.index(f".venv/bin/python src/tfjob_check.py {manifest}")
        quota = out.index(f".venv/bin/python src/quota_check.py --namespace alice {manifest}")
        delete = next(i for i, line in enumerate(out) if manifest in line and "delete" in line)
        apply = next(i for i, line in enumerate(out) if manifest in line and line.endswith("apply -f -"))
        assert check < quota < delete < apply


def test_clean_deletes_everything_the_steps_apply_but_the_storage(fake_kubectl):
    path, calls = fake_kubectl
    result = make("clean", *(f"{k}={v}" for k, v in EXAMPLE.items()), env={"FAKE_CONTEXT_NAMESPACE": "alice"},
                  path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    deleted = {(d["kind"], d["metadata"]["name"]) for c in calls() if "delete" in c["args"]
               for d in yaml.safe_load_all(c["stdin"]) if d}
    everything = {(d["kind"], d["metadata"]["name"]) for d in rendered(sorted(KUBE.glob("*.yaml")))}
    assert deleted == everything - {("PersistentVolumeClaim", "mnist-nfs")}
    assert {("CronJob", "mnist-retrain"), ("HorizontalPodAutoscaler", "mnist-serving"),
            ("PodDisruptionBudget", "mnist-serving"), ("Job", "mnist-batch-predict")} <= deleted
    selectors = [" ".join(c["args"]) for c in calls() if "--selector" in c["args"]]
    assert "--namespace alice delete tfjobs --selector sweep --ignore-not-found" in selectors
    # Jobs made from the CronJob by `make retrain-now` carry its template's labels.
    assert "--namespace alice delete jobs --selector app.kubernetes.io/part-of=mnist-workshop --ignore-not-found" \
        in selectors
    cronjob = next(d for d in load(KUBE / "retrain-cronjob.yaml"))
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mnist-workshop"
    assert not [s for s in selectors if "experiments" in s]  # no Katib on this cluster: nothing to ask it


def test_clean_deletes_the_katib_experiments_where_katib_is_installed(fake_kubectl):
    path, calls = fake_kubectl
    result = make("clean", *(f"{k}={v}" for k, v in EXAMPLE.items()), path=path,
                  env={"FAKE_CONTEXT_NAMESPACE": "alice", "FAKE_API_RESOURCES": "tfjobs.kubeflow.org "
                                                                                 "experiments.kubeflow.org"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert ["--namespace", "alice", "delete", "experiments", "--selector", "app.kubernetes.io/part-of=mnist-workshop",
            "--ignore-not-found"] in [c["args"] for c in calls()]


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


def test_instructor_render_writes_what_the_instructor_applies(tmp_path):
    result = make("instructor-render", "ATTENDEES=alice bob", f"OUT={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admission.yaml", "alice.yaml", "bob.yaml",
                                                          "workshop-storage.yaml"]
    result = make("instructor-render", "ATTENDEES=alice")
    assert result.returncode != 0 and "error: --output_dir is empty" in result.stderr


def test_the_makefiles_defaults_are_the_capacity_plans():
    from tfk8s.instructor import plan
    text = makefile_text()
    assert re.search(r"^SWEEP_PARALLEL \?= (\d+)", text, re.M).group(1) == str(plan.SWEEP_PARALLEL)
    assert re.search(r"^MACHINE_TYPE\s+\?= (\S+)", text, re.M).group(1) == plan.MACHINE_TYPE


def forward_port(output):
    """The local port with-port-forward says it forwards (kubectl picked it)."""
    return int(re.search(r"forwarded to 127\.0\.0\.1:(\d+)", output).group(1))


def test_a_step_run_behind_a_port_forward_reaches_it_on_the_port_kubectl_picked_and_leaves_none_behind(
        fake_kubectl):
    path, calls = fake_kubectl
    probe = "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['FORWARDED_PORT'])), 2); " \
            "print('reached', os.environ['FORWARDED_PORT'])"
    result = subprocess.run([str(REPO / "make" / "cluster.sh"), "with-port-forward", "alice", "mnist-serving",
                             "8500", sys.executable, "-c", probe], env={**os.environ, "PATH": path},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    port = forward_port(result.stdout)
    assert f"reached {port}" in result.stdout.splitlines()
    assert ["--namespace", "alice", "port-forward", "service/mnist-serving", ":8500"] in [c["args"] for c in calls()]
    with socket.socket() as s:  # the port-forward was stopped with the step
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_step_whose_command_fails_still_stops_its_port_forward_and_fails(fake_kubectl):
    path, _ = fake_kubectl
    result = subprocess.run([str(REPO / "make" / "cluster.sh"), "with-port-forward", "alice", "mnist-serving",
                             "8500", "false"], env={**os.environ, "PATH": path}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", forward_port(result.stdout))) != 0


def test_a_port_forward_that_fails_is_one_line_with_kubectls_reason(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text('#!/bin/sh\necho \'error: services "mnist-serving" not found\' >&2\nexit 1\n')
    (bin_dir / "kubectl").chmod(0o755)
    result = subprocess.run([str(REPO / "make" / "cluster.sh"), "with-port-forward", "alice", "mnist-serving",
                             "8500", "true"], env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == ('error: kubectl port-forward service/mnist-serving :8500 stopped: '
                                     'error: services "mnist-serving" not found')


class Recorder:
    """A TCP server on loopback that notes every connection and the first bytes sent on it."""

    def __init__(self, port=0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.received = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn = self.server.accept()[0]
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(64))
                except OSError:
                    self.received.append(b"")

    def close(self):
        self.server.close()


def test_make_predict_talks_to_the_forward_never_to_what_holds_8500_on_the_laptop(fake_kubectl):
    """A `make serve-local` left running holds 8500: predict must reach the cluster (the stand-in's
    forward to the "pod"), not the laptop's server."""
    path, calls = fake_kubectl
    with fixed_ports(timeout=0) as held:  # not while the README's steps hold 8500: they use it
        try:
            laptop = Recorder(8500) if held else None
        except OSError:  # something else holds 8500 already: the same situation, unobserved
            laptop = None
        check_predict_reaches_the_forward(laptop, path, calls)


def check_predict_reaches_the_forward(laptop, path, calls):
    pod = Recorder()
    try:
        result = make("predict", "NAMESPACE=alice", env={"FAKE_FORWARD_TO": str(pod.port),
                                                         "FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
        assert pod.received and pod.received[0].startswith(b"PRI * HTTP/2.0"), (pod.received, result.stderr)
        if laptop is not None:
            assert laptop.received == []
        assert ["--namespace", "alice", "port-forward", "service/mnist-serving", ":8500"] in \
            [c["args"] for c in calls()]
    finally:
        pod.close()
        if laptop is not None:
            laptop.close()


@pytest.mark.parametrize("flags, asked", [((), "--image data"),
                                          (("PREDICT_FLAGS=--num_tests 20 --concurrency 4",),
                                           "--num_tests 20 --concurrency 4")])
def test_make_predict_passes_its_client_flags_behind_the_forward(flags, asked):
    result = make("-n", "predict", "NAMESPACE=alice", *flags)
    assert result.returncode == 0, result.stderr
    command = result.stdout[result.stdout.index("with-port-forward alice mnist-serving 8500"):]
    assert "--port $FORWARDED_PORT --model mnist --signature_name predict " + asked + "'" in command


def test_no_attendee_page_forwards_a_fixed_local_port():
    """A fixed local port may be held by something on the laptop (make serve-local on 8500): the pages use the
    targets' forwards, to a port kubectl picks."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*/*.md"))]
    fixed = [f"{page.relative_to(REPO)}: {m.group()}" for page in pages
             for m in re.finditer(r"port-forward\s+\S+\s+\d+:\d+", page.read_text())]
    assert fixed == []


def test_an_unknown_step_is_one_line():
    result = subprocess.run([str(REPO / "make" / "cluster.sh"), "deploy-everything"], capture_output=True, text=True)
    assert result.returncode != 0 and result.stderr.startswith("error: unknown step 'deploy-everything'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_model_config_steps_talk_to_the_forwarded_port_never_a_fixed_one(fake_kubectl, tmp_path):
    """`make canary` runs model_config.py ACTION ... --server forwarded behind with-port-forward: the address
    it and the wait after it use is the port kubectl picked."""
    path, _ = fake_kubectl
    log = tmp_path / "python.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    python.chmod(0o755)
    result = subprocess.run([str(REPO / "make" / "cluster.sh"), "model-config", "alice", "mnist-model-config",
                             str(python), "canary", "--canary", "5", "--server", "forwarded"],
                            env={**os.environ, "PATH": path, "FORWARDED_PORT": "41234"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "src/model_config.py canary --canary 5 --server http://127.0.0.1:41234 --configmap -",
        "src/model_config.py wait --configmap - --server http://127.0.0.1:41234"]
    cluster_mk = (REPO / "make" / "cluster.mk").read_text()
    assert "--server forwarded)" in cluster_mk and "localhost:8501" not in cluster_mk
