"""What the tests share, one home each: running the project's commands, its manifests, the sweep, served models.

Fixtures and the session's checks are in conftest.py; everything a test imports by name is here
(`from support import ...`), never from another test module.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

import fake_api
from tfk8s.cli import child_env
from tfk8s.kube import render, tfjob_check
from tfk8s.paths import REPO, SRC
from tfk8s.sweep import katib as katib_sweep
from tfk8s.sweep import trials as sweep_trials
from tfk8s.sweep import values as sweep_values

MAKE = shutil.which("make")

# ---------------------------------------------------------------- the project's commands


def run_script(script, *args, env=None, timeout=600, cwd=REPO):
    """Run `python src/<script> args...` as a user would; return the CompletedProcess (text).

    A script that does not end within `timeout` fails the test with what it printed so far."""
    full_env = {**child_env(), **(env or {})}
    try:
        return subprocess.run([sys.executable, str(SRC / script), *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        printed = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                          for part in (e.stdout, e.stderr))
        pytest.fail(f"{script} did not end within {timeout}s; it printed:\n{printed[-3000:]}")


def assert_one_line_error(result, *fragments):
    """A failed command: non-zero exit, no traceback, its last stderr line starts with 'error:'."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


def makefile_text():
    """The Makefile and the parts it includes (make/*.mk), as one text."""
    return "\n".join(p.read_text() for p in [REPO / "Makefile", *sorted((REPO / "make").glob("*.mk"))])


def make(*args, env=None, path=None):
    """Run make in the repository (never rebuilding .venv) and return the CompletedProcess."""
    assert MAKE, "GNU make is needed: install it (apt-get install make)"
    full_env = {**os.environ, **(env or {})}
    for name in ("IMAGE", "TAG", "NAMESPACE", "KUBECONFIG", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        full_env.pop(name, None)
    if path is not None:
        full_env["PATH"] = path
    return subprocess.run([MAKE, "--no-print-directory", "-o", ".venv/.installed", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=300)


def make_error(result, *fragments):
    """make's own closing line ("make: *** ... Error 1") set aside: the tool's one-line error."""
    lines = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    return assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, result.stdout,
                                                             "\n".join(lines)), *fragments)


def tree_digest(root):
    """{relative path: sha256} of every file under root: what a shared artefact must still be at the end."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(root).rglob("*")) if path.is_file()}


# The laptop's fixed ports (8500, 8501, 6006, ...: the pages' servers) are one per machine, whatever runs the
# tests: the README's steps hold them from their first page to their last, and a test that binds one of them
# must hold the same lock while it does. Two runs of the suite at once then take turns on them, instead of
# failing on a port the other run holds.
FIXED_PORTS_LOCK = Path(tempfile.gettempdir()) / "tfk8s-fixed-ports.lock"


@contextlib.contextmanager
def fixed_ports(timeout, path=FIXED_PORTS_LOCK):
    """Hold the machine's fixed-ports lock for the block; True when held, False when `timeout` s went first
    (timeout=0: only if it is free now)."""
    with open(path, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(1)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def reaped(process):
    """The block's process, killed and reaped at the end if it is still running (the test failed before it ended)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(condition, what, timeout=60, log=None, interval=0.25):
    """Poll `condition` until it holds; fail after `timeout` seconds naming `what` (and the log, if given)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s" + (
            f"; server log:\n{log()}" if log else "")
        time.sleep(interval)


# ---------------------------------------------------------------- kubectl's client, for offline parsing

KUBECTL_MISSING = "kubectl's client is needed for offline parsing: install kubectl 1.30+"


@cache
def real_kubectl():
    """The path of the real kubectl (1.30 or newer): the tests parse manifests and kubeconfigs with its client.

    Where it is missing or too old, every test that needs it fails with one line saying so (never a skip).
    """
    path = shutil.which("kubectl", path=os.environ.get("PATH"))
    if path is None:
        pytest.fail(KUBECTL_MISSING, pytrace=False)
    result = subprocess.run([path, "version", "--client", "--output", "json"], capture_output=True, text=True,
                            timeout=60)
    try:
        version = json.loads(result.stdout)["clientVersion"]
        major, minor = int(version["major"]), int(re.match(r"\d+", version["minor"])[0])
    except (ValueError, KeyError, TypeError):
        pytest.fail(f"{KUBECTL_MISSING} ({path} did not tell its version: {result.stderr.strip()})", pytrace=False)
    if (major, minor) < (1, 30):
        pytest.fail(f"{KUBECTL_MISSING} ({path} is {major}.{minor})", pytrace=False)
    return path


# ---------------------------------------------------------------- the manifests of kube/ and their pods

KUBE = REPO / "kube"
MANIFESTS = sorted(KUBE.glob("*.yaml"))
VERSIONS = ("1.30.0", latest_version())  # the oldest we support and the newest known offline
# The README's example: what `make` renders the manifests with.
EXAMPLE_IMAGE, EXAMPLE_TAG, EXAMPLE_NAMESPACE = "registry.example.com/me/mnist", "v9", "alice"
# The digest `make push` recorded for the example (runs/pushed-image: IMAGE:TAG@DIGEST).
EXAMPLE_DIGEST = "sha256:" + "5e" * 32
EXAMPLE_REFERENCE = f"{EXAMPLE_IMAGE}:{EXAMPLE_TAG}@{EXAMPLE_DIGEST}"
POD_TEMPLATE_PATHS = {
    "Deployment": [("spec", "template")], "StatefulSet": [("spec", "template")],
    "DaemonSet": [("spec", "template")], "Job": [("spec", "template")],
    "CronJob": [("spec", "jobTemplate", "spec", "template")],
}


def load(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc is not None]


def doc(name, kind):
    """The one document of `kind` in kube/<name>."""
    (found,) = [d for d in load(KUBE / name) if d["kind"] == kind]
    return found


def rendered(paths=MANIFESTS, **options):
    """The documents exactly as `make` applies them, with the values of the README's example."""
    return render.render(render.load(paths), EXAMPLE_IMAGE, EXAMPLE_TAG, EXAMPLE_NAMESPACE,
                         **{"digest": EXAMPLE_DIGEST, **options})


def pushed_record(directory, reference=EXAMPLE_REFERENCE):
    """A record of a push, as `make push` writes it: one line IMAGE:TAG@sha256:..."""
    path = Path(directory) / "pushed-image"
    path.write_text(reference + "\n")
    return path


def pod_templates(doc):
    """(where, pod template) for every pod a workload runs, TFJob replicas included."""
    if doc["kind"] == "TFJob":
        return [(f"{doc['metadata']['name']}/{rtype}", spec["template"])
                for rtype, spec in doc["spec"]["tfReplicaSpecs"].items()]
    found = []
    for path in POD_TEMPLATE_PATHS.get(doc["kind"], []):
        node = doc
        for key in path:
            node = node[key]
        found.append((doc["metadata"]["name"], node))
    if doc["kind"] == "Pod":
        found.append((doc["metadata"]["name"], doc))
    return found


def containers(template):
    spec = template["spec"]
    return [(kind, c) for kind in ("initContainers", "containers") for c in spec.get(kind, [])]


def validate(doc, version):
    """Strict schema validation (kubernetes-validate), or tfjob_check for a TFJob; raises on a problem."""
    if doc["kind"] == "TFJob":
        assert tfjob_check.problems(doc) == [], f"TFJob {doc['metadata']['name']}"
    else:
        kubernetes_validate.validate(doc, version, strict=True)


quantity = fake_api.amount  # a Kubernetes quantity as a number: one parser, the stand-in's own


def pods_of(*names, replicas=None):
    """Every pod the named kube/ manifests run at once (replicas counted; `replicas` for a Deployment)."""
    docs = render.render(render.load([KUBE / n for n in names]), "r.example.com/mnist", "v1", "alice")
    pods = []
    for doc in docs:
        if doc["kind"] == "TFJob":
            for spec in doc["spec"]["tfReplicaSpecs"].values():
                pods += [spec["template"]] * spec.get("replicas", 1)
        elif doc["kind"] in ("Deployment", "Job", "CronJob"):
            count = replicas or doc["spec"].get("replicas", doc["spec"].get("parallelism", 1))
            pods += [template for _, template in pod_templates(doc)] * count
    return pods


def requested(pods, bound, resource):
    """What a quota counts for these pods: per pod the larger of its containers' sum and its largest init container."""
    def amount(c):
        return quantity(c["resources"][bound][resource])
    return sum(max(sum(amount(c) for c in t["spec"]["containers"]),
                   max((amount(c) for c in t["spec"].get("initContainers", [])), default=0)) for t in pods)


def attendee_objects(namespace="alice", **options):
    """What the instructor applies for one attendee's namespace, as documents."""
    from tfk8s.instructor import namespaces
    return [d for d in yaml.safe_load_all(namespaces.render_namespace(namespace, **options)) if d]


def expand(args, env):
    """What the kubelet runs: $(VAR) in args replaced by the container's environment, $$ by $."""
    return [re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                   lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), a) for a in args]


def local_run(container, nfs_root, env=None, extra=()):
    """Run a container's `python /app/src/<script>` command here: src/ for /app/src, nfs_root for /mnt/nfs."""
    interpreter, script = container["command"]
    assert interpreter == "python" and script.startswith("/app/src/"), container["command"]
    args = [a.replace("/mnt/nfs", str(nfs_root)) for a in expand(container.get("args", []), env or {})]
    return run_script(script.removeprefix("/app/src/"), *args, *extra)


# ---------------------------------------------------------------- the sweep (templated/run.sh)

RUN = REPO / "templated" / "run.sh"
SWEEP_IMAGE = "registry.example.com/alice/mnist:v7"
SWEEP_PUSHED = SWEEP_IMAGE + "@sha256:" + "7e" * 32   # what `make sweep` runs after `make push` of SWEEP_IMAGE


def sweep_push(api):
    """make's PUSHED_IMAGE=... for the targets run against `api`: a record of the push of SWEEP_IMAGE."""
    return f"PUSHED_IMAGE={pushed_record(Path(api.env['FAKE_API_STATE']).parent, SWEEP_PUSHED)}"
# a sweep of two one-process trials on the mini dataset
TINY_VALUES = """\
    name: tiny
    workers: 0
    grid:
      learning_rate: [0.05, 0.0001]
      hidden_layers: [1]
    flags:
      dataset: mini
    """


def run_sweep(*args, env=None, timeout=600):
    """templated/run.sh as a user runs it, with this test session's Python environment."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    full_env.update({"VENV": sys.prefix, **(env or {})})
    return subprocess.run([str(RUN), *map(str, args)], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def write_values(directory, text, name="values.yaml"):
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def workshop_namespace(api, *running):
    """Seed the stand-in's namespace as an attendee's is after `make deploy`: its real quota, JupyterLab (the
    instructor's, templated/instructor/notebook.yaml.j2), the pods of `running`."""
    from tfk8s.instructor import namespaces
    state = api.read()
    quota = next(d for d in attendee_objects("alice") if d["kind"] == "ResourceQuota")
    state["objects"]["resourcequotas"] = [quota]
    docs = render.render(render.load([KUBE / name for name in running]), "r.example.com/mnist", "v1", "alice")
    docs += [d for d in yaml.safe_load_all(namespaces.render_notebook("alice", "r.example.com/nb@sha256:" + "0" * 64))
             if d and d["kind"] == "Deployment"]
    state["objects"]["pods"] = [p for doc in docs for p in fake_api.pods_of(doc)]
    api.write(state)
    return quota


def container(doc, replica_type="Chief"):
    return doc["spec"]["tfReplicaSpecs"][replica_type]["template"]["spec"]["containers"][0]


def flag(args, name):
    return args[args.index(f"--{name}") + 1]


# ---------------------------------------------------------------- trained and served models

def copy_export(version_dir, export_dir, version=None):
    """Put a copy of an export version under export_dir, renamed into place as the trainer does."""
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / str(version or version_dir.name)
    staging = export_dir / f".tmp-{target.name}"
    shutil.copytree(version_dir, staging)
    staging.rename(target)
    return int(target.name)


def whole_share(printed, count):
    """How many of `count` items a printed percentage stands for (`98.36` from a share printed as `{share:.2%}`):
    it must lie in 0..100 and be exactly a whole number of the `count` items, or AssertionError names it."""
    value = float(printed)
    assert 0 <= value <= 100, f"{printed}% is no share: a percentage lies in 0..100"
    whole = round(value * count / 100)
    assert f"{whole / count:.2%}" == f"{printed}%", f"{printed}% is no whole number of {count} items"
    return whole


def tf_events(run_dir, tag="accuracy"):
    """[(step, value)] of `tag` in a run directory, read with TensorFlow's own record reader (not TensorBoard's)."""
    import tensorflow as tf
    found = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    found.append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def server_processes(directory):
    """Pids of model servers (src/serve.py) whose command line names `directory`: servers left running."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited while we looked
        if "serve.py" in cmdline and str(Path(directory).resolve()) in cmdline:
            found.append(int(entry.name))
    return found


def variants(digit):
    """The same real MNIST digit (uint8 28x28, white on black) as people hand it in: {name: PIL image}."""
    import numpy as np
    from PIL import Image
    ink = digit.astype(np.float64) / 255
    paper = Image.fromarray(255 - digit)                               # dark ink on white paper
    big = paper.resize((280, 280), Image.Resampling.BICUBIC)           # a 10x scan
    canvas = Image.new("L", (400, 300), 255)
    canvas.paste(big.resize((120, 120)), (250, 20))                    # small, in a corner of a photo
    colour = np.stack([80 + 0 * ink, 60 + 0 * ink, 200 * (1 - ink)], -1)  # blue ink...
    cream = np.array([250, 240, 215])                                   # ...on cream paper
    rgb = (ink[..., None] * colour + (1 - ink[..., None]) * cream).astype(np.uint8)
    rgba = np.zeros((28, 28, 4), np.uint8)                              # black ink on a transparent canvas
    rgba[..., 3] = digit
    return {
        "mnist": Image.fromarray(digit),
        "inverted": paper,
        "large": big,
        "off_centre": canvas,
        "rgb": Image.fromarray(rgb, "RGB").resize((84, 84), Image.Resampling.BICUBIC),
        "rgba": Image.fromarray(rgba, "RGBA"),
        "16_bit": Image.fromarray((255 - digit).astype(np.uint16) * 257),  # I;16, light paper
    }


def katib_experiment(values_text=None, tmp_path=None, name=None, max_trials=30):
    """The Katib Experiment a values file (default: templated/values.yaml) renders to, for namespace alice."""
    path = REPO / "templated" / "values.yaml" if values_text is None else write_values(tmp_path, values_text)
    values = sweep_values.load(path)
    return katib_sweep.render(values, name or values["name"], "alice", SWEEP_IMAGE, sweep_trials.load_base(), str(path),
                              max_trials)


# ---------------------------------------------------------------- mounts of a test's own

class Namespace:
    """A user and mount namespace of this test's own, where it mounts what it likes and runs the trainer.

    A process (sleep) keeps the namespace alive; commands enter it with
    nsenter, and the test sees its mounts through /proc/<that pid>/root.
    """

    def __init__(self):
        self.keeper = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                        "echo ready; exec sleep 3600"], stdout=subprocess.PIPE, text=True)
        assert self.keeper.stdout.readline() == "ready\n"
        self.enter = ["nsenter", "-t", str(self.keeper.pid), "-U", "-m", "--preserve-credentials"]

    def sh(self, script):
        subprocess.run([*self.enter, "sh", "-c", script], check=True)

    def tmpfs(self, path, size):
        path.mkdir(parents=True, exist_ok=True)
        self.sh(f"mount -t tmpfs -o size={size} tmpfs {path}")

    def read_only(self, path):
        self.sh(f"mount --bind {path} {path} && mount -o remount,bind,ro {path}")

    def inside(self, path):
        """`path` as this namespace sees it, from outside."""
        return Path(f"/proc/{self.keeper.pid}/root") / Path(path).relative_to("/")

    def run(self, argv, timeout=300):
        return subprocess.run([*self.enter, *argv], capture_output=True, text=True, env=child_env(),
                              timeout=timeout)

    def popen(self, argv):
        return subprocess.Popen([*self.enter, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=child_env())

    def close(self):
        self.keeper.kill()
        self.keeper.wait()


# ---------------------------------------------------------------- a server that answers what a test says

class FakeRest:
    """A JSON server on loopback standing for a model server's REST API: every GET answers `get` (or `get(path)`,
    None: 404), every POST answers `post` after `delay` seconds (200, JSON), whatever their shape."""

    def __init__(self, get, post=None, delay=0.0):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, body):
                data = json.dumps(body).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a test of its timeout): nothing to report

            def do_GET(self):
                body = get(self.path) if callable(get) else get
                if body is None:
                    self.send_error(404)
                else:
                    self.reply(body)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                self.reply(post)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
