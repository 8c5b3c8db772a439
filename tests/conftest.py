"""Shared fixtures: one trained model, TensorFlow Serving's test model, the stand-in kubectl (helpers: support.py)."""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path

import pytest

import fake_api
from support import real_kubectl, run_script, tree_digest
from tfk8s import versions
from tfk8s.paths import REPO as REPO  # re-exported: tests/test_readme.py imports it from here

# ---------------------------------------------------------------- markers that mean what they say
#
# `slow` marks a test that trains, serves, or starts several processes; everything else must stay cheap, and
# `make check` runs only that. The guard: while a test that is neither slow nor readme runs (its fixtures'
# set-up included), every Python process it starts loads tests/child_guard/sitecustomize.py, which notes any
# process that loads TensorFlow's runtime; the test then fails, naming the command. A flag check, a client or
# a stand-in never loads it; a trainer, a model server or TensorBoard always does.
GUARD = "TFK8S_TEST_GUARD"
CHILD_GUARD = Path(__file__).parent / "child_guard"


def pytest_configure(config):
    # A suite started in the background of a script (`make test > log &` in a shell without job control) finds
    # SIGINT ignored, and so would every process it starts: the trainer, the sweep and the workflow keep an
    # ignored Ctrl-C ignored, as they should, and the tests of Ctrl-C would fail on the machine, not the code.
    # So the suite takes Ctrl-C back for itself and its processes (in the controller and in each xdist worker).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # A worker that has served or called a model holds gRPC's poller threads, and grpcio registers fork handlers
    # that restart them in a forked child. A test that forks with a preexec_fn (a file-size limit, a signal
    # disposition) or runs the local TFJob runner in-process (its reaper is a preexec_fn) then gets, now and
    # then, a poller in the child that finds its epoll descriptor closed by close_fds before exec and prints
    # `E... ev_epoll1_linux.cc ... epoll_wait error: Bad file descriptor` into the child's stderr (seen 2 in 300
    # forks here; 0 in 300 with this). No command of the project forks with a preexec_fn from a process that
    # loaded gRPC, and so none needs this; it is read when the worker first imports grpc, after this hook.
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_GUARD), os.environ.get("PYTHONPATH")]))
    config.guard_records = Path(tempfile.mkdtemp(prefix="tfk8s-guard-"))
    config.guard_flagged = set()


def pytest_unconfigure(config):
    shutil.rmtree(config.guard_records, ignore_errors=True)


def guarded(item):
    return not any(item.get_closest_marker(name) for name in ("slow", "readme"))


def guard_record(item):
    return item.config.guard_records / (hashlib.sha256(item.nodeid.encode()).hexdigest() + ".txt")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if guarded(item):
        os.environ[GUARD] = str(guard_record(item))
    try:
        yield
    finally:
        os.environ.pop(GUARD, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    record = guard_record(item)
    if (guarded(item) and report.when in ("call", "teardown") and report.passed and record.exists()
            and item.nodeid not in item.config.guard_flagged):
        item.config.guard_flagged.add(item.nodeid)
        commands = record.read_text().splitlines()
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is not marked slow, yet {len(commands)} process(es) it started loaded "
                           "TensorFlow's runtime (they train, serve, or pay its import): mark it @pytest.mark.slow "
                           "or test the logic without them:\n  " + "\n  ".join(commands))


# ---------------------------------------------------------------- the order the files run in
#
# `make test` spreads whole files over two processes (--dist loadfile --no-loadscope-reorder), each taking the
# next file in collection order when it is nearly done. So the costliest files go first: a long file started
# last would leave the other process idle at the end. Measured (`make test` on 2 cores, seconds per file,
# setup included: README steps ~500, tfjob_local 481, sweep 427, image 296, checkpoint_restore 256,
# distributed 245, notebook 229, katib 221, client 214, trainer_storage 212); every other file runs after
# these, in its usual order. Only the order changes: no file is left out or split.
COSTLIEST_FIRST = ["test_readme.py", "test_tfjob_local.py", "test_sweep.py", "test_image.py",
                   "test_checkpoint_restore.py", "test_distributed.py", "test_notebook.py", "test_katib.py",
                   "test_client.py", "test_trainer_storage.py", "test_preflight.py", "test_serving_limits.py",
                   "test_demo.py", "test_trainer.py", "test_batch_predict.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


def train_shared_model(root):
    """Train the shared model into `root` (model/, export/, stdout.txt), unless a finished one is there already."""
    done = root / "done"
    if not done.exists():
        shutil.rmtree(root / "model", ignore_errors=True)
        shutil.rmtree(root / "export", ignore_errors=True)
        result = run_script("main.py", "--steps", 300, "--eval_every", 150, "--checkpoint_every", 150,
                            "--hidden_layers", 2, "--model_dir", root / "model", "--export_dir", root / "export")
        assert result.returncode == 0, result.stdout + result.stderr
        (root / "stdout.txt").write_text(result.stdout)
        done.touch()
    return (root / "stdout.txt").read_text()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, worker_id):
    """Train the real CNN for a few hundred steps on the shipped mini data, once per run; shared READ-ONLY.

    Once per run, not once per xdist worker: the workers share the session's temporary root, and the first
    to need the model trains it while holding a lock there; the others wait for it and then use the same files.
    Returns a dict with model_dir, export_dir, version (the export's path) and the trainer's stdout.
    Tests that change a model copy it first (shutil.copytree); at the end of the session the
    fixture checks that no test wrote into it, and fails naming what changed.
    """
    if worker_id == "master":  # not under xdist
        root = tmp_path_factory.mktemp("trained")
        stdout = train_shared_model(root)
    else:
        root = tmp_path_factory.getbasetemp().parent / "trained"
        root.mkdir(exist_ok=True)
        with open(root.parent / "trained.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stdout = train_shared_model(root)
    model_dir, export_dir = root / "model", root / "export"
    found = versions.listing(export_dir)
    assert len(found) == 1, found
    before = tree_digest(model_dir.parent)
    yield {"model_dir": model_dir, "export_dir": export_dir, "version": next(iter(found.values())),
           "stdout": stdout}
    after = tree_digest(model_dir.parent)
    changed = sorted(set(before) ^ set(after) | {p for p in before.keys() & after.keys() if before[p] != after[p]})
    assert not changed, f"a test wrote into the shared trained model (copy it first): {changed[:10]}"


@pytest.fixture(scope="session")
def half_plus_two_exports(tmp_path_factory):
    """TensorFlow Serving's test model (serving_models.py), versions 1 (y = 0.5x + 1) and 2 (y = 0.5x + 2).

    Shared: a test that changes versions works on a copy.
    """
    from serving_models import half_plus_two  # imports TensorFlow: only for the tests that serve it
    root = tmp_path_factory.mktemp("half_plus_two") / "m"
    root.mkdir()
    half_plus_two(root, 1, offset=1.0)
    half_plus_two(root, 2)
    return root


FAKE_KUBECTL = """#!{python}
# Stands in for kubectl: logs each call (and what was piped into it), answers like a cluster would.
# FAKE_KUBECTL_OBJECTS names a JSON file {{kind: [objects]}} that `get` answers from (namespaces filtered).
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "-" in args else ""
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "stdin": stdin}}) + "\\n")
namespace = args[args.index("--namespace") + 1] if "--namespace" in args else None
words = [a for i, a in enumerate(args) if a != "--namespace" and (i == 0 or args[i - 1] != "--namespace")]
objects = json.load(open(os.environ["FAKE_KUBECTL_OBJECTS"])) if os.environ.get("FAKE_KUBECTL_OBJECTS") else None
if words[:2] == ["config", "current-context"]:
    context = os.environ.get("FAKE_CONTEXT", "workshop")
    print(context) if context else sys.exit("error: current-context is not set")
elif words[:2] == ["config", "view"] and "--raw" in words:
    print(json.dumps({{"clusters": [{{"name": "gke_proj_europe-west1_workshop",
        "cluster": {{"server": "https://203.0.113.10", "certificate-authority-data": "Q0EgREFUQQ=="}}}}]}}))
elif words[:2] == ["config", "view"]:
    print(os.environ.get("FAKE_CONTEXT_NAMESPACE", ""), end="")
elif words[:3] == ["auth", "can-i", "create"]:
    sys.exit(0 if os.environ.get("FAKE_CAN_CREATE_PV") == "yes" else 1)
elif words[:2] == ["create", "token"]:
    print("token-for-" + namespace + "-" + args[args.index("--duration") + 1])
elif words[:2] == ["get", "endpointslices"] and objects is None:  # GKE's API server, outside the pod network
    print(json.dumps({{"kind": "List", "items": [{{"metadata": {{"name": "kubernetes", "namespace": "default"}},
        "endpoints": [{{"addresses": ["172.16.0.2"]}}], "ports": [{{"name": "https", "port": 443}}]}}]}}))
elif words[0] == "get" and "json" in args and objects is not None:
    found = [o for o in objects.get(words[1], []) if "--all-namespaces" in args or namespace is None
             or o["metadata"].get("namespace") == namespace]
    if words[1] in ("tfjobs", "workflows") and words[1] not in objects:  # the operator's, Argo's kinds
        sys.exit("error: the server does not have a resource type " + words[1])
    print(json.dumps({{"apiVersion": "v1", "kind": "List", "items": found}}))
elif words[0] == "get" and words[1] in ("service", "services") and "jsonpath" in " ".join(args):
    print("10.96.7.7", end="")
elif words[0] == "get" and objects is not None and len(words) > 2 and not words[2].startswith("-"):
    if not [o for o in objects.get(words[1], []) if o["metadata"]["name"] == words[2]]:
        sys.exit(f'Error from server (NotFound): {{words[1]}} "{{words[2]}}" not found')
    print(words[1] + "/" + words[2])
elif words[0] == "get" and len(words) > 2 and "json" in args:  # one object: there, unless told otherwise
    if os.environ.get("FAKE_NO_TFJOB_CRD") and words[2] == "tfjobs.kubeflow.org":
        sys.exit(f'Error from server (NotFound): {{words[1]}} "{{words[2]}}" not found')
    print(json.dumps({{"kind": words[1], "metadata": {{"name": words[2]}}}}))
elif words[0] == "wait":
    sys.exit(int(os.environ.get("FAKE_WAIT_EXIT", "0")))
elif words[0] == "logs" and os.environ.get("FAKE_KUBECTL_LOGS"):  # a file: the log it prints
    print(open(os.environ["FAKE_KUBECTL_LOGS"]).read(), end="")
elif words[0] == "api-resources":  # FAKE_API_RESOURCES: the kinds the cluster knows, beyond the built-in ones
    print("\\n".join(os.environ.get("FAKE_API_RESOURCES", "").split()))
elif words[0] == "port-forward":  # listen on the local port (":PORT": one the system picks), as kubectl does
    import socket, threading
    local, _, remote = words[-1].rpartition(":")
    try:
        server = socket.create_server(("127.0.0.1", int(local or 0)))
    except OSError as err:
        sys.exit(f"Unable to listen on port {{local}}: {{err}}")
    print(f"Forwarding from 127.0.0.1:{{server.getsockname()[1]}} -> {{remote}}", flush=True)
    # FAKE_FORWARD_TO=PORT: pass each connection on to 127.0.0.1:PORT, the "pod", byte for byte.
    target = os.environ.get("FAKE_FORWARD_TO")
    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
    while True:
        conn = server.accept()[0]
        if not target:
            conn.close()
            continue
        pod = socket.create_connection(("127.0.0.1", int(target)))
        for a, b in ((conn, pod), (pod, conn)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()
elif words[0] in ("apply", "delete") and "-f" in words:
    for doc in (d for d in __import__("yaml").safe_load_all(stdin) if d):
        print(doc["kind"].lower() + "/" + doc["metadata"]["name"], "configured" if words[0] == "apply" else "deleted")
"""


@pytest.fixture
def fake_kubectl(tmp_path):
    """A PATH whose kubectl is the stand-in; returns (PATH, a function reading the calls it logged).

    To make `kubectl get` answer with objects, write {kind: [objects]} as JSON to a file and set
    FAKE_KUBECTL_OBJECTS to it (`kubectl_objects` does both)."""
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
    os.environ.pop("FAKE_KUBECTL_OBJECTS", None)


def kubectl_objects(tmp_path, objects):
    """Make the stand-in kubectl's `get` answer from `objects` ({kind as kubectl is asked: [objects]})."""
    path = tmp_path / "kubectl-objects.json"
    path.write_text(json.dumps(objects))
    os.environ["FAKE_KUBECTL_OBJECTS"] = str(path)
    return path



@pytest.fixture
def api(tmp_path):
    """A stand-in API server with state (tests/fake_api.py) behind kubectl, over a namespace `alice`.

    Returns an object with env (PATH and the state file, for run_script or subprocess), path (a PATH for
    make()), read()/write() of the state, and calls() (every kubectl call, in order). Files given to
    `kubectl create -f` are read by the real kubectl's client-side parsing (support.real_kubectl).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).parent / "fake_api.py"}"'
                                     ' "$@"\n')
    (bin_dir / "kubectl").chmod(0o755)
    state = tmp_path / "api.json"
    fake_api.write_state(state, fake_api.empty_state("alice"))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_API_STATE": str(state),
           "REAL_KUBECTL": real_kubectl()}

    class Api:
        def read(self):
            return fake_api.read_state(state)

        def write(self, data):
            fake_api.write_state(state, data)

        def calls(self, verb=None):
            return [c for c in self.read()["calls"] if verb is None or c[0] == verb]

    api = Api()
    api.env, api.path = env, f"{bin_dir}:/usr/bin:/bin"
    return api
