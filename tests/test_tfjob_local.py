"""tfjob_local: the very TFJob manifests of kube/ run here as real processes, one per replica.

First the runner's rules with replicas that are tiny Python scripts (fast):
TF_CONFIG as the operator writes it, restart policies, backoffLimit, the
success rule, clean-up and Ctrl-C. Then (slow) the real manifests train the
real model: MultiWorkerMirroredStrategy on 3 replicas, ParameterServerStrategy,
and a worker killed mid-training that the job survives.
"""
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

from conftest import REPO, SRC, assert_one_line_error, run_script
from tfk8s.kube import tfjob_check, tfjob_local

IMAGE = "ghcr.io/example/mnist-trainer:0.1.0"
SHORT_TRAINING = ("--dataset", "mini", "--steps", 40, "--eval_every", 20, "--checkpoint_every", 20)

# A stand-in for the trainer: prints its TF_CONFIG, then exits with the code given for this replica and
# this run (`worker-1=138,0`: 138 the first time, 0 after), blocks like a parameter server (`block`), or
# succeeds once every replica of its cluster has printed (`last`). It counts its runs in the shared
# volume, which the runner maps to a local directory.
FAKE_REPLICA = """
import json, os, sys, time
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
if code == "block":
    time.sleep(600)
if code == "last":
    everyone = [f"{t}-{i}" for t, hosts in json.loads(config)["cluster"].items() for i in range(len(hosts))]
    while not all(os.path.exists(os.path.join(sys.argv[1], n + ".runs")) for n in everyone):
        time.sleep(0.05)
    code = 0
sys.exit(int(code))
"""


def fake_tfjob(tmp_path, replicas, run_policy=None, name="fake"):
    """Write a valid TFJob whose replicas run FAKE_REPLICA; replicas: {type: (count, restartPolicy)}."""
    specs = {rtype: {"replicas": count, "restartPolicy": policy, "template": {"spec": {
        "containers": [{"name": "tensorflow", "image": IMAGE, "command": ["python", "-c", FAKE_REPLICA],
                        "args": ["/mnt/nfs"], "volumeMounts": [{"name": "nfs", "mountPath": "/mnt/nfs"}]}],
        "volumes": [{"name": "nfs", "persistentVolumeClaim": {"claimName": "mnist-nfs"}}]}}}
        for rtype, (count, policy) in replicas.items()}
    doc = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
           "spec": {"runPolicy": {"cleanPodPolicy": "Running", **(run_policy or {})}, "tfReplicaSpecs": specs}}
    assert tfjob_check.problems(doc) == []
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_local(manifest, root, *trainer_args, timeout=120):
    return run_script("tfjob_local.py", manifest, "--root", root, "--", *trainer_args, timeout=timeout)


def replica_lines(stdout, replica):
    """What one replica printed, without the runner's prefix."""
    prefix = f"[{replica}] "
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


class Runner:
    """tfjob_local.py in the background, its output collected line by line (for tests that act mid-run)."""

    def __init__(self, manifest, root, *trainer_args):
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, str(SRC / "tfjob_local.py"), str(manifest), "--root", str(root), "--",
             *map(str, trainer_args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"})
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
    (doc,) = tfjob_check.load(REPO / "kube" / "tfjob-ps.yaml")
    assert tfjob_local.operator_tf_config(doc, "Worker", 1) == (
        '{"cluster":{"chief":["mnist-tfjob-ps-chief-0.default.svc:2222"],'
        '"ps":["mnist-tfjob-ps-ps-0.default.svc:2222"],'
        '"worker":["mnist-tfjob-ps-worker-0.default.svc:2222","mnist-tfjob-ps-worker-1.default.svc:2222"]},'
        '"task":{"type":"worker","index":1},"environment":"cloud"}')


def test_tf_config_uses_the_namespace_and_the_tfjob_port_and_leaves_out_the_evaluator():
    (doc,) = tfjob_check.load(REPO / "kube" / "tfjob.yaml")
    doc = json.loads(json.dumps(doc))  # independent replicas (the manifest shares one template)
    doc["metadata"]["namespace"] = "alice"
    doc["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 3333
    doc["spec"]["tfReplicaSpecs"]["Evaluator"] = doc["spec"]["tfReplicaSpecs"]["Chief"]
    config = json.loads(tfjob_local.operator_tf_config(doc, "Evaluator", 0))
    assert config == {"cluster": {"chief": ["mnist-tfjob-chief-0.alice.svc:2222"],
                                  "worker": ["mnist-tfjob-worker-0.alice.svc:3333",
                                             "mnist-tfjob-worker-1.alice.svc:3333"]},
                      "task": {"type": "evaluator", "index": 0}, "environment": "cloud"}


def test_the_real_manifest_becomes_local_commands(tmp_path):
    (doc,) = tfjob_check.load(REPO / "kube" / "tfjob.yaml")
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_single_replica_job_gets_no_tf_config(tmp_path):
    result = run_local(fake_tfjob(tmp_path, {"Chief": (1, "Never")}), tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert replica_lines(result.stdout, "chief-0") == ["chief-0 run 0", "TF_CONFIG None"]


@pytest.mark.slow
def test_without_a_chief_worker_0_decides_and_a_retryable_exit_is_retried(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Worker": (2, "ExitCode")})
    result = run_local(manifest, tmp_path / "run", "worker-0=138,0", "worker-1=block")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[tfjob] worker-0 exited with code 138; restartPolicy ExitCode: restart 1" in result.stdout
    assert replica_lines(result.stdout, "worker-0")[::2] == ["worker-0 run 0", "worker-0 run 1"]
    assert "worker-0 succeeded; 1 restart(s)" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("policy, codes, restarted", [
    ("ExitCode", "137,0", True), ("ExitCode", "143,0", True), ("ExitCode", "130,0", True),
    ("ExitCode", "1", False), ("ExitCode", "2", False), ("ExitCode", "139", False), ("ExitCode", "3", False),
    ("OnFailure", "1,0", True), ("Never", "138", False),
])
def test_restart_policy_decides_which_exit_codes_are_retried(tmp_path, policy, codes, restarted):
    result = run_local(fake_tfjob(tmp_path, {"Chief": (1, policy), "Worker": (1, "Never")}), tmp_path / "run",
                       f"chief-0={codes}", "worker-0=block")
    assert (result.returncode == 0) == restarted, result.stdout + result.stderr
    assert ("chief-0 run 1" in result.stdout) == restarted


@pytest.mark.slow
def test_a_permanent_failure_fails_the_job_naming_the_replica_and_its_last_lines(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode"), "Worker": (1, "ExitCode")})
    result = run_local(manifest, tmp_path / "run", "worker-0=2", "chief-0=block")
    last = assert_one_line_error(result, "job fake failed after",
                                 "worker-0 exited with code 2 (restartPolicy ExitCode does not retry exit code 2)")
    assert result.returncode == 1, last
    report = result.stdout[result.stdout.index("[tfjob] last lines of worker-0"):]
    assert "[tfjob] | worker-0 run 0" in report
    assert "[tfjob] job failed; cleanPodPolicy Running: stopping chief-0" in result.stdout


@pytest.mark.slow
def test_backoff_limit_caps_the_restarts_of_the_whole_job(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "ExitCode")}, run_policy={"backoffLimit": 2})
    result = run_local(manifest, tmp_path / "run", "chief-0=138")
    assert_one_line_error(result, "chief-0 exited with code 138 and runPolicy.backoffLimit 2 is spent")
    assert [line for line in replica_lines(result.stdout, "chief-0") if " run " in line] == [
        "chief-0 run 0", "chief-0 run 1", "chief-0 run 2"]


@pytest.mark.slow
def test_always_restarts_even_a_chief_that_succeeded(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Always")}, run_policy={"backoffLimit": 1})
    result = run_local(manifest, tmp_path / "run", "chief-0=0")
    assert_one_line_error(result, "chief-0 exited with code 0 and runPolicy.backoffLimit 1 is spent")


@pytest.mark.slow
def test_active_deadline_stops_the_job(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")}, run_policy={"activeDeadlineSeconds": 2})
    result = run_local(manifest, tmp_path / "run", "chief-0=block", timeout=60)
    assert_one_line_error(result, "runPolicy.activeDeadlineSeconds (2s) passed")


@pytest.mark.slow
def test_an_invalid_manifest_is_refused_before_anything_runs(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never")})
    manifest.write_text(manifest.read_text().replace("restartPolicy: Never", "restartPolicy: Sometimes"))
    result = run_local(manifest, tmp_path / "run")
    assert_one_line_error(result, "is not a valid TFJob: spec.tfReplicaSpecs.Chief.restartPolicy: 'Sometimes'")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_replica(tmp_path):
    manifest = fake_tfjob(tmp_path, {"Chief": (1, "Never"), "Worker": (2, "Never")})
    runner = Runner(manifest, tmp_path / "run", "chief-0=block", "worker-0=block", "worker-1=block")
    runner.wait_until(lambda: sum(" run 0" in line for line in runner.lines) == 3, timeout=60)
    pids = runner.pids()
    runner.process.send_signal(signal.SIGINT)
    output = runner.finish(timeout=60)
    assert runner.process.returncode == 130, output
    assert "[tfjob] interrupted: stopping chief-0, worker-0, worker-1" in output
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def exports(root):
    export_dir = root / "nfs" / "exports" / "mnist"
    return sorted(p.name for p in export_dir.iterdir() if p.name.isdigit()) if export_dir.is_dir() else []


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
    for worker in ("worker-0", "worker-1"):  # done, or stopped by cleanPodPolicy once the chief succeeded
        assert (f"[tfjob] {worker} succeeded (exit code 0)" in result.stdout
                or f"cleanPodPolicy Running: stopping {worker}" in result.stdout), result.stdout


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
def test_worker_killed_mid_training_is_restarted_and_the_job_resumes_from_the_checkpoint(tmp_path):
    model_dir = tmp_path / "nfs" / "runs" / "tfjob"
    runner = Runner(REPO / "kube" / "tfjob.yaml", tmp_path, "--dataset", "mini", "--steps", 60,
                    "--eval_every", 20, "--checkpoint_every", 20)
    try:
        runner.wait_until(lambda: (model_dir / "checkpoint").exists(), timeout=300)
        os.kill(runner.pids()["worker-1"], signal.SIGKILL)
    finally:
        output = runner.finish(timeout=400)
    assert runner.process.returncode == 0, output
    assert "[tfjob] worker-1 exited with code 137; restartPolicy ExitCode: restart 1" in output
    resumed = re.findall(r"\[chief-0\] resuming from \S+ at step (\d+)", output)
    assert resumed and int(resumed[-1]) > 0, output
    assert re.search(r"\[chief-0\] step +60/60", output)
    assert len(exports(tmp_path)) == 1


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
        # 30 steps say nothing about learning (the trainer's own tests do): only that each run was scored.
        assert 0 < float(accuracy.rstrip("%")) <= 100 and float(wall.rstrip("s")) > 0
    assert rows["TFJob: Chief + 1 Worker"][1] == "2"  # both replicas trained together
    exports = list((tmp_path / "tfjob-2").rglob("saved_model.pb"))
    assert len(exports) == 1 and "export" in str(exports[0])  # the chief's one export


def test_the_distributed_benchmark_refuses_a_batch_the_replicas_cannot_share():
    assert_one_line_error(run_script("bench.py", "distributed", "--replicas", 3, "--batch_size", 100),
                          "--batch_size 100 must split evenly over 3 replicas")
