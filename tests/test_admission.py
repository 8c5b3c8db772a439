"""The instructor's admission policies (templated/instructor/admission.yaml.j2), their CEL evaluated offline with
cel-python and the variables the API server gives a ValidatingAdmissionPolicy (object, oldObject, request,
params, namespaceObject): they refuse what they must and admit the workshop's own objects."""
import json

import celpy
import pytest
import yaml

from support import VERSIONS, validate
from tfk8s.instructor import katib, namespaces
from tfk8s.kube import cluster_model, render
from tfk8s.paths import KUBE

POLICIES = [d for d in yaml.safe_load_all(katib.render_admission()) if d]
NAMESPACE = "alice"


def policy(name):
    return next(d for d in POLICIES if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == name)


def evaluate(expression, obj, operation="CREATE", old=None):
    """The expression's value with the API server's variables for a request in NAMESPACE."""
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    namespace = next(d for d in yaml.safe_load_all(namespaces.render_namespace(NAMESPACE)) if d["kind"] == "Namespace")
    request = {"operation": operation, "namespace": NAMESPACE, "name": obj["metadata"]["name"],
               "kind": {"group": obj["apiVersion"].rpartition("/")[0], "kind": obj["kind"]}}
    activation = {"object": obj, "oldObject": old, "request": request, "params": None, "namespaceObject": namespace}
    return program.evaluate({key: celpy.json_to_cel(value) for key, value in activation.items()})


def refusals(name, obj):
    """The messages of the policy's validations that refuse `obj` (an error counts as a refusal: failurePolicy Fail)."""
    found = policy(name)
    assert found["spec"]["failurePolicy"] == "Fail"
    messages = []
    for validation in found["spec"]["validations"]:
        result = evaluate(validation["expression"], obj)
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            if "messageExpression" in validation:
                messages.append(str(evaluate(validation["messageExpression"], obj)))
            else:
                messages.append(validation["message"])
    return messages


@pytest.fixture(scope="module")
def experiment():
    return cluster_model.workshop_experiment(NAMESPACE, "r.example.com/alice-mnist:v1")


def from_config_map(experiment, namespace):
    doc = json.loads(json.dumps(experiment))
    template = doc["spec"]["trialTemplate"]
    template.pop("trialSpec")
    template["configMap"] = {"configMapName": "trial-templates", "templatePath": "tfjob.yaml"}
    if namespace is not None:
        template["configMap"]["configMapNamespace"] = namespace
    return doc


EXPERIMENT_POLICY = "workshop-experiment-trials-are-tfjobs"
PDB_POLICY = "workshop-disruption-allowed"
INLINE_ONLY = "spec.trialTemplate: an attendee's Experiment states its trial inline (trialSpec), not in a ConfigMap"


def test_the_workshops_own_experiment_is_admitted(experiment):
    assert experiment["spec"]["trialTemplate"]["trialSpec"]["kind"] == "TFJob"
    assert refusals(EXPERIMENT_POLICY, experiment) == []


@pytest.mark.parametrize("namespace", [NAMESPACE, "kubeflow", "bob", None])
def test_an_experiment_whose_template_is_in_a_config_map_is_refused_even_in_its_own_namespace(experiment, namespace):
    # What a ConfigMap holds is not in the request: it could be any kind (below).
    assert refusals(EXPERIMENT_POLICY, from_config_map(experiment, namespace)) == [INLINE_ONLY]


def with_trial(experiment, trial):
    doc = json.loads(json.dumps(experiment))
    doc["spec"]["trialTemplate"]["trialSpec"] = trial
    return doc


@pytest.mark.parametrize("trial, named", [
    # A PersistentVolume on another attendee's NFS server (katib-controller may create PersistentVolumes).
    ({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "x-${trialParameters.learningRate}"},
      "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
               "nfs": {"server": "nfs-bob.workshop-storage.svc.cluster.local", "path": "/"}}},
     "v1 PersistentVolume"),
    ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "x"},
      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "katib-controller"},
      "subjects": [{"kind": "ServiceAccount", "name": "attendee"}]}, "rbac.authorization.k8s.io/v1 RoleBinding"),
    ({"apiVersion": "batch/v1", "kind": "Job", "spec": {}}, "batch/v1 Job"),
    ({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {}}, "kubeflow.org/v1 PyTorchJob"),
    ({"apiVersion": "kubeflow.org/v2", "kind": "TFJob", "spec": {}}, "kubeflow.org/v2 TFJob"),
    ({"spec": {}}, "(no apiVersion) (no kind)"),
])
def test_an_experiment_whose_trial_is_not_a_tfjob_is_refused(experiment, trial, named):
    (message,) = refusals(EXPERIMENT_POLICY, with_trial(experiment, trial))
    assert message == (f"spec.trialTemplate.trialSpec: a trial is a kubeflow.org/v1 TFJob, not {named}: Katib's "
                       "controller creates whatever a trial template holds, with its own rights")


def test_an_experiment_without_a_trial_template_is_refused(experiment):
    doc = json.loads(json.dumps(experiment))
    del doc["spec"]["trialTemplate"]
    assert refusals(EXPERIMENT_POLICY, doc) == [INLINE_ONLY]


def test_an_inline_tfjob_beside_a_config_map_is_refused_by_the_policy_itself(experiment):
    # Katib's own webhook refuses both at once too; the policy does not count on which runs first.
    doc = from_config_map(experiment, NAMESPACE)
    doc["spec"]["trialTemplate"]["trialSpec"] = experiment["spec"]["trialTemplate"]["trialSpec"]
    assert refusals(EXPERIMENT_POLICY, doc) == [INLINE_ONLY]


def pdb(**spec):
    doc = next(d for d in render.render(render.load([KUBE / "serving-autoscale.yaml"]), render.TRAINER_IMAGE, "v1",
                                        NAMESPACE) if d["kind"] == "PodDisruptionBudget")
    doc["spec"] = {"selector": doc["spec"]["selector"], **spec}
    return doc


def test_the_workshops_own_disruption_budget_is_admitted():
    shipped = next(d for d in render.render(render.load([KUBE / "serving-autoscale.yaml"]), render.TRAINER_IMAGE,
                                            "v1", NAMESPACE) if d["kind"] == "PodDisruptionBudget")
    assert shipped["spec"]["maxUnavailable"] == 1
    assert refusals(PDB_POLICY, shipped) == []
    for spec in ({"maxUnavailable": 2}, {"maxUnavailable": "50%"}, {"minAvailable": 1}, {"minAvailable": "50%"},
                 {"minAvailable": "99%"}):
        assert refusals(PDB_POLICY, pdb(**spec)) == [], spec


@pytest.mark.parametrize("spec,fragment", [
    ({"maxUnavailable": 0}, "spec.maxUnavailable 0"),
    ({"maxUnavailable": "0%"}, "spec.maxUnavailable 0"),
    ({"maxUnavailable": "00%"}, "spec.maxUnavailable 0"),
    ({"minAvailable": "100%"}, "spec.minAvailable 100%"),
])
def test_a_disruption_budget_that_allows_no_disruption_is_refused(spec, fragment):
    (message,) = refusals(PDB_POLICY, pdb(**spec))
    assert message.startswith(fragment) and "blocks node drains" in message


def test_the_policies_are_bound_to_the_attendee_namespaces_only_and_pass_strict_validation():
    bindings = [d for d in POLICIES if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert sorted(b["spec"]["policyName"] for b in bindings) == sorted(
        d["metadata"]["name"] for d in POLICIES if d["kind"] == "ValidatingAdmissionPolicy")
    namespace = next(d for d in yaml.safe_load_all(namespaces.render_namespace(NAMESPACE)) if d["kind"] == "Namespace")
    for binding in bindings:
        assert binding["spec"]["validationActions"] == ["Deny"]
        selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        assert selector == {"mnist-workshop/attendee": "true"}
        assert selector.items() <= namespace["metadata"]["labels"].items()
    for doc in POLICIES:
        assert doc["apiVersion"] == "admissionregistration.k8s.io/v1"
        for version in VERSIONS:
            validate(doc, version)
    experiments = policy(EXPERIMENT_POLICY)["spec"]["matchConstraints"]["resourceRules"]
    assert experiments == [{"apiGroups": ["kubeflow.org"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                            "resources": ["experiments"]}]
