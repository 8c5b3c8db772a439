"""What the cluster's controllers create (tfk8s.kube.cluster_model), and the checks that run on it: the training
operator's pods and headless Services, Katib's trial Chief and suggestion pod under Pod Security `restricted`
(with the workshop's katib-config, and refused with the stock one), schemas, the CronJob's Job, serving at the
autoscaler's maximum."""
import json
import re

import pytest
import yaml

from support import VERSIONS, make, pushed_record, validate
from tfk8s.kube import cluster_model, pod_security, render
from tfk8s.kube.tfjob_local import operator_tf_config
from tfk8s.paths import KUBE


@pytest.fixture(scope="module")
def made():
    return cluster_model.cluster_made("alice", "r.example.com/alice-mnist", "v1")


@pytest.fixture(scope="module")
def experiment():
    return cluster_model.workshop_experiment("alice", "r.example.com/alice-mnist:v1")


def by_name(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_the_operator_makes_a_pod_and_a_headless_service_per_replica_with_tf_config(made):
    tfjob = render.render(render.load([KUBE / "tfjob.yaml"]), "r.example.com/alice-mnist", "v1", "alice")[0]
    pods, services = by_name(made["tfjob.yaml"], "Pod"), by_name(made["tfjob.yaml"], "Service")
    assert sorted(pods) == sorted(services) == ["mnist-tfjob-chief-0", "mnist-tfjob-worker-0", "mnist-tfjob-worker-1"]
    for name, pod in pods.items():
        _, rtype, index = name.rsplit("-", 2)
        labels = pod["metadata"]["labels"]
        assert labels["training.kubeflow.org/job-name"] == "mnist-tfjob"
        assert labels["training.kubeflow.org/replica-type"] == rtype
        assert labels["training.kubeflow.org/replica-index"] == index
        assert (labels.get("training.kubeflow.org/job-role") == "master") == (rtype == "chief")
        assert labels["app"] == "mnist-train"  # the template's own labels stay
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["TF_CONFIG"] == operator_tf_config(tfjob, rtype.capitalize(), int(index))
        assert json.loads(env["TF_CONFIG"])["cluster"]["worker"] == [
            "mnist-tfjob-worker-0.alice.svc:2222", "mnist-tfjob-worker-1.alice.svc:2222"]
        assert pod["spec"]["restartPolicy"] == "Never"  # ExitCode: the operator restarts, not the kubelet
        service = services[name]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [{"name": "tfjob-port", "port": 2222}]
        # The Service selects exactly its pod among the job's.
        selector = service["spec"]["selector"]
        assert [n for n, p in pods.items() if selector.items() <= p["metadata"]["labels"].items()] == [name]


def test_a_tensorflow_container_without_the_port_gets_the_operators_default_and_so_does_its_service():
    tfjob = render.render(render.load([KUBE / "tfjob.yaml"]), "r.example.com/alice-mnist", "v1", "alice")[0]
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        spec["template"] = json.loads(json.dumps(spec["template"]))  # the manifest shares one template
        spec["template"]["spec"]["containers"][0].pop("ports")
    made = cluster_model.tfjob_objects(tfjob)
    for pod in by_name(made, "Pod").values():  # tensorflow_defaults.go setTensorflowDefaultPort
        assert pod["spec"]["containers"][0]["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
    for service in by_name(made, "Service").values():
        assert service["spec"]["ports"] == [{"name": "tfjob-port", "port": 2222}]


@pytest.mark.parametrize("run_policy", [{"suspend": True}, {"managedBy": "kueue.x-k8s.io/multikueue"}])
def test_the_operator_makes_nothing_for_a_suspended_tfjob_or_one_another_controller_manages(run_policy):
    tfjob = render.render(render.load([KUBE / "tfjob.yaml"]), "r.example.com/alice-mnist", "v1", "alice")[0]
    assert cluster_model.tfjob_objects(tfjob)
    tfjob["spec"]["runPolicy"].update(run_policy)
    assert cluster_model.tfjob_objects(tfjob) == []


def test_katibs_chief_gets_the_collector_its_volume_and_the_wrapped_command(made, experiment):
    pods = by_name(made["katib.yaml"], "Pod")
    chief, worker = pods["mnist-sweep-abcdefgh-chief-0"], pods["mnist-sweep-abcdefgh-worker-0"]
    trainer, collector = chief["spec"]["containers"]
    assert collector["name"] == "metrics-collector"
    assert collector["image"] == "ghcr.io/kubeflow/katib/tfevent-metrics-collector:v0.19.0"
    assert collector["args"] == ["-t", "mnist-sweep-abcdefgh", "-m", "eval/accuracy;test/accuracy", "-o-type",
                                 "maximize", "-s-db", "katib-db-manager.kubeflow:6789", "-path",
                                 "/var/log/katib/metrics"]
    mount = {"name": "metrics-volume", "mountPath": "/var/log/katib/metrics"}
    assert mount in trainer["volumeMounts"] and mount in collector["volumeMounts"]
    assert {"name": "metrics-volume", "emptyDir": {}} in chief["spec"]["volumes"]
    assert chief["spec"]["shareProcessNamespace"] is True
    assert trainer["command"] == ["sh", "-c"] and len(trainer["args"]) == 1
    assert trainer["args"][0].startswith("python /app/src/main.py --dataset full")
    assert trainer["args"][0].endswith(" && echo completed > /var/log/katib/metrics/$$$$.pid")
    assert chief["metadata"]["labels"]["katib.kubeflow.org/trial"] == "mnist-sweep-abcdefgh"
    # The workers get the trial's labels and KATIB_TRIAL_NAME, not the collector.
    assert [c["name"] for c in worker["spec"]["containers"]] == ["tensorflow"]
    assert worker["metadata"]["labels"]["katib.kubeflow.org/experiment"] == "mnist-sweep"
    assert "KATIB_TRIAL_NAME" in {e["name"] for e in worker["spec"]["containers"][0]["env"]}


def test_katibs_suggestion_deployment_and_service(made):
    (deployment,) = by_name(made["katib.yaml"], "Deployment").values()
    service = by_name(made["katib.yaml"], "Service")["mnist-sweep-grid"]
    assert deployment["metadata"]["name"] == "mnist-sweep-grid"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["katib.kubeflow.org/suggestion"] == "mnist-sweep" == labels["katib.kubeflow.org/experiment"]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"] == [{"name": "suggestion-api", "port": 6789}]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/kubeflow/katib/suggestion-optuna:v0.19.0"  # grid
    assert container["ports"] == [{"name": "suggestion-api", "containerPort": 6789}]
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "10Mi", "ephemeral-storage": "500Mi"}


def test_katibs_pods_pass_restricted_with_the_workshops_config_and_are_refused_with_the_stock_one(experiment):
    ours = cluster_model.experiment_objects(experiment, cluster_model.katib_config())
    assert pod_security.violations(ours, "restricted") == []
    stock = cluster_model.experiment_objects(experiment, cluster_model.STANDALONE_CONFIG)
    refused = pod_security.violations(stock, "restricted")
    assert len(refused) == 2
    chief, suggestion = refused
    assert chief.startswith("Pod/mnist-sweep-abcdefgh-chief-0:") and 'container "metrics-collector"' in chief
    assert "allowPrivilegeEscalation != false" in chief
    assert suggestion.startswith("Deployment/mnist-sweep-grid:") and "runAsNonRoot != true" in suggestion
    assert "seccompProfile" in suggestion


@pytest.mark.parametrize("algorithm", ["grid", "random", "bayesianoptimization"])
def test_every_algorithm_the_values_file_allows_runs_as_a_user_under_restricted(experiment, algorithm):
    doc = json.loads(json.dumps(experiment))
    doc["spec"]["algorithm"]["algorithmName"] = algorithm
    deployment, _ = cluster_model.suggestion_objects(doc, cluster_model.katib_config())
    assert pod_security.violations([deployment], "restricted") == []
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["runAsUser"] > 0  # the images have no USER


def test_the_workshops_katib_config_trims_trial_resources_and_injects_security_contexts():
    config = cluster_model.katib_config()
    assert config["init"]["controller"]["injectSecurityContext"] is True
    assert config["init"]["controller"]["trialResources"] == ["TFJob.v1.kubeflow.org"]
    assert "earlyStoppings" not in config["runtime"]
    stock = cluster_model.STANDALONE_CONFIG["runtime"]
    assert config["runtime"]["metricsCollectors"] == stock["metricsCollectors"]  # same images, same limits
    assert [s["image"] for s in config["runtime"]["suggestions"]] == [s["image"] for s in stock["suggestions"]]


def test_early_stopping_cannot_run_under_restricted(experiment):
    doc = json.loads(json.dumps(experiment))
    doc["spec"]["earlyStopping"] = {"algorithmName": "medianstop"}
    # Even with the workshop's katib-config and medianstop added to it: the suggestion container passes, the
    # early-stopping one, which takes no securityContext from katib-config, does not.
    config = cluster_model.katib_config()
    config["runtime"]["earlyStoppings"] = cluster_model.STANDALONE_CONFIG["runtime"]["earlyStoppings"]
    deployment, _ = cluster_model.suggestion_objects(doc, config)
    (refused,) = pod_security.violations([deployment], "restricted")
    assert 'container "early-stopping"' in refused and '"suggestion"' not in refused


def test_the_cronjobs_job_and_serving_at_the_autoscalers_maximum(made):
    (job,) = made["retrain-cronjob.yaml"]
    cronjob = render.render(render.load([KUBE / "retrain-cronjob.yaml"]), "r.example.com/alice-mnist", "v1",
                            "alice")[0]
    assert job["kind"] == "Job" and job["metadata"]["name"].startswith("mnist-retrain-")
    assert job["spec"] == cronjob["spec"]["jobTemplate"]["spec"]
    (serving,) = made["serving-autoscale.yaml"]
    hpa = next(d for d in yaml.safe_load_all((KUBE / "serving-autoscale.yaml").read_text())
               if d and d["kind"] == "HorizontalPodAutoscaler")
    assert serving["spec"]["replicas"] == hpa["spec"]["maxReplicas"] == 4


def test_every_object_the_cluster_makes_passes_the_checks_of_the_objects_we_write(made):
    for name, docs in made.items():
        for doc in docs:
            for version in VERSIONS:
                validate(doc, version)
            assert doc["metadata"]["namespace"] == "alice", name
        assert pod_security.violations(docs, "restricted") == [], name


def test_make_render_writes_what_the_cluster_makes_to_a_directory_of_its_own(tmp_path):
    digest = "sha256:" + "5e" * 32
    (tmp_path / "record").mkdir()
    record = pushed_record(tmp_path / "record", f"r.example.com/alice-mnist:v1@{digest}")
    result = make("render", f"OUT={tmp_path / 'out'}", "NAMESPACE=alice", "IMAGE=r.example.com/alice-mnist", "TAG=v1",
                  f"PUSHED_IMAGE={record}")
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out" / "cluster-made"
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(cluster_model.cluster_made("alice"))
    for path in out.glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# Made by the cluster, not applied by anyone")
        docs = [d for d in yaml.safe_load_all(text) if d]
        # The trainer pulled by the digest `make push` recorded, as every object the attendee applies.
        assert docs == cluster_model.cluster_made("alice", "r.example.com/alice-mnist", "v1", digest=digest)[path.name]
        pulls = re.findall(r"r\.example\.com/alice-mnist[^\s\"',]*", text)
        assert set(pulls) <= {f"r.example.com/alice-mnist:v1@{digest}"}, (path.name, pulls)
        assert pod_security.violations(docs, "restricted") == [], path.name
