"""The sweep (templated/run.sh): one valid TFJob per combination, run locally for real, ranked from event files."""
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, assert_one_line_error
from tfk8s.kube import tfjob_check
from tfk8s.sweep import sweep

RUN = REPO / "templated" / "run.sh"
DEFAULT_VALUES = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())
TINY = """\
    name: tiny
    workers: 0
    grid:
      learning_rate: [0.05, 0.0001]
      hidden_layers: [1]
    flags:
      dataset: mini
    """
SHORT_TRAINING = ["--", "--steps", 30, "--eval_every", 15, "--checkpoint_every", 15]


def run_sweep(*args, env=None, timeout=600):
    """templated/run.sh as a user runs it, with this test session's Python environment."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    full_env.update({"VENV": sys.prefix, **(env or {})})
    return subprocess.run([str(RUN), *map(str, args)], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def write_values(tmp_path, text, name="values.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def container(doc, replica_type="Chief"):
    return doc["spec"]["tfReplicaSpecs"][replica_type]["template"]["spec"]["containers"][0]


def flag(args, name):
    return args[args.index(f"--{name}") + 1]


# ---------------------------------------------------------------- rendering

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The default values file rendered for namespace alice and a registry of hers: (stdout, files)."""
    out = tmp_path_factory.mktemp("dry-run")
    result = run_sweep("--dry-run", "--out", out, "--namespace", "alice",
                       "--image", "registry.example.com/alice/mnist:v7")
    assert result.returncode == 0, result.stderr
    return result.stdout, sorted(out.glob("*.yaml"))


def test_dry_run_writes_one_valid_tfjob_per_combination_with_unique_names_paths_and_labels(dry_run):
    stdout, files = dry_run
    assert sorted(Path(line) for line in stdout.split()) == files

    grid = DEFAULT_VALUES["grid"]
    combinations = list(itertools.product(*grid.values()))
    assert len(files) == len(combinations) == 9
    docs = []
    for path in files:
        (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert tfjob_check.problems(doc) == [], path
        docs.append(doc)

    names = [d["metadata"]["name"] for d in docs]
    model_dirs = [flag(container(d)["args"], "model_dir") for d in docs]
    export_dirs = [flag(container(d)["args"], "export_dir") for d in docs]
    assert len(set(names)) == len(set(model_dirs)) == len(set(export_dirs)) == 9
    assert not set(model_dirs) & set(export_dirs)
    # Trial numbers follow the grid's order, so the same values file always gives the same names.
    for number, (doc, name, model_dir, export_dir) in enumerate(zip(docs, names, model_dirs, export_dirs), 1):
        labels = doc["metadata"]["labels"]
        trial = f"t{number:02d}"
        assert name == f"mnist-sweep-{trial}" and sweep.DNS_1035.fullmatch(name)
        assert labels["trial"] == trial and labels["sweep"] == "mnist-sweep" and labels["app"] == "mnist-train"
        assert model_dir == f"/mnt/nfs/runs/mnist-sweep/{trial}"
        assert export_dir == f"/mnt/nfs/exports/mnist-sweep/{trial}"
        assert doc["metadata"]["namespace"] == "alice"
        assert (float(labels["learning_rate"]), int(labels["hidden_layers"])) == combinations[number - 1]
        for replica_type in ("Chief", "Worker"):
            c = container(doc, replica_type)
            assert c["image"] == "registry.example.com/alice/mnist:v7"
            # The labels say what the trainer is told, in every replica.
            assert flag(c["args"], "learning_rate") == labels["learning_rate"]
            assert flag(c["args"], "hidden_layers") == labels["hidden_layers"]
            assert flag(c["args"], "steps") == str(DEFAULT_VALUES["flags"]["steps"])
        assert doc["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == DEFAULT_VALUES["workers"]


def test_a_trial_is_kube_tfjob_yaml_but_for_its_name_labels_image_and_trainer_flags(dry_run):
    """kube/tfjob.yaml is the one source of truth: undo a trial's own parts and the base is what is left."""
    trial = yaml.safe_load(dry_run[1][4].read_text())
    base = json.loads(json.dumps(yaml.safe_load((REPO / "kube" / "tfjob.yaml").read_text())))
    for labels in (trial["metadata"]["labels"], base["metadata"]["labels"]):
        for key in ("sweep", "trial", "learning_rate", "hidden_layers"):
            labels.pop(key, None)
    for doc in (trial, base):
        doc["metadata"].pop("name")
        doc["metadata"].pop("namespace", None)
        for replica in doc["spec"]["tfReplicaSpecs"].values():
            c = replica["template"]["spec"]["containers"][0]
            c.pop("image"), c.pop("args")
    assert trial == base


@pytest.mark.parametrize("text, fragments", [
    ("name: s\ngrdi: {learning_rate: [0.1]}\n", ["unknown key 'grdi'", "did you mean 'grid'"]),
    ("name: s\ngrid: {lerning_rate: [0.1]}\n", ["grid.lerning_rate is not a flag of the trainer",
                                                 "did you mean 'learning_rate'"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {stepz: 10}\n", ["flags.stepz is not a flag of the trainer"]),
    ("name: s\ngrid: {learning_rate: [], hidden_layers: [1]}\n", ["grid.learning_rate must be a non-empty list"]),
    ("name: s\ngrid: {learning_rate: [0.1, -0.01]}\n", ["grid.learning_rate", "must be a positive number", "-0.01"]),
    ("name: s\ngrid: {hidden_layers: [1, 7]}\n", ["grid.hidden_layers", "must be 1 to 4", "7"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {model_dir: /tmp/x}\n", ["flags.model_dir", "the sweep sets it"]),
    ("name: My_Sweep\ngrid: {learning_rate: [0.1]}\n", ["'My_Sweep'", "lower-case letters"]),
], ids=["unknown-key", "unknown-grid-flag", "unknown-fixed-flag", "empty-list", "negative-learning-rate",
        "hidden-layers-7", "sweep-owned-flag", "illegal-name"])
def test_a_mistake_in_the_values_file_is_one_line_and_renders_nothing(tmp_path, text, fragments):
    values = write_values(tmp_path, text)
    result = run_sweep("--values", values, "--dry-run", "--out", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_help_describes_every_flag_and_bad_flags_are_one_line():
    result = run_sweep("--help")
    assert result.returncode == 0
    for option in ("--values", "--name", "--dry-run", "--out", "--namespace", "--image", "--parallel", "--local",
                   "--delete", "--results", "--root", "--poll", "kubectl exec", "tar -C /mnt/nfs"):
        assert option in result.stdout, option
    assert_one_line_error(run_sweep("--dry-run"), "--dry-run needs --out DIR")
    assert_one_line_error(run_sweep("--dry-run", "--out", "x", "--", "--steps", "5"), "--local only")
    assert_one_line_error(run_sweep("--parallel", "0"), "--parallel must be 1 or more")
    assert_one_line_error(run_sweep("--help", env={"VENV": "/nonexistent"}), "no virtualenv at /nonexistent")


# ---------------------------------------------------------------- the cluster, through kubectl

FAKE_KUBECTL = '''\
#!{python}
"""A stand-in for kubectl and its cluster: records every call; a TFJob is done at its 2nd status poll."""
import json, os, sys, yaml
path = os.environ["FAKE_KUBE_STATE"]
state = json.load(open(path)) if os.path.exists(path) else {{"calls": [], "jobs": {{}}, "events": []}}
args = sys.argv[1:]
state["calls"].append(args)
if args[0] == "apply":
    doc = yaml.safe_load(open(args[args.index("-f") + 1]))
    name = doc["metadata"]["name"]
    state["jobs"][name] = {{"namespace": doc["metadata"]["namespace"], "polls": 0}}
    state["events"].append(["applied", name])
    print(f"tfjob.kubeflow.org/{{name}} created")
elif args[0] == "get":
    name = args[2]
    state["jobs"][name]["polls"] += 1
    done = state["jobs"][name]["polls"] >= 2
    if done and ["done", name] not in state["events"]:
        state["events"].append(["done", name])
    outcome = "Failed" if name == os.environ.get("FAKE_KUBE_FAIL") else "Succeeded"
    print("Created " + (outcome if done else "Running"), end="")
elif args[0] == "delete":
    print("tfjob.kubeflow.org/lr-study-t01 deleted")
json.dump(state, open(path, "w"))
'''


@pytest.fixture
def fake_cluster(tmp_path):
    """PATH with a kubectl that answers as a cluster would; returns (env, a function reading its record)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    state = tmp_path / "kube-state.json"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_KUBE_STATE": str(state)}
    return env, lambda: json.loads(state.read_text())


def test_parallel_submission_keeps_at_most_n_trials_running_and_waits_for_all(fake_cluster):
    env, record = fake_cluster
    result = run_sweep("--parallel", 3, "--poll", 0.05, "--namespace", "alice", env=env)
    assert result.returncode == 0, result.stderr
    state = record()
    assert sorted(state["jobs"]) == [f"mnist-sweep-t{i:02d}" for i in range(1, 10)]
    assert all(job["namespace"] == "alice" for job in state["jobs"].values())
    running, most = 0, 0
    for event, _ in state["events"]:
        running += 1 if event == "applied" else -1
        most = max(most, running)
    assert most == 3 and running == 0  # never more than --parallel, as many as allowed, and all finished
    assert [e for e, _ in state["events"][:4]] == ["applied"] * 3 + ["done"]  # the 4th waits for a finish
    assert all(call[:2] == ["get", "tfjob"] and call[3:] == ["-n", "alice", "-o", f"jsonpath={sweep.JSONPATH}"]
               for call in state["calls"] if call[0] == "get")
    assert "9 of 9 done" in result.stdout


def test_a_failed_trial_fails_the_sweep_after_every_trial_ran(fake_cluster):
    env, record = fake_cluster
    result = run_sweep("--parallel", 2, "--poll", 0.05, env={**env, "FAKE_KUBE_FAIL": "mnist-sweep-t04"})
    assert_one_line_error(result, "1 of 9 trials did not succeed: mnist-sweep-t04")
    assert len(record()["jobs"]) == 9


def test_without_parallel_every_trial_is_submitted_at_once_and_delete_uses_the_sweep_label(fake_cluster):
    env, record = fake_cluster
    result = run_sweep("--name", "lr-study", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(record()["jobs"]) == [f"lr-study-t{i:02d}" for i in range(1, 10)]
    assert not [call for call in record()["calls"] if call[0] == "get"]
    assert "kubectl get tfjobs -n default -l sweep=lr-study" in result.stdout

    result = run_sweep("--delete", "--name", "lr-study", "--namespace", "alice", env=env)
    assert result.returncode == 0, result.stderr
    assert record()["calls"][-1] == ["delete", "tfjobs", "-n", "alice", "-l", "sweep=lr-study"]


def test_no_kubectl_is_one_line_pointing_to_dry_run_and_local(tmp_path):
    bin_dir = tmp_path / "bin"  # bash and dirname, which run.sh needs, and no kubectl
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = run_sweep(env={"PATH": str(bin_dir)})
    assert_one_line_error(result, "kubectl is not on PATH", "--dry-run", "--local")


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_status_jsonpath_yields_the_true_conditions_with_real_kubectl(tmp_path):
    """kubectl evaluates the poll's JSONPath (offline, with --local) as it would on a TFJob from the API server."""
    job = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "t"},
           "status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                     {"type": "Succeeded", "status": "True"}]}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run(["kubectl", "label", "--local", "-f", path, "probe=1", "-o", f"jsonpath={sweep.JSONPATH}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Created", "Succeeded"]


# ---------------------------------------------------------------- a real local sweep and its results

def events(run_dir, tag="accuracy"):
    """{step: value} of `tag` in a run directory, read with TensorFlow's own record reader (not TensorBoard's)."""
    import tensorflow as tf
    values = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 2x1 sweep trained for real, both trials at once, with the Chief alone (workers: 0)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    values = write_values(tmp_path, TINY)
    root = tmp_path / "root"
    result = run_sweep("--values", values, "--local", "--parallel", 2, "--root", root, *SHORT_TRAINING)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"tmp": tmp_path, "root": root, "volume": root / "nfs", "stdout": result.stdout}


@pytest.mark.slow
def test_local_sweep_trains_every_trial_into_its_own_directories(local_sweep):
    volume = local_sweep["volume"]
    assert "all 2 trials succeeded" in local_sweep["stdout"]
    for trial, learning_rate in (("t01", 0.05), ("t02", 0.0001)):
        model_dir = volume / "runs" / "tiny" / trial
        assert sorted(events(model_dir / "eval")) == [15, 30]  # the steps after -- reached the trainer
        assert list(events(model_dir / "test")) == [30]
        versions = [p for p in (volume / "exports" / "tiny" / trial).iterdir() if p.name.isdigit()]
        assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
        log = (local_sweep["root"] / "logs" / f"tiny-{trial}.log").read_text()
        assert f"--learning_rate {learning_rate}" in log and "num_replicas_in_sync=1" in log
    # The sweep's experiment for TensorBoard's HParams view sits at the sweep's root, beside the trials.
    (config,) = (volume / "runs" / "tiny").glob("events.out.tfevents.*")
    assert b"_hparams_/experiment" in config.read_bytes()


@pytest.mark.slow
def test_results_rank_trials_by_their_event_files_and_show_unfinished_and_missing_ones(local_sweep):
    tmp_path, volume = local_sweep["tmp"], local_sweep["volume"]
    runs = volume / "runs" / "tiny"
    finished = {trial: (events(runs / trial / "eval")[30], events(runs / trial / "test")[30])
                for trial in ("t01", "t02")}
    # The sweep grows by two learning rates: t03 has started (its evaluations only), t04 has not.
    (runs / "t03").mkdir()
    shutil.copytree(runs / "t01" / "eval", runs / "t03" / "eval")
    grown = write_values(tmp_path, TINY.replace("[0.05, 0.0001]", "[0.05, 0.0001, 0.001, 0.2]"), "grown.yaml")

    result = run_sweep("--values", grown, "--results", "--root", local_sweep["root"], "--out", tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "out" / "tiny-results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["finished", "finished", "unfinished", "missing"]
    assert [row["trial"] for row in rows[2:]] == ["t03", "t04"]

    ranked = sorted(finished, key=lambda trial: -finished[trial][1])  # by the test accuracy the events hold
    assert [row["trial"] for row in rows[:2]] == ranked and [row["rank"] for row in rows] == ["1", "2", "", ""]
    for row in rows[:2]:
        validation, test = finished[row["trial"]]
        assert float(row["validation_accuracy"]) == pytest.approx(validation, abs=1e-6)
        assert float(row["test_accuracy"]) == pytest.approx(test, abs=1e-6)
        assert row["learning_rate"] == {"t01": "0.05", "t02": "0.0001"}[row["trial"]]
    assert float(rows[2]["validation_accuracy"]) == pytest.approx(finished["t01"][0], abs=1e-6)
    assert rows[2]["test_accuracy"] == rows[3]["validation_accuracy"] == ""

    best = rows[0]
    newest = max((volume / "exports" / "tiny" / best["trial"]).iterdir(), key=lambda p: int(p.name))
    assert best["export"] == str(newest)
    assert f"best: {best['trial']} (learning_rate={best['learning_rate']} hidden_layers=1)" in result.stdout
    assert f"serve: {newest}" in result.stdout
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("rank"))) + 1:][:4]
    assert [line.split()[1] for line in table] == [row["trial"] for row in rows]

    with Image.open(tmp_path / "out" / "tiny-results.png") as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200
        assert len(png.convert("L").getcolors(maxcolors=1 << 16) or range(2)) > 2  # a plot, not a blank page
