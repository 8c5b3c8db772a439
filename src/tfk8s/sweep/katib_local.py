"""The Katib Experiment's trials on this machine: the grid's combinations, each trial's TFJob as Katib makes it.

Each trial is named as Katib names it (<experiment>-<8 characters>) and its TFJob
is the Experiment's trial template with the trial's values put in as Katib's
manifest generator puts them (katib_check.run_spec). What Katib's pod webhook
does to the chief's pod is done here too where it matters: an emptyDir
(`metrics-volume`) at the collector's path in the trainer's container, so the
trainer writes its metrics where the collector looks and nowhere else. Then
src/tfjob_local.py runs each TFJob, and the trials are ranked from what
Katib's collector would read (katib_metrics), by Katib's rule.

Not done here: the collector's sidecar and its wrapping of the trainer's
command (`sh -c "... && echo completed > <dir>/$$.pid"`), and any algorithm but
the grid (random and bayesianoptimization run in Katib, on the cluster).
"""
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tfk8s.cli import UsageError, UserError
from tfk8s.kube import katib_check
from tfk8s.sweep import katib_metrics, local, results
from tfk8s.sweep import trials as planning
from tfk8s.sweep.katib import OBJECTIVE, TEST_METRIC

TRIAL_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand, which Katib names trials with
METRICS_VOLUME = "metrics-volume"               # the volume Katib's pod webhook adds


@dataclass
class KatibTrial:
    id: str
    job: str
    params: dict = field(default_factory=dict)

    def describe(self):
        return " ".join(f"{k}={v}" for k, v in self.params.items())


def trial_name(experiment):
    return f"{experiment}-{''.join(secrets.choice(TRIAL_ALPHABET) for _ in range(8))}"


def primary_replica(job, labels):
    """The replica type whose pods Katib's primaryPodLabels select (job-role master: the Chief, else worker 0)."""
    specs = job["spec"]["tfReplicaSpecs"]
    if labels.get("training.kubeflow.org/job-role") == "master":
        return next((t for t in ("Chief", "Master") if t in specs), "Worker")
    wanted = labels.get("training.kubeflow.org/replica-type", "chief").lower()
    return next(t for t in specs if t.lower() == wanted)


def collector_mount(spec):
    """Where Katib's pod webhook mounts the collector's emptyDir: the directory, or a file's directory."""
    files = spec["metricsCollectorSpec"]["source"]["fileSystemPath"]
    return files["path"] if files["kind"] == "Directory" else str(Path(files["path"]).parent)


def with_collector_volume(job, spec):
    """The TFJob with the emptyDir Katib's pod webhook adds to the primary pod's primary container."""
    replica = job["spec"]["tfReplicaSpecs"][primary_replica(job, spec["trialTemplate"]["primaryPodLabels"])]
    pod = replica["template"]["spec"]
    pod.setdefault("volumes", []).append({"name": METRICS_VOLUME, "emptyDir": {}})
    container = next(c for c in pod["containers"] if c["name"] == spec["trialTemplate"]["primaryContainerName"])
    container.setdefault("volumeMounts", []).append({"name": METRICS_VOLUME, "mountPath": collector_mount(spec)})
    return job


def collected(spec, collector_dir):
    """The logs Katib's collector would report for a trial whose collector directory is `collector_dir`."""
    names = [spec["objective"]["objectiveMetricName"], *spec["objective"].get("additionalMetricNames", [])]
    files = spec["metricsCollectorSpec"]["source"]["fileSystemPath"]
    if spec["metricsCollectorSpec"]["collector"]["kind"] == "TensorFlowEvent":
        return katib_metrics.tfevent_logs(collector_dir, names)
    return katib_metrics.json_logs(Path(collector_dir) / Path(files["path"]).name, names)


def run(experiment, namespace, root, parallel, trainer_args):
    """Run the Experiment's grid here, at most maxTrialCount trials, `parallel` at a time; rank them."""
    doc = katib_check.defaults(experiment.doc)
    spec, name = doc["spec"], doc["metadata"]["name"]
    try:
        combinations = katib_check.grid_combinations(doc)
    except (ValueError, KeyError) as err:
        raise UsageError(f"{experiment.path}: the local run tries the grid, which needs a step for every range: "
                         f"{err}") from None
    if experiment.algorithm != "grid":
        print(f"here: the grid of the same parameters (on the cluster Katib runs {experiment.algorithm})")
    combinations = combinations[:spec["maxTrialCount"]]
    trials = [KatibTrial(trial_name(name), "", assignment) for assignment in combinations]
    jobs = []
    for trial in trials:
        trial.job = trial.id
        jobs.append(with_collector_volume(katib_check.run_spec(doc, trial.id, namespace, trial.params), spec))
    # As the plain local sweep does: the run claims its id (mkdir is atomic), and with it its own logs/<run>/
    # and manifests/<run>/, so that two runs in one --root never write over each other's TFJobs.
    run_id = planning.claim_run(Path(root) / "logs")
    manifests = planning.fresh_output_dir(Path(root) / "manifests" / run_id, "--root's manifests/<run>/")
    paths = {t.id: planning.write_yaml(manifests / f"{t.id}.yaml", f"Trial {t.id} of Katib Experiment {name} "
                                       f"(run {run_id}): {t.describe()}", job) for t, job in zip(trials, jobs)}
    print(f"Experiment {name}, run {run_id}: {len(trials)} trials of the grid, {parallel} at a time; "
          f"metric {OBJECTIVE} (test accuracy as {TEST_METRIC}), read as Katib's "
          f"{spec['metricsCollectorSpec']['collector']['kind']} collector reads it", flush=True)
    failure = None
    try:
        local.run_local(trials, paths, root, Path(root) / "logs" / run_id, parallel, trainer_args)
    except UserError as err:  # some trials failed: rank the others, then say so
        failure = err
    entries = []
    for trial, job in zip(trials, jobs):
        primary = primary_replica(job, spec["trialTemplate"]["primaryPodLabels"]).lower()
        with local.quiet_stderr():  # TensorBoard's reader loads TensorFlow, which talks about GPUs
            logs = collected(spec, Path(root) / "pods" / f"{trial.id}-{primary}-0" / METRICS_VOLUME)
        observation = katib_metrics.observation(logs, spec["objective"]["metricStrategies"])
        value = katib_metrics.objective_value(observation, spec["objective"]["metricStrategies"], OBJECTIVE)
        entries.append({"name": trial.id, "assignments": trial.params, "metrics": observation,
                        "status": results.FAILED if value == katib_metrics.UNAVAILABLE else results.FINISHED})
    return entries, failure
