"""`flow.py run` on the cluster, against a stand-in API server over HTTPS on loopback (a thread here), with Argo's
controller played plainly: the real command, as a process, reads its own pod, submits, follows states and logs,
names a failed step, and stops the Workflow on Ctrl-C. Every request it makes is recorded as RBAC sees it
(verb, API group, resource) and held to rights.COMMAND_RIGHTS."""
import copy
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from support import assert_one_line_error, reaped, wait_for
from tfk8s.cli import child_env
from tfk8s.flow import pipeline, rights, workflow
from tfk8s.paths import REPO, SRC

POD = json.loads((Path(__file__).parent / "flow_pod.json").read_text())
POD_NAME, NAMESPACE, TOKEN = POD["metadata"]["name"], POD["metadata"]["namespace"], "the-notebook-token"
TEXT = "python src/main.py --steps 20 >> python src/batch_predict.py & python src/model_config.py show >> echo done"
STEPS = ["s1-main", "s2-batch-predict", "s2-model-config", "s3-echo"]
FINAL = ("Succeeded", "Failed", "Error")
RUNNING_TICKS = 50   # a running step ends once its log was followed, or after this many reads of the Workflow


def fnv32a(text):
    """FNV-1a, 32 bits: Argo names a step's pod and node with it (workflow/util/pod_name.go, v4.1.2)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) % 2**32
    return value


def rbac(method, path, query):
    """(verb, group, resource) of a request, as the API server's RBAC reads it."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    assert rest[0] == "namespaces", path
    resource, name, sub = rest[2], (rest[3] if len(rest) > 3 else None), (rest[4] if len(rest) > 4 else None)
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "watch" if query.get("watch") == ["true"] else ("get" if name else "list")
    return verb, group, resource + (f"/{sub}" if sub else "")


class Argo:
    """The API server's state and Argo's controller, played one step per read of the Workflow."""

    def __init__(self, outcomes=None, logs=None, refuse=None):
        self.outcomes = outcomes or {}       # step -> "Succeeded" (default), "Failed" or "hang"
        self.logs = logs or {}                # step -> its log lines
        self.refuse = refuse or {}            # (verb, group, resource) -> (status, reason)
        self.pods = {POD_NAME: copy.deepcopy(POD)}
        self.workflows, self.calls, self.requests = {}, [], []
        self.followed = {}                    # step -> main's state when its log was first followed
        self.changed = threading.Condition()
        self.clock = 1
        self.step_of = {}                     # a step's pod -> the step
        self.emitted = {}                     # pod -> [(time, line)] its main container has written so far
        self.drop = set()                     # steps whose first log stream ends while they run (a lost connection)
        self.quota_waits = {}                 # step -> reads of the Workflow its pod is refused by the quota

    # ---------------------------------------------------------------- the controller

    def stamp(self):
        """The time of a log line as the kubelet writes it (Go's RFC3339Nano: trailing zeros dropped), 50 ms
        apart: .1, .15, .2, ..."""
        self.clock += 1
        seconds, nanos = divmod(self.clock * 50_000_000, 10**9)
        return f"2026-12-07T09:00:{seconds:02d}" + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"

    def emit(self, pod, lines):
        self.emitted.setdefault(pod, []).extend((self.stamp(), line) for line in lines)

    def pod_of(self, wf, task):
        return f"{wf['metadata']['name']}-{task}-{fnv32a(wf['metadata']['name'] + '.' + task)}"

    def set_main(self, pod, state):
        self.pods[pod]["status"]["containerStatuses"][1]["state"] = {state: {}}
        self.pods[pod]["status"]["phase"] = {"waiting": "Pending", "running": "Running"}.get(state, "Succeeded")

    def tick(self, wf):
        name, status = wf["metadata"]["name"], wf["status"]
        nodes = status["nodes"]
        steps = {n["displayName"]: n for n in nodes.values() if n["type"] == "Pod"}
        if wf["spec"].get("shutdown") == "Terminate":
            for node in steps.values():
                if node["phase"] not in FINAL:
                    node.update(phase="Failed", message="workflow shutdown with strategy:  Terminate")
                    self.set_main(self.pod_of(wf, node["displayName"]), "terminated")
            status.update(phase="Failed", message="Stopped with strategy 'Terminate'")
            return
        for step, node in steps.items():
            pod = self.pod_of(wf, step)
            outcome = self.outcomes.get(step, "Succeeded")
            if node["phase"] == "Running" and outcome != "hang":
                node["ticks"] += 1
                if step in self.followed or node["ticks"] > RUNNING_TICKS:
                    node["phase"] = outcome
                    if outcome == "Failed":
                        node["message"] = "Error (exit code 3)"
                    self.emit(pod, self.lines(step)[1:])
                    node["finishedAt"] = self.stamp()
                    self.set_main(pod, "terminated")
            elif node["phase"] == "Pending" and node["ticks"] < self.quota_waits.get(step, 0):
                node["ticks"] += 1  # Argo keeps it Pending with the API server's refusal, and tries again
                node["message"] = (f'pods "{pod}" is forbidden: exceeded quota: workshop, requested: '
                                   "limits.cpu=2, used: limits.cpu=5, limited: limits.cpu=6")
            elif node["phase"] == "Pending":
                node.pop("message", None)
                node["phase"], node["ticks"] = "Running", 0
                self.emit(pod, self.lines(step)[:1])
                self.set_main(pod, "running")
        failed = any(n["phase"] in ("Failed", "Error") for n in steps.values())
        tasks = next(t for t in wf["spec"]["templates"] if t["name"] == "pipeline")["dag"]["tasks"]
        if not failed:  # failFast: nothing new once a step failed
            for task in tasks:
                ready = all(steps.get(d, {}).get("phase") == "Succeeded" for d in task.get("dependencies", []))
                if task["name"] not in steps and ready:
                    node_name = f"{name}.{task['name']}"
                    node_id = f"{name}-{fnv32a(node_name)}"
                    nodes[node_id] = {"id": node_id, "name": node_name, "displayName": task["name"], "type": "Pod",
                                      "templateName": task["template"], "phase": "Pending", "ticks": 0}
                    self.step_of[self.pod_of(wf, task["name"])] = task["name"]
                    self.pods[self.pod_of(wf, task["name"])] = {
                        "metadata": {"name": self.pod_of(wf, task["name"]), "namespace": NAMESPACE},
                        "status": {"phase": "Pending", "containerStatuses": [
                            {"name": "wait", "state": {"waiting": {"reason": "PodInitializing"}}},
                            {"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}}]}}
        steps = {n["displayName"]: n for n in nodes.values() if n["type"] == "Pod"}
        if all(n["phase"] in FINAL for n in steps.values()) and (failed or len(steps) == len(tasks)):
            status["phase"] = "Failed" if failed else "Succeeded"
            if failed:
                status["message"] = "child failed"

    # ---------------------------------------------------------------- the API server

    def answer(self, handler, method, body):
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        right = rbac(method, url.path, query)
        with self.changed:
            self.calls.append((method, handler.path, body, handler.headers.get("Content-Type")))
            self.requests.append(right)
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return handler.status(401, "Unauthorized", "no valid token")
        if f"/namespaces/{NAMESPACE}/" not in url.path or right not in rights.COMMAND_RIGHTS:
            return handler.status(403, "Forbidden", f"{right} is not granted to system:serviceaccount:{NAMESPACE}:"
                                  f"{rights.NOTEBOOK_SERVICE_ACCOUNT}")
        if right in self.refuse:
            return handler.status(*self.refuse[right], f"refused: {right}")
        parts = url.path.strip("/").split("/")
        name = parts[6] if len(parts) > 6 else None
        if right == ("get", "", "pods"):
            pod = self.pods.get(url.path.split("/")[-1])
            return handler.json(200, pod) if pod else handler.status(404, "NotFound", f'pods "{url.path}" not found')
        if right == ("get", "", "pods/log"):
            return self.follow(handler, url.path.split("/")[-2], query)
        if right == ("create", "argoproj.io", "workflows"):
            with self.changed:
                doc = copy.deepcopy(body)
                doc["metadata"]["annotations"] = {"workflows.argoproj.io/pod-name-format": "v2"}
                doc["status"] = {"phase": "Running", "nodes": {doc["metadata"]["name"]: {
                    "id": doc["metadata"]["name"], "name": doc["metadata"]["name"], "type": "DAG",
                    "displayName": doc["metadata"]["name"], "templateName": "pipeline", "phase": "Running"}}}
                self.workflows[doc["metadata"]["name"]] = doc
            return handler.json(201, body)
        wf = self.workflows.get(name)
        if wf is None:
            return handler.status(404, "NotFound", f'workflows.argoproj.io "{name}" not found')
        with self.changed:
            if method == "PATCH":
                wf["spec"].update(body["spec"])
            else:
                self.tick(wf)
            self.changed.notify_all()
            shown = copy.deepcopy(wf)
        for node in shown["status"]["nodes"].values():
            node.pop("ticks", None)
        return handler.json(200, shown)

    def lines(self, step):
        return self.logs.get(step, [f"{step} line 1", f"{step} line 2"])

    def follow(self, handler, pod, query):
        """A followed log, as the kubelet serves it: 400 while main waits; the lines so far (from sinceTime's
        second: the API server passes it on in whole seconds), then the rest as they come until main
        terminates."""
        step = self.step_of[pod]
        state = next(iter(self.pods[pod]["status"]["containerStatuses"][1]["state"]))
        if state == "waiting":
            return handler.status(400, "BadRequest", f'container "main" in pod "{pod}" is waiting to start: '
                                                     "PodInitializing")
        assert query["container"] == ["main"] and query["follow"] == ["true"], query
        since = query.get("sinceTime", [""])[0][:19]
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()
        sent = 0

        def send():
            nonlocal sent
            with self.changed:
                new, sent = self.emitted.get(pod, [])[sent:], len(self.emitted.get(pod, []))
            handler.wfile.write("".join(f"{t} {line}\n" for t, line in new if t[:19] >= since).encode())
            handler.wfile.flush()

        send()
        with self.changed:
            self.followed.setdefault(step, state)
            if step in self.drop and not since:
                return None  # the connection is lost while main runs
            self.changed.wait_for(lambda: "terminated" in self.pods[pod]["status"]["containerStatuses"][1]["state"],
                                  timeout=60)
        send()
        return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def status(self, code, reason, message):
        self.json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                         "reason": reason, "code": code})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def do_GET(self):
        self.server.argo.answer(self, "GET", None)

    def do_POST(self):
        self.server.argo.answer(self, "POST", self.body())

    def do_PATCH(self):
        self.server.argo.answer(self, "PATCH", self.body())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl), as the cluster's CA hands the API server one."""
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", where / "key.pem",
                    "-out", where / "cert.pem"], check=True, capture_output=True)
    return where / "cert.pem", where / "key.pem"


@pytest.fixture
def api(tmp_path, certificate):
    """The stand-in API server (its Argo in .argo) and the environment of a process in the JupyterLab pod."""
    cert, key = certificate
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.argo = Argo()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text(NAMESPACE)
    (account / "ca.crt").write_bytes(cert.read_bytes())
    server.env = {**child_env(), "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                  "KUBERNETES_SERVICE_PORT": str(server.server_address[1]), "TFK8S_SERVICEACCOUNT_DIR": str(account),
                  "HOSTNAME": POD_NAME, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    yield server
    server.shutdown()
    with server.argo.changed:
        server.argo.changed.notify_all()
    used = set(server.argo.requests)
    assert used <= rights.COMMAND_RIGHTS, f"requests beyond the Role: {used - rights.COMMAND_RIGHTS}"


def flow(api, *args, text=TEXT, popen=False):
    command = [sys.executable, str(SRC / "flow.py"), "run", "-c", text, "--poll", "0.1", *args]
    if popen:
        return subprocess.Popen(command, cwd=REPO, env=api.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=REPO, env=api.env, capture_output=True, text=True, timeout=180)


def test_a_pipeline_runs_states_and_logs_as_they_come(api):
    result = flow(api, "--name", "pipeline-test-1")
    assert result.returncode == 0, result.stdout + result.stderr
    argo, lines = api.argo, result.stdout.splitlines()
    # submitted: the Workflow built from the pod the API server described
    (post,) = [c for c in argo.calls if c[0] == "POST"]
    assert post[2] == workflow.build(POD, pipeline.parse(TEXT), "pipeline-test-1")
    assert post[1] == f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows"
    for step in STEPS:
        states = [line.split("] ", 1)[1] for line in lines if line.startswith(f"[{step}] ")
                  and line.split("] ", 1)[1] in ("Pending", "Running", "Succeeded", "Failed")]
        assert states == ["Pending", "Running", "Succeeded"], (step, lines)
        # both lines, the first sent while main was running (the second only once it had ended): followed
        assert f"[{step}] {step} line 1" in lines and f"[{step}] {step} line 2" in lines, lines
        assert argo.followed[step] == "running"
    assert lines.index("[s1-main] Succeeded") < lines.index("[s2-batch-predict] Pending")
    assert lines.index("[s2-model-config] Succeeded") < lines.index("[s3-echo] Pending")
    assert lines.index("[pipeline] workflow pipeline-test-1 Succeeded") > max(
        lines.index(f"[{s}] {s} line 2") for s in STEPS)
    assert f"kubectl get workflow pipeline-test-1 -n {NAMESPACE}" in result.stdout
    assert result.stderr == ""
    assert set(argo.requests) == rights.COMMAND_RIGHTS - {("patch", "argoproj.io", "workflows")}


def test_a_step_the_quota_holds_back_says_why_it_waits_once_then_runs(api):
    api.argo.quota_waits = {"s1-echo": 4}
    result = flow(api, "--name", "pipeline-test-7", text="echo one")
    assert result.returncode == 0, result.stdout + result.stderr
    pod = api.argo.pod_of({"metadata": {"name": "pipeline-test-7"}}, "s1-echo")
    states = [line for line in result.stdout.splitlines()
              if line.startswith("[s1-echo] ") and "] s1-echo line " not in line]
    assert states == ["[s1-echo] Pending",
                      f'[s1-echo] Pending: pods "{pod}" is forbidden: exceeded quota: workshop, requested: '
                      "limits.cpu=2, used: limits.cpu=5, limited: limits.cpu=6",
                      "[s1-echo] Running", "[s1-echo] Succeeded"], result.stdout


def test_a_log_stream_lost_while_the_step_runs_is_opened_again_without_repeating_a_line(api):
    """The first stream ends after line 1 (.1 s) while main runs; the second, from that second on, repeats it:
    printed once, and line 2 (.15 s: before .1 as text) printed too."""
    api.argo.drop = {"s1-echo"}
    result = flow(api, "--name", "pipeline-test-6", text="echo one")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[s1-echo] s1-echo")]
    assert lines == ["[s1-echo] s1-echo line 1", "[s1-echo] s1-echo line 2"], result.stdout
    follows = [c[1] for c in api.argo.calls if "/log?" in c[1]]
    assert len(follows) == 2 and "sinceTime=2026-12-07T09%3A00%3A00.1Z" in follows[1], follows


def test_a_failed_step_is_named_and_nothing_after_it_runs(api):
    api.argo.outcomes = {"s2-model-config": "Failed"}
    result = flow(api, "--name", "pipeline-test-2")
    last = assert_one_line_error(result)
    assert last == ("error: workflow pipeline-test-2 Failed: step s2-model-config Failed: Error (exit code 3); "
                    "not run: s3-echo"), last
    assert result.returncode == 1
    assert "[s2-model-config] Failed: Error (exit code 3)" in result.stdout
    assert "[s2-batch-predict] Succeeded" in result.stdout and "[s3-echo]" not in result.stdout


def test_ctrl_c_stops_the_workflow(api):
    api.argo.outcomes = {"s1-main": "hang"}
    printed = []
    with reaped(flow(api, "--name", "pipeline-test-3", popen=True)) as process:
        reader = threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True)
        reader.start()
        # Ctrl-C once the running step's log line is on the screen (the server sending it is not enough: under
        # load the command may not have printed it yet, and a line still on its way is not promised at Ctrl-C)
        wait_for(lambda: "[s1-main] s1-main line 1\n" in printed, "s1-main's log line printed",
                 log=lambda: "".join(printed))
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=60)  # its stderr is one line: the pipe holds it until read
        err = process.stderr.read()
        reader.join(timeout=10)
    out = "".join(printed)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [
        "error: interrupted: asked Argo to stop workflow pipeline-test-3 (spec.shutdown: Terminate): its running "
        f"steps are stopped and no other starts; see it with: kubectl get workflow pipeline-test-3 -n {NAMESPACE}"]
    patches = [c for c in api.argo.calls if c[0] == "PATCH"]
    assert len(patches) == 1, f"Ctrl-C sent {len(patches)} patches of the Workflow, not one"
    patch = patches[0]
    assert patch[1].endswith("/workflows/pipeline-test-3") and patch[2] == {"spec": {"shutdown": "Terminate"}}
    assert patch[3] == "application/merge-patch+json"
    assert "[s1-main] s1-main line 1" in out
    # this run used every right the Role grants, and no other
    assert set(api.argo.requests) == rights.COMMAND_RIGHTS


def test_dry_run_reads_its_pod_and_submits_nothing(api):
    result = flow(api, "--dry_run", "--name", "pipeline-test-4")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == workflow.build(POD, pipeline.parse(TEXT), "pipeline-test-4")
    assert set(api.argo.requests) == {("get", "", "pods")}


def test_dry_run_outside_the_cluster(tmp_path):
    env = {k: v for k, v in child_env().items() if not k.startswith("KUBERNETES_")}
    command = [sys.executable, str(SRC / "flow.py"), "run", "-c", TEXT, "--dry_run"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "not in a pod of the cluster", "--pod FILE")
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump(POD))
    result = subprocess.run([*command, "--pod", pod], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert re.fullmatch(r"pipeline-\d{8}-\d{6}-[a-z0-9]{4}", doc["metadata"]["name"])
    assert doc == workflow.build(POD, pipeline.parse(TEXT), doc["metadata"]["name"])


@pytest.mark.parametrize("change, fragment", [
    (lambda api: api.env.update(HOSTNAME="jupyterlab-gone"),
     f"error: reading pod jupyterlab-gone in namespace {NAMESPACE}: the API server answered 404 NotFound"),
    (lambda api: api.argo.refuse.update({("create", "argoproj.io", "workflows"): (403, "Forbidden")}),
     f"error: creating workflow pipeline-test-5 in namespace {NAMESPACE}: the API server answered 403 Forbidden"),
    (lambda api: api.argo.refuse.update({("create", "argoproj.io", "workflows"): (404, "NotFound")}),
     "error: creating workflow pipeline-test-5 in namespace alice: Argo Workflows is not installed"),
    (lambda api: api.argo.refuse.update({("create", "argoproj.io", "workflows"): (422, "Invalid")}),
     "the API server answered 422 Invalid: refused"),
    (lambda api: api.argo.refuse.update({("get", "argoproj.io", "workflows"): (403, "Forbidden")}),
     "error: reading workflow pipeline-test-5: the API server answered 403 Forbidden"),
    (lambda api: (Path(api.env["TFK8S_SERVICEACCOUNT_DIR"]) / "token").write_text("stale"),
     "the API server answered 401 Unauthorized"),
    (lambda api: (Path(api.env["TFK8S_SERVICEACCOUNT_DIR"]) / "ca.crt").write_text(""),
     "error: cannot use the service account's ca.crt"),
    (lambda api: api.env.update(KUBERNETES_SERVICE_PORT="9"), "cannot reach the API server at https://127.0.0.1:9"),
])
def test_an_api_error_is_one_line(api, change, fragment):
    change(api)
    result = flow(api, "--name", "pipeline-test-5")
    last = assert_one_line_error(result)
    assert last.startswith(fragment) or fragment in last, last


def test_the_servers_certificate_is_checked(api, tmp_path):
    """A server whose certificate the service account's CA did not sign is refused."""
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", other / "key.pem", "-out", other / "cert.pem"], check=True, capture_output=True)
    (Path(api.env["TFK8S_SERVICEACCOUNT_DIR"]) / "ca.crt").write_bytes((other / "cert.pem").read_bytes())
    result = flow(api, "--dry_run")
    assert_one_line_error(result, "cannot reach the API server", "CERTIFICATE_VERIFY_FAILED")
    assert api.argo.requests == []


def test_the_steps_commands_are_checked_before_anything_is_submitted(api):
    result = flow(api, text="python src/main.py >> python src/no_such_script.py")
    assert_one_line_error(result, "step s2-no-such-script: python src/no_such_script.py: no such file")
    assert set(api.argo.requests) == {("get", "", "pods")}
