"""Beyond one model: the nightly retrain, the batch scoring Job, the autoscaler and the model config, as manifests.

tests/test_manifests.py already validates every file in kube/ strictly (1.30
and the newest schema) and checks the workshop's rules (pinned images,
requests and limits, non-root, the shared claim, labels). Here: what these
manifests must do besides, down to running their containers' commands.
"""
import re
import subprocess
import sys

import pytest
import yaml

from support import (
    KUBE,
    SRC,
    attendee_objects,
    containers,
    doc,
    expand,
    local_run,
    pod_templates,
    pods_of,
    quantity,
    rendered,
    requested,
)
from tfk8s import cli
from tfk8s.serving import model_config
from tfk8s.trainer import flags

TRAINER = "trainer"


# ---------------------------------------------------------------- the nightly retrain

def cronjob_pod():
    cronjob = doc("retrain-cronjob.yaml", "CronJob")
    return cronjob, cronjob["spec"]["jobTemplate"]["spec"]["template"]


def test_retrain_cronjob_never_overlaps_skips_late_runs_and_keeps_a_bounded_history():
    cronjob, _ = cronjob_pod()
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 3600
    assert 0 < spec["successfulJobsHistoryLimit"] <= 5 and 0 < spec["failedJobsHistoryLimit"] <= 5
    assert len(spec["schedule"].split()) == 5 and spec["timeZone"] == "Etc/UTC"


def test_retrain_pod_is_the_training_job_pod_except_where_its_runs_go():
    """One source of truth: kube/job.yaml's pod, with --model_dir per run and the env var that names it."""
    _, retrain = cronjob_pod()
    (job_template,) = [t for _, t in pod_templates(doc("job.yaml", "Job"))]
    trainer = next(c for c in retrain["spec"]["containers"] if c["name"] == TRAINER)
    original = next(c for c in job_template["spec"]["containers"] if c["name"] == TRAINER)
    strip = lambda c: {k: v for k, v in c.items() if k not in ("args", "env")}
    assert strip(trainer) == strip(original)
    assert {k: v for k, v in retrain["spec"].items() if k != "containers"} == \
        {k: v for k, v in job_template["spec"].items() if k != "containers"}
    assert {e["name"] for e in original["env"]} <= {e["name"] for e in trainer["env"]}
    args = trainer["args"]
    assert args[args.index("--export_dir") + 1] == "/mnt/nfs/exports/mnist"  # where TF Serving looks
    assert args[args.index("--dataset") + 1] == "full"


def test_each_retrain_gets_its_own_model_dir_and_a_retried_pod_keeps_it():
    """A shared --model_dir would resume the finished run of the night before and export it again."""
    _, retrain = cronjob_pod()
    trainer = retrain["spec"]["containers"][0]
    (job_name,) = [e for e in trainer["env"] if e["name"] == "JOB_NAME"]
    assert job_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"

    def model_dir(job):
        args = expand(trainer["args"], {"JOB_NAME": job})
        return args[args.index("--model_dir") + 1]

    nightly, manual = model_dir("mnist-retrain-29475180"), model_dir("mnist-retrain-manual-1767225600")
    assert nightly == "/mnt/nfs/runs/retrain/mnist-retrain-29475180"
    assert manual != nightly and manual.startswith("/mnt/nfs/runs/retrain/")
    assert model_dir("mnist-retrain-29475180") == nightly  # the same Job's replacement pod resumes there
    parsed = flags.parse_args(expand(trainer["args"], {"JOB_NAME": "j"}))  # the trainer's own parser accepts them
    assert parsed.model_dir == "/mnt/nfs/runs/retrain/j" and parsed.dataset == "full"


@pytest.mark.slow
def test_retrain_command_trains_and_exports_a_new_version_beside_the_served_one(tmp_path, trained_model):
    """Run the CronJob's container command (a few steps, mini data) where an export already is."""
    import shutil
    nfs = tmp_path / "nfs"
    served = nfs / "exports" / "mnist" / trained_model["version"].name
    shutil.copytree(trained_model["version"], served)
    _, retrain = cronjob_pod()
    # A few steps on the shipped mini data (the full set is in the image, not here): the last flag wins.
    result = local_run(retrain["spec"]["containers"][0], nfs, {"JOB_NAME": "mnist-retrain-manual-1"},
                       ["--dataset", "mini", "--steps", "20", "--eval_every", "20", "--checkpoint_every", "20"])
    assert result.returncode == 0, result.stdout + result.stderr
    exported = re.search(r"^exported (\S+)$", result.stdout, re.M).group(1)
    versions = sorted(int(p.name) for p in (nfs / "exports" / "mnist").iterdir() if p.name.isdigit())
    assert len(versions) == 2 and exported == str(nfs / "exports" / "mnist" / str(versions[-1]))
    assert (nfs / "runs" / "retrain" / "mnist-retrain-manual-1" / "eval").is_dir()  # its own TensorBoard run


# ---------------------------------------------------------------- the batch scoring Job

def test_batch_job_fails_at_once_on_the_exit_codes_that_mean_a_mistake():
    job = doc("batch-predict.yaml", "Job")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": "predict", "operator": "In",
                                   "values": [cli.EXIT_FAILURE, cli.EXIT_USAGE]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_batch_job_scores_the_shared_folder_and_its_log_container_prints_that_csv():
    (template,) = [t for _, t in pod_templates(doc("batch-predict.yaml", "Job"))]
    (predict,) = template["spec"]["initContainers"]
    (csv,) = template["spec"]["containers"]
    args = predict["args"]
    assert predict["command"] == ["python", "/app/src/batch_predict.py"]
    assert args[args.index("--model_base_path") + 1] == "/mnt/nfs/exports/mnist"
    assert args[args.index("--input") + 1] == "/mnt/nfs/batch/in"
    assert csv["command"] == ["cat", args[args.index("--output") + 1]] == ["cat", "/mnt/nfs/batch/out/predictions.csv"]
    from tfk8s.serving import batch
    batch.parse_args(args)  # batch_predict's own parser accepts them


# ---------------------------------------------------------------- autoscaling

def serving_deployment():
    return doc("serving.yaml", "Deployment")


def test_autoscaler_scales_the_serving_deployment_on_cpu_between_one_and_four_pods():
    hpa = doc("serving-autoscale.yaml", "HorizontalPodAutoscaler")
    deployment = serving_deployment()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment",
                                                                      deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 1 < hpa["spec"]["maxReplicas"] <= 4
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    # Utilisation is use / request: every serving container states a CPU request.
    for _, c in containers(deployment["spec"]["template"]):
        assert quantity(c["resources"]["requests"]["cpu"]) > 0, c["name"]


def test_serving_deployment_leaves_the_replica_count_to_the_autoscaler():
    """A `replicas` in the manifest would scale the Deployment back on every apply."""
    assert "replicas" not in serving_deployment()["spec"]


def test_disruption_budget_covers_the_serving_pods_without_blocking_a_drain_of_the_last_one():
    pdb = doc("serving-autoscale.yaml", "PodDisruptionBudget")
    labels = serving_deployment()["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_quota_fits_the_autoscaler_at_its_maximum_beside_the_other_always_on_pods_and_a_retrain():
    hard = next(d for d in attendee_objects() if d["kind"] == "ResourceQuota")["spec"]["hard"]
    serving_deployment()
    most = doc("serving-autoscale.yaml", "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    for job in ("retrain-cronjob.yaml", "batch-predict.yaml"):
        pods = pods_of("tensorboard.yaml") + pods_of("serving.yaml", replicas=most) + pods_of(job)
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                total = requested(pods, bound, resource)
                assert total <= quantity(hard[f"{bound}.{resource}"]), f"{job} {bound}.{resource}: {total:g} needed"


# ---------------------------------------------------------------- the model config

def test_model_config_map_holds_a_config_tensorflow_serving_parses_for_the_served_exports():
    configmap, config = model_config.read_configmap((KUBE / "model-config.yaml").read_text())
    m = model_config.model(config, "mnist")
    assert m.base_path == "/mnt/nfs/exports/mnist" and m.model_platform == "tensorflow"
    assert m.model_version_policy.latest.num_versions == 2 and not m.version_labels
    assert configmap["metadata"]["name"] == "mnist-model-config"


def test_rendered_model_config_map_round_trips_through_the_promote_script():
    """What `make canary` pipes: a ConfigMap in, a ConfigMap kubectl applies out, the same object."""
    (configmap,) = rendered([KUBE / "model-config.yaml"])
    live = {**configmap, "metadata": {**configmap["metadata"], "uid": "1", "resourceVersion": "42",
                                      "managedFields": [{}], "creationTimestamp": "2026-01-01T00:00:00Z"}}
    result = subprocess.run([sys.executable, str(SRC / "model_config.py"), "canary", "--configmap", "-",
                             "--stable", "1", "--canary", "2"], input=yaml.safe_dump(live),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = yaml.safe_load(result.stdout)
    assert out["metadata"] == {**configmap["metadata"], "resourceVersion": "42"}  # kept: a concurrent change fails
    m = model_config.model(model_config.parse(out["data"]["models.config"]))
    assert dict(m.version_labels) == {"stable": 1, "canary": 2}
    assert "ConfigMap mnist-model-config: stable -> 1, canary -> 2" in result.stderr
