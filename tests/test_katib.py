"""The sweep on Katib: the Experiment passes Katib's own rules (ported), its trials are the templated sweep's TFJobs,
the metric it names is the validation accuracy as Katib's collector reads it, and the attendee may do what it takes."""
import copy
import csv
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from support import (
    REPO,
    assert_one_line_error,
    container,
    flag,
    run_sweep,
    tf_events,
    write_values,
)
from support import SWEEP_IMAGE as IMAGE
from support import katib_experiment as experiment
from tfk8s.cli import child_env
from tfk8s.kube import katib_check, tfjob_check
from tfk8s.sweep import katib_metrics
from tfk8s.sweep import trials as planning

VALUES = REPO / "templated" / "values.yaml"
EXAMPLE_TRIAL = "mnist-sweep-x7k2pq9z"


@pytest.fixture(scope="module")
def default():
    return experiment().doc


# ---------------------------------------------------------------- the Experiment

def test_the_default_experiment_passes_katibs_rules_and_every_trial_passes_the_operators(default):
    assert katib_check.problems(default) == []
    spec = default["spec"]
    assert spec["objective"] == {
        "type": "maximize", "objectiveMetricName": "eval/accuracy", "additionalMetricNames": ["test/accuracy"],
        "metricStrategies": [{"name": "eval/accuracy", "value": "latest"},
                             {"name": "test/accuracy", "value": "latest"}]}
    assert spec["algorithm"] == {"algorithmName": "grid"}
    assert (spec["parallelTrialCount"], spec["maxTrialCount"], spec["maxFailedTrialCount"]) == (2, 9, 3)
    assert spec["trialTemplate"]["primaryContainerName"] == "tensorflow"
    assert spec["trialTemplate"]["primaryPodLabels"] == {"training.kubeflow.org/job-role": "master"}
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "TensorFlowEvent"}, "source": {
        "fileSystemPath": {"kind": "Directory", "path": "/var/log/katib/metrics"}}}
    # The grid as Katib's grid enumerates it: the same nine combinations as the templated sweep.
    combinations = katib_check.grid_combinations(katib_check.defaults(default))
    grid = yaml.safe_load(VALUES.read_text())["grid"]
    assert [(float(c["learning_rate"]), int(c["hidden_layers"])) for c in combinations] == \
        [(lr, hl) for lr in grid["learning_rate"] for hl in grid["hidden_layers"]]
    model_dirs = set()
    for number, assignment in enumerate(combinations):
        trial = "mnist-sweep-bcdfghj" + "bcdfghjkl"[number]
        job = katib_check.run_spec(katib_check.defaults(default), trial, "alice", assignment)
        assert tfjob_check.problems(job) == [], trial
        assert katib_check.trial_problems(default, assignment, trial) == []
        args = container(job)["args"]
        assert flag(args, "learning_rate") == assignment["learning_rate"]
        assert flag(args, "model_dir") == f"/mnt/nfs/runs/katib/mnist-sweep/{trial}"
        assert flag(args, "export_dir") == f"/mnt/nfs/exports/katib/mnist-sweep/{trial}"
        model_dirs.add(flag(args, "model_dir"))
    assert len(model_dirs) == 9


def test_a_katib_trial_is_the_templated_sweeps_trial_but_for_its_name_and_directories(default, tmp_path):
    """The same merge of templated/trial.yaml.j2 onto kube/tfjob.yaml: the two sweeps cannot drift apart."""
    assignment = {"learning_rate": "0.01", "hidden_layers": "2"}
    katib_job = katib_check.run_spec(katib_check.defaults(default), EXAMPLE_TRIAL, "alice", assignment)
    result = run_sweep("--dry_run", "--output_dir", tmp_path, "--namespace", "alice", "--image", IMAGE,
                       "--run_id", "20250102-030405")
    assert result.returncode == 0, result.stderr
    sweep_job = yaml.safe_load((tmp_path / "mnist-sweep-t05.yaml").read_text())
    for job in (katib_job, sweep_job):
        job["metadata"] = {}
        for replica in job["spec"]["tfReplicaSpecs"].values():
            c = replica["template"]["spec"]["containers"][0]
            args = c.pop("args")
            c["flags"] = {k: v for k, v in planning.parse_flags(args).items()
                          if k not in ("model_dir", "export_dir", "metrics_dir")}
    assert katib_job == sweep_job


def test_the_collector_directory_hides_nothing_the_trainer_or_tensorboard_reads(default):
    """Katib's pod webhook mounts an emptyDir at the collector's path: it must not be at or under a shared mount."""
    path = default["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"]["path"]
    for replica in default["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"].values():
        for mount in replica["template"]["spec"]["containers"][0]["volumeMounts"]:
            assert not katib_check.mounts_overlap(path, mount["mountPath"]), mount
    # What the check says when someone points the collector at the shared volume (the trials' model_dir):
    shadowed = copy.deepcopy(default)
    shadowed["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"]["path"] = "/mnt/nfs/runs/katib"
    (line, *_) = katib_check.trial_problems(shadowed, {"learning_rate": "0.1", "hidden_layers": "1"})
    assert "the collector's emptyDir at /mnt/nfs/runs/katib overlaps the tensorflow container's volume nfs" in line


def test_the_experiment_file_is_what_katib_check_reads_and_accepts(tmp_path):
    result = run_sweep("--katib", "--dry_run", "--output_dir", tmp_path, "--namespace", "alice", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "mnist-sweep-experiment.yaml"
    assert result.stdout.split() == [str(path)]
    check = subprocess.run([sys.executable, str(REPO / "src" / "katib_check.py"), str(path)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "Experiment mnist-sweep is valid (grid, 2 parameters, up to 9 trials)" in check.stdout


@pytest.mark.parametrize("change, algorithm, extra", [
    ({"algorithm": "random", "algorithmSettings": {"random_state": 7}}, "random", {}),
    ({"algorithm": "bayesianoptimization", "algorithmSettings": {"base_estimator": "GP", "n_initial_points": 3},
      "ranges": {"learning_rate": {"min": 0.001, "max": 0.1}}}, "bayesianoptimization", {}),
    ({"earlyStopping": True, "earlyStoppingSettings": {"min_trials_required": 2, "start_step": 3}}, "grid",
     {"collector": "File"}),
])
def test_the_algorithm_and_early_stopping_come_from_the_values_file(tmp_path, change, algorithm, extra):
    values = yaml.safe_load(VALUES.read_text())
    values["katib"].update(change)
    doc = experiment(yaml.safe_dump(values), tmp_path).doc
    assert katib_check.problems(doc) == []
    spec = doc["spec"]
    assert spec["algorithm"]["algorithmName"] == algorithm
    settings = {s["name"]: s["value"] for s in spec["algorithm"].get("algorithmSettings", [])}
    assert settings == {k: str(v) for k, v in change.get("algorithmSettings", {}).items()}
    if "ranges" in change:
        (lr,) = [p for p in spec["parameters"] if p["name"] == "learning_rate"]
        assert lr == {"name": "learning_rate", "parameterType": "double",
                      "feasibleSpace": {"min": "0.001", "max": "0.1"}}
    if change.get("earlyStopping"):
        assert spec["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "3"}]}
        # Only the File collector takes early-stopping rules: the trainer's metrics.json, in JSON.
        assert spec["metricsCollectorSpec"] == {"collector": {"kind": "File"}, "source": {"fileSystemPath": {
            "kind": "File", "path": "/var/log/katib/metrics/metrics.json", "format": "JSON"}}}
    else:
        assert "earlyStopping" not in spec


@pytest.mark.parametrize("katib_section, fragments", [
    ({"algorithm": "hyperopt"}, ["katib.algorithm 'hyperopt' is not one of grid, random, bayesianoptimization"]),
    ({"algorithm": "gird"}, ["did you mean 'grid'"]),
    ({"parallelTrialCount": 5, "maxTrialCount": 3}, [
        "Katib would refuse this Experiment: spec.parallelTrialCount: Invalid value: 5: should be less than or "
        "equal to spec.maxTrialCount"]),
    ({"maxTrialCount": 12}, ["Max Trial Count: 12 > all possible search combinations: 9"]),
    ({"maxFailedTrialCount": -1}, ["spec.maxFailedTrialCount: Invalid value: -1: should not be less than 0"]),
    ({"algorithmSettings": {"seed": 3}}, ["unknown setting seed for algorithm grid"]),
    ({"algorithm": "bayesianoptimization", "algorithmSettings": {"acq_func": "UCB"}},
     ["acq_func UCB is not supported in Bayesian optimization"]),
    ({"earlyStopping": True, "earlyStoppingSettings": {"start_step": 0}},
     ["start_step must be greater or equal than one (>=1)"]),
    ({"ranges": {"learning_rate": {"min": 0.1}}}, ["katib.ranges.learning_rate must be a mapping with min and max"]),
    ({"ranges": {"learning_rate": {"min": 0.001, "max": 0.1}}},
     ["Param learning_rate step is nil; For discrete search space, all parameters must include step"]),
    ({"algorithm": "bayesianoptimization", "ranges": {"learning_rate": {"min": 0.0, "max": 0.1}}},
     ["katib.ranges.learning_rate: --learning_rate must be a positive number, not 0.0"]),
    ({"maxTrialcount": 3}, ["katib: unknown key 'maxTrialcount'", "did you mean 'maxTrialCount'"]),
    ({"maxTrialCount": "nine"}, ["katib.maxTrialCount must be a whole number"]),
], ids=["unknown-algorithm", "misspelt-algorithm", "parallel-above-max", "grid-too-small", "negative-failures",
        "grid-setting", "bayes-setting", "medianstop-setting", "range-without-max", "double-grid-without-step",
        "range-the-trainer-refuses", "unknown-key", "not-a-number"])
def test_a_mistake_in_the_katib_section_is_one_line_and_writes_nothing(tmp_path, katib_section, fragments):
    values = yaml.safe_load(VALUES.read_text())
    values["katib"] = {**values["katib"], **katib_section}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_sweep("--values", path, "--katib", "--dry_run", "--output_dir", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("grid, counts", [("{learning_rate: [0.1]}", (1, 1, 1)),
                                          ("{learning_rate: [0.1, 0.01]}", (2, 2, 2)),
                                          ("{learning_rate: [0.1, 0.01], hidden_layers: [1, 2]}", (2, 4, 3))])
def test_without_a_katib_section_the_counts_follow_the_grid(tmp_path, grid, counts):
    """Default: every combination, at most two at once, three failures: never more than Katib accepts."""
    spec = experiment(f"name: s\ngrid: {grid}\n", tmp_path).doc["spec"]
    assert (spec["parallelTrialCount"], spec["maxTrialCount"], spec["maxFailedTrialCount"]) == counts


def test_a_parameter_with_no_values_is_one_line(tmp_path):
    values = write_values(tmp_path, "name: s\ngrid: {learning_rate: [], hidden_layers: [1]}\n")
    result = run_sweep("--values", values, "--katib", "--dry_run", "--output_dir", tmp_path / "out")
    assert_one_line_error(result, "grid.learning_rate must be a non-empty list")


def test_a_value_the_shell_would_read_cannot_reach_a_katib_trial(tmp_path):
    """Katib's pod webhook joins the trainer's args with spaces into `sh -c`: a space or `;` would be code."""
    values = write_values(tmp_path, "name: s\ngrid: {learning_rate: [0.1]}\nflags: {data_dir: 'x; rm -rf /'}\n")
    result = run_sweep("--values", values, "--katib", "--dry_run", "--output_dir", tmp_path / "out")
    assert_one_line_error(result, "cannot go to a Katib trial", "through a shell")
    too_long = run_sweep("--katib", "--dry_run", "--output_dir", tmp_path / "out", "--name", "m" * 41)
    assert_one_line_error(too_long, "too long for a Katib Experiment (at most 40 characters)")


# ---------------------------------------------------------------- the metric: what Katib's collector reads

def latest(logs, name):
    strategies = [{"name": name, "value": "latest"}]
    return float(katib_metrics.observation(logs, strategies)[name]["latest"])


@pytest.mark.slow
def test_the_experiments_metric_read_as_katibs_collector_reads_it_is_the_validation_accuracy(trained_model, tmp_path,
                                                                                            default):
    """On a real run's event files (train/, eval/, test/), with the path at the model_dir as in Katib's own checks."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model["model_dir"], model_dir)  # the shared model stays as it is
    objective = default["spec"]["objective"]["objectiveMetricName"]
    test_metric = default["spec"]["objective"]["additionalMetricNames"][0]
    logs = katib_metrics.tfevent_logs(str(model_dir), [objective, test_metric])
    validation, test, train = (tf_events(model_dir / run) for run in ("eval", "test", "train"))
    assert [float(v) for _, name, v in logs if name == objective] == pytest.approx([v for _, v in validation])
    assert [float(v) for _, name, v in logs if name == test_metric] == pytest.approx([v for _, v in test])
    assert latest(logs, objective) == pytest.approx(validation[-1][1])
    # The trap the metric name avoids: a bare `accuracy` takes train, validation and test values alike, and
    # Katib's default for maximize (the highest of them) need not be a validation value at all.
    mixed = katib_metrics.tfevent_logs(str(model_dir), ["accuracy"])
    assert sorted(float(v) for _, _, v in mixed) == pytest.approx(sorted(v for _, v in train + validation + test))
    # With the path at <model_dir>/eval, the bare name reads the validation accuracy too.
    assert latest(katib_metrics.tfevent_logs(str(model_dir / "eval"), ["accuracy"]), "accuracy") == \
        pytest.approx(validation[-1][1])


def test_katibs_rules_for_the_latest_value_and_the_best_trial():
    logs = [(10.0, "m", "0.5"), (12.0, "m", "0.7"), (12.0, "m", "0.6"), (11.0, "m", "0.9"), (13.0, "other", "1")]
    metrics = katib_metrics.observation(logs, [{"name": "m", "value": "latest"}])
    assert metrics["m"] == {"min": "0.5", "max": "0.9", "latest": "0.6"}  # a tie in time: the later row wins
    strategies = [{"name": "m", "value": "max"}]
    assert katib_metrics.objective_value(metrics, strategies, "m") == "0.9"
    assert katib_metrics.objective_value({}, strategies, "m") == "unavailable"
    assert katib_metrics.best(["0.5", "unavailable", "0.8", "0.8"]) == 2  # the earlier of equals
    assert katib_metrics.best(["0.5", "0.3"], maximize=False) == 1
    assert katib_metrics.best(["unavailable"]) == -1
    assert katib_metrics.tfevent_logs("/nonexistent", ["m"])[0][1:] == ("m", "unavailable")


# ---------------------------------------------------------------- on this machine, as Katib would

TINY = """\
    name: tiny
    workers: 1
    grid:
      learning_rate: [0.05, 0.0001]
      hidden_layers: [1]
    flags:
      dataset: mini
    katib:
      maxTrialCount: 2
      parallelTrialCount: 2
      maxFailedTrialCount: 1
    """


@pytest.fixture(scope="module")
def katib_local_run(tmp_path_factory):
    """The tiny Experiment's grid (2 trials, a Chief and a Worker each) trained for real, as Katib would build it."""
    tmp_path = tmp_path_factory.mktemp("katib")
    values = tmp_path / "values.yaml"
    values.write_text(textwrap.dedent(TINY))
    root = tmp_path / "root"
    result = run_sweep("--values", values, "--katib", "--local", "--parallel", 2, "--root", root,
                       "--", "--steps", 30, "--eval_every", 15, "--checkpoint_every", 15)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"root": root, "stdout": result.stdout, "values": values}


@pytest.mark.slow
def test_katib_sweep_local_ranks_the_trials_on_the_validation_accuracy_katibs_collector_reads(katib_local_run):
    root, stdout = katib_local_run["root"], katib_local_run["stdout"]
    with open(root / "tiny-results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["learning_rate"] for r in rows} == {"0.05", "0.0001"}
    for row in rows:
        trial = row["trial"]
        assert re.fullmatch(r"tiny-[bcdfghjklmnpqrstvwxz2456789]{8}", trial)
        model_dir = root / "nfs" / "runs" / "katib" / "tiny" / trial
        validation, test = tf_events(model_dir / "eval"), tf_events(model_dir / "test")
        assert [s for s, _ in validation] == [15, 30]
        # What the Experiment optimises is the last validation accuracy, as the shared model_dir holds it;
        # the test accuracy is reported beside it.
        assert float(row["validation_accuracy"]) == pytest.approx(validation[-1][1], abs=1e-6)
        assert float(row["test_accuracy"]) == pytest.approx(test[-1][1], abs=1e-6)
        exports = root / "nfs" / "exports" / "katib" / "tiny" / trial
        assert row["export"] and Path(row["export"]).parent == exports
        # The trainer wrote the collector's copy into the chief's emptyDir only: event files and JSON lines.
        collector = root / "pods" / f"{trial}-chief-0" / "metrics-volume"
        assert tf_events(collector / "eval") == validation and tf_events(collector / "test") == test
        lines = [json.loads(line) for line in (collector / "metrics.json").read_text().splitlines()]
        assert [float(line["eval/accuracy"]) for line in lines if "eval/accuracy" in line] == \
            pytest.approx([v for _, v in validation])
        assert not (root / "pods" / f"{trial}-worker-0" / "metrics-volume").exists()
    assert float(rows[0]["validation_accuracy"]) >= float(rows[1]["validation_accuracy"])
    assert f"best: {rows[0]['trial']} " in stdout and f"Katib's choice (the highest eval/accuracy, its `latest` " \
        f"value): {rows[0]['trial']}" in stdout


@pytest.mark.slow
def test_the_file_collector_reads_the_same_values_from_metrics_json(katib_local_run):
    """With early stopping the Experiment reads metrics.json (File collector, JSON): the same latest values."""
    root = katib_local_run["root"]
    names = ["eval/accuracy", "test/accuracy"]
    strategies = [{"name": n, "value": "latest"} for n in names]
    collectors = sorted((root / "pods").glob("*-chief-0/metrics-volume"))
    assert len(collectors) == 2
    for collector in collectors:
        from_events = katib_metrics.observation(katib_metrics.tfevent_logs(str(collector), names), strategies)
        from_json = katib_metrics.observation(katib_metrics.json_logs(collector / "metrics.json", names), strategies)
        for name in names:
            assert float(from_json[name]["latest"]) == pytest.approx(float(from_events[name]["latest"]), abs=1e-6)


def test_two_katib_local_runs_in_one_root_keep_their_own_manifests(tmp_path):
    """Two runs started at once in one --root: each claims its own run id, and its trials' TFJobs stay in its
    own manifests/<run>/ (the trainers refuse --steps 0 before TensorFlow loads: nothing trains)."""
    values = write_values(tmp_path, TINY + "  earlyStopping: true\n")  # the File collector: no TensorFlow here
    root = tmp_path / "root"
    command = [str(REPO / "templated" / "run.sh"), "--values", str(values), "--katib", "--local", "--parallel", "2",
               "--root", str(root), "--", "--steps", "0"]
    env = {**child_env(), "VENV": sys.prefix}
    sweeps = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [s.communicate(timeout=300)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [1, 1], outputs
    runs = [re.search(r"^Experiment tiny, run (\S+): 2 trials", out, re.M)[1] for out in outputs]
    assert runs[0] != runs[1] and all(planning.RUN_ID.fullmatch(r) for r in runs), runs
    for run, out in zip(runs, outputs):
        started = set(re.findall(r"^(tiny-[a-z0-9]{8}): started", out, re.M))
        assert len(started) == 2, out
        manifests = root / "manifests" / run
        assert {p.stem for p in manifests.iterdir()} == started, out
        for trial in started:
            job = yaml.safe_load((manifests / f"{trial}.yaml").read_text())
            assert job["metadata"]["name"] == trial
            assert (root / "logs" / run / f"{trial}.log").is_file()
    assert sorted(p.name for p in (root / "manifests").iterdir()) == sorted(runs)


def test_katib_local_needs_a_grid_it_can_list(tmp_path):
    values = yaml.safe_load(VALUES.read_text())
    values["katib"].update(algorithm="random", ranges={"learning_rate": {"min": 0.001, "max": 0.1}})
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_sweep("--values", path, "--katib", "--local", "--root", tmp_path / "root")
    assert_one_line_error(result, "the local run tries the grid, which needs a step for every range")


def test_help_tells_the_katib_modes():
    result = run_sweep("--help")
    for text in ("--katib --dry_run --output_dir DIR", "--katib --results", "--katib --local", "--katib --delete"):
        assert text in result.stdout, text
    assert_one_line_error(run_sweep("--katib", "--results", "--run_id", "20250102-030405"),
                          "--katib takes neither --tensorboard nor --run_id")
