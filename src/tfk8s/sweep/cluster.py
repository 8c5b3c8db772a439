"""A sweep on the cluster, through kubectl: the namespace's quota first, then the trials, N at a time.

Before anything is created: a trial of the same sweep still running stops the
sweep (one line naming it); the namespace's ResourceQuotas must hold the
trials that run at once beside everything already running (otherwise one line
names what to stop first); then the finished trials of an earlier run are
deleted, so that `kubectl create` makes every TFJob anew, with labels that
describe what runs. A trial starts only when the quota holds all of its pods:
a TFJob whose Chief fits but whose Workers do not would wait half-created.
"""
import shutil
import time

from tfk8s.cli import UserError
from tfk8s.kube import headroom, kubectl
from tfk8s.kube.resources import total, workload_pods

# The types of a TFJob's conditions that are true now, e.g. "Created Running" or "Created Succeeded".
JSONPATH = '{.status.conditions[?(@.status=="True")].type}'
DONE = ("Succeeded", "Failed")


def require_kubectl():
    """The cluster modes talk to the cluster through kubectl; without it, say what else there is."""
    if shutil.which("kubectl") is None:
        raise UserError("kubectl is not on PATH: install it and point it at your cluster, or preview with "
                        "--dry_run --output_dir DIR, or run the sweep here with --local")


def trial_usage(doc):
    """What one trial's TFJob asks of a quota: every replica's pods."""
    return total(usage for _, usage in workload_pods(doc))


def require_quota(namespace, needed, count, freed_jobs=(), hint=""):
    """One line naming what to stop first when the namespace's quota cannot hold `count` trials now."""
    asking = "a trial needs" if count == 1 else f"{count} trials need"
    headroom.require(namespace, needed, asking, freed_jobs=freed_jobs, hint=f", {hint}" if hint else "")


# ---------------------------------------------------------------- earlier runs of the sweep

def conditions(doc):
    return {c.get("type") for c in doc.get("status", {}).get("conditions", []) if c.get("status") == "True"}


def clear_earlier_run(sweep, namespace):
    """The TFJobs of an earlier run of `sweep`: refuse if one still runs, else delete them; their names."""
    items = kubectl.items("tfjobs", "-n", namespace, "-l", f"sweep={sweep}")
    running = sorted(d["metadata"]["name"] for d in items if not conditions(d) & set(DONE))
    if running:
        raise UserError(f"sweep {sweep} still has trials running in namespace {namespace}: {', '.join(running)}; "
                        f"wait for them (kubectl get tfjobs -n {namespace} -l sweep={sweep}) or stop them "
                        f"(templated/run.sh --delete --name {sweep} --namespace {namespace})")
    return sorted(d["metadata"]["name"] for d in items)


# ---------------------------------------------------------------- running trials, N at a time

def at_most(parallel, trials, start, outcome, interval, ready=lambda trial, running: True):
    """Start `parallel` trials, then the next each time one finishes; return {trial id: outcome}.

    `start(trial)` launches a trial; `outcome(trial)` is None while it runs,
    then a word such as "Succeeded" or "Failed"; `ready(trial, running)` says
    whether the next trial may start now (False: wait for a running one).
    """
    waiting, running, outcomes, began = list(trials), [], {}, {}
    while waiting or running:
        while waiting and len(running) < parallel and ready(waiting[0], running):
            trial = waiting.pop(0)
            start(trial)
            running.append(trial)
            began[trial.id] = time.time()
        finished = [(trial, result) for trial in running if (result := outcome(trial))]
        for trial, result in finished:
            running.remove(trial)
            outcomes[trial.id] = result
            print(f"{trial.job}: {result} after {time.time() - began[trial.id]:.0f}s ({trial.describe()}); "
                  f"{len(outcomes)} of {len(trials)} done", flush=True)
        if not finished and (waiting or running):
            time.sleep(interval)
    return outcomes


def report(outcomes, trials, where):
    failed = [t.job for t in trials if outcomes.get(t.id) != "Succeeded"]
    if failed:
        raise UserError(f"{len(failed)} of {len(trials)} trials did not succeed: {', '.join(failed)} ({where})")


def tfjob_outcome(trial, namespace):
    """'Succeeded' or 'Failed' once the TFJob's condition says so; 'Deleted' if it is gone; else None."""
    result = kubectl.call("get", "tfjob", trial.job, "-n", namespace, "-o", f"jsonpath={JSONPATH}")
    if result.returncode:
        return "Deleted" if "NotFound" in result.stderr else None  # anything else: try again next poll
    found = result.stdout.split()
    return next((c for c in DONE if c in found), None)


def submit(sweep, run_id, trials, docs, paths, namespace, parallel, interval):
    """Check, clear the earlier run, then create every trial, or `parallel` at a time as earlier ones finish."""
    at_once = min(parallel or len(trials), len(trials))
    need = trial_usage(docs[0])  # every trial is the same TFJob but for its flags
    earlier = clear_earlier_run(sweep, namespace)
    require_quota(namespace, total([need] * at_once), at_once, freed_jobs=earlier,
                  hint=f"or run fewer at once (--parallel {at_once - 1}, or make sweep SWEEP_PARALLEL={at_once - 1})"
                  if at_once > 1 else "")
    if earlier:
        kubectl.run("delete", "tfjobs", "-n", namespace, "-l", f"sweep={sweep}", "--wait=true")
        print(f"deleted the {len(earlier)} finished trial(s) of the sweep's earlier run; their files stay on the "
              "volume", flush=True)
    by_id = dict(zip((t.id for t in trials), paths))

    def start(trial):
        print(kubectl.run("create", "-f", by_id[trial.id]).strip(), flush=True)

    columns = ",".join(["trial", *trials[0].params])
    watch = f"kubectl get tfjobs -n {namespace} -l sweep={sweep},run={run_id} -L {columns}"
    if at_once == len(trials):
        for trial in trials:
            start(trial)
        print(f"submitted {len(trials)} trials (run {run_id}); watch them with: {watch}")
        return
    waited, started = [], []

    def ready(trial, running):
        """The quota holds the next trial now; if not, wait for ours to finish (or fail if none of ours runs)."""
        started.append(trial.id)
        if len(set(started)) <= at_once:
            return True  # checked above, all at once
        if not running:
            require_quota(namespace, need, 1)
            return True
        if headroom.shortage(namespace, need) is None:
            return True
        if trial.id not in waited:
            waited.append(trial.id)
            print(f"{trial.job}: waiting for the quota to hold it (a finished trial's pods are still going)",
                  flush=True)
        return False

    print(f"submitting {len(trials)} trials (run {run_id}), {parallel} at a time (polling every {interval:g}s; "
          f"Ctrl-C stops submitting, the submitted ones go on); watch them with: {watch}", flush=True)
    outcomes = at_most(parallel, trials, start, lambda trial: tfjob_outcome(trial, namespace), interval, ready)
    report(outcomes, trials, f"kubectl describe tfjob -n {namespace} NAME")
