"""Katib's admission rules (v0.19), ported in tfk8s/kube/katib_check.py: each rule refuses what Katib refuses, with
its message, in its order, after its defaults; and the namespace label Katib needs is in the instructor's template."""
import copy

import pytest
import yaml

from support import REPO, run_script
from support import katib_experiment as experiment
from tfk8s.instructor import katib as katib_access
from tfk8s.instructor import namespaces
from tfk8s.kube import katib_check


@pytest.fixture(scope="module")
def default():
    return experiment().doc


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


def test_the_counts_may_reach_max_trial_count_and_no_failure_may_be_allowed(default):
    """Katib refuses a count only past maxTrialCount (validator.go compares with >), and 0 failed trials is valid."""
    assert mutated(default, lambda d: d["spec"].update(maxTrialCount=4, parallelTrialCount=4,
                                                       maxFailedTrialCount=4)) == []
    assert mutated(default, lambda d: d["spec"].update(maxFailedTrialCount=0)) == []


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


def with_label_reference(default, label):
    """The workshop's Experiment with a trial parameter that takes the template's label `label`."""
    doc = copy.deepcopy(default)
    template = doc["spec"]["trialTemplate"]
    template["trialSpec"].setdefault("metadata", {}).update(labels={"team": "blue"},
                                                            annotations={"team-copy": "${trialParameters.team}"})
    template["trialParameters"].append({"name": "team", "reference": "${trialSpec.Labels[" + label + "]}"})
    return doc


def test_a_trial_parameter_takes_a_label_of_the_template_as_katibs_controller_does(default):
    doc = with_label_reference(default, "team")
    assert katib_check.problems(doc) == []
    assert katib_check.trial_problems(doc, katib_check.example_assignments(doc)) == []
    job = katib_check.run_spec(katib_check.defaults(doc), "t-1", "alice", katib_check.example_assignments(doc))
    assert job["metadata"]["annotations"] == {"team-copy": "blue"}


def test_a_reference_to_a_label_the_template_lacks_passes_the_webhook_and_is_named_in_one_line(default, tmp_path):
    doc = with_label_reference(default, "missing")
    assert katib_check.problems(doc) == []  # Katib's webhook lets it through; its controller then makes no trial
    assert katib_check.trial_problems(doc, katib_check.example_assignments(doc)) == [
        "Katib's controller cannot make the trials: illegal reference of trial metadata: "
        "${trialSpec.Labels[missing]}; failed to fetch Label: missing"]
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_script("katib_check.py", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: Katib's controller cannot make the trials: illegal reference of trial metadata: "
        "${trialSpec.Labels[missing]}; failed to fetch Label: missing"]


def test_the_command_checks_against_the_katib_config_the_instructor_installs(default, tmp_path):
    # Katib's webhook looks an algorithm up in the installed katib-config: the workshop's has no tpe.
    doc = copy.deepcopy(default)
    doc["spec"]["algorithm"] = {"algorithmName": "tpe"}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    refused = run_script("katib_check.py", path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        f'{path}: spec.algorithm.algorithmName: Invalid value: "tpe": unable to get Suggestion config data for '
        "algorithm tpe: failed to find suggestion config for algorithm: tpe in ConfigMap: katib-config"]
    stock = run_script("katib_check.py", "--katib_config", "standalone", path)
    assert stock.returncode == 0 and "is valid (tpe," in stock.stdout, stock.stdout + stock.stderr
    assert run_script("katib_check.py", REPO / "runs" / "no-such.yaml").returncode == 1
