"""tfjob_check: the real TFJob manifests pass; each mistake an attendee makes is named precisely.

The schema is the real CRD of training operator v1.9 (src/schemas/); the
mutations are the mistakes the API server or the operator's webhook reject.
"""
import copy

import pytest
import yaml

from support import REPO, assert_one_line_error, run_script
from tfk8s import yamlfile
from tfk8s.kube import tfjob_check

MANIFESTS = [REPO / "kube" / "tfjob.yaml", REPO / "kube" / "tfjob-ps.yaml"]


@pytest.fixture
def tfjob():
    """A fresh, independent copy of kube/tfjob.yaml (its replicas share a template through a YAML alias)."""
    (doc,) = yamlfile.documents(MANIFESTS[0])
    doc = copy.deepcopy(doc)
    specs = doc["spec"]["tfReplicaSpecs"]
    specs["Worker"]["template"] = copy.deepcopy(specs["Worker"]["template"])
    return doc


def container(doc, replica_type="Worker"):
    return doc["spec"]["tfReplicaSpecs"][replica_type]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_workshop_tfjobs_are_valid(path):
    for doc in yamlfile.documents(path):
        assert tfjob_check.problems(doc) == []


def test_cli_reports_each_valid_tfjob_with_its_replicas():
    result = run_script("tfjob_check.py", *MANIFESTS)
    assert result.returncode == 0, result.stderr
    assert "kube/tfjob.yaml: TFJob mnist-tfjob is valid (Chief x1, Worker x2)" in result.stdout
    assert "TFJob mnist-tfjob-ps is valid (Chief x1, Worker x2, PS x1)" in result.stdout


def test_unknown_field_is_named_by_its_full_path(tfjob):
    tfjob["spec"]["runPolicy"]["cleanPodPolicyy"] = "Running"
    container(tfjob)["imagePullPolicyy"] = "Always"
    assert tfjob_check.problems(tfjob) == [
        'unknown field "spec.runPolicy.cleanPodPolicyy"',
        'unknown field "spec.tfReplicaSpecs.Worker.template.spec.containers[0].imagePullPolicyy"',
    ]


def test_the_crd_is_the_pinned_operators_v1_9_4(tfjob):
    # Fields v1.9.4's CRD added to the pod template (Kubernetes 1.34's): an earlier v1.9 CRD calls them unknown.
    spec = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    spec["resources"] = {"limits": {"cpu": "2"}}
    spec["containers"][0]["lifecycle"] = {"stopSignal": "SIGTERM"}
    assert tfjob_check.problems(tfjob) == []
    spec["resourcez"] = {}
    (problem,) = tfjob_check.problems(tfjob)
    assert "resourcez" in problem


def test_unknown_field_in_metadata_is_an_error(tfjob):
    tfjob["metadata"]["label"] = {"app": "mnist-train"}
    assert tfjob_check.problems(tfjob) == ['unknown field "metadata.label"']


def test_two_chiefs_are_refused(tfjob):
    tfjob["spec"]["tfReplicaSpecs"]["Master"] = copy.deepcopy(tfjob["spec"]["tfReplicaSpecs"]["Chief"])
    assert tfjob_check.problems(tfjob) == ["spec.tfReplicaSpecs: at most one Chief or Master, not Chief and Master"]


def test_a_chief_with_two_replicas_is_refused(tfjob):
    tfjob["spec"]["tfReplicaSpecs"]["Chief"]["replicas"] = 2
    (problem,) = tfjob_check.problems(tfjob)
    assert problem.startswith("spec.tfReplicaSpecs.Chief.replicas: must be 1")


def test_container_not_named_tensorflow_is_refused(tfjob):
    container(tfjob)["name"] = "trainer"
    (problem,) = tfjob_check.problems(tfjob)
    assert problem.startswith("spec.tfReplicaSpecs.Worker.template.spec.containers: "
                              "needs a container named 'tensorflow'")


def test_bad_restart_policy_is_refused(tfjob):
    tfjob["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] = "Sometimes"
    assert tfjob_check.problems(tfjob) == [
        "spec.tfReplicaSpecs.Worker.restartPolicy: 'Sometimes' is not one of Always, OnFailure, Never, ExitCode"]


def test_unknown_replica_type_is_refused(tfjob):
    specs = tfjob["spec"]["tfReplicaSpecs"]
    specs["Learner"] = specs.pop("Worker")
    assert tfjob_check.problems(tfjob) == [
        "spec.tfReplicaSpecs.Learner: unknown replica type 'Learner' (one of Chief, Master, Worker, PS, Evaluator)"]


def test_replica_types_are_case_insensitive_as_the_operator_defaults_them(tfjob):
    specs = tfjob["spec"]["tfReplicaSpecs"]
    specs["worker"] = specs.pop("Worker")
    assert tfjob_check.problems(tfjob) == []
    specs["Worker"] = copy.deepcopy(specs["worker"])
    assert tfjob_check.problems(tfjob) == [
        "spec.tfReplicaSpecs: 'worker' and 'Worker' are the same replica type Worker"]


def test_missing_image_is_refused(tfjob):
    del container(tfjob)["image"]
    assert tfjob_check.problems(tfjob) == ["spec.tfReplicaSpecs.Worker.template.spec.containers[0].image: is required"]


def test_name_must_be_a_dns_1035_label(tfjob):
    tfjob["metadata"]["name"] = "MNIST_tfjob"
    (problem,) = tfjob_check.problems(tfjob)
    assert problem.startswith("metadata.name: 'MNIST_tfjob' is not a DNS-1035 label")


def test_a_name_whose_replica_services_would_be_too_long_is_refused(tfjob):
    # The operator names worker 1's Service <job>-worker-1: 63 characters at most, as any Service name.
    tfjob["metadata"]["name"] = "m" * 54
    assert tfjob_check.problems(tfjob) == []
    tfjob["metadata"]["name"] = "m" * 55
    assert tfjob_check.problems(tfjob) == [
        f"metadata.name: '{'m' * 55}' is too long: the operator names a replica's Service '{'m' * 55}-worker-1' "
        "(64 characters), and a Service name has at most 63"]


def test_run_policy_managed_by_takes_the_operators_two_values_only(tfjob):
    for manager in ("kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"):
        tfjob["spec"]["runPolicy"]["managedBy"] = manager
        assert tfjob_check.problems(tfjob) == []
    tfjob["spec"]["runPolicy"]["managedBy"] = "example.com/mine"
    assert tfjob_check.problems(tfjob) == [
        "spec.runPolicy.managedBy: Unsupported value: 'example.com/mine': supported values: "
        "'kubeflow.org/training-operator', 'kueue.x-k8s.io/multikueue'"]


def test_wrong_types_and_kubernetes_formats_are_refused(tfjob):
    worker = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    worker["replicas"] = "2"
    container(tfjob)["resources"]["limits"]["cpu"] = "two"
    container(tfjob)["ports"][0]["containerPort"] = 2 ** 40
    container(tfjob)["livenessProbe"] = {"httpGet": {"port": 1.5}}
    prefix = "spec.tfReplicaSpecs.Worker"
    assert tfjob_check.problems(tfjob) == [
        f"{prefix}.replicas: '2' is not of type 'integer'",
        f"{prefix}.template.spec.containers[0].livenessProbe.httpGet.port: must be an integer or a string, not 1.5",
        f"{prefix}.template.spec.containers[0].ports[0].containerPort: 1099511627776 is out of range for int32",
        f"{prefix}.template.spec.containers[0].resources.limits.cpu: 'two' is not a quantity (like 500m, 2, 4Gi)",
    ]


def test_int_or_string_fields_take_either(tfjob):
    container(tfjob)["livenessProbe"] = {"httpGet": {"port": "tfjob-port"}}
    container(tfjob)["readinessProbe"] = {"httpGet": {"port": 2222}}
    assert tfjob_check.problems(tfjob) == []


def test_duplicate_keys_of_a_map_list_are_refused(tfjob):
    container(tfjob)["env"].append({"name": "PYTHONUNBUFFERED", "value": "0"})
    assert tfjob_check.problems(tfjob) == [
        "spec.tfReplicaSpecs.Worker.template.spec.containers[0].env: duplicate entry with name='PYTHONUNBUFFERED'"]


def test_run_policy_values_are_checked(tfjob):
    tfjob["spec"]["runPolicy"].update(cleanPodPolicy="Always", backoffLimit=-1)
    assert tfjob_check.problems(tfjob) == [
        "spec.runPolicy.cleanPodPolicy: 'Always' is not one of All, Running, None",
        "spec.runPolicy.backoffLimit: must be 0 or more, not -1",
    ]


def test_a_document_that_is_not_a_tfjob_is_one_problem():
    (job,) = yamlfile.documents(REPO / "kube" / "job.yaml")
    assert tfjob_check.problems(job) == ["apiVersion/kind: a TFJob is kubeflow.org/v1/TFJob, not batch/v1/Job"]


def test_cli_prints_one_line_per_problem_and_exits_1(tmp_path, tfjob):
    tfjob["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] = "Sometimes"
    del container(tfjob, "Chief")["image"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(tfjob_check.yaml.safe_dump(tfjob))
    result = run_script("tfjob_check.py", bad)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}: spec.tfReplicaSpecs.Chief.template.spec.containers[0].image: is required",
        f"{bad}: spec.tfReplicaSpecs.Worker.restartPolicy: 'Sometimes' is not one of "
        "Always, OnFailure, Never, ExitCode",
    ]


def test_cli_refuses_a_file_that_is_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    assert_one_line_error(run_script("tfjob_check.py", bad), "is not valid YAML")


def test_the_crd_is_read_with_libyaml_and_reads_as_the_pure_python_parser_reads_it():
    assert tfjob_check.CRD_LOADER is yaml.CSafeLoader  # the lock's PyYAML wheel carries libyaml
    text = tfjob_check.CRD.read_text()
    assert yaml.load(text, Loader=tfjob_check.CRD_LOADER) == yaml.load(text, Loader=yaml.SafeLoader)
