"""tfjob_local: the very TFJob manifests of kube/ run here as real processes, one per replica.

First the runner's rules with replicas that are tiny Python scripts (fast, unmarked):
TF_CONFIG as the operator writes it, restart policies, backoffLimit, the
success rule, clean-up and Ctrl-C. Then (slow) the real manifests train the
real model: MultiWorkerMirroredStrategy on 3 replicas, ParameterServerStrategy,
and a worker killed mid-training that the job survives.

Why one module of some 460 lines: the fast rules and the slow real runs share the manifests and helpers,
and the fast half is what the slow half relies on.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from support import REPO, SRC, Namespace, assert_one_line_error, run_script
from tfk8s import versions, yamlfile
from tfk8s.cli import child_env
from tfk8s.kube import tfjob_check, tfjob_local

IMAGE = "ghcr.io/example/mnist-trainer:0.1.0"
SHORT_TRAINING = ("--dataset", "mini", "--steps", 40, "--eval_every", 20, "--checkpoint_every", 20)

# A stand-in for the trainer: prints its TF_CONFIG, then exits with the code given for this replica and
# this run (`worker-1=138,0`: 138 the first time, 0 after), blocks like a parameter server (`block`),
# blocks after starting a child process that ignores SIGTERM and prints `child PID` (`family`), or
# succeeds once every replica of its cluster has printed (`last`). It counts its runs in the shared
# volume, which the runner maps to a local directory.
FAKE_REPLICA = """
import json, os, subprocess, sys, time
config = os.environ.get("TF_CONFIG")
task = json.loads(config)["task"] if config else {"type": "chief", "index": 0}
name = f"{task['type']}-{task['index']}"
runs = os.path.join(sys.argv[1], name + ".runs")
run = len(open(runs).read()) if os.path.exists(runs) else 0
print(f"{name} run {run}", flush=True)
print(f"TF_CONFIG {config}", flush=True)
open(runs, "a").write("x")
codes = dict(arg.split("=") for arg in sys.argv[2:]).get(name, "0").split(",")
code = codes[min(run, len(codes) - 1)]
if code == "family":
    stubborn = "import signal, time; signal.signal(15, signal.SIG_IGN); print(1, flush=True); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()  # it ignores SIGTERM from now on
    print(f"child {child.pid}", flush=True)
    code = "block"
if code == "block":
    time.sleep(600)
if code == "last":
    everyone = [f"{t}-{i}" for t, hosts in json.loads(config)["cluster"].items() for i in range(len(hosts))]
    while not all(os.path.exists(os.path.join(sys.argv[1], n + ".runs")) for n in everyone):
        time.sleep(0.05)
    code = 0
sys.exit(int(code))
"""


FAKE_DEADLINE = 60  # seconds; a fake job's replicas end in about 1 s, 5 s with the machine loaded


def fake_tfjob(tmp_path, replicas, run_policy=None, name="fake", commands=None, grace=None, tmp=False):
    """Write a valid TFJob whose replicas run FAKE_REPLICA; replicas: {type: (count, restartPolicy)}.

    commands: {type: command} replaces a replica type's command; grace: its pods' terminationGracePeriodSeconds;
    tmp: an emptyDir mounted at /tmp, as in kube/tfjob.yaml.
    The job has an activeDeadlineSeconds of FAKE_DEADLINE unless run_policy sets one: where a rule is broken so
    that the job would never end (restarts without end, a success nobody sees), the runner ends it itself and
    the test fails on its lines, which show what ran and how often, not on a subprocess timeout.
    """
    specs = {rtype: {"replicas": count, "restartPolicy": policy, "template": {"spec": {
        "containers": [{"name": "tensorflow", "image": IMAGE,
                        "command": (commands or {}).get(rtype, ["python", "-c", FAKE_REPLICA]),
                        "args": ["/mnt/nfs"], "volumeMounts": [{"name": "nfs", "mountPath": "/mnt/nfs"},
                                                               *[{"name": "tmp", "mountPath": "/tmp"}] * tmp]}],
        "volumes": [{"name": "nfs", "persistentVolumeClaim": {"claimName": "mnist-nfs"}},
                    *[{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}] * tmp],
        **({"terminationGracePeriodSeconds": grace} if grace is not None else {})}}}
        for rtype, (count, policy) in replicas.items()}
    doc = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
           "spec": {"runPolicy": {"cleanPodPolicy": "Running", "activeDeadlineSeconds": FAKE_DEADLINE,
                                  **(run_policy or {})},
                    "tfReplicaSpecs": specs}}
    assert tfjob_check.problems(doc) == []
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_local(manifest, root, *trainer_args, timeout=120, env=None, restart_delay=0.1):
    """The runner on `manifest`; a failed replica starts again after 0.1 s (1 s by default: the rules are the same)."""
    return run_script("tfjob_local.py", manifest, "--root", root, "--restart_delay", restart_delay, "--",
                      *trainer_args, timeout=timeout, env=env)


MARK = "TFJOB_LOCAL_TEST"  # set in a runner's environment: every process it starts inherits it


def marked_processes(mark):
    """Live processes (zombies count as ended) whose environment holds MARK=mark: what a runner started.

    Read from /proc: the replicas, the children they started, the runner's watchdog.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # ended while we looked
        if f"{MARK}={mark}".encode() in environ and state != "Z":
            found.append(int(entry))
    return found


def assert_nothing_left(mark, timeout=20):
    """Every process of the run ends within `timeout` seconds (the watchdog may still be at work)."""
    deadline = time.monotonic() + timeout
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = marked_processes(mark)
    assert not left, [open(f"/proc/{pid}/cmdline").read().replace("\0", " ") for pid in left]


def replica_lines(stdout, replica):
    """What one replica printed, without the runner's prefix."""
    prefix = f"[{replica}] "
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


class Runner:
    """tfjob_local.py in the background, its output collected line by line (for tests that act mid-run)."""

    def __init__(self, manifest, root, *trainer_args, mark=""):
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, str(SRC / "tfjob_local.py"), str(manifest), "--root", str(root), "--",
             *map(str, trainer_args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**child_env(), MARK: mark})
        self.reader = threading.Thread(target=self.collect, daemon=True)
        self.reader.start()

    def collect(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def pids(self):
        """{replica: pid} of the latest start of each replica."""
        started = (re.search(r"started (\S+) \(pid (\d+)\)", line) for line in self.lines)
        return {m[1]: int(m[2]) for m in started if m}

    def wait_until(self, condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.2)

    def finish(self, timeout):
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.terminate()  # the runner stops its replicas on SIGTERM
                self.process.wait(timeout=30)
        self.reader.join(timeout=5)
        return "".join(self.lines)


def test_tf_config_is_exactly_the_operators():
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob-ps.yaml")
    assert tfjob_local.operator_tf_config(doc, "Worker", 1) == (
        '{"cluster":{"chief":["mnist-tfjob-ps-chief-0.default.svc:2222"],'
        '"ps":["mnist-tfjob-ps-ps-0.default.svc:2222"],'
        '"worker":["mnist-tfjob-ps-worker-0.default.svc:2222","mnist-tfjob-ps-worker-1.default.svc:2222"]},'
        '"task":{"type":"worker","index":1},"environment":"cloud"}')


def test_tf_config_uses_the_namespace_and_the_tfjob_port_and_lists_the_evaluator_too():
    # genClusterSpec (pkg/controller.v1/tensorflow/tensorflow.go, v1.9.4) puts every replica type in the cluster.
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob.yaml")
    doc = json.loads(json.dumps(doc))  # independent replicas (the manifest shares one template)
    doc["metadata"]["namespace"] = "alice"
    doc["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 3333
    doc["spec"]["tfReplicaSpecs"]["Evaluator"] = doc["spec"]["tfReplicaSpecs"]["Chief"]
    config = json.loads(tfjob_local.operator_tf_config(doc, "Evaluator", 0))
    assert config == {"cluster": {"chief": ["mnist-tfjob-chief-0.alice.svc:2222"],
                                  "evaluator": ["mnist-tfjob-evaluator-0.alice.svc:2222"],
                                  "worker": ["mnist-tfjob-worker-0.alice.svc:3333",
                                             "mnist-tfjob-worker-1.alice.svc:3333"]},
                      "task": {"type": "evaluator", "index": 0}, "environment": "cloud"}


def test_with_dynamic_workers_tf_config_is_the_operators_sparse_form():
    # tensorflow.go convertClusterSpecToSparseClusterSpec (v1.9.4): no environment, only the hosts a task needs.
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob-ps.yaml")
    doc["spec"]["enableDynamicWorker"] = True
    ps, host = '["mnist-tfjob-ps-ps-0.default.svc:2222"]', "mnist-tfjob-ps-worker-1.default.svc:2222"
    assert tfjob_local.operator_tf_config(doc, "Worker", 1) == (
        f'{{"cluster":{{"worker":{{"1":"{host}"}},"ps":{ps}}},"task":{{"type":"worker","index":1}}}}')
    assert tfjob_local.operator_tf_config(doc, "PS", 0) == (
        f'{{"cluster":{{"worker":{{}},"ps":{ps}}},"task":{{"type":"ps","index":0}}}}')
    assert tfjob_local.operator_tf_config(doc, "Chief", 0) == (
        '{"cluster":{"worker":{},"ps":[]},"task":{"type":"chief","index":0}}')


def test_the_real_manifest_becomes_local_commands(tmp_path):
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob.yaml")
    replicas = tfjob_local.plan_replicas(doc, tmp_path, ["--steps", "5", "--model_dir=/mnt/nfs/runs/other"])
    assert [r.name for r in replicas] == ["chief-0", "worker-0", "worker-1"]
    chief = replicas[0]
    assert chief.argv == [sys.executable, str(REPO / "src" / "main.py"), "--dataset", "full",
                          "--model_dir", str(tmp_path / "nfs" / "runs" / "tfjob"),
                          "--export_dir", str(tmp_path / "nfs" / "exports" / "mnist"),
                          "--steps", "5", f"--model_dir={tmp_path / 'nfs' / 'runs' / 'other'}"]
    assert chief.cwd == str(REPO) and chief.env["PYTHONUNBUFFERED"] == "1"
    assert (tmp_path / "nfs").is_dir() and (tmp_path / "pods" / "mnist-tfjob-worker-1" / "tmp").is_dir()
    clusters = {json.dumps(json.loads(r.env["TF_CONFIG"])["cluster"]) for r in replicas}
    assert len(clusters) == 1  # every replica sees the same cluster...
    hosts = [h for hs in json.loads(clusters.pop()).values() for h in hs]
    assert len(set(hosts)) == 3 and all(re.fullmatch(r"127\.0\.0\.1:\d+", h) for h in hosts)  # ...on localhost
    assert [json.loads(r.env["TF_CONFIG"])["task"] for r in replicas] == [
        {"type": "chief", "index": 0}, {"type": "worker", "index": 0}, {"type": "worker", "index": 1}]


def test_only_paths_under_a_mount_point_are_rewritten():
    mounts = [("/mnt/nfs", "/local/nfs")]
    assert tfjob_local.localize("/mnt/nfs/runs/a", mounts) == "/local/nfs/runs/a"
    assert tfjob_local.localize("/mnt/nfs", mounts) == "/local/nfs"
    assert tfjob_local.localize("--export_dir=/mnt/nfs/x", mounts) == "--export_dir=/local/nfs/x"
    assert tfjob_local.localize("/mnt/nfsx/a", mounts) == "/mnt/nfsx/a"
    assert tfjob_local.localize("--steps", mounts) == "--steps"


def test_every_replica_gets_its_tf_config_and_the_chief_decides_success(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode"), "Worker": (2, "ExitCode"), "PS": (1, "ExitCode")})
    result = run_local(manifest, tmp_path / "run", "chief-0=last", "worker-0=block", "worker-1=block", "ps-0=block")
    assert result.returncode == 0, result.stdout + result.stderr
    configs = {r: json.loads(replica_lines(result.stdout, r)[1].split(" ", 1)[1])
               for r in ("chief-0", "ps-0", "worker-0", "worker-1")}
    assert {r: c["task"] for r, c in configs.items()} == {
        "chief-0": {"type": "chief", "index": 0}, "ps-0": {"type": "ps", "index": 0},
        "worker-0": {"type": "worker", "index": 0}, "worker-1": {"type": "worker", "index": 1}}
    assert len({json.dumps(c["cluster"]) for c in configs.values()}) == 1
    assert "[tfjob] cleanPodPolicy Running: stopping ps-0, worker-0, worker-1" in result.stdout
    assert re.search(r"\[tfjob\] job fake succeeded in \d+s: chief-0 succeeded; 0 restart\(s\)", result.stdout)
    assert (tmp_path / "run" / "logs" / "fake-ps-0.log").read_text().startswith("ps-0 run 0\n")


@pytest.mark.parametrize("between_looks", [False, True], ids=["before-the-last-look", "between-the-two-looks"])
def test_a_replica_that_ended_as_the_job_did_is_reported_as_it_ended_and_not_stopped(tmp_path, capsys,
                                                                                     between_looks):
    """The chief succeeds; a worker finishing at the same moment ends after the job's last look at it. The job's
    end reports it as it ended (its pod completed), and stops only what still runs (cleanPodPolicy Running).
    between_looks: each worker ends between the end's own two looks at it, running when its exit code is asked,
    nothing of it alive when its process group is (seen once under load: a worker neither reported nor stopped);
    the first look is made to answer "running", the workers having exited, not yet collected."""
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")},
                          commands={"Chief": ["python", "-c", "import time; time.sleep(60)"],
                                    "Worker": ["python", "-c", "import json, os, sys; "
                                               "sys.exit(3 * json.loads(os.environ['TF_CONFIG'])['task']['index'])"]})
    replicas = tfjob_local.plan_replicas(yaml.safe_load(manifest.read_text()), tmp_path / "run", [])
    watchdog = tfjob_local.reaper.Watchdog(5)
    try:
        for replica in replicas:
            tfjob_local.start(replica, watchdog)
        for replica in replicas:
            if replica.type == "Worker" and not between_looks:
                replica.process.wait(timeout=60)
            elif replica.type == "Worker":
                os.waitid(os.P_PID, replica.process.pid, os.WEXITED | os.WNOWAIT)  # ended; a zombie is left
                answers, real = [None], replica.exit_code
                replica.exit_code = lambda answers=answers, real=real: answers.pop() if answers else real()
        tfjob_local.stop(replicas, "cleanPodPolicy Running", watchdog)
    finally:
        watchdog.close()
    said = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("[tfjob]") and not line.startswith("[tfjob] started") and " -> " not in line]
    assert said == ["[tfjob] worker-0 succeeded (exit code 0)", "[tfjob] worker-1 failed (exit code 3)",
                    "[tfjob] cleanPodPolicy Running: stopping chief-0"], said
    assert {r.name: r.state for r in replicas} == {"chief-0": "running", "worker-0": "succeeded",
                                                   "worker-1": "failed"}


# A worker that starts a child (which ignores SIGTERM), writes its pid to the shared volume and exits 0.
WORKER_LEAVING_A_CHILD = """
import os, subprocess, sys
stubborn = "import signal, time; signal.signal(15, signal.SIG_IGN); print(1, flush=True); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
path = os.path.join(sys.argv[1], "child.pid")
open(path + ".tmp", "w").write(str(child.pid))
os.rename(path + ".tmp", path)
print(f"child {child.pid}", flush=True)
"""
# A chief that succeeds once that child is gone, and fails naming it if it still runs 40 s on.
CHIEF_WATCHING_THE_CHILD = """
import os, sys, time
path, deadline = os.path.join(sys.argv[1], "child.pid"), time.monotonic() + 40
while not os.path.exists(path):
    if time.monotonic() > deadline:
        sys.exit("worker-0 never wrote its child's pid")
    time.sleep(0.05)
pid = int(open(path).read())
while time.monotonic() < deadline:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    if state in ("gone", "Z"):
        print(f"worker-0's child {pid} is gone", flush=True)
        sys.exit(0)
    time.sleep(0.05)
print(f"worker-0 has ended and its child {pid} still runs", flush=True)
sys.exit(1)
"""


def test_a_replica_whose_main_process_ends_takes_its_other_processes_with_it(tmp_path):
    """As a container's processes end with its main process: worker-0 exits 0 leaving a child that ignores
    SIGTERM, and the child is killed while the job still runs (the chief waits to see it gone)."""
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (1, "Never")},
                          commands={"Chief": ["python", "-c", CHIEF_WATCHING_THE_CHILD],
                                    "Worker": ["python", "-c", WORKER_LEAVING_A_CHILD]})
    result = run_local(manifest, tmp_path / "run")
    child = re.search(r"\[worker-0\] child (\d+)", result.stdout)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "[tfjob] worker-0 succeeded (exit code 0)" in result.stdout
        assert f"[chief-0] worker-0's child {child[1]} is gone" in result.stdout, result.stdout
    finally:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child[1]), signal.SIGKILL)


def test_a_single_replica_job_gets_no_tf_config(tmp_path):
    result = run_local(fake_tfjob(tmp_path, {"Chief": (1, "Never")}), tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert replica_lines(result.stdout, "chief-0") == ["chief-0 run 0", "TF_CONFIG None"]


def test_without_a_chief_worker_0_decides_and_a_retryable_exit_is_retried(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Worker": (2, "ExitCode")})
    result = run_local(manifest, tmp_path / "run", "worker-0=138,0", "worker-1=block")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[tfjob] worker-0 exited with code 138; restartPolicy ExitCode: restart 1" in result.stdout
    assert replica_lines(result.stdout, "worker-0")[::2] == ["worker-0 run 0", "worker-0 run 1"]
    assert "worker-0 succeeded; 1 restart(s)" in result.stdout


def test_without_a_chief_another_worker_succeeding_first_does_not_end_the_job(tmp_path):
    # training-operator v1.9.x, pkg/controller.v1/tensorflow/tfjob_controller.go (UpdateJobStatus): with no Chief,
    # the job succeeds when worker 0 has completed; worker 1 finishing first leaves it running.
    manifest = fake_tfjob(tmp_path, {"Worker": (2, "ExitCode")})
    # Worker 1 succeeds at once; worker 0 fails with a retryable code and succeeds after a 2 s restart delay.
    result = run_local(manifest, tmp_path / "run", "worker-1=0", "worker-0=138,0", restart_delay=2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker-1 succeeded" not in result.stdout.split("[tfjob] job fake succeeded")[-1]
    assert replica_lines(result.stdout, "worker-0")[::2] == ["worker-0 run 0", "worker-0 run 1"], \
        "the job ended before worker 0 ran again: " + result.stdout
    assert re.search(r"\[tfjob\] job fake succeeded in \d+s: worker-0 succeeded; 1 restart", result.stdout), \
        result.stdout
    failed = run_local(manifest, tmp_path / "run2", "worker-1=0", "worker-0=1")
    assert_one_line_error(failed, "job fake failed after", "worker-0 exited with code 1")


@pytest.mark.parametrize("policy, codes, restarted", [
    ("ExitCode", "137,0", True), ("ExitCode", "143,0", True), ("ExitCode", "130,0", True),
    ("ExitCode", "139,0", True), ("ExitCode", "128,0", True),  # v1.9: every code from 128 up is retryable
    ("ExitCode", "1", False), ("ExitCode", "2", False), ("ExitCode", "127", False), ("ExitCode", "3", False),
    ("OnFailure", "1,0", True), ("Never", "138", False),
])
def test_restart_policy_decides_which_exit_codes_are_retried(tmp_path, policy, codes, restarted):
    result = run_local(fake_tfjob(tmp_path, {"Chief": (1, policy), "Worker": (1, "Never")}), tmp_path / "run",
                       f"chief-0={codes}", "worker-0=block")
    assert (result.returncode == 0) == restarted, result.stdout + result.stderr
    assert ("chief-0 run 1" in result.stdout) == restarted


def test_with_dynamic_workers_a_failed_worker_does_not_fail_the_job(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")})
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["enableDynamicWorker"] = True
    manifest.write_text(yaml.safe_dump(doc))
    result = run_local(manifest, tmp_path / "run", "worker-1=1", "chief-0=last")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[tfjob] worker-1 failed (exit code 1); enableDynamicWorker: the job goes on" in result.stdout
    assert "[tfjob] job fake succeeded" in result.stdout


def test_all_workers_without_a_worker_never_succeeds_as_in_the_operator(tmp_path):
    # tfjob_controller.go UpdateJobStatus: without a Chief, only the Worker replicas' count can make it succeed.
    manifest = fake_tfjob(tmp_path, {"PS": (2, "Never")}, run_policy={"activeDeadlineSeconds": 2})
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["successPolicy"] = "AllWorkers"
    manifest.write_text(yaml.safe_dump(doc))
    result = run_local(manifest, tmp_path / "run", timeout=60)
    assert_one_line_error(result, "runPolicy.activeDeadlineSeconds (2s) passed")
    assert "[tfjob] ps-0 succeeded (exit code 0)" in result.stdout


@pytest.mark.parametrize("run_policy, why", [({"suspend": True}, "spec.runPolicy.suspend is true"),
                                             ({"managedBy": "kueue.x-k8s.io/multikueue"},
                                              "spec.runPolicy.managedBy is kueue.x-k8s.io/multikueue")])
def test_a_suspended_tfjob_or_one_another_controller_manages_is_not_run(tmp_path, run_policy, why):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")}, run_policy=run_policy)
    result = run_local(manifest, tmp_path / "run")
    assert_one_line_error(result, f"TFJob fake: {why}: the operator creates no pods for it, nor does this runner")
    assert not (tmp_path / "run").exists()


def test_a_permanent_failure_fails_the_job_naming_the_replica_and_its_last_lines(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode"), "Worker": (1, "ExitCode")})
    result = run_local(manifest, tmp_path / "run", "worker-0=2", "chief-0=block")
    last = assert_one_line_error(result, "job fake failed after",
                                 "worker-0 exited with code 2 (restartPolicy ExitCode does not retry exit code 2)")
    assert result.returncode == 1, last
    report = result.stdout[result.stdout.index("[tfjob] last lines of worker-0"):]
    assert "[tfjob] | worker-0 run 0" in report
    assert "[tfjob] job failed; cleanPodPolicy Running: stopping chief-0" in result.stdout


def test_backoff_limit_caps_the_restarts_in_place_of_on_failure(tmp_path):
    # Operator v1.9 fails the job once the restart counts of its running pods reach backoffLimit: the second
    # restart in place is the last, cut short, so two runs end.
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "OnFailure")}, run_policy={"backoffLimit": 2})
    result = run_local(manifest, tmp_path / "run", "chief-0=138")
    assert_one_line_error(result, "chief-0 exited with code 138 and runPolicy.backoffLimit 2 is spent")
    assert "[tfjob] chief-0 exited with code 138; restartPolicy OnFailure: restart 1 (1 of runPolicy.backoffLimit " \
           "2 in running pods)" in result.stdout
    assert [line for line in replica_lines(result.stdout, "chief-0") if " run " in line] == [
        "chief-0 run 0", "chief-0 run 1"]


def test_a_backoff_limit_of_one_fails_the_job_at_the_first_restart_in_place_even_if_the_rerun_would_succeed(
        tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "OnFailure")}, run_policy={"backoffLimit": 1})
    result = run_local(manifest, tmp_path / "run", "chief-0=1,0")
    assert_one_line_error(result, "chief-0 exited with code 1 and runPolicy.backoffLimit 1 is spent")
    assert "chief-0 run 1" not in result.stdout


def counting_runs(name, body):
    """A replica's script: `run` is how many times it ran before (counted in the shared volume), then `body`."""
    return (f"import os, sys, time\nruns = os.path.join(sys.argv[1], {name + '.runs'!r})\n"
            "run = len(open(runs).read()) if os.path.exists(runs) else 0\n"
            f"open(runs, 'a').write('x')\nprint(f'{name} run {{run}}', flush=True)\n{body}")


# A worker that fails once, then writes its pid and succeeds; a chief that fails once, after that worker has
# ended and the runner has reaped it (its pid is gone), then succeeds.
WORKER_FAILS_ONCE = counting_runs("worker", """
if run == 0:
    sys.exit(138)
open(os.path.join(sys.argv[1], "worker.pid.tmp"), "w").write(str(os.getpid()))
os.rename(os.path.join(sys.argv[1], "worker.pid.tmp"), os.path.join(sys.argv[1], "worker.pid"))
""")
CHIEF_FAILS_ONCE_AFTER_THE_WORKER = counting_runs("chief", """
if run == 0:
    pid_file = os.path.join(sys.argv[1], "worker.pid")
    while not os.path.exists(pid_file):
        time.sleep(0.05)
    while os.path.exists(f"/proc/{open(pid_file).read()}"):
        time.sleep(0.05)
    sys.exit(138)
""")


def test_the_restarts_of_a_replica_that_completed_no_longer_count_against_the_backoff_limit(tmp_path):
    # PastBackoffLimit sums the restart counts of Running pods only: the worker's restart stops counting once
    # its pod has succeeded, so the chief's own first restart (1 of 2) is allowed.
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "OnFailure"), "Worker": (1, "OnFailure")},
                          run_policy={"backoffLimit": 2},
                          commands={"Chief": ["python", "-c", CHIEF_FAILS_ONCE_AFTER_THE_WORKER],
                                    "Worker": ["python", "-c", WORKER_FAILS_ONCE]})
    result = run_local(manifest, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[tfjob] worker-0 succeeded (exit code 0)" in result.stdout
    assert "[tfjob] chief-0 exited with code 138; restartPolicy OnFailure: restart 2 (1 of runPolicy.backoffLimit " \
           "2 in running pods)" in result.stdout, result.stdout
    assert replica_lines(result.stdout, "chief-0") == ["chief run 0", "chief run 1"]


def test_under_exit_code_only_the_deadline_bounds_retries_as_in_operator_v1_9(tmp_path):
    """ExitCode recreates the pod (its restart count starts again at 0): backoffLimit 2 never stops it."""
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode")},
                          run_policy={"backoffLimit": 2, "activeDeadlineSeconds": 2})
    result = run_local(manifest, tmp_path / "run", "chief-0=138", timeout=60)
    assert_one_line_error(result, "runPolicy.activeDeadlineSeconds (2s) passed")
    assert len([line for line in replica_lines(result.stdout, "chief-0") if " run " in line]) > 3


def test_under_exit_code_a_backoff_limit_of_zero_fails_the_job_at_the_first_failure(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode")}, run_policy={"backoffLimit": 0})
    result = run_local(manifest, tmp_path / "run", "chief-0=138")
    assert_one_line_error(result, "chief-0 exited with code 138 and runPolicy.backoffLimit 0 is spent")
    assert [line for line in replica_lines(result.stdout, "chief-0") if " run " in line] == ["chief-0 run 0"]


def test_always_restarts_even_a_chief_that_succeeded(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Always")}, run_policy={"backoffLimit": 1})
    result = run_local(manifest, tmp_path / "run", "chief-0=0")
    assert_one_line_error(result, "chief-0 exited with code 0 and runPolicy.backoffLimit 1 is spent")


def test_active_deadline_stops_the_job(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")}, run_policy={"activeDeadlineSeconds": 2})
    result = run_local(manifest, tmp_path / "run", "chief-0=block", timeout=60)
    assert_one_line_error(result, "runPolicy.activeDeadlineSeconds (2s) passed")


def test_an_invalid_manifest_is_refused_before_anything_runs(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")})
    manifest.write_text(manifest.read_text().replace("restartPolicy: Never", "restartPolicy: Sometimes"))
    result = run_local(manifest, tmp_path / "run")
    assert_one_line_error(result, "is not a valid TFJob: spec.tfReplicaSpecs.Chief.restartPolicy: 'Sometimes'")
    assert not (tmp_path / "run").exists()


def child_pids(lines):
    """The children that `family` replicas started."""
    return [int(m[1]) for m in (re.search(r"\] child (\d+)$", line.rstrip()) for line in lines) if m]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_every_replica_and_what_it_started(tmp_path, signum):
    mark = f"stop-{signum}-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")}, grace=1)
    runner = Runner(manifest, tmp_path / "run", "chief-0=family", "worker-0=family", "worker-1=block", mark=mark)
    runner.wait_until(lambda: len(child_pids(runner.lines)) == 2
                      and any(line.startswith("[worker-1] TF_CONFIG") for line in runner.lines), timeout=60)
    # the runner, its watchdog, three replicas and two children that ignore SIGTERM
    assert len(marked_processes(mark)) == 7, runner.lines
    runner.process.send_signal(signum)
    output = runner.finish(timeout=60)
    assert runner.process.returncode == 128 + signum, output
    assert "[tfjob] interrupted: stopping chief-0, worker-0, worker-1" in output
    assert "Traceback" not in output
    assert f"error: job fake interrupted ({signal.Signals(signum).name}) after" in output.splitlines()[-1]
    assert_nothing_left(mark, timeout=2)  # gone when the runner returns (the children by SIGKILL after 1 s)


def test_a_runner_killed_outright_leaves_no_replica_behind(tmp_path):
    mark = f"sigkill-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")}, grace=1)
    runner = Runner(manifest, tmp_path / "run", "chief-0=family", "worker-0=family", "worker-1=family", mark=mark)
    runner.wait_until(lambda: len(child_pids(runner.lines)) == 3, timeout=60)
    assert len(marked_processes(mark)) == 8, runner.lines  # runner, watchdog, three replicas, three children
    runner.process.kill()
    runner.finish(timeout=30)
    # The replicas die with the runner (PR_SET_PDEATHSIG); the watchdog then SIGTERMs their groups and,
    # a grace period of 1 s later, SIGKILLs the children that ignore SIGTERM, and exits.
    assert_nothing_left(mark, timeout=15)


@pytest.mark.parametrize("command, reason", [
    (["no-such-trainer"], "No such file or directory: no-such-trainer"),
    (["{tmp}/not-executable.py"], "Permission denied: {tmp}/not-executable.py"),
])
def test_a_replica_that_cannot_start_fails_the_job_and_the_others_are_stopped(tmp_path, command, reason):
    (tmp_path / "not-executable.py").write_text("print('never runs')\n")
    command = [c.format(tmp=tmp_path) for c in command]
    mark = f"start-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")}, commands={"Chief": command},
                          grace=1)
    result = run_local(manifest, tmp_path / "run", "worker-0=family", "worker-1=block", env={MARK: mark})
    assert_one_line_error(result, "job fake failed after", f"chief-0 could not start ({reason.format(tmp=tmp_path)}: "
                          "exit code 128, the kubelet's StartError; check the tensorflow container's command) "
                          "(restartPolicy Never)")
    assert result.returncode == 1
    assert "[tfjob] job failed; cleanPodPolicy Running: stopping worker-0, worker-1" in result.stdout
    assert_nothing_left(mark, timeout=2)


def test_a_command_that_cannot_start_is_retried_under_exit_code_as_every_code_from_128(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode")}, run_policy={"activeDeadlineSeconds": 2},
                          commands={"Chief": ["no-such-trainer"]})
    result = run_local(manifest, tmp_path / "run", timeout=60)
    assert_one_line_error(result, "runPolicy.activeDeadlineSeconds (2s) passed")
    assert result.stdout.count("[tfjob] chief-0 could not start: No such file or directory") >= 2


@pytest.mark.parametrize("count", [-1, 0])
def test_a_replica_count_below_one_is_refused_before_anything_runs(tmp_path, count):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (1, "Never")})
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = count
    manifest.write_text(yaml.safe_dump(doc))
    result = run_local(manifest, tmp_path / "run")
    assert_one_line_error(result, f"spec.tfReplicaSpecs.Worker.replicas: must be at least 1, not {count}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("delay", [-1, "nan", 3601])
def test_a_restart_delay_out_of_range_is_one_line(tmp_path, delay):
    result = run_local(fake_tfjob(tmp_path, {"Chief": (1, "Never")}), tmp_path / "run", restart_delay=delay)
    assert_one_line_error(result, "argument --restart_delay: must be a finite number of seconds from 0 up to 3600")
    assert result.returncode == 2 and not (tmp_path / "run").exists()


def test_a_failed_replica_starts_again_after_the_restart_delay(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "OnFailure")}, run_policy={"backoffLimit": 2})
    started = time.monotonic()
    result = run_local(manifest, tmp_path / "run", "chief-0=138", restart_delay=5)
    assert_one_line_error(result, "runPolicy.backoffLimit 2 is spent")
    # The runner waited 5 s before the second run; with its default of 1 s the whole test took 3.0 s here.
    assert time.monotonic() - started >= 5


# A replica that lists its temporary directory, leaves a file there, and fails (137, retryable) on its first run.
TMP_LISTER = counting_runs("chief", """
import tempfile
tmp = tempfile.gettempdir()
print(f"run {run} in {tmp}: {sorted(os.listdir(tmp))}", flush=True)
open(os.path.join(tmp, f"left-by-run-{run}"), "w").close()
sys.exit(137 if run == 0 else 0)
""")


@pytest.mark.parametrize("policy, second_run_finds", [("ExitCode", []), ("OnFailure", ["left-by-run-0"])])
def test_a_volume_at_tmp_is_the_replicas_own_and_a_new_pod_under_exit_code_finds_it_empty(tmp_path, policy,
                                                                                          second_run_finds):
    # Under ExitCode the operator deletes the failed pod and creates another, with a new emptyDir; under
    # OnFailure the kubelet restarts the container in its pod, whose emptyDir keeps what the first run left.
    manifest = fake_tfjob(tmp_path, {"Chief": (1, policy)}, commands={"Chief": ["python", "-c", TMP_LISTER]},
                          tmp=True)
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    result = run_local(manifest, tmp_path / "run", env={"TMPDIR": str(host_tmp)})
    assert result.returncode == 0, result.stdout + result.stderr
    pod_tmp = tmp_path / "run" / "pods" / "fake-chief-0" / "tmp"
    assert replica_lines(result.stdout, "chief-0") == ["chief run 0", f"run 0 in {pod_tmp}: []",
                                                       "chief run 1", f"run 1 in {pod_tmp}: {second_run_finds}"], \
        result.stdout
    assert not any(host_tmp.iterdir())  # this machine's TMPDIR is not the pod's


def test_a_new_pod_whose_volume_cannot_be_emptied_stops_the_job_in_one_line_and_leaves_no_replica(tmp_path):
    # The replica puts a file where its emptyDir's directory was: the new pod's volume cannot be made.
    breaker = ("import os, sys, tempfile; tmp = tempfile.gettempdir(); os.rmdir(tmp); open(tmp, 'w').close(); "
               "sys.exit(137)")
    mark = f"new-pod-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode"), "Worker": (1, "Never")},
                          commands={"Chief": ["python", "-c", breaker]}, grace=1, tmp=True)
    result = run_local(manifest, tmp_path / "run", "worker-0=family", env={MARK: mark})
    pod_tmp = tmp_path / "run" / "pods" / "fake-chief-0" / "tmp"
    assert_one_line_error(result, f"cannot empty {pod_tmp} for chief-0's new pod: Not a directory")
    assert "[tfjob] cannot go on: stopping worker-0" in result.stdout, result.stdout
    assert_nothing_left(mark, timeout=2)


# ---------------------------------------------------------------- what the runner is given: its output, disk, sizes

@pytest.mark.parametrize("reader, first", [
    ("head -1", "[tfjob] TFJob fake: volumes and logs under"),  # before any replica started
    ("grep -m1 '^.worker-1. TF_CONFIG'", "[worker-1] TF_CONFIG"),  # once they all run, and print no more
], ids=["head", "grep"])
def test_a_closed_stdout_ends_the_run_and_leaves_no_replica(tmp_path, reader, first):
    mark = f"head-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")}, grace=1)
    runner = f"{sys.executable} {SRC / 'tfjob_local.py'} {manifest} --root {tmp_path / 'run'} --"
    script = f"{runner} chief-0=family worker-0=block worker-1=block | {reader}; echo \"exit ${{PIPESTATUS[0]}}\""
    try:
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                                env={**child_env(), MARK: mark})
    finally:
        for pid in marked_processes(mark):  # a runner that kept going would be left to the next tests
            os.kill(pid, signal.SIGKILL)
    line, code = result.stdout.splitlines()
    assert line.startswith(first)
    assert code == "exit 141", result.stderr  # 128 + SIGPIPE, as a shell tool whose reader went away
    assert "Traceback" not in result.stderr, result.stderr
    assert_nothing_left(mark, timeout=2)


LOUD = "while True: print('x' * 1000, flush=True)"


def test_a_full_root_fails_the_job_in_one_line_instead_of_hanging(tmp_path):
    mark = f"full-{os.getpid()}"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (1, "Never")},
                          commands={"Chief": ["python", "-c", LOUD]}, grace=1)
    root = tmp_path / "run"
    namespace = Namespace()
    try:
        namespace.tmpfs(root, "1m")  # the replica's log fills it in a moment
        result = subprocess.run([*namespace.enter, sys.executable, str(SRC / "tfjob_local.py"), str(manifest),
                                 "--root", str(root), "--", "worker-0=block"], capture_output=True, text=True,
                                timeout=60, env={**child_env(), MARK: mark})
    finally:
        namespace.close()
        for pid in marked_processes(mark):
            os.kill(pid, signal.SIGKILL)
    assert_one_line_error(result, "job fake failed after", "chief-0: cannot write its log",
                          "No space left on device")
    assert "job failed; cleanPodPolicy Running: stopping chief-0, worker-0" in result.stdout
    assert_nothing_left(mark, timeout=2)


@pytest.mark.parametrize("count", [17, 10**9])
def test_a_replica_count_past_the_bound_is_refused_before_anything_is_planned(tmp_path, count):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (1, "Never")})
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = count - 1
    manifest.write_text(yaml.safe_dump(doc))
    result = run_local(manifest, tmp_path / "run", timeout=30)  # planned first, 10**9 took minutes or MemoryError
    assert_one_line_error(result, f"TFJob fake has {count} replicas: this runner starts at most "
                          f"{tfjob_local.MAX_REPLICAS}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sub_path, fragment", [
    ("../../outside", "it must be a relative path without '..'"),
    ("a/../../outside", "it must be a relative path without '..'"),
    ("/tmp/outside", "it must be a relative path without '..'"),
    ("link/inside", "outside --root"),
])
def test_a_sub_path_is_kept_inside_the_root(tmp_path, sub_path, fragment):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")})
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = \
        sub_path
    manifest.write_text(yaml.safe_dump(doc))
    root, outside = tmp_path / "run", tmp_path / "elsewhere"
    (root / "nfs").mkdir(parents=True)
    outside.mkdir()
    (root / "nfs" / "link").symlink_to(outside)  # a link under --root that leads out of it
    result = run_local(manifest, root)
    assert_one_line_error(result, "chief-0: volumeMount nfs", fragment)
    assert not (tmp_path / "outside").exists() and not (tmp_path.parent / "outside").exists()
    assert list(outside.iterdir()) == [] and not (root / "logs").exists()


def exports(root):
    return versions.versions(root / "nfs" / "exports" / "mnist")


@pytest.mark.slow
def test_tfjob_yaml_trains_one_model_on_three_replicas(tmp_path):
    result = run_local(REPO / "kube" / "tfjob.yaml", tmp_path, *SHORT_TRAINING, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    chief = replica_lines(result.stdout, "chief-0")
    assert any("multi_worker training" in line and "num_replicas_in_sync=3" in line for line in chief), chief
    assert any(line.startswith("step     40/40") for line in chief)
    model_dir = tmp_path / "nfs" / "runs" / "tfjob"
    assert (model_dir / "ckpt-20.index").exists() and (model_dir / "ckpt-40.index").exists()
    assert list((model_dir / "train").glob("events.out.tfevents.*"))  # TensorBoard sees the run
    assert len(exports(tmp_path)) == 1
    stopped = re.search(r"^\[tfjob\] cleanPodPolicy Running: stopping (.+)$", result.stdout, re.M)
    stopped = stopped[1].split(", ") if stopped else []
    for worker in ("worker-0", "worker-1"):  # done, or stopped by cleanPodPolicy once the chief succeeded
        assert f"[tfjob] {worker} succeeded (exit code 0)" in result.stdout or worker in stopped, result.stdout


@pytest.mark.slow
def test_tfjob_ps_yaml_trains_with_a_parameter_server_and_both_workers(tmp_path):
    result = run_local(REPO / "kube" / "tfjob-ps.yaml", tmp_path, *SHORT_TRAINING, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    chief = replica_lines(result.stdout, "chief-0")
    assert any("parameter_server training" in line for line in chief), chief
    (served,) = [line for line in chief if line.startswith("steps run by each worker:")]
    steps = {w: int(n) for w, n in re.findall(r"(worker-\d) (\d+)", served)}
    assert set(steps) == {"worker-0", "worker-1"} and all(steps.values()) and sum(steps.values()) == 40, served
    assert (tmp_path / "nfs" / "runs" / "tfjob-ps" / "ckpt-40.index").exists()
    assert len(exports(tmp_path)) == 1
    assert "[tfjob] cleanPodPolicy Running: stopping ps-0, worker-0, worker-1" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["worker-1", "chief-0"])
def test_a_replica_killed_mid_training_is_restarted_and_the_job_resumes_from_the_checkpoint(tmp_path, victim):
    model_dir = tmp_path / "nfs" / "runs" / "tfjob"
    runner = Runner(REPO / "kube" / "tfjob.yaml", tmp_path, "--dataset", "mini", "--steps", 60,
                    "--eval_every", 20, "--checkpoint_every", 20)
    try:
        runner.wait_until(lambda: (model_dir / "checkpoint").exists(), timeout=300)
        killed = runner.pids()[victim]
        os.kill(killed, signal.SIGKILL)  # a killed chief leaves its lock on model_dir behind
    finally:
        output = runner.finish(timeout=400)
    assert runner.process.returncode == 0, output
    assert f"[tfjob] {victim} exited with code 137; restartPolicy ExitCode: restart 1" in output
    if victim == "chief-0":  # restarted, it takes its own lock over at once
        assert re.search(rf"\[chief-0\] taking over the lock \S+ of pid {killed} on host \S+ \(chief-0\): "
                         rf"pid {killed} is no longer running", output), output
    resumed = re.findall(r"\[chief-0\] resuming from \S+ at step (\d+)", output)
    assert resumed and int(resumed[-1]) > 0, output
    assert re.search(r"\[chief-0\] step +60/60", output)
    assert len(exports(tmp_path)) == 1 and not (model_dir / "trainer.lock").exists()
    # The workers' scratch checkpoints were in their pods' /tmp (an emptyDir): the killed replica's went with its
    # pod (a new pod under restartPolicy ExitCode), the others' were removed as their trainers ended.
    assert sorted((tmp_path / "pods").glob("*-worker-*/tmp")), sorted((tmp_path / "pods").glob("*/*"))
    assert not sorted((tmp_path / "pods").glob("*/tmp/ckpt-*")), output


@pytest.mark.slow
def test_the_distributed_benchmark_runs_one_process_and_a_two_replica_tfjob_on_the_same_steps_and_batch(tmp_path):
    result = run_script("bench.py", "distributed", "--steps", 30, "--batch_size", 40, "--root", tmp_path,
                        "--eval_every", 15, "--checkpoint_every", 15)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("run ")) + 1:]
    rows = {line[:26].strip(): line[26:].split() for line in table if not line.startswith("logs: ")}
    assert set(rows) == {"one process (main.py)", "TFJob: Chief + 1 Worker"}, result.stdout
    for name, (processes, in_sync, batch, steps, accuracy, wall, _speed) in rows.items():
        assert processes == in_sync and (batch, steps) == ("40", "30"), (name, rows[name])
        # 30 steps say nothing about learning (tests/test_distributed.py shows it): only that each run was scored.
        assert 0 < float(accuracy.rstrip("%")) <= 100 and float(wall.rstrip("s")) > 0
    assert rows["TFJob: Chief + 1 Worker"][1] == "2"  # both replicas trained together
    exports = list((tmp_path / "tfjob-2").rglob("saved_model.pb"))
    assert len(exports) == 1 and "export" in str(exports[0])  # the chief's one export


def test_the_distributed_benchmark_refuses_a_batch_the_replicas_cannot_share():
    assert_one_line_error(run_script("bench.py", "distributed", "--replicas", 3, "--batch_size", 100),
                          "--batch_size 100 must split evenly over 3 replicas")


NO_GPU_NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796612629.334315    6397 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796612645.512326    6397 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]


def test_the_no_gpu_notices_of_a_replica_stay_in_its_log_and_off_the_terminal(tmp_path):
    # What TensorFlow 2.21 prints as it starts on a machine without a GPU (tfk8s/noise.py), then a real error.
    lines = [*NO_GPU_NOTICES, "E0000 00:00:1796612645.6 6397 other.cc:1] a real error", "hello"]
    script = f"import sys; sys.stderr.write({chr(10).join(lines) + chr(10)!r})"
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")}, commands={"Chief": ["python", "-c", script]})
    result = run_local(manifest, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert replica_lines(result.stdout, "chief-0") == lines[-2:], result.stdout
    (log,) = (tmp_path / "run").rglob("*chief-0.log")
    assert log.read_text().splitlines() == lines
