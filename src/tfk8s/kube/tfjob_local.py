"""Run a TFJob manifest on this machine, one process per replica, as the training operator runs pods.

    python src/tfjob_local.py kube/tfjob.yaml                                 # the manifest as it is
    python src/tfjob_local.py kube/tfjob.yaml -- --dataset mini --steps 200   # appended to every replica's args

What it does as Kubeflow's training operator (v1.9) does: it refuses an
invalid manifest (tfjob_check), gives the `tensorflow` container of every
replica the TF_CONFIG the operator would give it (with each replica's
`<job>-<type>-<index>.<namespace>.svc:2222` mapped to a free localhost port),
restarts a replica that fails according to its restartPolicy within
runPolicy.backoffLimit, and ends when the Chief (or, without one, worker 0)
succeeds or a replica fails for good, then stops the replicas still running
(as cleanPodPolicy Running does; Ctrl-C stops them all too).

What stands in for the cluster: `python` is this interpreter, /app/ (the
image's WORKDIR) is this repository, and every volume is a directory under
--root, shared by all replicas as the NFS claim is. Each replica's output is
printed with its name (`[worker-1] ...`) and kept in <root>/logs/<pod>.log,
where a pod is named as on the cluster: <job>-<type>-<index>.
"""
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tfk8s.cli import ArgumentParser, UserError, child_env, entry_point, fail
from tfk8s.kube import tfjob_check
from tfk8s.paths import REPO, RUNS

IMAGE_WORKDIR = "/app"  # where the image keeps this repository
PYTHONS = ("python", "python3")
DEFAULT_PORT, PORT_NAME = 2222, "tfjob-port"
# The operator's IsRetryableExitCode: 130 (SIGINT), 137 (SIGKILL), 143 (SIGTERM) and 138, the code a
# program uses to ask for a retry. Every other non-zero code is permanent.
RETRYABLE_EXIT_CODES = (130, 137, 138, 143)
START_ORDER = ("Chief", "Master", "Evaluator", "PS", "Worker")  # the operator's order of replica types
RESTART_DELAY = 1.0   # seconds before a failed replica is started again (a new pod takes a few on a cluster)
GRACE_PERIOD = 10.0   # seconds between SIGTERM and SIGKILL when a replica is stopped (Kubernetes: 30)
TAIL_LINES = 12       # lines of a failed replica's output shown in the failure report


def operator_tf_config(doc, replica_type, index):
    """TF_CONFIG exactly as training operator v1.9 builds it (genTFConfigJSONStr), or None where it sets none."""
    specs = replica_specs(doc)
    if sum(spec.get("replicas", 1) for spec in specs.values()) == 1:
        return None  # a single replica in total trains alone: no TF_CONFIG
    job, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    cluster = {}
    for rtype, spec in specs.items():
        if rtype == "Evaluator":
            continue  # an evaluator is not part of the training cluster
        port = next((p["containerPort"] for p in tensorflow_container(spec).get("ports", [])
                     if p.get("name") == PORT_NAME), DEFAULT_PORT)
        rt = rtype.lower()
        cluster[rt] = [f"{job}-{rt}-{i}.{namespace}.svc:{port}" for i in range(spec.get("replicas", 1))]
    config = {"cluster": dict(sorted(cluster.items())),  # Go's json.Marshal sorts map keys
              "task": {"type": replica_type.lower(), "index": index}, "environment": "cloud"}
    return json.dumps(config, separators=(",", ":"))


def replica_specs(doc):
    """tfReplicaSpecs keyed by canonical type ('worker' -> 'Worker'), in the operator's order."""
    specs = {tfjob_check.canonical_type(t): spec for t, spec in doc["spec"]["tfReplicaSpecs"].items()}
    return {t: specs[t] for t in START_ORDER if t in specs}


def tensorflow_container(spec):
    return next(c for c in tfjob_check.containers_of(spec) if c.get("name") == tfjob_check.CONTAINER)


def free_ports(count):
    """`count` distinct free localhost ports (held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def localize(value, mounts):
    """Rewrite a path (or `--flag=path`) that lies under a mount point to the local directory behind it."""
    flag, eq, path = value.partition("=") if value.startswith("-") else ("", "", value)
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
    process: subprocess.Popen = None
    reader: threading.Thread = None
    state: str = "pending"  # pending, running, succeeded, failed
    restart_at: float = None
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def name(self):
        return f"{self.type.lower()}-{self.index}"


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
        mounts = []
        for mount in container.get("volumeMounts", []):
            per_pod = "emptyDir" in volumes.get(mount["name"], {})  # an emptyDir belongs to one pod; claims are shared
            local = root / ("pods/" + pod if per_pod else "") / mount["name"] / mount.get("subPath", "")
            local.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"], local))
        mounts.append((IMAGE_WORKDIR, REPO))
        mounts.sort(key=lambda m: -len(m[0]))  # the most specific mount point wins

        argv = [localize(a, mounts) for a in container["command"] + container.get("args", []) + trainer_args]
        if argv[0] in PYTHONS:
            argv[0] = sys.executable
        env = dict(base_env)
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
        replicas.append(Replica(rtype, index, spec.get("restartPolicy", "Never"), argv, env, cwd,
                                root / "logs" / f"{pod}.log"))
    return replicas


PRINT_LOCK = threading.Lock()


def say(message, replica="tfjob"):
    with PRINT_LOCK:
        print(f"[{replica}] {message}", flush=True)


def start(replica):
    """Start (or restart) the replica's process; a thread copies its output, prefixed, to ours and its log."""
    replica.log_path.parent.mkdir(parents=True, exist_ok=True)
    replica.process = subprocess.Popen(
        replica.argv, env=replica.env, cwd=replica.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, bufsize=1, errors="replace",
        start_new_session=True)  # Ctrl-C reaches this runner only: it stops the replicas in order
    replica.state, replica.restart_at = "running", None
    say(f"started {replica.name} (pid {replica.process.pid}): {' '.join(replica.argv[1:])}")

    def copy_output(process=replica.process):
        with open(replica.log_path, "a") as log:
            for line in process.stdout:
                line = line.rstrip("\n")
                replica.tail.append(line)
                log.write(line + "\n")
                log.flush()
                say(line, replica.name)

    replica.reader = threading.Thread(target=copy_output, daemon=True)
    replica.reader.start()


def exit_code_of(process):
    """The code Kubernetes reports: 128 + N for a process killed by signal N."""
    code = process.poll()
    return 128 - code if code < 0 else code


def stop(replicas, why):
    """Stop running replicas as Kubernetes deletes pods: SIGTERM, then SIGKILL after the grace period."""
    running = [r for r in replicas if r.process and r.process.poll() is None]
    if not running:
        return
    say(f"{why}: stopping {', '.join(r.name for r in running)}")
    for r in running:
        r.process.terminate()
    deadline = time.monotonic() + GRACE_PERIOD
    for r in running:
        try:
            r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()
    for r in running:
        r.reader.join(timeout=2)


def supervise(doc, replicas):
    """Run the job to its end by the operator's rules; return (succeeded, reason, failed replica or None)."""
    run_policy = doc["spec"].get("runPolicy", {})
    backoff_limit = run_policy.get("backoffLimit")
    deadline = run_policy.get("activeDeadlineSeconds")
    success_policy = doc["spec"].get("successPolicy", "")
    chief = next((r for r in replicas if r.type in ("Chief", "Master")), None)
    workers = [r for r in replicas if r.type == "Worker"]
    started, restarts = time.monotonic(), 0

    for replica in replicas:
        start(replica)
    while True:
        time.sleep(0.2)
        now = time.monotonic()
        for r in replicas:
            if r.state == "pending" and r.restart_at is not None and now >= r.restart_at:
                start(r)
            if r.state != "running" or r.process.poll() is None:
                continue
            r.reader.join(timeout=2)  # its last lines first
            code = exit_code_of(r.process)
            retry = (r.restart_policy == "Always"
                     or (code != 0 and r.restart_policy == "OnFailure")
                     or (code in RETRYABLE_EXIT_CODES and r.restart_policy == "ExitCode"))
            if not retry:
                r.state = "succeeded" if code == 0 else "failed"
                say(f"{r.name} {r.state} (exit code {code})")
                if r.state == "failed":
                    why = ("restartPolicy Never" if r.restart_policy == "Never"
                           else f"restartPolicy {r.restart_policy} does not retry exit code {code}")
                    return False, f"{r.name} exited with code {code} ({why})", r
                continue
            if backoff_limit is not None and restarts >= backoff_limit:
                return False, f"{r.name} exited with code {code} and runPolicy.backoffLimit {backoff_limit} is spent", r
            restarts += 1
            r.state, r.restart_at = "pending", now + RESTART_DELAY
            budget = f" of {backoff_limit}" if backoff_limit is not None else ""
            say(f"{r.name} exited with code {code}; restartPolicy {r.restart_policy}: restart {restarts}{budget}")

        if chief:
            done = chief.state == "succeeded"
        elif success_policy == "AllWorkers":
            done = all(w.state == "succeeded" for w in workers)
        else:
            done = any(w.index == 0 and w.state == "succeeded" for w in workers)
        if done:
            decider = chief.name if chief else "worker-0" if success_policy != "AllWorkers" else "every worker"
            return True, f"{decider} succeeded; {restarts} restart(s)", None
        if deadline is not None and now - started >= deadline:
            return False, f"runPolicy.activeDeadlineSeconds ({deadline}s) passed", None


@entry_point
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, trainer_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = ArgumentParser(
        description="Run a TFJob manifest locally: one process per replica, with the TF_CONFIG, restarts "
                    "and success rule of the Kubeflow training operator.",
        usage="%(prog)s MANIFEST [--root DIR] [-- TRAINER_ARGS...]")
    parser.add_argument("manifest", help="a YAML file holding one TFJob")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="where volumes and logs go (default: runs/tfjob-local/<job name>)")
    args = parser.parse_args(own)

    docs = tfjob_check.load(args.manifest)
    if len(docs) != 1:
        raise UserError(f"{args.manifest} holds {len(docs)} documents; expected one TFJob")
    found = tfjob_check.problems(docs[0])
    if found:
        raise UserError(f"{args.manifest} is not a valid TFJob: {'; '.join(found)}")
    doc = docs[0]
    name = doc["metadata"]["name"]
    root = (args.root or RUNS / "tfjob-local" / name).resolve()
    say(f"TFJob {name}: volumes and logs under {root}")
    replicas = plan_replicas(doc, root, trainer_args)
    clean_pod_policy = doc["spec"].get("runPolicy", {}).get("cleanPodPolicy", "None")
    cleanup = (f"cleanPodPolicy {clean_pod_policy}" if clean_pod_policy != "None" else
               "cleanPodPolicy None (on a cluster these pods would keep running)")

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the replicas too, like Ctrl-C
    started = time.monotonic()
    try:
        succeeded, reason, culprit = supervise(doc, replicas)
    except KeyboardInterrupt:
        stop(replicas, "interrupted")
        fail(f"job {name} interrupted after {time.monotonic() - started:.0f}s: stopped every replica", 130)
    stop(replicas, cleanup if succeeded else f"job failed; {cleanup}")
    elapsed = time.monotonic() - started
    if succeeded:
        say(f"job {name} succeeded in {elapsed:.0f}s: {reason}")
        return
    if culprit is not None:
        say(f"last lines of {culprit.name} (all in {culprit.log_path}):")
        for line in culprit.tail:
            say(f"| {line}")
    fail(f"job {name} failed after {elapsed:.0f}s: {reason}")
