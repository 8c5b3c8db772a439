"""The Katib Experiment on the cluster, through kubectl: create it, follow it, rank its trials, delete it.

As for the templated sweep: an Experiment of the same name still running stops
it (one line); a finished one is deleted first (with its trials and their
TFJobs; their files stay on the volume), since Katib edits nothing but the
trial counts of an existing Experiment; the namespace's quota must hold
parallelTrialCount trials beside what runs, with what Katib adds (a metrics
collector beside each trial's chief, the suggestion pod). Results come from
the Trials (their parameter assignments and observed metrics), which the
attendee may read; the best is Katib's own choice, recomputed by its rule
(katib_metrics) and checked against the Experiment's currentOptimalTrial.
"""
import math
import os
import tempfile
import time
from pathlib import Path

import yaml

from tfk8s import versions
from tfk8s.cli import UserError
from tfk8s.kube import cluster_model, katib_check, kubectl
from tfk8s.kube.resources import pod_usage, total, workload_pods
from tfk8s.sweep import cluster, katib_metrics, results
from tfk8s.sweep.katib import OBJECTIVE, TEST_METRIC
from tfk8s.sweep.trials import NFS

EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"  # on every Trial of an Experiment
DONE = ("Succeeded", "Failed")
# Beyond the trials' own deadlines: image pulls (the trainer's, the collector's, the suggestion's) and the
# suggestion pod's start before the first trial.
DEADLINE_MARGIN = 600
DEADLINE_SCALE = "KATIB_DEADLINE_SCALE"   # environment: a factor on the deadline (tests shrink it)
TRIAL_STATUS = {"Succeeded": results.FINISHED, "EarlyStopped": results.EARLY_STOPPED, "Failed": results.FAILED,
                "Killed": results.FAILED, "MetricsUnavailable": results.FAILED, "Running": results.UNFINISHED}


def conditions(obj):
    return [c.get("type") for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def pods(doc):
    """[Usage] of every pod the Experiment runs at its busiest, as the cluster makes them (cluster_model: the
    operator's pods of parallelTrialCount trials, each Chief with Katib's metrics collector, and the suggestion
    pod), under the workshop's katib-config; and parallelTrialCount. The capacity plan counts the same pods."""
    spec = katib_check.defaults(doc)["spec"]
    made = cluster_model.experiment_objects(doc, cluster_model.katib_config())
    trial = [pod_usage(d["spec"], d["metadata"]["name"]) for d in made if d["kind"] == "Pod"]
    suggestion = [u for d in made if d["kind"] == "Deployment" for _, u in workload_pods(d)]
    parallel = spec["parallelTrialCount"]
    return trial * parallel + suggestion, parallel


def usage(doc):
    """What the Experiment asks of the quota at its busiest (a Usage), and parallelTrialCount."""
    found, parallel = pods(doc)
    return total(found), parallel


def deadline(doc):
    """Seconds the Experiment may take: its trials in waves of parallelTrialCount, each wave at most a trial's
    activeDeadlineSeconds, plus a margin for image pulls and the suggestion's start (times KATIB_DEADLINE_SCALE)."""
    spec = katib_check.defaults(doc)["spec"]
    run_policy = (spec["trialTemplate"]["trialSpec"].get("spec") or {}).get("runPolicy") or {}
    trial = run_policy.get("activeDeadlineSeconds")
    if trial is None:
        raise UserError("the Experiment's trial has no runPolicy.activeDeadlineSeconds: nothing bounds it")
    waves = math.ceil(spec["maxTrialCount"] / spec["parallelTrialCount"])
    try:
        scale = float(os.environ.get(DEADLINE_SCALE, "1"))
    except ValueError:
        raise UserError(f"{DEADLINE_SCALE}={os.environ[DEADLINE_SCALE]!r} is not a number") from None
    return (waves * trial + DEADLINE_MARGIN) * scale


def condition_lines(obj, what):
    """One line per condition of a Katib object: type=status reason: message."""
    found = (obj.get("status") or {}).get("conditions") or []
    if not found:
        return [f"  {what}: no conditions yet"]
    return [f"  {what}: {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}".rstrip(": ")
            for c in found]


def explain(name, namespace):
    """Print the Suggestion's and the trials' conditions: where a stuck or failed Experiment is stuck."""
    print(f"Experiment {name}: what Katib says", flush=True)
    suggestion = kubectl.get_optional("suggestion", name, "-n", namespace)
    if suggestion is None:
        print(f"  Suggestion {name}: none (Katib's controller has not made it: kubectl -n kubeflow logs "
              "deployment/katib-controller)")
    else:
        for line in condition_lines(suggestion, f"Suggestion {name}"):
            print(line)
    trials = kubectl.items("trials", "-n", namespace, "-l", f"{EXPERIMENT_LABEL}={name}")
    if not trials:
        print("  trials: none yet")
    for trial in trials:
        print(condition_lines(trial, f"Trial {trial['metadata']['name']}")[-1])


def get_experiment(name, namespace):
    return kubectl.get_optional("experiment", name, "-n", namespace)


def submit(experiment, namespace, poll):
    """Create the Experiment (after the checks above) and follow it to its end; return it as it ended."""
    doc, name = experiment.doc, experiment.doc["metadata"]["name"]
    old = get_experiment(name, namespace)
    if old is not None and not set(conditions(old)) & set(DONE):
        raise UserError(f"Experiment {name} is still running in namespace {namespace}: follow it (kubectl get "
                        f"experiment,trials -n {namespace}) or stop it (make katib-clean)")
    if (doc.get("spec") or {}).get("earlyStopping"):
        raise UserError("katib.earlyStopping cannot run in a restricted namespace: Katib v0.19 builds the "
                        "early-stopping container with no securityContext, whatever katib-config says; set "
                        "katib.earlyStopping: false in the values file")
    need, parallel = usage(doc)
    cluster.require_quota(namespace, need, parallel, hint="or lower katib.parallelTrialCount in the values file"
                          if parallel > 1 else "")
    if old is not None:
        kubectl.run("delete", "experiment", name, "-n", namespace, "--wait=true")
        print(f"deleted the finished Experiment {name} (its trials and their TFJobs); their files stay on the volume",
              flush=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as out:
        path = Path(out) / f"{name}-experiment.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
        print(kubectl.run("create", "-f", path).strip(), flush=True)
    print(f"follow it: kubectl get experiment,trials -n {namespace} -l {EXPERIMENT_LABEL}={name}   "
          f"(polling every {poll:g}s; Ctrl-C stops following, Katib goes on)", flush=True)
    return follow(name, namespace, poll, deadline(doc))


def follow(name, namespace, poll, limit):
    """Poll the Experiment until it succeeds or fails, printing its trial counts when they change; past `limit`
    seconds, or when it fails, print the Suggestion's and trials' conditions and stop with one error line."""
    said = None
    ends = time.monotonic() + limit
    while True:
        current = get_experiment(name, namespace)
        if current is None:
            raise UserError(f"Experiment {name} disappeared from namespace {namespace} (deleted?)")
        status = current.get("status") or {}
        counts = ", ".join(f"{status.get(key, 0)} {word}" for key, word in (
            ("trialsRunning", "running"), ("trialsSucceeded", "succeeded"), ("trialsEarlyStopped", "early-stopped"),
            ("trialsFailed", "failed"), ("trialMetricsUnavailable", "without metrics")))
        line = f"Experiment {name}: {' '.join(conditions(current)[-1:]) or 'Created'}; trials: {counts}"
        if line != said:
            print(line, flush=True)
            said = line
        done = set(conditions(current)) & set(DONE)
        if done:
            if "Failed" in done:
                reason = next((c.get("message", "") for c in status.get("conditions", [])
                               if c.get("type") == "Failed"), "")
                explain(name, namespace)
                raise UserError(f"Experiment {name} failed: {reason} (kubectl describe experiment {name} -n "
                                f"{namespace}; kubectl get suggestion {name} -n {namespace} -o yaml)")
            return current
        if time.monotonic() >= ends:
            explain(name, namespace)
            raise UserError(f"Experiment {name} did not finish within {limit:.0f}s (its trials' deadlines and "
                            f"{DEADLINE_MARGIN:.0f}s for image pulls): Katib goes on; look at the conditions above "
                            f"(kubectl describe suggestion {name} -n {namespace}) or stop it (make katib-clean)")
        time.sleep(min(poll, max(ends - time.monotonic(), 0)))


def number_or_text(text):
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def to_results(doc, entries, volume=None):
    """results.Result per trial entry {name, assignments, metrics (observation), status}, ranked, with the name of
    Katib's best (its own rule, katib_metrics.best, over the entries in their order). With `volume`, the local
    directory standing for the cluster's volume, each trial's newest export version is looked up there."""
    spec = katib_check.defaults(doc)["spec"]
    name = doc["metadata"]["name"]
    strategies = spec["objective"]["metricStrategies"]
    found = []
    for entry in entries:
        trial = entry["name"]
        result = results.Result(trial, trial, {k: number_or_text(v) for k, v in entry["assignments"].items()},
                                f"{NFS}/runs/katib/{name}/{trial}", f"{NFS}/exports/katib/{name}/{trial}")
        result.status = entry["status"]
        value = katib_metrics.objective_value(entry["metrics"], strategies, OBJECTIVE)
        result.validation = katib_metrics.number(value)
        result.test = katib_metrics.number(katib_metrics.objective_value(entry["metrics"], strategies, TEST_METRIC))
        result.notes["objective"] = value
        if volume is not None:
            result.export = versions.newest(Path(volume) / Path(result.export_dir).relative_to(NFS))
        found.append(result)
    chosen = katib_metrics.best([r.notes["objective"] for r in found], spec["objective"]["type"] == "maximize")
    return results.rank(found), (found[chosen].id if chosen >= 0 else None)


def cluster_entries(trials):
    """Trial objects (kubectl get trials -o json) as entries for to_results."""
    entries = []
    for trial in trials:
        status = next((TRIAL_STATUS[c] for c in reversed(conditions(trial)) if c in TRIAL_STATUS),
                      results.UNFINISHED)
        metrics = {m["name"]: m for m in ((trial.get("status") or {}).get("observation") or {}).get("metrics") or []}
        assignments = {a["name"]: a["value"] for a in (trial.get("spec") or {}).get("parameterAssignments") or []}
        entries.append({"name": trial["metadata"]["name"], "assignments": assignments, "metrics": metrics,
                        "status": status})
    return entries


def report(doc, entries, out, heading, volume=None, katib_says=None):
    """Print the ranking, the best trial by Katib's rule (and Katib's own word for it), the export to serve."""
    if not entries:
        raise UserError(f"{heading}: no trials yet")
    ranked, chosen = to_results(doc, entries, volume)
    best = results.report(ranked, doc["metadata"]["name"], heading, out, local=volume is not None)
    if chosen is not None:
        agree = "" if katib_says in (None, chosen) else f"; Katib's status names {katib_says}: look at both"
        print(f"Katib's choice (the highest {OBJECTIVE}, its `latest` value): {chosen}{agree}")
        if best is not None and best.id != chosen:
            print(f"note: {chosen} and {best.id} tie or differ in status; Katib keeps the earlier trial on a tie")
    return ranked


def show_results(experiment, namespace, out):
    name = experiment.doc["metadata"]["name"]
    current = get_experiment(name, namespace)
    if current is None:
        raise UserError(f"no Experiment {name} in namespace {namespace}: run make katib-sweep first")
    trials = kubectl.items("trials", "-n", namespace, "-l", f"{EXPERIMENT_LABEL}={name}")
    katib_says = ((current.get("status") or {}).get("currentOptimalTrial") or {}).get("bestTrialName")
    report(current, cluster_entries(trials), out, f"Katib Experiment {name} in namespace {namespace}",
           katib_says=katib_says)


def delete(name, namespace):
    text = kubectl.run("delete", "experiment", name, "-n", namespace, "--ignore-not-found").strip()
    print(text or f"no Experiment {name} in namespace {namespace}")


def write_experiment(experiment, out):
    """The Experiment as a file (in a directory holding nothing else), for review or `kubectl create -f`."""
    from tfk8s.sweep import trials as planning
    out = planning.fresh_output_dir(out)
    name = experiment.doc["metadata"]["name"]
    path = planning.write_yaml(out / f"{name}-experiment.yaml", f"Katib Experiment {name} ({experiment.algorithm})",
                               experiment.doc)
    return path


def print_best(experiment):
    """The best trial as Katib's status names it: its parameters, its metrics, the export to serve."""
    name = experiment["metadata"]["name"]
    optimal = (experiment.get("status") or {}).get("currentOptimalTrial") or {}
    best = optimal.get("bestTrialName")
    if not best:
        print(f"best: none, no trial of {name} reported {OBJECTIVE}")
        return None
    params = " ".join(f"{a['name']}={a['value']}" for a in optimal.get("parameterAssignments") or [])
    metrics = {m["name"]: m for m in (optimal.get("observation") or {}).get("metrics") or []}
    latest = lambda metric: (metrics.get(metric) or {}).get("latest", katib_metrics.UNAVAILABLE)
    shown = lambda text: f"{float(text):.2%}" if katib_metrics.number(text) is not None else text
    print(f"best: {best} ({params}): validation accuracy {shown(latest(OBJECTIVE))} ({OBJECTIVE}, what it was "
          f"chosen on); test accuracy {shown(latest(TEST_METRIC))} (reported, not used to choose)")
    print(f"serve: TensorFlow Serving --model_base_path={NFS}/exports/katib/{name}/{best}, which serves its newest "
          "version")
    return best
