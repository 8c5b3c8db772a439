"""Shared fixtures: the repository's paths, runners for src/ scripts and make, stand-in kubectls, one trained model."""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import fake_api
from tfk8s.cli import child_env
from tfk8s.paths import REPO, SRC

MAKE = shutil.which("make")


def run_script(script, *args, env=None, timeout=600, cwd=REPO):
    """Run `python src/<script> args...` as a user would; return the CompletedProcess (text)."""
    full_env = {**child_env(), **(env or {})}
    return subprocess.run([sys.executable, str(SRC / script), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """A failed command: non-zero exit, no traceback, its last stderr line starts with 'error:'."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """Train the real CNN for a few hundred steps on the shipped mini data, once per session.

    Returns a dict with model_dir, export_dir, version (the export's path) and the trainer's stdout.
    """
    root = tmp_path_factory.mktemp("trained")
    model_dir, export_dir = root / "model", root / "export"
    result = run_script("main.py", "--steps", 300, "--eval_every", 150, "--checkpoint_every", 150,
                        "--hidden_layers", 2, "--model_dir", model_dir, "--export_dir", export_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    versions = sorted(p for p in export_dir.iterdir() if p.name.isdigit())
    assert len(versions) == 1
    return {"model_dir": model_dir, "export_dir": export_dir, "version": versions[0], "stdout": result.stdout}


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


def makefile_text():
    """The Makefile and the parts it includes (make/*.mk), as one text."""
    return "\n".join(p.read_text() for p in [REPO / "Makefile", *sorted((REPO / "make").glob("*.mk"))])


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


@pytest.fixture
def api(tmp_path):
    """A stand-in API server with state (tests/fake_api.py) behind kubectl, over a namespace `alice`.

    Returns an object with env (PATH and the state file, for run_script or subprocess), path (a PATH for
    make()), read()/write() of the state, and calls() (every kubectl call, in order). Files given to
    `kubectl create -f` are read by the real kubectl's client-side parsing when it is installed.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).parent / "fake_api.py"}"'
                                     ' "$@"\n')
    (bin_dir / "kubectl").chmod(0o755)
    state = tmp_path / "api.json"
    fake_api.write_state(state, fake_api.empty_state("alice"))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_API_STATE": str(state),
           "REAL_KUBECTL": shutil.which("kubectl") or ""}

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
