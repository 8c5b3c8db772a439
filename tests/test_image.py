"""The trainer image, built and run for real: the workshop's pods as containers of it.

The fast tests check what src/tfk8s/kube/docker_run.py makes of the manifests' pod specs. The slow ones need
a Docker engine (`.ci/run` starts one with make/docker.sh; without one they fail, they never skip): the image
is built once per session from a clean clone, then kube/job.yaml's pod trains in it, kube/tfjob.yaml's Chief
and one Worker train one model as two containers, a container under the manifests' securityContext is shown
unable to write outside its mounts, and an export the containers wrote is served here.
"""
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from support import REPO, load, make, make_error
from test_dockerfile import build_context
from tfk8s.kube import docker_run, tfjob_local
from tfk8s.serving import process as serve

IMAGE = "tfk8s-test/mnist-trainer:test"
NOTEBOOK_IMAGE = "tfk8s-test/mnist-notebook:test"
TRAIN = ["--dataset", "mini", "--steps", "300", "--eval_every", "100", "--checkpoint_every", "100"]
JOB_SPEC = load(REPO / "kube" / "job.yaml")[0]["spec"]["template"]["spec"]
MIB = 2**20
# The code layer (src/, as .dockerignore sends it) measured 88 kB; the whole image 1.9 GB (on the stand-in base).
CODE_LAYER_MAX = 5 * MIB
# What the notebook stage adds to the trainer's image: JupyterLab measured 162 MB, the workspace seed 3 MB.
NOTEBOOK_LAYERS_MAX = 250 * MIB


def flags(args, name):
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


# ---------------------------------------------------------------- the pod spec as `docker run` (no engine)

def test_the_jobs_pod_becomes_its_docker_run_flags(tmp_path):
    container = JOB_SPEC["containers"][0]
    args = docker_run.pod_args(JOB_SPEC, container, image="img:1", name="mnist-train", claims_root=tmp_path,
                               extra_args=["--steps", "5"])
    assert flags(args, "--user") == ["1000:1000"] and flags(args, "--group-add") == ["1000"]
    assert "--read-only" in args and flags(args, "--cap-drop") == ["ALL"]
    assert flags(args, "--security-opt") == ["no-new-privileges"]  # RuntimeDefault: Docker's default profile
    assert flags(args, "--cpus") == ["2"] and flags(args, "--cpu-shares") == ["1024"]
    assert flags(args, "--memory") == [str(4 * 2**30)] == flags(args, "--memory-swap")
    assert flags(args, "--env") == ["PYTHONUNBUFFERED=1"]
    # kube/job.yaml's /tmp emptyDir has sizeLimit 1Gi: the tmpfs is that size.
    assert flags(args, "--tmpfs") == [f"/tmp:rw,exec,nosuid,nodev,gid=1000,mode=2777,size={1024 * MIB}"]
    assert flags(args, "--mount") == [f"type=bind,source={tmp_path / 'mnist-nfs'},target=/mnt/nfs"]
    # command: the entrypoint and its arguments; then the manifest's args; then the runner's own.
    assert flags(args, "--entrypoint") == ["python"]
    assert args[args.index("img:1"):] == ["img:1", "/app/src/main.py", *container["args"], "--steps", "5"]
    if os.geteuid() == 0:  # the claim's stand-in is handed to uid 1000 and group fsGroup, as the volume is
        claim = os.stat(tmp_path / "mnist-nfs")
        assert (claim.st_uid, claim.st_gid, claim.st_mode & 0o7777) == (1000, 1000, 0o2775)


def test_a_pods_other_settings_map_as_the_kubelet_maps_them(tmp_path):
    spec = {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000]},
            "terminationGracePeriodSeconds": 5,
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}],
            "containers": [{"name": "t", "securityContext": {"runAsUser": 2000, "capabilities": {"add": ["CHOWN"]}},
                            "workingDir": "/w", "args": ["a"],
                            "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "512Mi"}},
                            "volumeMounts": [{"name": "scratch", "mountPath": "/s"},
                                             {"name": "data", "mountPath": "/d", "subPath": "x", "readOnly": True}]}]}
    args = docker_run.pod_args(spec, spec["containers"][0], image="img", name="p", claims_root=tmp_path)
    assert flags(args, "--user") == ["2000:3000"] and flags(args, "--group-add") == ["4000"]
    assert flags(args, "--cap-add") == ["CHOWN"] and "--read-only" not in args
    # No seccompProfile: the kubelet's default (without --seccomp-default) is Unconfined.
    assert flags(args, "--security-opt") == ["seccomp=unconfined"]
    assert flags(args, "--tmpfs") == [f"/s:rw,exec,nosuid,nodev,mode=0777,size={64 * MIB}"]
    assert flags(args, "--mount") == [f"type=bind,source={tmp_path / 'c' / 'x'},target=/d,readonly"]
    assert flags(args, "--cpu-shares") == ["256"] and not flags(args, "--cpus")
    assert flags(args, "--workdir") == ["/w"] and flags(args, "--stop-timeout") == ["5"]
    assert "--entrypoint" not in args and args[-2:] == ["img", "a"]  # no command: the image's ENTRYPOINT


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s["securityContext"].update(runAsUser=0), "runAsNonRoot and would run as root"),
    (lambda s: s["volumes"].append({"name": "cfg", "configMap": {"name": "x"}})
     or s["containers"][0]["volumeMounts"].append({"name": "cfg", "mountPath": "/c"}), "configMap volumes"),
    (lambda s: s["containers"][0]["env"].append({"name": "X", "valueFrom": {}}), "valueFrom"),
    (lambda s: s["securityContext"].update(seccompProfile={"type": "Localhost"}), "seccompProfile Localhost"),
])
def test_what_the_runner_cannot_do_faithfully_is_refused(tmp_path, change, fragment):
    spec = json.loads(json.dumps(JOB_SPEC))
    change(spec)
    with pytest.raises(docker_run.UserError, match=fragment):
        docker_run.pod_args(spec, spec["containers"][0], image="img", name="p", claims_root=tmp_path)


def test_tfjob_containers_get_the_operators_tf_config_and_service_names(tmp_path):
    doc = tfjob_local.load_tfjob(REPO / "kube" / "tfjob.yaml")
    docker_run.set_replicas(doc, ["Worker=1"])
    replicas = docker_run.plan_containers(doc, "img", tmp_path, ["--steps", "5"], "net", "r1", "1000:1000")
    assert [(r.type, r.index, r.restart_policy) for r in replicas] == [("Chief", 0, "ExitCode"),
                                                                       ("Worker", 0, "ExitCode")]
    for replica in replicas:
        env = dict(e.split("=", 1) for e in flags(replica.argv, "--env"))
        assert env["TF_CONFIG"] == tfjob_local.operator_tf_config(doc, replica.type, replica.index)
        assert "TF_CONFIG" not in replica.env  # the docker client's own environment
        pod = f"mnist-tfjob-{replica.type.lower()}-{replica.index}"
        assert flags(replica.argv, "--network") == ["net"]
        assert flags(replica.argv, "--network-alias") == [pod, f"{pod}.default", f"{pod}.default.svc"]
    config = json.loads(tfjob_local.operator_tf_config(doc, "Worker", 0))
    assert config["cluster"] == {"chief": ["mnist-tfjob-chief-0.default.svc:2222"],
                                 "worker": ["mnist-tfjob-worker-0.default.svc:2222"]}


def test_a_bad_replicas_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        docker_run.main([str(REPO / "kube" / "tfjob.yaml"), "--image", "img", "--replicas", "Driver=2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: --replicas Driver=2: expected TYPE=N")


# ---------------------------------------------------------------- make/docker.sh build (a stand-in docker)

DOCKER_STAND_IN = """#!/bin/sh
case "$1" in
  info|buildx) exit 0 ;;
  image) exit 1 ;;                       # no image here
  pull) exit 1 ;;                        # no registry answers
  build) printf '%s\\n' "$@" > "$(dirname "$0")/build-args" ;;
esac
"""


def script_build(tmp_path, *args, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(DOCKER_STAND_IN)
    (bin_dir / "docker").chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "PIP_CERT", "BASE")}
    result = subprocess.run([str(REPO / "make" / "docker.sh"), "build", *args],
                            env={**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
                            capture_output=True, text=True, timeout=60)
    built = bin_dir / "build-args"
    return result, built.read_text().splitlines() if built.exists() else None


def test_the_build_gets_a_ca_bundle_as_a_secret_only_when_the_environment_names_one(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    base = "b.example.com/python@sha256:" + "0" * 64
    result, args = script_build(tmp_path, "-t", "x:1", BASE=base)
    assert result.returncode == 0, result.stderr
    assert "--secret" not in args and flags(args, "--build-arg") == [f"BASE={base}"]
    assert flags(args, "--network") == ["host"] and args[-3:] == ["-t", "x:1", "."]
    for variable in ("SSL_CERT_FILE", "PIP_CERT"):
        result, args = script_build(tmp_path, "-t", "x:1", BASE=base, **{variable: str(bundle)})
        assert flags(args, "--secret") == [f"id=ca,src={bundle}"], result.stderr
    # On the instructor's base no base is looked for; a bundle named but missing is one line.
    result, args = script_build(tmp_path, "--build-arg", "RUNTIME=r@sha256:1", SSL_CERT_FILE=str(tmp_path / "no"))
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: the CA bundle")


# ---------------------------------------------------------------- make build-remote (a stand-in gcloud)

DIGEST = "sha256:" + "ab12" * 16
GCLOUD = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/args"
printf '%s\\n' "$GCLOUD_DIGEST"
"""


def stand_in_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("base, runtime", [(None, "runtime"), (f"r.example.com/w/base@{DIGEST}", None)])
def test_build_remote_submits_the_cloudbuild_config_and_writes_the_pushed_digest(tmp_path, base, runtime):
    bin_dir = stand_in_gcloud(tmp_path)
    extra = [f"BASE_IMAGE={base}"] if base else []
    result = make("build-remote", "IMAGE=r.example.com/alice/mnist", "TAG=v7", f"RUNS={tmp_path / 'runs'}", *extra,
                  env={"GCLOUD_DIGEST": DIGEST}, path=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "pushed-image").read_text() == f"r.example.com/alice/mnist:v7@{DIGEST}\n"
    assert (bin_dir / "args").read_text().splitlines() == [
        "builds", "submit", "--config", "src/cloudbuild.yaml",
        "--substitutions", f"_IMAGE=r.example.com/alice/mnist,_TAG=v7,_RUNTIME={runtime or base}",
        "--format", "value(results.images[0].digest)", "."]


def test_build_remote_without_a_digest_fails_in_one_line_and_writes_nothing(tmp_path):
    bin_dir = stand_in_gcloud(tmp_path)
    result = make("build-remote", "IMAGE=r.example.com/alice/mnist", f"RUNS={tmp_path / 'runs'}",
                  env={"GCLOUD_DIGEST": ""}, path=f"{bin_dir}:{os.environ['PATH']}")
    make_error(result, "Cloud Build reported no image digest")
    assert not (tmp_path / "runs" / "pushed-image").exists()


def test_cloud_build_runs_the_same_build_and_pushes_the_same_tag():
    config = yaml.safe_load((REPO / "src" / "cloudbuild.yaml").read_text())
    (step,) = config["steps"]
    args = step["args"]
    assert args[0] == "build" and args[-1] == "." and flags(args, "-f") == ["src/Dockerfile"]
    assert flags(args, "-t") == ["${_IMAGE}:${_TAG}"] == config["images"]
    assert flags(args, "--build-arg") == ["RUNTIME=${_RUNTIME}"] and flags(args, "--platform") == ["linux/amd64"]
    assert "DOCKER_BUILDKIT=1" in step["env"]


def test_cloud_builds_upload_is_the_docker_build_context(tmp_path):
    """.gcloudignore (gitignore rules, as gcloud reads it) lets through the files .dockerignore does."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    tree = tmp_path / "tree"
    for path in tracked:
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).touch()
    (tree / ".gitignore").write_text((REPO / ".gcloudignore").read_text() + "\n/.gitignore\n")
    subprocess.run(["git", "init", "--quiet"], cwd=tree, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tree,
                            capture_output=True, text=True, check=True).stdout
    uploaded = {line[3:] for line in status.splitlines()}
    assert uploaded == build_context() & set(tracked)
    assert {"src/Dockerfile", ".dockerignore", "requirements.lock", "src/main.py"} <= uploaded


# ---------------------------------------------------------------- the engine: one image for the session

def docker(*args, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="session")
def engine():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker engine answers: start one with make/docker.sh start (as root), as .ci/run does")


@pytest.fixture(scope="session")
def canary_bundle(tmp_path_factory):
    """The CA bundle the build is given: this machine's (or certifi's), with a line no layer may hold."""
    source = os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT")
    if not source:
        import certifi
        source = certifi.where()
    canary = f"# tfk8s-canary-{uuid.uuid4().hex}"
    bundle = tmp_path_factory.mktemp("ca") / "bundle.pem"
    bundle.write_text(Path(source).read_text() + f"\n{canary}\n")
    return bundle, canary


@pytest.fixture(scope="session")
def clone(tmp_path_factory):
    """A clean clone of this repository (its committed files): the images' build context."""
    clone = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    return clone


def build(clone, bundle, *args):
    """make/docker.sh build ARGS in the clone, the CA bundle given as the build's secret."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CERT", "BASE")}
    result = subprocess.run([str(clone / "make" / "docker.sh"), "build", "--build-arg", "DATASET=mini", *args],
                            cwd=clone, env={**env, "SSL_CERT_FILE": str(bundle)},
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="session")
def image(engine, canary_bundle, clone):
    """The image, built once from the clone with make/docker.sh (no --target: what `make build` builds)."""
    build(clone, canary_bundle[0], "-t", IMAGE)
    return IMAGE


@pytest.fixture(scope="session")
def notebook_image(image, canary_bundle, clone):
    """The notebook image (--target notebook), after the trainer's from the same clone and arguments: every
    stage but its own comes from the build cache (measured: 31 s here, the JupyterLab install)."""
    build(clone, canary_bundle[0], "--target", "notebook", "-t", NOTEBOOK_IMAGE)
    return NOTEBOOK_IMAGE


def layers(image):
    """(size in bytes, the instruction that made it) for each layer, oldest first."""
    out = docker("history", "--no-trunc", "--format", "{{json .}}", image).stdout.splitlines()
    rows = [json.loads(line) for line in reversed(out)]
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    sizes = [float(m[1]) * units[m[2]] for m in (re.fullmatch(r"([\d.]+)([kMG]?B)", r["Size"]) for r in rows)]
    return list(zip(sizes, (r["CreatedBy"] for r in rows)))


@pytest.mark.slow
def test_the_image_builds_and_the_attendees_layer_is_the_code_alone(image):
    inspect = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert inspect["User"] == "1000:1000" and inspect["Entrypoint"] == ["python", "/app/src/main.py"]
    history = [(size, made_by) for size, made_by in layers(image) if size > 0]
    size, made_by = history[-1]  # the last layer with files: the code, small
    assert "COPY src/ src/" in made_by and size < CODE_LAYER_MAX
    # The dependencies and the data: one layer each, over the base.
    assert sum("COPY /opt/venv /opt/venv" in m for _, m in history) == 1
    assert sum("COPY /app/data /app/data" in m for _, m in history) == 1
    listing = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "ls /app/src /app/data; python -c 'import tensorflow as tf; print(tf.__version__)' 2>&1;"
                     "find /opt/venv -name tests -type d | grep -c . ; ls /opt/venv/bin/pip 2>&1;"
                     "python -c 'import clang' 2>&1").stdout
    assert "main.py" in listing and "t10k-images-idx3-ubyte.gz" in listing and "2.21.0" in listing
    assert "\n0\n" in listing and "No such file" in listing  # no packages' test suites, no pip
    assert "No module named 'clang'" in listing


@pytest.mark.slow
def test_the_ca_bundle_reaches_the_build_but_no_layer(image, canary_bundle):
    _, canary = canary_bundle
    saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    found, tail, needle = False, b"", canary.encode()
    for chunk in iter(lambda: saved.stdout.read(2**22), b""):
        found = found or needle in tail + chunk
        tail = chunk[-len(needle):]
    assert saved.wait() == 0 and not found
    assert canary not in docker("history", "--no-trunc", image).stdout


def run(*args, timeout=1200):
    return subprocess.run([sys.executable, str(REPO / "src" / "docker_run.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def exports(claims):
    return sorted(p.parent for p in (claims / "mnist-nfs" / "exports" / "mnist").glob("*/saved_model.pb"))


@pytest.fixture(scope="module")
def job_run(image, tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    return root, run("kube/job.yaml", "--image", image, "--root", root, "--", *TRAIN)


@pytest.mark.slow
def test_the_jobs_container_trains_and_exports_as_uid_1000_on_a_read_only_root(job_run):
    root, result = job_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    command = next(line for line in result.stdout.splitlines() if line.startswith("[job] docker run"))
    assert "--read-only" in command.split() and "--user 1000:1000" in command
    assert re.search(r"chief-0: single training on \d+ images \(mini\).*num_replicas_in_sync=1", result.stdout)
    assert re.search(r"step +300/300", result.stdout)
    (export,) = exports(root / "claims")
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [export, *export.rglob("*")]}
    assert owners == {(1000, 1000)}, owners


@pytest.mark.slow
def test_a_chief_and_a_worker_as_two_containers_train_one_model(image, tmp_path):
    result = run("kube/tfjob.yaml", "--image", image, "--root", tmp_path, "--replicas", "Worker=1", "--", *TRAIN)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\[chief-0\] chief-0: multi_worker training on .*num_replicas_in_sync=2", result.stdout)
    assert re.search(r"\[chief-0\] step +300/300", result.stdout)
    assert "job mnist-tfjob succeeded" in result.stdout
    assert len(exports(tmp_path / "claims")) == 1
    # Nothing of this run is left: its containers and its network, both named by its id. (Another run on the same
    # engine, a second copy of the suite, has containers and a network of its own meanwhile.)
    network = re.search(r"containers of \S+ on network (mnist-tfjob-([0-9a-f]+));", result.stdout)
    assert network, result.stdout[-3000:]
    assert docker("ps", "--all", "--quiet", "--filter", f"label={docker_run.LABEL}={network[2]}").stdout == ""
    assert network[1] not in docker("network", "ls", "--format", "{{.Name}}").stdout.split()


PROBE = r"""
import os
def writable(path):
    try:
        with open(os.path.join(path, "probe"), "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print({"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
       "CapEff": status["CapEff"], "NoNewPrivs": status["NoNewPrivs"], "Seccomp": status["Seccomp"],
       "writable": sorted(p for p in ("/", "/app", "/app/src", "/etc", "/opt/venv", "/home/app", "/var/tmp",
                                      "/mnt/nfs", "/tmp", "/root", "/dev/shm") if writable(p))})
"""


@pytest.mark.slow
def test_a_container_under_the_manifests_security_context_writes_only_to_its_mounts(image, tmp_path):
    container = {**JOB_SPEC["containers"][0], "command": ["python", "-c", PROBE], "args": []}
    args = docker_run.pod_args(JOB_SPEC, container, image=image, name=f"probe-{uuid.uuid4().hex[:8]}",
                               claims_root=tmp_path)
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = eval(result.stdout)  # a dict literal the probe printed
    assert (seen["uid"], seen["gid"], seen["groups"]) == (1000, 1000, [1000])
    assert seen["CapEff"] == "0000000000000000" and seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
    # /dev/shm: Docker's and the kubelet's own writable tmpfs in every container.
    assert seen["writable"] == ["/dev/shm", "/mnt/nfs", "/tmp"]


@pytest.mark.slow
def test_the_export_the_containers_wrote_serves_here(job_run):
    root, result = job_run
    assert result.returncode == 0
    with serve.running(model_base_path=exports(root / "claims")[0].parent) as server:
        answer = subprocess.run([sys.executable, str(REPO / "src" / "client.py"), "--host", "127.0.0.1",
                                 "--port", str(server.grpc_port), "--image", str(REPO / "data" / "4.png"),
                                 "--model", "mnist", "--signature_name", "predict"],
                                capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert re.search(r"4\.png: \d \(probability", answer.stdout), answer.stdout


# ---------------------------------------------------------------- the notebook image: JupyterLab as its pod runs it

# As the attendee's JupyterLab pod: uid 1000, a read-only root, no capabilities, emptyDirs at /tmp and /home/app,
# no network but its own loopback: what `kubectl port-forward` reaches. Its command is the Deployment's, on the
# image's seed of the workspace. /tmp: a tmpfs, as the runner makes an emptyDir of a pod with fsGroup 1000.
# /home/app: a directory of this machine's, as the kubelet makes an emptyDir (0777; with fsGroup, its group and
# setgid). A tmpfs would not do there: over a directory the image has, Docker 20.10 mounts it 0755 root-owned.
EMPTY_DIR = "rw,exec,nosuid,nodev,gid=1000,mode=2777"
JUPYTER = ["jupyter", "lab", "--ip=127.0.0.1", "--port=8888", "--no-browser", "--ServerApp.root_dir=/app/workspace"]
# Inside the container, on its loopback: GET (or POST) a path of JupyterLab's, with the token if one is given.
HTTP = """
import json, sys, urllib.error, urllib.request
method, path, token = sys.argv[1:4]
request = urllib.request.Request("http://127.0.0.1:8888" + path, method=method,
                                 data=b"{}" if method == "POST" else None,
                                 headers={"Authorization": "token " + token} if token else {})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        print(json.dumps([response.status, json.loads(response.read() or b"null")]))
except urllib.error.HTTPError as err:
    print(json.dumps([err.code, None]))
"""
# A kernel the server started, found by its id in the server's runtime directory, runs this.
KERNEL = """
import sys, jupyter_client
client = jupyter_client.BlockingKernelClient()
client.load_connection_file(jupyter_client.find_connection_file("kernel-" + sys.argv[1] + ".json"))
client.start_channels()
client.wait_for_ready(timeout=120)
printed = []
client.execute_interactive("import sys, tensorflow as tf; print(sys.executable, tf.__version__)", timeout=300,
                           output_hook=lambda m: printed.append(m["content"].get("text", "")))
print("".join(printed))
"""


def exec_in(container, *argv, user="1000:1000"):
    return docker("exec", "--user", user, "--workdir", "/app/workspace", container, *argv)


def http(container, method, path, token=""):
    result = exec_in(container, "python", "-c", HTTP, method, path, token)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def jupyter(notebook_image, tmp_path_factory):
    """JupyterLab running in a container of the notebook image, and the token `make jupyter` reads in its log."""
    name = f"tfk8s-jupyter-{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("emptydir-home")
    home.chmod(0o2777)
    if os.geteuid() == 0:
        os.chown(home, -1, 1000)
    started = docker("run", "--detach", "--name", name, "--network", "none", "--user", "1000:1000",
                     "--group-add", "1000", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                     "--tmpfs", f"/tmp:{EMPTY_DIR}", "--mount", f"type=bind,source={home},target=/home/app",
                     notebook_image, *JUPYTER)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 120
        token = ""
        while not token:
            log = docker("logs", name)
            token = subprocess.run([str(REPO / "make" / "cluster.sh"), "jupyter-token"], input=log.stdout + log.stderr,
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            running = docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert running == "true" or token, log.stdout[-3000:] + log.stderr[-3000:]
            assert time.monotonic() < deadline, "JupyterLab printed no token in 120 s:\n" + log.stderr[-3000:]
            if not token:
                time.sleep(0.5)
        yield name, token
    finally:
        docker("rm", "--force", name)


@pytest.mark.slow
def test_the_notebook_image_is_the_trainers_with_jupyterlab_and_the_seed_added(notebook_image, image):
    trainer = {made_by for _, made_by in layers(image)}
    added = [(size, made_by) for size, made_by in layers(notebook_image) if made_by not in trainer]
    assert sum(size for size, _ in added) < NOTEBOOK_LAYERS_MAX, added
    config = json.loads(docker("image", "inspect", notebook_image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000" and not config["Entrypoint"] and config["Cmd"][:2] == ["jupyter", "lab"]


@pytest.mark.slow
def test_jupyterlab_runs_as_uid_1000_on_a_read_only_root_writing_only_its_emptydirs(jupyter):
    name, _ = jupyter
    result = exec_in(name, "python", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    seen = eval(result.stdout)  # a dict literal the probe printed
    assert (seen["uid"], seen["CapEff"]) == (1000, "0000000000000000")
    assert seen["writable"] == ["/dev/shm", "/home/app", "/tmp"]


@pytest.mark.slow
def test_jupyterlab_answers_only_with_the_token_from_its_log(jupyter):
    name, token = jupyter
    assert re.fullmatch(r"[0-9a-f]{32,}", token), token
    assert http(name, "GET", "/api/status")[0] == 403
    assert http(name, "GET", "/api/status", "0" * len(token))[0] == 403
    status, body = http(name, "GET", "/api/status", token)
    assert status == 200 and "started" in body


@pytest.mark.slow
def test_the_workspace_holds_the_seed_and_its_code_finds_the_data(jupyter):
    name, token = jupyter
    status, listing = http(name, "GET", "/api/contents", token)
    assert status == 200
    assert {item["name"] for item in listing["content"]} == {"src", "notebooks", "data", "kube"}
    status, notebooks = http(name, "GET", "/api/contents/notebooks", token)
    assert [item["name"] for item in notebooks["content"]] == ["pipeline.ipynb"]
    # tfk8s/paths.py finds data/ beside src/: where `python src/main.py` run from the workspace reads it.
    found = exec_in(name, "python", "-c", "import sys; sys.path.insert(0, 'src'); from tfk8s import mnist, paths; "
                                          "print(paths.DATA, {k: v[0].shape for k, v in mnist.load('mini').items()})")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("/app/workspace/data {'train': (4500, 28, 28")
    owners = exec_in(name, "find", "/app/workspace", "-mindepth", "1", "!", "-user", "1000")
    assert owners.returncode == 0 and owners.stdout == ""  # the attendee owns every file of the seed


@pytest.mark.slow
def test_a_kernel_the_server_starts_is_the_trainers_python_and_imports_tensorflow(jupyter):
    name, token = jupyter
    status, kernel = http(name, "POST", "/api/kernels", token)
    assert status == 201, kernel
    result = exec_in(name, "python", "-c", KERNEL, kernel["id"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^/opt/venv/bin/python 2\.21\.0$", result.stdout, re.M), result.stdout


@pytest.mark.slow
def test_the_pipeline_command_runs_in_the_image_from_the_seed_alone(jupyter):
    """No editable install there: every module flow.py and a step import comes from the seed's src/."""
    name, _ = jupyter
    step = "python src/model_config.py serve --base_path /mnt/nfs/exports/pipeline --configmap kube/model-config.yaml"
    result = exec_in(name, "python", "src/flow.py", "run", "--local", "-c", f"{step} >> python src/main.py --help")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[s1-model-config] ConfigMap mnist-model-config: model mnist (/mnt/nfs/exports/pipeline)" in result.stdout
    assert "[s2-main] usage: main.py" in result.stdout
    assert "[pipeline] pipeline succeeded: 2 step(s) in 2 stage(s)" in result.stdout
