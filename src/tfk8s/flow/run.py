"""`flow.py run`: a pipeline's steps as an Argo Workflow on the cluster, followed, or as processes here (--local).

On the cluster (from JupyterLab's terminal or a notebook cell): the command reads its own pod through the API
server (api.py), builds the Workflow (workflow.py), submits it and follows it, polling the Workflow: each step's
state as it changes (the Workflow's status.nodes, by the step's name) and its `main` container's log, line by
line, each line prefixed with the step's name. It ends with the Workflow's phase, how to see it again, and exit
0 only when it Succeeded; otherwise one line naming the step that failed. Ctrl-C asks Argo to stop the Workflow
(spec.shutdown: Terminate) and exits 130. Closing the terminal leaves the Workflow running: it is Argo's, not
this process's.

--local runs the same stages here, in the current directory: the steps of a stage at once, each a process group
of its own, their lines prefixed with the step's name; `python` is this interpreter (as tfjob_local.py runs it).
The next stage starts when every step of this one succeeded. A failed step lets its running siblings finish and
starts nothing more, as Argo's DAG does (failFast, true by default: "stop scheduling new steps, as soon as it
detects that one of the DAG nodes is failed. Then it waits until all DAG nodes are completed"; DAGTemplate in
api/jsonschema/schema.json, v4.1.2). Ctrl-C, SIGTERM or SIGHUP stop every step's group (SIGTERM, then SIGKILL
after GRACE seconds); if this runner is killed outright, the kernel and the reaper (tfk8s.kube.reaper) stop them.
"""
import http.client
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import yaml

from tfk8s import yamlfile
from tfk8s.cli import UserError
from tfk8s.flow import api, pipeline, workflow
from tfk8s.kube import reaper
from tfk8s.kube.tfjob_local import OUTPUT_CLOSED, Interrupted, OutputClosedError, finish, interrupt, reader_gone, say

ME = "pipeline"       # the prefix of the command's own lines
POLL = 2.0            # seconds between two reads of the Workflow
GRACE = 10.0          # seconds between SIGTERM and SIGKILL when a local step is stopped
LOG_DRAIN = 30.0      # seconds the logs may take to end once the Workflow has ended
NO_STATUS = 60.0      # seconds without a status after which the controller is said to be silent
FINAL = ("Succeeded", "Failed", "Error")
FAILED = ("Failed", "Error")
# Argo v4.1.2 workflow/common/common.go AnnotationKeyPodNameVersion; the controller records it on the Workflow.
POD_NAME_FORMAT = "workflows.argoproj.io/pod-name-format"


class StoppedError(UserError):
    """Ctrl-C (or a signal) ended the run."""

    def __init__(self, message, code=130):
        super().__init__(message)
        self.exit_code = code


# ---------------------------------------------------------------- on the cluster

def pod_name(wf, node):
    """The pod Argo made for a step's node: workflow.pod_name (v2 names), or the node's id when the controller
    recorded v1 names on the Workflow (Argo v4.1.2 workflow/util/pod_name.go)."""
    if (wf["metadata"].get("annotations") or {}).get(POD_NAME_FORMAT) == "v1":
        return node["id"]
    template = (node.get("templateRef") or {}).get("template") or node.get("templateName")
    return workflow.pod_name(wf["metadata"]["name"], template, node["name"])


def moment(stamp):
    """A log line's timestamp (RFC 3339, as the kubelet writes it: Go's RFC3339Nano drops trailing zeros, so
    ".1Z" follows ".05Z" but sorts before ".15Z" as text) as something that sorts in time."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", stamp or "")
    return (match[1], int((match[2] or "").ljust(9, "0"))) if match else (stamp or "", 0)


def main_state(pod):
    """'waiting', 'running' or 'terminated': the state of the pod's `main` container (waiting before it has one)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "main":
            state = status.get("state") or {}
            return next((s for s in ("terminated", "running") if s in state), "waiting")
    return "waiting"


class StepLog(threading.Thread):
    """Follows one step's `main` log: waits for the container to start, streams its lines prefixed with the
    step's name, opens the stream again (from the last line's time) if it ends while the container runs."""

    def __init__(self, client, step, pod, workflow_done):
        super().__init__(daemon=True)
        self.client, self.step, self.pod, self.done = client, step, pod, workflow_done

    def state(self):
        try:
            return main_state(self.client.pod(self.pod))
        except api.ApiError as err:
            if err.status == 404:
                return "gone"
            raise

    def run(self):
        last = None
        try:
            while True:
                state = self.state()
                if state == "gone" and self.done.is_set():
                    say(f"(no log: pod {self.pod} is gone)", self.step)
                    return
                if state in ("waiting", "gone"):
                    if self.done.wait(1.0) and state == "waiting":
                        return  # the Workflow ended with this container never started
                    continue
                try:
                    for stamp, line in self.client.log_lines(self.pod, since_time=last):
                        if last is not None and moment(stamp) <= moment(last):
                            # seen before the stream was opened again: the API server passes sinceTime on to the
                            # kubelet in whole seconds (pkg/registry/core/pod/strategy.go LogLocation, RFC3339)
                            continue
                        last = stamp
                        say(line, self.step)
                except (OSError, http.client.HTTPException):
                    pass  # silent for LOG_TIMEOUT, or the connection lost: opened again while main runs
                if self.state() in ("terminated", "gone"):
                    return
                self.done.wait(1.0)  # the stream ended while main runs: open it again, not in a tight loop
        except UserError as err:
            say(f"(log unavailable: {err})", self.step)


def follow(client, wf_name, stages, poll=POLL):
    """Poll the Workflow until it ends, printing each step's state changes and starting its log; the last
    Workflow read."""
    order = [s.name for steps in stages for s in steps]
    phases, logs, done = {}, {}, threading.Event()
    started, silent_said = time.monotonic(), False
    while True:
        wf = client.workflow(wf_name)
        status = wf.get("status") or {}
        nodes = [n for n in (status.get("nodes") or {}).values()
                 if n.get("type") == "Pod" and n.get("displayName") in order]
        for node in sorted(nodes, key=lambda n: order.index(n["displayName"])):
            step, phase = node["displayName"], node.get("phase") or "Pending"
            # A failed step's reason, and why a step still waits: Argo keeps a step whose pod the namespace's
            # quota refuses Pending and tries again (v4.1.2 util/errors/errors.go: exceeded quota is transient;
            # workflow/controller/operator.go requeueIfTransientErr), with the API server's words as its message.
            shown = (node.get("message") or "") if phase in FAILED or phase == "Pending" else ""
            if phases.get(step) != (phase, shown):
                phases[step] = (phase, shown)
                say(phase + (f": {shown}" if shown else ""), step)
            if step not in logs and phase != "Pending":
                logs[step] = StepLog(client, step, pod_name(wf, node), done)
                logs[step].start()
        if status.get("phase") in FINAL:
            break
        if not status.get("phase") and not silent_said and time.monotonic() - started > NO_STATUS:
            say(f"workflow {wf_name} has no status after {NO_STATUS:.0f} s: is Argo's controller running? "
                f"(kubectl get workflow {wf_name})", ME)
            silent_said = True
        time.sleep(poll)
    done.set()
    deadline = time.monotonic() + LOG_DRAIN
    for thread in logs.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    return wf


def report(wf, stages):
    """The end: the Workflow's phase and how to see it again; UserError naming the failed step unless it
    Succeeded."""
    name, namespace = wf["metadata"]["name"], wf["metadata"].get("namespace", "")
    status = wf.get("status") or {}
    phase, message = status.get("phase"), status.get("message")
    say(f"workflow {name} {phase}" + (f": {message}" if message else ""), ME)
    say(f"see it again: kubectl get workflow {name} -n {namespace}", ME)
    if phase == "Succeeded":
        return
    order = [s.name for steps in stages for s in steps]
    nodes = {n.get("displayName"): n for n in (status.get("nodes") or {}).values() if n.get("type") == "Pod"}
    failed = sorted((n for s, n in nodes.items() if s in order and n.get("phase") in FAILED),
                    key=lambda n: (n.get("finishedAt") or "~", order.index(n["displayName"])))
    not_run = [s for s in order if s not in nodes]
    tail = f"; not run: {', '.join(not_run)}" if not_run else ""
    if failed:
        step = failed[0]
        raise UserError(f"workflow {name} {phase}: step {step['displayName']} {step['phase']}"
                        + (f": {step['message']}" if step.get("message") else "") + tail)
    raise UserError(f"workflow {name} {phase}: {message or 'no step failed'}{tail}")


def stop_workflow(client, name, namespace):
    """Ctrl-C: ask Argo to stop the Workflow, and say so (StoppedError, exit 130)."""
    try:
        client.terminate(name)
    except api.ApiError as err:
        if err.status == 404:
            raise StoppedError(f"interrupted before workflow {name} was submitted: nothing runs") from None
        raise StoppedError(f"interrupted, but workflow {name} could not be stopped ({err}); stop it with: "
                      f"kubectl patch workflow {name} -n {namespace} --type merge "
                      """-p '{"spec":{"shutdown":"Terminate"}}'""") from None
    raise StoppedError(f"interrupted: asked Argo to stop workflow {name} (spec.shutdown: Terminate): its running "
                       f"steps are stopped and no other starts; see it with: kubectl get workflow {name} "
                       f"-n {namespace}")


def read_pod(path):
    docs = yamlfile.documents(path, must_hold="a Pod")
    if len(docs) != 1 or not isinstance(docs[0], dict) or docs[0].get("kind") != "Pod":
        raise UserError(f"{path} must hold one Pod, as `kubectl get pod NAME -o json` prints it")
    return docs[0]


def working_dir(pod):
    """Where the steps run: the container's workingDir, when this machine has it (in the pod it does); otherwise
    (a stand-in pod's description, elsewhere) the current directory, where their commands are checked."""
    where = workflow.container_of(pod).get("workingDir")
    return where if where and os.path.isdir(where) else os.getcwd()


def run_cluster(text, name=None, dry_run=False, pod_file=None, poll=POLL):
    stages = pipeline.parse(text)
    client = None
    if pod_file:
        pod = read_pod(pod_file)
    else:
        try:
            client = api.Client.in_cluster()
        except api.NotInClusterError as err:
            hint = (" (or give --pod FILE: the JupyterLab pod's description, `kubectl get pod NAME -o json`)"
                    if dry_run else "")
            raise UserError(f"{err}{hint}") from None
        pod = client.pod()
    steps = pipeline.named(stages)
    pipeline.check_commands(steps, working_dir(pod))
    doc = workflow.build(pod, stages, name or workflow.new_name())
    if dry_run:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120))
        return
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    try:
        try:
            client.create_workflow(doc)
        except api.ApiError as err:
            if err.status != 404:
                raise
            raise UserError(f"creating workflow {name} in namespace {namespace}: Argo Workflows is not installed in "
                            "the cluster (the API server knows no workflows.argoproj.io): ask the instructor") from None
        count, step_container = sum(len(s) for s in steps), doc["spec"]["templates"][1]["container"]
        say(f"workflow {name} submitted in namespace {namespace}: {count} step(s) in {len(steps)} stage(s), "
            f"image {step_container['image']}, in {step_container.get('workingDir', 'its WORKDIR')}", ME)
        wf = follow(client, name, steps, poll)
    except KeyboardInterrupt:
        stop_workflow(client, name, namespace)
    report(wf, steps)


# ---------------------------------------------------------------- here (--local)

@dataclass
class LocalStep:
    name: str
    argv: list
    process: subprocess.Popen = None
    reader: threading.Thread = None
    code: int = None        # its exit code once ended (128 + N for signal N; 128: could not start)
    how: str = ""           # how it ended, for the report


def start_step(step, cwd, watchdog):
    argv = list(step.argv)
    if pipeline.PYTHONS.fullmatch(argv[0]):
        argv[0] = sys.executable
    run = LocalStep(step.name, argv)
    try:
        run.process = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace",
            start_new_session=True,  # its own group: Ctrl-C reaches this runner, which stops the groups
            preexec_fn=reaper.die_with_runner())
    except OSError as err:
        run.code, run.how = 128, f"could not start ({err.strerror}: {err.filename or argv[0]})"
        say(f"Failed: {run.how}", step.name)
        return run
    watchdog.watch(run.process.pid)
    say(f"Running (pid {run.process.pid}): {shlex.join(step.argv)}", step.name)

    def copy_output(process=run.process):
        for line in process.stdout:
            say(line.rstrip("\n"), step.name)

    run.reader = threading.Thread(target=copy_output, daemon=True)
    run.reader.start()
    return run


def wait_stage(runs, watchdog):
    """Wait until every step of the stage has ended; the failed ones, in the order they ended."""
    failed = [r for r in runs if r.code]
    while any(r.code is None for r in runs):
        time.sleep(0.1)
        if OUTPUT_CLOSED.is_set() or reader_gone():
            raise OutputClosedError()
        for r in runs:
            if r.code is not None or r.process.poll() is None:
                continue
            finish(r, watchdog)  # the rest of its group killed, as a container's processes end with it
            code = r.process.returncode
            r.code = 128 - code if code < 0 else code
            if r.code == 0:
                say("Succeeded", r.name)
                continue
            r.how = (f"killed by {signal.Signals(-code).name} (exit code {r.code})" if code < 0
                     else f"exit code {r.code}")
            say(f"Failed: {r.how}", r.name)
            running = [o.name for o in runs if o.code is None]
            if not failed and running:
                say(f"{r.name} failed: {', '.join(running)} may finish; no further stage starts", ME)
            failed.append(r)
    return failed


def stop_steps(runs, watchdog):
    """Every step still running: its group SIGTERMed, SIGKILLed after GRACE (at once on a second signal)."""
    running = [r for r in runs if r.code is None and r.process is not None]
    if not running:
        return []
    say(f"stopping {', '.join(r.name for r in running)}", ME)
    groups = [r.process.pid for r in running]
    try:
        reaper.stop_groups(groups, GRACE)
    except Interrupted:
        reaper.signal_groups(groups, signal.SIGKILL)
    for r in running:
        r.process.wait()
        finish(r, watchdog)
    return [r.name for r in running]


def run_local(text):
    cwd = os.getcwd()
    stages = pipeline.steps_of(text, cwd, python=sys.executable)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    order = [s.name for steps in stages for s in steps]
    started, runs = time.monotonic(), []
    watchdog = reaper.Watchdog(GRACE)
    try:
        for steps in stages:
            if OUTPUT_CLOSED.is_set():
                raise OutputClosedError()
            runs = []
            for step in steps:  # each kept as soon as it starts: a signal meanwhile stops those started
                runs.append(start_step(step, cwd, watchdog))
            failed = wait_stage(runs, watchdog)
            if failed:
                not_run = order[order.index(steps[-1].name) + 1:]
                tail = f"; not run: {', '.join(not_run)}" if not_run else ""
                raise UserError(f"pipeline failed: step {failed[0].name} failed: {failed[0].how}{tail}")
        say(f"pipeline succeeded: {len(order)} step(s) in {len(stages)} stage(s) in "
            f"{time.monotonic() - started:.0f} s", ME)
    except Interrupted as signalled:
        stopped = stop_steps(runs, watchdog)
        raise StoppedError(f"interrupted ({signalled}): " + (f"stopped {', '.join(stopped)}" if stopped else
                                                        "no step was running"), 128 + signalled.signum) from None
    except OutputClosedError:
        stop_steps(runs, watchdog)
        sys.exit(141)  # as a shell tool whose reader went away (128 + SIGPIPE), every step stopped
    finally:
        watchdog.close()
