"""The sweep on Katib: the Experiment passes Katib's own rules (ported), its trials are the templated sweep's TFJobs,
the metric it names is the validation accuracy as Katib's collector reads it, and the attendee may do what it takes."""
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import fake_api
from support import (
    REPO,
    VERSIONS,
    assert_one_line_error,
    container,
    flag,
    make,
    make_error,
    run_script,
    run_sweep,
    tf_events,
    validate,
    workshop_namespace,
    write_values,
)
from support import SWEEP_IMAGE as IMAGE
from tfk8s.instructor import katib as katib_access
from tfk8s.instructor import namespaces
from tfk8s.kube import katib_check, tfjob_check
from tfk8s.sweep import cluster, katib, katib_cluster, katib_metrics
from tfk8s.sweep import trials as planning
from tfk8s.sweep import values as checks

VALUES = REPO / "templated" / "values.yaml"
EXAMPLE_TRIAL = "mnist-sweep-x7k2pq9z"


def experiment(values_text=None, tmp_path=None, name=None, max_trials=30):
    """The Experiment the values file (default: templated/values.yaml) renders to, for namespace alice."""
    path = VALUES if values_text is None else write_values(tmp_path, values_text)
    values = checks.load(path)
    return katib.render(values, name or values["name"], "alice", IMAGE, planning.load_base(), str(path), max_trials)


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


# ---------------------------------------------------------------- the validator, rule by rule (Katib v0.19)

def mutated(doc, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return katib_check.problems(doc)


RULES = [
    ("V1", lambda d: d["metadata"].update(name="1234-test"), "metadata.name: Invalid value: \"1234-test\": name "
     "must consist of lower case alphanumeric characters or '-', start with an alphabetic character"),
    ("V2", lambda d: d["metadata"].update(name="a" * 41), "and may not be longer than 40 characters. "),
    ("V3-api-server", lambda d: d["metadata"].update(name="a-"), "metadata.name: Invalid value: \"a-\": a lowercase "
     "RFC 1123 subdomain"),
    ("V4", lambda d: d["spec"].update(maxFailedTrialCount=-1),
     "spec.maxFailedTrialCount: Invalid value: -1: should not be less than 0"),
    ("V5", lambda d: d["spec"].update(maxTrialCount=0), "spec.maxTrialCount: Invalid value: 0: must be greater than 0"),
    ("V6", lambda d: d["spec"].update(parallelTrialCount=0),
     "spec.parallelTrialCount: Invalid value: 0: must be greater than 0"),
    ("V7", lambda d: d["spec"].update(maxFailedTrialCount=10),
     "spec.maxFailedTrialCount: Invalid value: 10: should be less than or equal to spec.maxTrialCount"),
    ("V8-default-3", lambda d: (d["spec"].pop("parallelTrialCount"), d["spec"].update(maxTrialCount=2,
                                                                                     maxFailedTrialCount=1)),
     "spec.parallelTrialCount: Invalid value: 3: should be less than or equal to spec.maxTrialCount"),
    ("O1", lambda d: d["spec"].pop("objective"), "spec.objective: Required value: must be specified"),
    ("O2", lambda d: d["spec"]["objective"].update(type="maximise"),
     "spec.objective.type: Invalid value: \"maximise\": must be minimize or maximize"),
    ("O3", lambda d: d["spec"]["objective"].update(objectiveMetricName=""),
     "spec.objective.objectiveMetricName: Required value: must be specified"),
    ("A1", lambda d: d["spec"].pop("algorithm"), "spec.algorithm: Required value: must be specified"),
    ("A3", lambda d: d["spec"]["algorithm"].update(algorithmName="hyperopt"),
     "spec.algorithm.algorithmName: Invalid value: \"hyperopt\": unable to get Suggestion config data for algorithm "
     "hyperopt: failed to find suggestion config for algorithm: hyperopt in ConfigMap: katib-config"),
    ("E2", lambda d: d["spec"].update(earlyStopping={"algorithmName": "meanstop"}),
     "spec.earlyStopping.algorithmName: Invalid value: \"meanstop\": unable to get EarlyStopping config data"),
    ("R1", lambda d: d["spec"].update(resumePolicy="Always"),
     "spec.resumePolicy: Invalid value: \"Always\": invalid ResumePolicyType"),
    ("T2", lambda d: d["spec"]["trialTemplate"].update(primaryContainerName=""),
     "spec.trialTemplate.primaryContainerName: Required value: must be specified"),
    ("T4", lambda d: d["spec"]["trialTemplate"].pop("trialParameters"),
     "spec.trialTemplate.trialParameters: Required value: must be specified"),
    ("T5", lambda d: d["spec"]["trialTemplate"].pop("trialSpec"),
     "spec.trialTemplate.TrialSource: Required value: spec.trialTemplate.trialSpec or spec.trialTemplate.configMap"),
    ("T9", lambda d: d["spec"]["trialTemplate"]["trialParameters"][0].update(name="a{b"),
     "spec.trialTemplate.trialParameters[0]: Invalid value: \"\": name and reference must be specified"),
    ("T10", lambda d: d["spec"]["trialTemplate"]["trialParameters"][1].update(name="learning_rate"),
     "spec.trialTemplate.trialParameters[1].name: Invalid value: \"learning_rate\": parameter name learning_rate "
     "can't be duplicated"),
    ("T12", lambda d: d["spec"]["trialTemplate"]["trialParameters"][0].update(reference="lr"),
     "spec.trialTemplate.trialParameters[0].reference: Invalid value: \"lr\": parameter reference lr does not "
     "exist in spec.parameters"),
    ("T14", lambda d: d["spec"]["trialTemplate"]["trialParameters"].append({"name": "seed", "reference": "seed"}),
     "spec.trialTemplate.trialParameters[3].name: Invalid value: \"seed\": parameter name: seed in "
     "spec.trialParameters not found in spec.trialTemplate"),
    ("T15", lambda d: d["spec"]["trialTemplate"]["trialSpec"]["metadata"]["labels"].update(x="${trialParameters.y}"),
     "spec.trialTemplate: Invalid value: \"\": parameters: [${trialParameters.y}] in spec.trialTemplate not found in "
     "spec.trialParameters"),
    ("T17", lambda d: d["spec"]["trialTemplate"]["trialSpec"]["metadata"].update(name="fixed"),
     "spec.trialTemplate: Invalid value: \"\": metadata.name and metadata.namespace in spec.trialTemplate must be "
     "omitted"),
    ("T18", lambda d: d["spec"]["trialTemplate"]["trialSpec"].pop("kind"),
     "spec.trialTemplate: Required value: APIVersion and Kind in spec.trialTemplate must be specified"),
    ("P1", lambda d: d["spec"]["parameters"][0].update(parameterType="float"),
     "spec.parameters[0].parameterType: Invalid value: \"float\": parameterType: float is not supported"),
    ("P2", lambda d: d["spec"]["parameters"][0]["feasibleSpace"].update(distribution="exponential"),
     "spec.parameters[0].feasibleSpace.distribution: Invalid value: \"exponential\": distribution: exponential is "
     "not supported"),
    ("P4", lambda d: d["spec"]["parameters"][0].update(parameterType="double"),
     "spec.parameters[0].feasibleSpace.list: Invalid value: [\"0.1\",\"0.01\",\"0.001\"]: feasibleSpace.list is not "
     "supported for parameterType: double"),
    ("P6", lambda d: d["spec"]["parameters"][0]["feasibleSpace"].update(min="0.001"),
     "feasibleSpace .max, .min and .step is not supported for parameterType: discrete"),
    ("P0", lambda d: d["spec"].pop("parameters"),
     "spec: Required value: spec.parameters or spec.nasConfig must be specified"),
    ("M1", lambda d: d["spec"]["metricsCollectorSpec"]["collector"].update(kind="Prometheus"),
     "spec.metricsCollectorSpec.collector.kind: Invalid value: \"Prometheus\": invalid metrics collector kind"),
    ("M2", lambda d: d["spec"]["metricsCollectorSpec"].update(collector={"kind": "PrometheusMetric"}),
     "GetMetricsCollectorConfigData failed: failed to find metrics collector config for kind: PrometheusMetric"),
    ("M3", lambda d: d["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"].update(kind="File"),
     "spec.metricsCollectorSpec.source: Required value: directory path where tensorflow event files exist is "
     "required by .spec.metricsCollectorSpec.source.fileSystemPath.path"),
    ("M4", lambda d: d["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"].update(path="logs/tb"),
     "directory path where tensorflow event files exist is required"),
    ("M6", lambda d: d["spec"]["metricsCollectorSpec"]["source"]["fileSystemPath"].update(format="TEXT"),
     "spec.metricsCollectorSpec.source.fileSystemPath.format: Invalid value: \"TEXT\": must be empty"),
    ("M15", lambda d: d["spec"]["metricsCollectorSpec"]["source"].update(filter={"metricsFormat": ["acc=(.*)"]}),
     "spec.metricsCollectorSpec.source.filter.metricsFormat: Invalid value: \"acc=(.*)\": two top subexpressions "
     "are required"),
    ("unknown-field", lambda d: d["spec"]["trialTemplate"].update(primaryContainer="tensorflow"),
     'spec.trialTemplate: unknown field "primaryContainer" (Katib v0.19 would drop it)'),
    ("wrong-type", lambda d: d["spec"].update(maxTrialCount="9"), "spec.maxTrialCount: must be a integer, not \"9\""),
    ("G1", lambda d: d["spec"].update(maxTrialCount=10, parallelTrialCount=2),
     "Max Trial Count: 10 > all possible search combinations: 9"),
    ("log-scale", lambda d: (d["spec"]["algorithm"].update(algorithmName="bayesianoptimization"),
                             d["spec"]["parameters"][0].update(parameterType="double",
                                                               feasibleSpace={"min": "0", "max": "0.1"})),
     "learning_rate is searched on a log scale (bayesianoptimization's doubles always are), so its min must be "
     "above 0"),
    ("early-stopping-tfevent", lambda d: d["spec"].update(earlyStopping={"algorithmName": "medianstop"}),
     "spec.earlyStopping: Katib v0.19's TensorFlowEvent collector takes no early-stopping rules"),
]


@pytest.mark.parametrize("change, expected", [(c, e) for _, c, e in RULES], ids=[r for r, _, _ in RULES])
def test_each_ported_rule_refuses_what_katib_refuses_with_its_message(default, change, expected):
    found = mutated(default, change)
    assert any(expected in line for line in found), found


def test_an_objective_error_stops_katibs_validation_there(default):
    """Katib returns at once after an objective error: the algorithm's is not reported with it."""
    found = mutated(default, lambda d: (d["spec"]["objective"].update(type=""),
                                        d["spec"]["algorithm"].update(algorithmName="nope")))
    assert len(found) == 1 and found[0].startswith("spec.objective.type")


def test_katib_defaults_are_applied_before_its_rules(default):
    doc = copy.deepcopy(default)
    doc["spec"]["trialTemplate"].pop("primaryPodLabels")
    doc["spec"].pop("parallelTrialCount")
    del doc["spec"]["objective"]["metricStrategies"]
    defaulted = katib_check.defaults(doc)["spec"]
    assert defaulted["parallelTrialCount"] == 3 and defaulted["resumePolicy"] == "Never"
    assert defaulted["objective"]["metricStrategies"] == [{"name": "eval/accuracy", "value": "max"},
                                                          {"name": "test/accuracy", "value": "max"}]
    template = defaulted["trialTemplate"]
    assert template["primaryPodLabels"] == {"training.kubeflow.org/job-role": "master"}
    assert template["successCondition"] == 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    assert all(p["feasibleSpace"]["distribution"] == "uniform" for p in defaulted["parameters"])


def test_the_namespace_needs_katibs_label_which_the_instructors_template_gives(default):
    plain = next(d for d in yaml.safe_load_all(namespaces.render_namespace("alice")) if d["kind"] == "Namespace")
    (line,) = katib_check.namespace_problems(default, plain["metadata"]["labels"])
    assert line == ('Cannot create the Experiment "mnist-sweep" in namespace "alice": the namespace lacks label '
                    '"katib.kubeflow.org/metrics-collector-injection: enabled"')
    access = [d for d in yaml.safe_load_all(katib_access.render("alice")) if d]
    (namespace,) = [d for d in access if d["kind"] == "Namespace"]
    assert katib_check.namespace_problems(default, {**plain["metadata"]["labels"],
                                                    **namespace["metadata"]["labels"]}) == []


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


# ---------------------------------------------------------------- on the cluster, through kubectl

def katib_namespace(api):
    """An attendee's namespace after `make deploy`, with Katib's access given."""
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml")


def make_katib(api, target, *extra, env=None):
    """A Katib target against the stand-in, which answers at once: polled every 50 ms, not every 15 s."""
    return make(target, "NAMESPACE=alice", f"IMAGE={IMAGE.split(':')[0]}", "TAG=v7", *extra,
                env={**api.env, "SWEEP_POLL": "0.05", **(env or {})}, path=api.path)


METRICS = {"learning_rate=0.1,hidden_layers=1": [0.97, 0.95], "learning_rate=0.01,hidden_layers=2": [0.96, 0.99]}


def test_make_katib_sweep_creates_the_experiment_follows_it_and_prints_the_best_trial(api):
    katib_namespace(api)
    result = make_katib(api, "katib-sweep", env={"FAKE_POLLS": "1", "FAKE_KATIB_METRICS": json.dumps(METRICS)})
    assert result.returncode == 0, result.stdout + result.stderr
    (created,) = api.read()["objects"]["experiments"]
    assert katib_check.problems({k: v for k, v in created.items() if k not in ("status", "polls")}) == []
    assert created["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"][
        "containers"][0]["image"] == IMAGE
    best = api.read()["objects"]["experiments"][0]["status"]["currentOptimalTrial"]["bestTrialName"]
    assert f"best: {best} (learning_rate=0.1 hidden_layers=1): validation accuracy 97.00%" in result.stdout
    assert f"--model_base_path=/mnt/nfs/exports/katib/mnist-sweep/{best}" in result.stdout

    again = make_katib(api, "katib-sweep", env={"FAKE_KATIB_METRICS": json.dumps(METRICS)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deleted the finished Experiment mnist-sweep" in again.stdout
    changes = [c for c in api.calls() if c[0] in ("create", "delete")]
    assert [c[0] for c in changes] == ["create", "delete", "create"]
    assert changes[1][:3] == ["delete", "experiment", "mnist-sweep"]


def test_make_katib_results_ranks_the_trials_on_validation_accuracy_as_katib_does(api, tmp_path):
    katib_namespace(api)
    env = {"FAKE_KATIB_METRICS": json.dumps(METRICS)}
    assert make_katib(api, "katib-sweep", env=env).returncode == 0
    result = make_katib(api, "katib-results", f"RUNS={tmp_path}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "katib" / "mnist-sweep-results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and [r["rank"] for r in rows] == [str(i) for i in range(1, 10)]
    # Chosen on validation (0.97), not on the best test accuracy (0.99, the second row).
    assert (rows[0]["learning_rate"], rows[0]["hidden_layers"], rows[0]["test_accuracy"]) == ("0.1", "1", "0.950000")
    assert (rows[1]["learning_rate"], rows[1]["test_accuracy"]) == ("0.01", "0.990000")
    best = api.read()["objects"]["experiments"][0]["status"]["currentOptimalTrial"]["bestTrialName"]
    assert rows[0]["trial"] == best and f"Katib's choice (the highest eval/accuracy, its `latest` value): {best}" in \
        result.stdout and "look at both" not in result.stdout
    assert rows[0]["export"] == f"/mnt/nfs/exports/katib/mnist-sweep/{best}"
    assert (tmp_path / "katib" / "mnist-sweep-results.png").stat().st_size > 10_000


def test_a_running_experiment_is_not_touched(api):
    katib_namespace(api)
    state = api.read()
    doc = experiment().doc
    doc["status"] = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}
    doc["polls"] = -10**6  # stays running
    state["objects"]["experiments"] = [doc]
    api.write(state)
    result = make_katib(api, "katib-sweep")
    make_error(result, "Experiment mnist-sweep is still running in namespace alice", "make katib-clean")
    assert not [c for c in api.calls() if c[0] in ("create", "delete")]


def test_the_quota_holds_katibs_trials_its_collectors_and_suggestion_beside_what_always_runs(api, default):
    need, parallel = katib_cluster.usage(default)
    trial = cluster.trial_usage(default["spec"]["trialTemplate"]["trialSpec"])
    assert parallel == 2 and need.pods == 2 * trial.pods + 1  # the suggestion's pod; collectors are containers
    assert need.limits_memory - 2 * trial.limits_memory == 2 * 2**30 + 100 * 2**20
    katib_namespace(api)
    assert make_katib(api, "katib-sweep").returncode == 0
    short = fake_api.empty_state("alice")
    api.write({**api.read(), "objects": short["objects"]})
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml", "tfjob.yaml")
    refused = make_katib(api, "katib-sweep")
    make_error(refused, "2 trials need", "stop TFJob mnist-tfjob first", "katib.parallelTrialCount")


def test_the_attendee_roles_allow_every_request_the_katib_targets_make(api):
    katib_namespace(api)
    env = {"FAKE_KATIB_METRICS": json.dumps(METRICS), "FAKE_POLLS": "2"}
    for target in ("katib-sweep", "katib-sweep", "katib-results", "katib-clean", "katib-clean"):
        result = make_katib(api, target, env=env)
        assert result.returncode == 0, f"{target}: {result.stdout}{result.stderr}"
    rules = [r for d in yaml.safe_load_all(namespaces.render_namespace("alice")) if d["kind"] == "Role"
             for r in d["rules"]]
    katib_role = next(d for d in yaml.safe_load_all(katib_access.render("alice")) if d["kind"] == "Role")
    rules += katib_role["rules"]
    requests = {tuple(r) for r in api.read()["requests"]}
    assert {("create", "kubeflow.org", "experiments"), ("get", "kubeflow.org", "experiments"),
            ("list", "kubeflow.org", "trials"), ("delete", "kubeflow.org", "experiments")} <= requests
    for verb, group, resource in requests:
        assert any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules), \
            f"no Role of the attendee allows {verb} {resource}"
    # And nothing more than that for Katib: the Role is the least that works.
    granted = {(v, g, res) for r in katib_role["rules"] for v in r["verbs"] for g in r["apiGroups"]
               for res in r["resources"]}
    assert {(v, g, r) for v, g, r in requests if r in ("experiments", "trials")} <= granted
    assert not {v for r in katib_role["rules"] for v in r["verbs"]} & {"update", "patch", "deletecollection", "*"}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_instructors_katib_access_passes_strict_validation(version):
    docs = [d for d in yaml.safe_load_all(katib_access.render("bob")) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "Role", "RoleBinding"]
    for doc in docs:
        validate(doc, version)
    binding = docs[2]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "attendee", "namespace": "bob"}]
    assert binding["roleRef"]["name"] == docs[1]["metadata"]["name"] == "attendee-katib"
    assert set(docs[0]["metadata"]) == {"name", "labels"}  # the label only: applied server-side, it takes nothing


def test_make_instructor_katib_installs_the_pinned_katib_after_the_operator_then_each_attendees_access(
        tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    result = make("instructor-katib", "ATTENDEES=alice bob", f"INSTRUCTOR_DIR={tmp_path}", path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    made = [c["args"] for c in calls()]
    index = lambda *words: next(i for i, args in enumerate(made) if args[:len(words)] == list(words))
    pinned = "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=v0.19.0"
    assert index("get", "crd", "tfjobs.kubeflow.org") < index("apply", "-k", pinned) \
        < index("--namespace", "kubeflow", "rollout", "status", "deployment/katib-controller") \
        < index("apply", "--server-side", "--field-manager", "instructor-katib", "-f",
                str(tmp_path / "alice-katib.yaml"))
    assert (tmp_path / "alice-katib.yaml").read_text() == katib_access.render("alice")
    assert (tmp_path / "bob-katib.yaml").read_text() == katib_access.render("bob")
    refused = run_script("instructor.py", "katib", "Alice")
    assert_one_line_error(refused, "cannot be an attendee's namespace")


def test_make_instructor_katib_refuses_before_the_training_operator_in_one_line(tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    os.environ["FAKE_NO_TFJOB_CRD"] = "1"
    try:
        result = make("instructor-katib", "ATTENDEES=alice", f"INSTRUCTOR_DIR={tmp_path}", path=path)
    finally:
        os.environ.pop("FAKE_NO_TFJOB_CRD")
    assert result.returncode != 0
    assert "no TFJob CRD: install the training operator first" in result.stderr and "Traceback" not in result.stderr
    assert not [c for c in calls() if c["args"][:1] == ["apply"]]


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
