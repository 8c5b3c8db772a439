"""The Katib targets on a cluster (against the stand-in API server of tests/fake_api.py): the Experiment created and
followed, its trials ranked, a running one left alone, the quota checked, only what the attendee's Roles allow; and
the instructor's Katib install and per-attendee access."""
import csv
import json
import os

import pytest
import yaml

import fake_api
from support import (
    REPO,
    SWEEP_PUSHED,
    VERSIONS,
    assert_one_line_error,
    make,
    make_error,
    run_script,
    sweep_push,
    validate,
    workshop_namespace,
)
from support import SWEEP_IMAGE as IMAGE
from support import katib_experiment as experiment
from tfk8s.instructor import katib as katib_access
from tfk8s.instructor import namespaces
from tfk8s.kube import katib_check
from tfk8s.sweep import cluster, katib_cluster


@pytest.fixture(scope="module")
def default():
    return experiment().doc


# ---------------------------------------------------------------- on the cluster, through kubectl

def katib_namespace(api):
    """An attendee's namespace after `make deploy`, with Katib's access given."""
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml")


def make_katib(api, target, *extra, env=None):
    """A Katib target against the stand-in, which answers at once: polled every 50 ms, not every 15 s."""
    return make(target, "NAMESPACE=alice", f"IMAGE={IMAGE.split(':')[0]}", "TAG=v7", sweep_push(api), *extra,
                env={**api.env, "SWEEP_POLL": "0.05", **(env or {})}, path=api.path)


METRICS = {"learning_rate=0.1,hidden_layers=1": [0.97, 0.95], "learning_rate=0.01,hidden_layers=2": [0.96, 0.99]}


def test_make_katib_sweep_creates_the_experiment_follows_it_and_prints_the_best_trial(api):
    katib_namespace(api)
    result = make_katib(api, "katib-sweep", env={"FAKE_POLLS": "1", "FAKE_KATIB_METRICS": json.dumps(METRICS)})
    assert result.returncode == 0, result.stdout + result.stderr
    (created,) = api.read()["objects"]["experiments"]
    assert katib_check.problems({k: v for k, v in created.items() if k not in ("status", "polls")}) == []
    assert created["spec"]["trialTemplate"]["trialSpec"]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"][
        "containers"][0]["image"] == SWEEP_PUSHED  # by the digest `make push` recorded
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
    assert [d["kind"] for d in docs] == ["Namespace", "Role", "RoleBinding", "NetworkPolicy", "NetworkPolicy"]
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
    # Katib's install labels kubeflow for its fail-closed pod webhook: the label goes before katib-controller's pods
    # are made again, or its next pod would be refused with nothing left to answer the webhook.
    assert index("get", "crd", "tfjobs.kubeflow.org") < index("apply", "-k", pinned) \
        < index("label", "namespace", "kubeflow", "katib.kubeflow.org/metrics-collector-injection-") \
        < index("--namespace", "kubeflow", "rollout", "restart", "deployment/katib-controller") \
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


def test_katib_sweep_ends_within_its_deadline_when_the_experiment_never_progresses(api, default):
    """The deadline comes from the Experiment (9 trials, 2 at a time, 1800 s each, 600 s for pulls: 9600 s);
    KATIB_DEADLINE_SCALE shrinks it for the test, so it is 0.96 s here, not the real 2 h 40 min."""
    assert katib_cluster.deadline(default) == 5 * 1800 + 600
    katib_namespace(api)
    # Without a deadline this would poll forever (and the stand-in's make call time out).
    result = make_katib(api, "katib-sweep", env={"FAKE_POLLS": "1000000", "KATIB_DEADLINE_SCALE": "0.0001"})
    last = make_error(result, "Experiment mnist-sweep did not finish within 1s", "make katib-clean")
    assert last.count("error:") == 1
    assert "Experiment mnist-sweep: what Katib says" in result.stdout
    assert "Suggestion mnist-sweep: none" in result.stdout and "trials: none yet" in result.stdout
    polls = [c for c in api.calls() if c[:3] == ["get", "experiment", "mnist-sweep"]]
    assert len(polls) >= 2  # it followed, then gave up


def test_katib_sweep_refuses_early_stopping_which_restricted_cannot_run(api, tmp_path):
    katib_namespace(api)
    values = (REPO / "templated" / "values.yaml").read_text().replace("earlyStopping: false", "earlyStopping: true")
    (tmp_path / "values.yaml").write_text(values)
    result = make_katib(api, "katib-sweep", f"SWEEP_VALUES={tmp_path / 'values.yaml'}")
    make_error(result, "katib.earlyStopping cannot run in a restricted namespace")
    assert not [c for c in api.calls() if c[0] == "create"]
