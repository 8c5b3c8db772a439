"""`make jupyter` (the attendee's JupyterLab through a port-forward, with the token from its log) and
`make instructor-notebook` (the notebook image built, pushed once, recorded by digest), against stand-ins of
kubectl and docker."""
import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import kubectl_objects
from support import MAKE, REPO, make, make_error

TOKEN = "3f" * 24
# What JupyterLab prints when it starts (jupyter_server 2.x), twice: the log of a restarted container shows
# only its own start, yet a stand-in may show both; the last one is the running server's.
LOG = """[I 2026-12-07 09:37:13.476 ServerApp] Jupyter Server 2.21.1 is running at:
[I 2026-12-07 09:37:13.476 ServerApp] http://127.0.0.1:8888/lab?token={old}
    Or copy and paste one of these URLs:
        http://127.0.0.1:8888/lab?token={old}
[I 2026-12-07 09:41:02.101 ServerApp] http://127.0.0.1:8888/lab?token={token}
[I 2026-12-07 09:41:02.101 ServerApp] Use Control-C to stop this server and shut down all kernels.
""".format(old="0a" * 24, token=TOKEN)


class Lab(http.server.BaseHTTPRequestHandler):
    """The "pod": answers /lab with 200 only when asked with the token, 403 otherwise, as JupyterLab's API does."""

    def do_GET(self):
        self.send_response(200 if self.path == f"/lab?token={TOKEN}" else 403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def lab():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lab)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def start_jupyter(path, tmp_path, lab_port, *variables):
    log = tmp_path / "jupyterlab.log"
    log.write_text(LOG)
    env = {k: v for k, v in os.environ.items() if k not in ("NAMESPACE", "KUBECONFIG", "MAKEFLAGS", "MAKELEVEL")}
    env.update(PATH=path, FAKE_KUBECTL_LOGS=str(log), FAKE_FORWARD_TO=str(lab_port), FAKE_CONTEXT_NAMESPACE="alice")
    return subprocess.Popen([MAKE, "--no-print-directory", "-o", ".venv/.installed", "jupyter", "NAMESPACE=alice",
                             *variables], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def url_line(process):
    """The line with the URL (a deadline: the test's timeout), and every line before it."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("JupyterLab: "):
            return line, seen
    raise AssertionError("make jupyter printed no URL: " + "".join(seen) + process.stderr.read())


def group(process):
    return subprocess.run(["ps", "-o", "pid,ppid,stat,args", "-g", str(process.pid)], capture_output=True,
                          text=True).stdout


def stop(process):
    """Ctrl-C in its terminal, once the URL line's command waits (as a person reads the line first: a SIGINT in
    the microseconds between the line and its `sleep` would reach a shell that defers it, sh -c's way)."""
    deadline = time.monotonic() + 30
    while " sleep 3600" not in group(process):
        assert time.monotonic() < deadline, group(process)
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        tree = group(process)
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("still running 30 s after Ctrl-C:\n" + tree) from None


@pytest.mark.timeout(120)
def test_make_jupyter_forwards_a_free_port_to_the_pod_and_prints_the_url_with_the_running_servers_token(
        fake_kubectl, tmp_path, lab):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, {"deployment": [{"metadata": {"name": "jupyterlab", "namespace": "alice"}}]})
    process = start_jupyter(path, tmp_path, lab)
    try:
        line, _ = url_line(process)
        url = re.fullmatch(r"JupyterLab: (http://127\.0\.0\.1:(\d+)/lab\?token=(\w+))   \(Ctrl-C to stop\)\n", line)
        assert url and url[3] == TOKEN, line
        with urllib.request.urlopen(url[1], timeout=10) as answer:  # through the forward, to the "pod"
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(url[1].replace(TOKEN, "0a" * 24), timeout=10)
    finally:
        stop(process)
    with socket.socket() as s:  # Ctrl-C stopped the forward with it
        assert s.connect_ex(("127.0.0.1", int(url[2]))) != 0
    asked = [c["args"] for c in calls()]
    assert ["--namespace", "alice", "logs", "deployment/jupyterlab", "--container", "jupyterlab"] in asked
    assert ["--namespace", "alice", "port-forward", "deployment/jupyterlab", ":8888"] in asked


@pytest.mark.timeout(120)
def test_make_jupyter_forwards_the_local_port_given(fake_kubectl, tmp_path, lab):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, {"deployment": [{"metadata": {"name": "jupyterlab", "namespace": "alice"}}]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = start_jupyter(path, tmp_path, lab, f"JUPYTER_PORT={port}")
    try:
        line, _ = url_line(process)
        assert line.startswith(f"JupyterLab: http://127.0.0.1:{port}/lab?token={TOKEN} ")
    finally:
        stop(process)
    assert ["--namespace", "alice", "port-forward", "deployment/jupyterlab", f"{port}:8888"] in \
        [c["args"] for c in calls()]


def test_make_jupyter_without_jupyterlab_in_the_namespace_is_one_line(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    kubectl_objects(tmp_path, {"deployment": []})
    result = make("jupyter", "NAMESPACE=alice", env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    make_error(result, "error: no JupyterLab in namespace alice: the instructor installs it")
    assert not [c for c in calls() if "port-forward" in c["args"] or "logs" in c["args"]]


# ---------------------------------------------------------------- make instructor-notebook (a stand-in docker)

DIGEST = "sha256:" + "c0ffee" * 10 + "abcd"
DOCKER = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in
  info|buildx) exit 0 ;;
  image) [ "$2" = inspect ] && [ "$3" = --format ] && printf '%s\\n' $FAKE_REPO_DIGESTS; exit 0 ;;
esac
"""


def instructor_notebook(tmp_path, digests):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER)
    (bin_dir / "docker").chmod(0o755)
    result = make("instructor-notebook", "IMAGE=r.example.com/w/mnist", "TAG=d1", f"RUNS={tmp_path / 'runs'}",
                  env={"FAKE_REPO_DIGESTS": digests, "BASE": "b.example.com/python@" + DIGEST},
                  path=f"{bin_dir}:{os.environ['PATH']}")
    return result, (bin_dir / "calls").read_text().splitlines()


def test_instructor_notebook_builds_the_notebook_target_pushes_it_and_records_its_digest(tmp_path):
    result, calls = instructor_notebook(tmp_path, f"other.example.com/x@{DIGEST} "
                                                  f"r.example.com/w/mnist-notebook@{DIGEST}")
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in calls if c.startswith("build ")]
    assert "--target notebook -t r.example.com/w/mnist-notebook:d1 ." in build and "--platform linux/amd64" in build
    assert "push r.example.com/w/mnist-notebook:d1" in calls
    assert calls.index("push r.example.com/w/mnist-notebook:d1") > calls.index(build)
    reference = f"r.example.com/w/mnist-notebook@{DIGEST}"
    assert (tmp_path / "runs" / "notebook-image").read_text() == reference + "\n"
    assert f"NOTEBOOK_IMAGE={reference} " in result.stdout


def test_instructor_notebook_without_a_pushed_digest_is_one_line_and_records_nothing(tmp_path):
    result, _ = instructor_notebook(tmp_path, "")
    make_error(result, "error: the push left no digest of r.example.com/w/mnist-notebook:d1")
    assert not (tmp_path / "runs" / "notebook-image").exists()
