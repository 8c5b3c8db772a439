"""Every manifest in kube/, as written and as the Makefile renders it, is one a Kubernetes 1.30+ cluster accepts.

Validation is strict (an unknown or misspelt field fails), against the real
OpenAPI schemas of Kubernetes 1.30 and of the newest release kubernetes-validate
knows; TFJobs go through src/tfjob_check.py (the operator's CRD and rules).
Then the workshop's own rules: every pod meets Pod Security `restricted`
(src/tfk8s/kube/pod_security.py, the API server's checks), pinned images,
requests and limits, no service account token, the shared claim mounted the
same way everywhere, Services that select a pod and name its ports, and
TensorBoard's real command answering its probe. Last, `make render`'s output:
every object an attendee applies, the sweep's trials included.
"""
import json
import math
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support import EXAMPLE_IMAGE as IMAGE
from support import EXAMPLE_NAMESPACE as NAMESPACE
from support import EXAMPLE_REFERENCE as REFERENCE
from support import EXAMPLE_TAG as TAG
from support import (
    KUBE,
    MANIFESTS,
    REPO,
    VERSIONS,
    assert_one_line_error,
    containers,
    load,
    make,
    pod_templates,
    pushed_record,
    rendered,
    run_script,
    validate,
)
from tfk8s.kube import cluster_model, katib_check, pod_security, render
from tfk8s.ports import free_port


def all_documents():
    """(label, document) for every file as written and as rendered, storage variants included."""
    cases = [(f"{p.name}[{i}]", doc) for p in MANIFESTS for i, doc in enumerate(load(p))]
    cases += [(f"rendered {d['kind']}/{d['metadata']['name']}", d) for d in rendered()]
    cases += [(f"rendered RWX {d['kind']}/{d['metadata']['name']}", d)
              for d in rendered(rwx_storage_class="standard-rwx")
              if d["kind"] == "PersistentVolumeClaim"]
    return cases


DOCUMENTS = all_documents()


def test_kube_holds_the_attendees_manifests_and_nothing_of_the_instructors():
    assert {"storage.yaml", "tensorboard.yaml", "job.yaml", "tfjob.yaml"} <= {p.name for p in MANIFESTS}
    kinds = {d["kind"] for p in MANIFESTS for d in load(p)}
    assert not kinds & {"PersistentVolume", "Namespace", "Role", "RoleBinding", "NetworkPolicy", "ResourceQuota"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label,doc", DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_every_document_passes_strict_validation(label, doc, version):
    validate(doc, version)


def test_strict_validation_rejects_a_misspelt_field():
    """The check above can fail: an unknown field is an error, as with kubectl's --validate=strict."""
    deployment = next(d for d in load(KUBE / "tensorboard.yaml") if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


@pytest.mark.parametrize("label,doc", DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_every_image_is_pinned(label, doc):
    for where, template in pod_templates(doc):
        for _, c in containers(template):
            image = c["image"]
            name = image.split("@")[0].rsplit("/", 1)[-1]
            assert ":" in name or "@sha256:" in image, f"{where}/{c['name']}: {image} has no tag"
            assert not image.endswith(":latest"), f"{where}/{c['name']}: {image}"


def effective(template, container, field):
    """A securityContext field as the kubelet sees it: the container's, else the pod's."""
    return container.get("securityContext", {}).get(field, template["spec"].get("securityContext", {}).get(field))


def has_comment_above(path, line_pattern, words):
    """True if the YAML line matching `line_pattern` has a comment just above it that mentions `words`."""
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if re.search(line_pattern, line):
            comment = []
            for above in reversed(lines[:i]):
                if not above.strip().startswith("#"):
                    break
                comment.append(above.lower())
            return all(w in " ".join(comment) for w in words)
    return False


@pytest.mark.parametrize("label,doc", DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_every_pod_meets_pod_security_restricted_and_has_requests_limits_and_no_token(label, doc):
    assert pod_security.violations([doc], "restricted") == []
    for where, template in pod_templates(doc):
        spec = template["spec"]
        # Nothing the workshop runs talks to the API server.
        assert spec.get("automountServiceAccountToken") is False, where
        # A Filestore volume is handed to group 1000 on mount, the root only.
        assert spec["securityContext"]["fsGroup"] == 1000, where
        assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch", where
        for _kind, c in containers(template):
            name = f"{where}/{c['name']}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{name}: no {bound}"
            assert effective(template, c, "runAsUser") == 1000, name


# A namespace's `enforce-version: latest` is the API server's own version: the workshop runs on 1.30 and newer.
SUPPORTED_VERSIONS = [f"v1.{minor}" for minor in range(30, pod_security.LATEST[1] + 1)]


def test_every_pod_the_workshop_writes_or_the_cluster_makes_is_restricted_at_every_supported_version():
    made = [d for docs in cluster_model.cluster_made(NAMESPACE).values() for d in docs]
    pods = [written for _, written in DOCUMENTS] + made
    assert len(made) > 20
    for version in SUPPORTED_VERSIONS:
        assert pod_security.violations(pods, "restricted", version) == [], version


@pytest.mark.parametrize("label,doc", DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_every_object_carries_the_workshop_labels(label, doc):
    labels = doc["metadata"].get("labels", {})
    assert labels.get("app.kubernetes.io/part-of") == "mnist-workshop", label
    assert labels.get("app"), label
    for where, template in pod_templates(doc):
        pod_labels = template["metadata"]["labels"]
        assert pod_labels.get("app") and pod_labels.get("app.kubernetes.io/part-of") == "mnist-workshop", where


def test_every_pod_mounts_the_shared_claim_the_same_way():
    mounting = 0
    for doc in rendered():
        for where, template in pod_templates(doc):
            volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
            claims = {name for name, v in volumes.items()
                      if v.get("persistentVolumeClaim", {}).get("claimName") == "mnist-nfs"}
            if not claims:
                continue
            mounting += 1
            assert claims == {"nfs"}, where
            mounts = [m for _, c in containers(template) for m in c.get("volumeMounts", []) if m["name"] == "nfs"]
            assert mounts and all(m["mountPath"] == "/mnt/nfs" for m in mounts), where
    assert mounting >= 2  # at least TensorBoard and the training Job


def test_services_select_a_pod_and_name_its_ports():
    docs = rendered()
    pods = [(t["metadata"]["labels"], t) for d in docs for _, t in pod_templates(d)]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        selected = [t for labels, t in pods if selector.items() <= labels.items()]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        names = {p.get("name") for t in selected for _, c in containers(t) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port.get("name"), f"{service['metadata']['name']}: unnamed port {port}"
            if isinstance(port.get("targetPort"), str):
                assert port["targetPort"] in names, f"{service['metadata']['name']}: no container port {port}"


def test_probes_use_ports_the_container_declares():
    for doc in rendered():
        for where, template in pod_templates(doc):
            for _, c in containers(template):
                names = {p["name"] for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    action = next((v for k, v in c.get(probe, {}).items() if k in ("httpGet", "tcpSocket", "grpc")),
                                  None)
                    if action and isinstance(action.get("port"), str):
                        assert action["port"] in names, f"{where}/{c['name']} {probe}"


# ---------------------------------------------------------------- what the renderer changes

def test_rendering_puts_every_trainer_container_on_the_given_image_and_namespace():
    docs = rendered()
    images = [c["image"] for d in docs for _, t in pod_templates(d) for _, c in containers(t)]
    assert REFERENCE in images
    assert not [i for i in images if i.startswith(render.TRAINER_IMAGE)]
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)
    # Others' images (TensorFlow Serving) are left as pinned.
    assert [i for i in images if i.startswith("tensorflow/serving:")]


def test_rendering_retags_every_replica_of_a_tfjob_written_with_a_yaml_alias():
    for path in (KUBE / "tfjob.yaml", KUBE / "tfjob-ps.yaml"):
        (tfjob,) = rendered([path])
        images = {c["image"] for _, t in pod_templates(tfjob) for _, c in containers(t)}
        assert images == {REFERENCE}, path.name
        text = render.dump([tfjob])
        assert "&id" not in text and "*id" not in text  # independent copies, no anchors left


def test_each_namespace_claims_the_volume_the_instructor_made_for_it():
    for namespace in ("alice", "bob"):
        (claim,) = render.render(render.load([KUBE / "storage.yaml"]), IMAGE, TAG, namespace)
        assert claim["metadata"] == {**claim["metadata"], "name": "mnist-nfs", "namespace": namespace}
        assert claim["spec"]["volumeName"] == f"mnist-nfs-{namespace}" and claim["spec"]["storageClassName"] == ""
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_a_managed_rwx_class_makes_the_claim_ask_that_class_for_its_volume():
    (claim,) = rendered([KUBE / "storage.yaml"], rwx_storage_class="standard-rwx", rwx_size="1Ti")
    assert claim["metadata"]["name"] == "mnist-nfs"
    assert claim["spec"]["storageClassName"] == "standard-rwx" and "volumeName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Ti"


@pytest.mark.parametrize("args,fragment", [
    (["--tag", "latest"], "not reproducible"),
    (["--namespace", "Alice"], "not a namespace name"),
    (["--image", "registry.example.com/me/mnist:v1"], "without a tag"),
    (["--output_dir", ""], "--output_dir is empty"),
    (["kube/missing.yaml"], "cannot read kube/missing.yaml"),
])
def test_render_manifests_reports_a_mistake_in_one_line(args, fragment):
    files = [] if any(a.endswith(".yaml") for a in args) else ["kube/storage.yaml"]
    assert_one_line_error(run_script("render_manifests.py", *args, *files), fragment)


@pytest.mark.parametrize("record, fragment", [
    (None, "is missing): run make push first"),
    (f"{IMAGE}:v8@sha256:{'5e' * 32}", f"records a push of {IMAGE}:v8, not {IMAGE}:{TAG}: run make push first"),
    (f"{IMAGE}:{TAG}", "is not one line IMAGE:TAG@sha256:<64 hex digits>: run make push first"),
    (f"{IMAGE}:{TAG}@sha256:{'5e' * 31}", "is not one line IMAGE:TAG@sha256"),
    (f"{REFERENCE}\n{REFERENCE}", "is not one line"),
])
def test_a_trainer_manifest_without_a_record_of_this_push_is_one_line(tmp_path, record, fragment):
    path = tmp_path / "pushed-image"
    if record is not None:
        path.write_text(record + "\n")
    for extra in ([], ["--print_reference"]):
        result = run_script("render_manifests.py", "--image", IMAGE, "--tag", TAG, "--namespace", NAMESPACE,
                            "--pushed_image", path, *extra, "kube/job.yaml")
        assert_one_line_error(result, fragment)


def test_the_pushed_digest_is_what_every_trainer_container_pulls_and_a_manifest_without_one_needs_no_push(
        tmp_path):
    result = run_script("render_manifests.py", "--image", IMAGE, "--tag", TAG, "--namespace", NAMESPACE,
                        "--pushed_image", pushed_record(tmp_path), *MANIFESTS)
    assert result.returncode == 0, result.stderr
    images = {c["image"] for d in yaml.safe_load_all(result.stdout) if d for _, t in pod_templates(d)
              for _, c in containers(t)}
    assert REFERENCE in images and not [i for i in images if "mnist" in i and i != REFERENCE]
    # The claim and the model config run no trainer: no record needed.
    result = run_script("render_manifests.py", "--image", IMAGE, "--tag", TAG, "--pushed_image", tmp_path / "none",
                        "kube/storage.yaml", "kube/model-config.yaml")
    assert result.returncode == 0, result.stderr
    result = run_script("render_manifests.py", "--image", IMAGE, "--tag", TAG, "--placeholder_digest",
                        "--print_reference")
    assert result.stdout == f"{IMAGE}:{TAG}@{render.PLACEHOLDER_DIGEST}\n"


def test_render_manifests_prints_yaml_that_kubectl_reads_back(tmp_path):
    result = run_script("render_manifests.py", "--image", IMAGE, "--tag", TAG, "--namespace", NAMESPACE,
                        "--pushed_image", pushed_record(tmp_path), "kube/storage.yaml", "kube/tensorboard.yaml")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs == rendered([KUBE / "storage.yaml", KUBE / "tensorboard.yaml"])
    assert json.loads(json.dumps(docs)) == docs


# ---------------------------------------------------------------- make render: all an attendee applies

@pytest.fixture(scope="module")
def make_render(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    record = pushed_record(tmp_path_factory.mktemp("push"))
    result = make("render", f"OUT={out}", f"NAMESPACE={NAMESPACE}", f"IMAGE={IMAGE}", f"TAG={TAG}",
                  f"PUSHED_IMAGE={record}")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_make_render_writes_every_manifest_and_every_sweep_trial_as_applied(make_render):
    assert sorted(p.name for p in make_render.glob("*.yaml")) == [p.name for p in MANIFESTS]
    values = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())
    trials = sorted((make_render / "sweep").glob("*.yaml"))
    assert len(trials) == math.prod(len(v) for v in values["grid"].values())
    for path in MANIFESTS:
        assert load(make_render / path.name) == rendered([path]), path.name
    kinds, trainer_images = set(), set()
    for path in [*make_render.glob("*.yaml"), *trials]:
        for doc in load(path):
            kinds.add(doc["kind"])
            assert doc["metadata"]["namespace"] == NAMESPACE, path
            for version in VERSIONS:
                validate(doc, version)
            assert pod_security.violations([doc], "restricted") == [], path
            for _, template in pod_templates(doc):
                assert template["spec"]["automountServiceAccountToken"] is False, path
                trainer_images |= {c["image"] for _, c in containers(template) if "mnist" in c["image"]}
    assert {"PersistentVolumeClaim", "Job", "TFJob", "Deployment", "Service", "ConfigMap", "CronJob",
            "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert trainer_images == {REFERENCE}  # every trainer, the sweep's trials too, pulls what was pushed
    # The same sweep as a Katib Experiment: Katib's checks, and its trials' pods (a TFJob's) are restricted too.
    (experiment,) = [doc for path in (make_render / "katib").glob("*.yaml") for doc in load(path)]
    assert experiment["kind"] == "Experiment" and experiment["metadata"]["namespace"] == NAMESPACE
    assert katib_check.problems(experiment) == []
    assert len(pod_security.pod_templates(experiment)) == 2  # Chief, Worker
    assert set(re.findall(r"image: (\S+)", yaml.safe_dump(experiment))) == {REFERENCE}
    assert pod_security.violations([experiment], "restricted") == []


def trainer_containers(docs, image):
    """(where, container) for every container of the pods `docs` make (Katib trials and TFJob replicas included,
    as pod_security finds them) that runs the trainer image `image`, whatever its tag or digest."""
    return [(f"{where}/{c['name']}", c) for doc in docs for where, _, spec in pod_security.pod_templates(doc)
            for kind in ("initContainers", "containers") for c in spec.get(kind, [])
            if re.sub(r"(@sha256:[0-9a-f]+)?$", "", c["image"]).rsplit(":", 1)[0] == image]


def test_every_trainer_container_keeps_a_read_only_root_filesystem(make_render):
    """Pod Security `restricted` does not require it, so it is asserted here: in every manifest kube/ ships, as
    written and as `make render` writes it (the sweep's trials, the Katib Experiment's trial template, what the
    cluster makes: CronJob's Jobs, the TFJobs' and the Katib trials' pods)."""
    written = [doc for path in MANIFESTS for doc in load(path)]
    applied = [doc for path in sorted(make_render.rglob("*.yaml")) for doc in load(path)]
    found = trainer_containers(written, render.TRAINER_IMAGE) + trainer_containers(applied, IMAGE)
    places = {where.split("/")[0] for where, _ in found}
    assert {"Job", "CronJob", "TFJob", "Deployment", "Experiment", "Pod"} <= places, sorted(places)
    assert len(trainer_containers(applied, IMAGE)) > len(trainer_containers(written, render.TRAINER_IMAGE))
    for where, container in found:
        assert container.get("securityContext", {}).get("readOnlyRootFilesystem") is True, where


def test_make_render_without_out_is_one_line():
    result = make("render", "NAMESPACE=alice")
    assert result.returncode != 0 and "error: --output_dir is empty" in result.stderr


# ---------------------------------------------------------------- TensorBoard's real command

@pytest.mark.slow
def test_tensorboard_command_serves_the_runs_and_answers_its_probe(tmp_path):
    """Run the container's command and args from the manifest, on a local logdir holding one run."""
    from tensorboard.summary import DirectoryOutput, Writer

    deployment = next(d for d in rendered([KUBE / "tensorboard.yaml"]) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"] + container["args"]
    assert command[command.index("--logdir") + 1] == "/mnt/nfs/runs" and "--bind_all" in command

    runs = tmp_path / "runs"
    writer = Writer(DirectoryOutput(str(runs / "job" / "eval")))
    for step in (100, 200):
        writer.add_scalar("accuracy", 0.5 + step / 1000, step=step)
    writer.close()
    port = free_port()
    # Loopback only here: --bind_all becomes --host 127.0.0.1; the logdir and port are ours.
    local = [str(Path(sys.executable).parent / command[0])]  # the venv's tensorboard, as pinned in the image
    args = command[1:]
    args[args.index("--logdir") + 1] = str(runs)
    args[args.index("--port") + 1] = str(port)
    args[args.index("--bind_all"):args.index("--bind_all") + 1] = ["--host", "127.0.0.1"]
    probe = container["readinessProbe"]["httpGet"]["path"]
    server = subprocess.Popen(local + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, runs_seen = time.monotonic() + 90, []
        while time.monotonic() < deadline and "job/eval" not in runs_seen:
            assert server.poll() is None, server.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=5) as response:
                    assert response.status == 200
                    runs_seen = json.load(response)
            except OSError:
                pass
            time.sleep(1)
        assert "job/eval" in runs_seen
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=job%2Feval&tag=accuracy"
        with urllib.request.urlopen(url, timeout=10) as response:
            points = json.load(response)
        assert [step for _, step, _ in points] == [100, 200]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_serving_pod_leaves_the_service_before_it_is_killed():
    # TensorFlow Serving 2.20.0 has no SIGTERM handler (tensorflow/serving#1853), and a container's first process
    # ignores a signal it does not handle: the pod is killed when its grace period ends. First a pause, for the
    # Service to stop sending it requests; then a grace period only a little longer than the pause.
    (deployment,) = [d for d in load(KUBE / "serving.yaml") if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    assert server["command"] == ["tensorflow_model_server"]  # the first process: SIGTERM does not stop it
    pause = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 5 <= pause < spec["terminationGracePeriodSeconds"] <= 15
