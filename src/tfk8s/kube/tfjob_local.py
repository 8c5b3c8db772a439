"""Run a TFJob manifest on this machine, one process per replica, as the training operator runs pods.

    python src/tfjob_local.py kube/tfjob.yaml                                 # the manifest as it is
    python src/tfjob_local.py kube/tfjob.yaml -- --dataset mini --steps 200   # appended to every replica's args

What it does as Kubeflow's training operator (v1.9) does: it refuses an
invalid manifest (tfjob_check), gives the `tensorflow` container of every
replica the TF_CONFIG the operator would give it (with each replica's
`<job>-<type>-<index>.<namespace>.svc:2222` mapped to a free localhost port),
restarts a replica that fails according to its restartPolicy (runPolicy.backoffLimit
bounds restarts in place, OnFailure and Always; under ExitCode only activeDeadlineSeconds
does, as in operator v1.9), and ends when the Chief (or, without one, worker 0)
succeeds or a replica fails for good, then stops the replicas still running
(as cleanPodPolicy Running does; Ctrl-C or SIGTERM stops them all too). With
enableDynamicWorker, TF_CONFIG is the operator's sparse form and a failed Worker
does not fail the job. A suspended TFJob, or one another controller manages
(runPolicy.managedBy), is refused: the operator creates no pods for it.

A replica is a pod here: its process leads a process group of its own, and
whatever it starts belongs to that group. Stopping a replica signals its
whole group (SIGTERM, then SIGKILL after a grace period), and when a
replica's main process exits the rest of its group is killed, as a
container's processes end with it. A command that cannot be started is a
failed replica with exit code 128, as the kubelet reports a container's
StartError. If this runner is killed outright (SIGKILL), the kernel kills
every replica's main process (PR_SET_PDEATHSIG, on Linux) and a watchdog
process (reaper.py) kills what is left of their groups: nothing is left behind.

What stands in for the cluster: `python` is this interpreter, /app/ (the
image's WORKDIR) is this repository, and every volume is a directory under
--root, shared by all replicas as the NFS claim is, except an emptyDir, which
is one pod's own (<root>/pods/<pod>/<volume>). A volume mounted at /tmp is the
replica's TMPDIR, so TensorFlow's scratch files and a worker's scratch
checkpoints stay in its pod, not in this machine's /tmp. A replica restarted
under restartPolicy ExitCode is a new pod, as the operator deletes the failed
one and creates another: its emptyDir volumes start empty again (under
OnFailure and Always the container restarts in its pod and keeps them). Each
replica's output is printed with its name (`[worker-1] ...`) and kept in
<root>/logs/<pod>.log, where a pod is named as on the cluster:
<job>-<type>-<index>.
"""
import json
import os
import posixpath
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, UserError, child_env, duration, entry_point, fail, split_at_dashes
from tfk8s.kube import reaper, tfjob_check
from tfk8s.noise import is_no_gpu_notice
from tfk8s.paths import REPO, RUNS
from tfk8s.ports import free_ports

IMAGE_WORKDIR = "/app"  # where the image keeps this repository
PYTHONS = ("python", "python3")
DEFAULT_PORT, PORT_NAME = 2222, "tfjob-port"
# The operator's IsRetryableExitCode (v1.9, pkg/util/train): 128 and above (killed by a signal, 138 the code
# a program uses to ask for a retry, 128 a container that could not start) is retryable; 1 to 127 is permanent.
FIRST_RETRYABLE_EXIT_CODE = 128
START_ERROR_EXIT_CODE = 128  # what the kubelet reports for a container whose command cannot be run (StartError)
START_ORDER = ("Chief", "Master", "Evaluator", "PS", "Worker")  # the operator's order of replica types
RESTART_DELAY = 1.0   # default seconds before a failed replica is started again (a new pod takes a few on a cluster)
# Seconds between SIGTERM and SIGKILL when a replica is stopped: the pod template's
# terminationGracePeriodSeconds, or this (shorter than Kubernetes' 30: the trainer needs no more).
GRACE_PERIOD = 10.0
TAIL_LINES = 12       # lines of a failed replica's output shown in the failure report
# The most replicas this runner starts: each is a TensorFlow process on this one machine, and the operator's
# TF_CONFIG lists every replica in every replica's environment. Checked before anything is planned.
MAX_REPLICAS = 16


def operator_tf_config(doc, replica_type, index):
    """TF_CONFIG exactly as training operator v1.9 builds it (genTFConfigJSONStr), or None where it sets none."""
    specs = replica_specs(doc)
    if sum(spec.get("replicas", 1) for spec in specs.values()) == 1:
        return None  # a single replica in total trains alone: no TF_CONFIG
    job, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    cluster = {}
    for rtype, spec in specs.items():  # every replica type, the Evaluator too (genClusterSpec filters none)
        port = next((p["containerPort"] for p in tensorflow_container(spec).get("ports", [])
                     if p.get("name") == PORT_NAME), DEFAULT_PORT)
        rt = rtype.lower()
        cluster[rt] = [f"{job}-{rt}-{i}.{namespace}.svc:{port}" for i in range(spec.get("replicas", 1))]
    rt = replica_type.lower()
    if doc["spec"].get("enableDynamicWorker"):
        # convertClusterSpecToSparseClusterSpec: a PS knows itself, a worker the PS and itself, others nothing.
        sparse = {"worker": {}, "ps": []}
        if rt == "ps":
            sparse["ps"] = [cluster["ps"][index]]
        elif rt == "worker":
            sparse = {"worker": {str(index): cluster["worker"][index]}, "ps": cluster.get("ps") or []}
        return json.dumps({"cluster": sparse, "task": {"type": rt, "index": index}}, separators=(",", ":"))
    config = {"cluster": dict(sorted(cluster.items())),  # Go's json.Marshal sorts map keys
              "task": {"type": rt, "index": index}, "environment": "cloud"}
    return json.dumps(config, separators=(",", ":"))


def replica_specs(doc):
    """tfReplicaSpecs keyed by canonical type ('worker' -> 'Worker'), in the operator's order."""
    specs = {tfjob_check.canonical_type(t): spec for t, spec in doc["spec"]["tfReplicaSpecs"].items()}
    return {t: specs[t] for t in START_ORDER if t in specs}


def tensorflow_container(spec):
    return next(c for c in tfjob_check.containers_of(spec) if c.get("name") == tfjob_check.CONTAINER)


def localize(value, mounts):
    """Rewrite a path (or `--flag=path`) that lies under a mount point to the local directory behind it."""
    flag, eq, path = value.partition("=") if value.startswith("-") else ("", "", value)
    if path.startswith("/"):
        path = posixpath.normpath(path)  # /mnt/nfs/../etc is /etc, in a container as here: under no mount
    for mount_path, local in mounts:
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return flag + eq + str(Path(local) / path[len(mount_path):].lstrip("/"))
    return value


@dataclass
class Replica:
    """One pod of the job: a process, its restarts and the tail of its output."""
    type: str
    index: int
    restart_policy: str
    argv: list
    env: dict
    cwd: str
    log_path: Path
    grace: float = GRACE_PERIOD
    process: subprocess.Popen = None
    reader: threading.Thread = None
    start_error: str = None  # why the last start failed (its command could not be run)
    state: str = "pending"  # pending, running, succeeded, failed
    restart_at: float = None
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    output_error: str = None  # why its output could not be kept (a full --root): the run fails on it
    empty_dirs: list = field(default_factory=list)  # its emptyDir volumes' directories: the pod's own
    restart_count: int = 0  # its container's restarts inside its pod (OnFailure, Always), as the kubelet counts them

    @property
    def name(self):
        return f"{self.type.lower()}-{self.index}"

    def exit_code(self):
        """The code Kubernetes would report once the replica has ended (None while it runs).

        128 + N for a process killed by signal N; 128 for a command that could not start.
        """
        if self.start_error:
            return START_ERROR_EXIT_CODE
        code = self.process.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def ended(self, code):
        """How it ended, for the job's report."""
        if self.start_error:
            return (f"could not start ({self.start_error}: exit code {code}, the kubelet's StartError; "
                    "check the tensorflow container's command)")
        return f"exited with code {code}"


def count_replicas(doc):
    """How many pods the job has; more than MAX_REPLICAS: one line, before any is planned."""
    total = sum(spec.get("replicas", 1) for spec in doc["spec"]["tfReplicaSpecs"].values())
    if total > MAX_REPLICAS:
        raise UserError(f"TFJob {doc['metadata']['name']} has {total} replicas: this runner starts at most "
                        f"{MAX_REPLICAS} on one machine (each is a TensorFlow process); lower the replicas")
    return total


def volume_dir(root, pod, mount, per_pod):
    """The local directory behind a volumeMount, kept inside --root.

    Kubernetes refuses a subPath that is absolute or holds `..` (k8s.io/kubernetes pkg/apis/core/validation,
    validateLocalDescendingPath); so does this runner, and a symbolic link under --root that leads out of it.
    """
    sub = mount.get("subPath", "")
    if posixpath.isabs(sub) or ".." in sub.split("/"):
        raise UserError(f"{pod}: volumeMount {mount['name']} has subPath {sub!r}: it must be a relative path "
                        "without '..', as Kubernetes requires")
    local = root / ("pods/" + pod if per_pod else "") / mount["name"] / sub
    if not local.resolve().is_relative_to(root):
        raise UserError(f"{pod}: volumeMount {mount['name']} (subPath {sub!r}) leads to {local.resolve()}, "
                        f"outside --root {root}")
    return local


def plan_replicas(doc, root, trainer_args):
    """One Replica per pod the operator would create, with its command, environment and directories."""
    specs, job = replica_specs(doc), doc["metadata"]["name"]
    base_env = child_env()
    configs = {(t, i): operator_tf_config(doc, t, i) for t, s in specs.items() for i in range(s.get("replicas", 1))}
    hosts = sorted({h for c in configs.values() if c for hs in json.loads(c)["cluster"].values() for h in hs})
    local_hosts = dict(zip(hosts, (f"127.0.0.1:{p}" for p in free_ports(len(hosts)))))
    for host, local in local_hosts.items():
        say(f"{host} -> {local}")

    replicas = []
    for (rtype, index), config in configs.items():
        spec = specs[rtype]
        pod = f"{job}-{rtype.lower()}-{index}"  # the pod's name on the cluster
        container = tensorflow_container(spec)
        if not container.get("command"):
            raise UserError(f"{rtype}: the tensorflow container has no command: state it "
                            "(this runner cannot read the image's ENTRYPOINT)")
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        mounts, empty_dirs = [], []
        for mount in container.get("volumeMounts", []):
            per_pod = "emptyDir" in volumes.get(mount["name"], {})  # an emptyDir belongs to one pod; claims are shared
            local = volume_dir(root, pod, mount, per_pod)
            try:
                local.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"cannot create {local} for {pod}'s volume {mount['name']}: {err.strerror}") from None
            mounts.append((mount["mountPath"], local))
            if per_pod:
                empty_dirs.append(local)
        mounts.append((IMAGE_WORKDIR, REPO))
        mounts.sort(key=lambda m: -len(m[0]))  # the most specific mount point wins

        argv = [localize(a, mounts) for a in container["command"] + container.get("args", []) + trainer_args]
        if argv[0] in PYTHONS:
            argv[0] = sys.executable
        env = dict(base_env)
        tmp = next((local for path, local in mounts if posixpath.normpath(path) == "/tmp"), None)
        if tmp is not None:  # the pod's /tmp, where TensorFlow and Python put their scratch files
            env["TMPDIR"] = str(tmp)
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = localize(var["value"], mounts)
            else:
                say(f"{pod}: env {var['name']} uses valueFrom, which this runner cannot resolve: left unset")
        if config:
            for host, local in local_hosts.items():
                config = config.replace(f'"{host}"', f'"{local}"')
            env["TF_CONFIG"] = config
        cwd = localize(container.get("workingDir", IMAGE_WORKDIR), mounts)
        grace = spec["template"]["spec"].get("terminationGracePeriodSeconds", GRACE_PERIOD)
        replicas.append(Replica(rtype, index, spec.get("restartPolicy", "Never"), argv, env, cwd,
                                root / "logs" / f"{pod}.log", grace, empty_dirs=empty_dirs))
    return replicas


PRINT_LOCK = threading.Lock()
OUTPUT_CLOSED = threading.Event()  # our stdout's reader went away (`| head -1`): the run ends, replicas stopped
OUTPUT_ERROR = []  # or stdout could not be written (a full disk): the run fails, saying so


def say(message, replica="tfjob"):
    with PRINT_LOCK:
        if OUTPUT_CLOSED.is_set():
            return
        try:
            print(f"[{replica}] {message}", flush=True)
        except (OSError, ValueError) as err:
            # Whatever is still buffered goes nowhere; the main loop sees the event and stops every replica.
            if not isinstance(err, BrokenPipeError):
                OUTPUT_ERROR.append(getattr(err, "strerror", None) or str(err))
            OUTPUT_CLOSED.set()
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class OutputClosedError(Exception):
    """The runner's stdout was closed."""


def reader_gone():
    """Whether our stdout is a pipe whose reader has closed it (`| head -1`), noticed without writing to it:
    Linux's poll() reports POLLERR on a pipe's write end once its read end is closed."""
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
            return False
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------- replicas as process groups

def start(replica, watchdog):
    """Start (or restart) the replica's process as the leader of a new process group (a new session).

    A thread copies its output, prefixed, to ours and to its log. A command
    that cannot be run makes a replica that ended at once (exit code 128).
    """
    replica.state, replica.restart_at, replica.start_error = "running", None, None
    try:
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {replica.log_path.parent} for {replica.name}'s log: {err.strerror}") from None
    try:
        replica.process = subprocess.Popen(
            replica.argv, env=replica.env, cwd=replica.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, errors="replace",
            start_new_session=True,  # its own group: Ctrl-C reaches this runner only, which stops groups in order
            preexec_fn=reaper.die_with_runner())
    except OSError as err:  # no such file, not executable, no such working directory
        replica.process, replica.reader = None, None
        replica.start_error = f"{err.strerror}: {err.filename or replica.argv[0]}"
        say(f"{replica.name} could not start: {replica.start_error}")
        return
    watchdog.watch(replica.process.pid)
    say(f"started {replica.name} (pid {replica.process.pid}): {' '.join(replica.argv[1:])}")

    def copy_output(process=replica.process):
        # It must not die silently: the replica would block on a full pipe and the run hang. A log that cannot be
        # written (a full --root) is recorded, the run fails on it, and the pipe is drained until the replica ends.
        log = None
        try:
            log = open(replica.log_path, "a")
            for line in process.stdout:
                line = line.rstrip("\n")
                replica.tail.append(line)
                if log is not None:
                    try:
                        log.write(line + "\n")
                        log.flush()
                    except OSError as err:
                        replica.output_error = f"cannot write its log {replica.log_path}: {err.strerror}"
                        log = close_quietly(log)
                if not is_no_gpu_notice(line):  # TensorFlow's "no GPU here" notices: in the log only
                    say(line, replica.name)
        except Exception as err:  # noqa: BLE001 (any failure is the run's, reported by the main loop)
            replica.output_error = replica.output_error or f"its output could not be read ({err})"
            for _ in process.stdout:
                pass
        finally:
            close_quietly(log)

    replica.reader = threading.Thread(target=copy_output, daemon=True)
    replica.reader.start()


def close_quietly(f):
    try:
        if f is not None:
            f.close()
    except OSError:
        pass


def finish(replica, watchdog):
    """After the replica's main process ended: kill the rest of its group (as a container's processes end
    with its main process), then read its last lines."""
    if replica.process is None:
        return
    reaper.signal_groups([replica.process.pid], signal.SIGKILL)
    watchdog.forget(replica.process.pid)
    replica.reader.join(timeout=2)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP reached the runner."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt(signum, frame):
    raise Interrupted(signum)


def stop(replicas, why, watchdog):
    """Stop the running replicas as Kubernetes deletes pods: SIGTERM to each group, then SIGKILL to a group
    left after its grace period (terminationGracePeriodSeconds). A second signal meanwhile kills them at once.
    A replica whose main process ended since the job's last look at it (a worker finishing as its chief does)
    is reported as it ended, and not stopped: its pod completed on its own. So is one whose main process ends
    while we look: nothing left alive in its group, its exit not yet collected."""
    running = [r for r in replicas if r.state == "running" and r.process is not None]
    for r in list(running):
        if r.exit_code() is None and reaper.group_members(r.process.pid):
            continue  # still running: stopped below
        r.process.wait()  # it has ended (at most a zombie is left): its exit code, at once
        code = r.exit_code()
        r.state = "succeeded" if code == 0 else "failed"
        say(f"{r.name} {r.state} (exit code {code})")  # as supervise() says it of a replica it saw end
        finish(r, watchdog)
        running.remove(r)
    if running:
        say(f"{why}: stopping {', '.join(r.name for r in running)}")
        began, left = time.monotonic(), list(running)
        try:
            reaper.signal_groups([r.process.pid for r in running], signal.SIGTERM)
            while left:
                time.sleep(0.1)
                left = [r for r in left if reaper.group_members(r.process.pid)]
                late = [r for r in left if time.monotonic() - began >= r.grace]
                reaper.signal_groups([r.process.pid for r in late], signal.SIGKILL)
        except Interrupted as again:
            say(f"{again} again: killing {', '.join(r.name for r in left)} now")
            reaper.signal_groups([r.process.pid for r in left], signal.SIGKILL)
    for r in running:
        r.process.wait()
        finish(r, watchdog)


def new_pod(replica):
    """Empty the replica's emptyDir volumes, as the new pod the operator creates under ExitCode gets new ones."""
    for local in replica.empty_dirs:
        try:
            if local.exists():
                shutil.rmtree(local)
            local.mkdir(parents=True)
        except OSError as err:
            raise UserError(f"cannot empty {local} for {replica.name}'s new pod: {err.strerror}") from None


def retried(policy, code):
    """Whether the operator recreates a replica that ended with `code` under restartPolicy `policy`."""
    return (policy == "Always" or (code != 0 and policy == "OnFailure")
            or (code >= FIRST_RETRYABLE_EXIT_CODE and policy == "ExitCode"))


def supervise(doc, replicas, watchdog, restart_delay=RESTART_DELAY):
    """Run the job to its end by the operator's rules; return (succeeded, reason, failed replica or None)."""
    run_policy = doc["spec"].get("runPolicy", {})
    backoff_limit = run_policy.get("backoffLimit")
    deadline = run_policy.get("activeDeadlineSeconds")
    success_policy = doc["spec"].get("successPolicy", "")
    dynamic = bool(doc["spec"].get("enableDynamicWorker"))  # a failed Worker does not fail the job
    chief = next((r for r in replicas if r.type in ("Chief", "Master")), None)
    workers = [r for r in replicas if r.type == "Worker"]
    started, restarts = time.monotonic(), 0

    for replica in replicas:
        if OUTPUT_CLOSED.is_set():
            raise OutputClosedError()
        start(replica, watchdog)
    while True:
        time.sleep(0.2)
        if OUTPUT_CLOSED.is_set() or reader_gone():
            raise OutputClosedError()
        broken = next((r for r in replicas if r.output_error), None)
        if broken is not None:
            return False, f"{broken.name}: {broken.output_error}", None
        now = time.monotonic()
        for r in replicas:
            if r.state == "pending" and r.restart_at is not None and now >= r.restart_at:
                if r.restart_policy == "ExitCode":
                    new_pod(r)
                start(r, watchdog)
            code = r.exit_code() if r.state == "running" else None
            if code is None:
                continue
            finish(r, watchdog)
            if not retried(r.restart_policy, code):
                r.state = "succeeded" if code == 0 else "failed"
                spared = r.state == "failed" and dynamic and r.type == "Worker"
                say(f"{r.name} {r.state} (exit code {code})" + "; enableDynamicWorker: the job goes on" * spared)
                if r.state == "failed" and not spared:
                    why = ("restartPolicy Never" if r.restart_policy == "Never"
                           else f"restartPolicy {r.restart_policy} does not retry exit code {code}")
                    return False, f"{r.name} {r.ended(code)} ({why})", r
                continue
            # Operator v1.9 (pkg/core/job.go, PastBackoffLimit) sums the restart counts of the containers of its
            # Running pods, the kubelet's restarts in place (OnFailure, Always), and fails the job once the sum
            # reaches backoffLimit (or is above 0, for a backoffLimit of 0): the restart that reaches it is the
            # last, its run cut short. A pod that completed counts no more. Under ExitCode it deletes the pod and
            # creates a new one, whose count starts at 0: only a backoffLimit of 0 stops the job, at the first
            # failure (a newly failed pod, pkg/controller.v1/common/job.go); otherwise activeDeadlineSeconds
            # alone bounds the retries.
            if r.restart_policy == "ExitCode":
                r.restart_count = 0
                counted = backoff_limit == 0
            else:
                r.restart_count += 1
                counted = backoff_limit is not None
            in_running_pods = sum(x.restart_count for x in replicas if x.state in ("running", "pending"))
            if counted and (backoff_limit == 0 or in_running_pods >= backoff_limit):
                return False, f"{r.name} {r.ended(code)} and runPolicy.backoffLimit {backoff_limit} is spent", r
            restarts += 1
            r.state, r.restart_at = "pending", now + restart_delay
            budget = f" ({in_running_pods} of runPolicy.backoffLimit {backoff_limit} in running pods)" * counted
            say(f"{r.name} {r.ended(code)}; restartPolicy {r.restart_policy}: restart {restarts}{budget}")

        if chief:
            done = chief.state == "succeeded"
        elif success_policy == "AllWorkers":  # without a Worker (and a Chief) the operator never sees success
            done = bool(workers) and all(w.state == "succeeded" for w in workers)
        else:
            done = any(w.index == 0 and w.state == "succeeded" for w in workers)
        if done:
            decider = chief.name if chief else "worker-0" if success_policy != "AllWorkers" else "every worker"
            return True, f"{decider} succeeded; {restarts} restart(s)", None
        if deadline is not None and now - started >= deadline:
            return False, f"runPolicy.activeDeadlineSeconds ({deadline}s) passed", None


@entry_point
def main(argv=None):
    own, trainer_args = split_at_dashes(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        description="Run a TFJob manifest locally: one process per replica, with the TF_CONFIG, restarts "
                    "and success rule of the Kubeflow training operator.",
        usage="%(prog)s MANIFEST [--root DIR] [-- TRAINER_ARGS...]")
    parser.add_argument("manifest", help="a YAML file holding one TFJob")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="where volumes and logs go (default: runs/tfjob-local/<job name>)")
    parser.add_argument("--restart_delay", type=duration(zero=True, maximum=3600), default=RESTART_DELAY,
                        metavar="SECONDS",
                        help=f"seconds before a failed replica is started again (default {RESTART_DELAY:g}; "
                             "on a cluster a new pod takes a few)")
    args = parser.parse_args(own)

    doc = load_tfjob(args.manifest)
    name = doc["metadata"]["name"]
    idle = not_run_by_the_operator(doc)
    if idle:
        raise UserError(f"TFJob {name}: {idle}: the operator creates no pods for it, nor does this runner")
    count_replicas(doc)
    root = (args.root or RUNS / "tfjob-local" / name).resolve()
    say(f"TFJob {name}: volumes and logs under {root}")
    run_job(doc, plan_replicas(doc, root, trainer_args), args.restart_delay)


def not_run_by_the_operator(doc):
    """Why the training operator (v1.9.4) creates no pods for this TFJob, or None: another controller manages it
    (tfjob_controller.go Reconcile skips it), or it is suspended (common/job.go ReconcileJobs)."""
    run_policy = doc["spec"].get("runPolicy") or {}
    manager = run_policy.get("managedBy", tfjob_check.OPERATOR)
    if manager != tfjob_check.OPERATOR:
        return f"spec.runPolicy.managedBy is {manager}"
    if run_policy.get("suspend"):
        return "spec.runPolicy.suspend is true"
    return None


def load_tfjob(manifest):
    """The one valid TFJob a manifest holds; UserError otherwise."""
    docs = yamlfile.documents(manifest, must_hold="a TFJob")
    if len(docs) != 1:
        raise UserError(f"{manifest} holds {len(docs)} documents; expected one TFJob")
    found = tfjob_check.problems(docs[0])
    if found:
        raise UserError(f"{manifest} is not a valid TFJob: {'; '.join(found)}")
    return docs[0]


def run_job(doc, replicas, restart_delay=RESTART_DELAY):
    """Run the planned replicas to the job's end by the operator's rules; exit non-zero unless it succeeded."""
    name = doc["metadata"]["name"]
    clean_pod_policy = doc["spec"].get("runPolicy", {}).get("cleanPodPolicy", "None")
    cleanup = (f"cleanPodPolicy {clean_pod_policy}" if clean_pod_policy != "None" else
               "cleanPodPolicy None (on a cluster these pods would keep running)")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # `kill` or a closed terminal: as Ctrl-C
        signal.signal(signum, interrupt)
    started = time.monotonic()
    watchdog = reaper.Watchdog(max(r.grace for r in replicas))
    try:
        try:
            succeeded, reason, culprit = supervise(doc, replicas, watchdog, restart_delay)
        except Interrupted as stopped:
            stop(replicas, "interrupted", watchdog)
            fail(f"job {name} interrupted ({stopped}) after {time.monotonic() - started:.0f}s: stopped every "
                 "replica; run it again to resume from the last checkpoint", 128 + stopped.signum)
        except OutputClosedError:
            stop(replicas, "output closed", watchdog)
            if OUTPUT_ERROR:
                fail(f"job {name} stopped: cannot write its output ({OUTPUT_ERROR[0]}); stopped every replica")
            sys.exit(141)  # as a shell tool whose reader went away (128 + SIGPIPE), every replica stopped
        except UserError:  # the runner cannot go on (a restarted replica's directories): its one line, none left
            stop(replicas, "cannot go on", watchdog)
            raise
        stop(replicas, cleanup if succeeded else f"job failed; {cleanup}", watchdog)
    finally:
        watchdog.close()
    elapsed = time.monotonic() - started
    if succeeded:
        say(f"job {name} succeeded in {elapsed:.0f}s: {reason}")
        return
    if culprit is not None and culprit.tail:
        say(f"last lines of {culprit.name} (all in {culprit.log_path}):")
        for line in culprit.tail:
            say(f"| {line}")
    fail(f"job {name} failed after {elapsed:.0f}s: {reason}")
