"""A sweep on the cluster, through kubectl: the namespace's quota first, then the trials, N at a time.

Before anything is created: a trial of the same sweep still running stops the
sweep (one line naming it); the namespace's ResourceQuotas must hold the
trials that run at once beside everything already running (otherwise one line
names what to stop first); then the finished trials of an earlier run are
deleted, so that `kubectl create` makes every TFJob anew, with labels that
describe what runs. A trial starts only when the quota holds all of its pods:
a TFJob whose Chief fits but whose Workers do not would wait half-created.
"""
import json
import re
import shutil
import subprocess
import time
from fractions import Fraction

from tfk8s.cli import UserError

# The types of a TFJob's conditions that are true now, e.g. "Created Running" or "Created Succeeded".
JSONPATH = '{.status.conditions[?(@.status=="True")].type}'
DONE = ("Succeeded", "Failed")
TERMINAL_PHASES = ("Succeeded", "Failed")  # pods in these phases no longer count against a quota
KEEP_RUNNING = {("deployment", "nfs-server")}  # the shared volume: every other step needs it


def kubectl(*args, check=True):
    exe = shutil.which("kubectl")
    if not exe:
        raise UserError("kubectl is not on PATH: install it and point it at your cluster, or preview with "
                        "--dry_run --output_dir DIR, or run the sweep here with --local")
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if check and result.returncode:
        last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise UserError(f"kubectl {' '.join(map(str, args[:2]))} failed: {last}")
    return result


def kubectl_json(*args):
    output = kubectl(*args, "-o", "json").stdout
    try:
        return json.loads(output)
    except json.JSONDecodeError:
        raise UserError(f"kubectl {' '.join(map(str, args[:2]))} answered something other than JSON") from None


# ---------------------------------------------------------------- quantities and quotas

SUFFIXES = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1, "k": 10**3,
            "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([numkMGTPE]i?|Ki)?)")


def quantity(text):
    """A Kubernetes quantity ('500m', '2', '4Gi', '1e3') as an exact number."""
    match = QUANTITY.fullmatch(str(text).strip())
    if not match or (match[3] and match[3] not in SUFFIXES):
        raise UserError(f"{text!r} is not a Kubernetes quantity")
    number = Fraction(match[1])
    if match[2]:
        return number * Fraction(10) ** int(match[2][1:])
    return number * SUFFIXES[match[3] or ""]


def shown(resource, amount):
    """An amount as a person reads it: cores, or GiB/MiB of memory and storage."""
    if "memory" in resource or "storage" in resource:
        return f"{float(amount / 2**30):g}Gi" if amount >= 2**30 else f"{float(amount / 2**20):g}Mi"
    return f"{float(amount):g}"


QUOTA_KEYS = {"cpu": ("requests", "cpu"), "requests.cpu": ("requests", "cpu"),
              "memory": ("requests", "memory"), "requests.memory": ("requests", "memory"),
              "ephemeral-storage": ("requests", "ephemeral-storage"),
              "requests.ephemeral-storage": ("requests", "ephemeral-storage"),
              "limits.cpu": ("limits", "cpu"), "limits.memory": ("limits", "memory"),
              "limits.ephemeral-storage": ("limits", "ephemeral-storage")}


def pod_usage(spec):
    """{quota key: amount} that one pod with this spec counts against a quota (init containers as the
    scheduler counts them: the largest of them, or the sum of the containers if larger)."""
    usage = {"pods": 1}
    for key, (bound, resource) in QUOTA_KEYS.items():
        total = sum(quantity(c.get("resources", {}).get(bound, {}).get(resource, 0))
                    for c in spec.get("containers", []))
        init = max([quantity(c.get("resources", {}).get(bound, {}).get(resource, 0))
                    for c in spec.get("initContainers", [])] or [0])
        usage[key] = max(total, init)
    return usage


def tfjob_usage(doc):
    """What one TFJob's pods count against a quota, every replica counted, plus the TFJob itself."""
    usage = {"count/tfjobs.kubeflow.org": 1}
    for replica in doc["spec"]["tfReplicaSpecs"].values():
        for key, amount in pod_usage(replica["template"]["spec"]).items():
            usage[key] = usage.get(key, 0) + amount * replica.get("replicas", 1)
    return usage


def workload(pod):
    """('tfjob', name), ('job', name), ('deployment', name) or ('pod', name): what a pod belongs to."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels", {})
    if "training.kubeflow.org/job-name" in labels:
        return "tfjob", labels["training.kubeflow.org/job-name"]
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        return "job", job
    owner = next((o for o in meta.get("ownerReferences", []) if o.get("kind") == "ReplicaSet"), None)
    if owner and labels.get("pod-template-hash") and owner["name"].endswith("-" + labels["pod-template-hash"]):
        return "deployment", owner["name"][:-len(labels["pod-template-hash"]) - 1]
    return "pod", meta.get("name", "?")


def shortfall(quotas, need):
    """(quota name, key, hard, used) of the first quota that cannot hold `need` more, or None."""
    for quota in quotas:
        spec = quota.get("spec", {})
        if spec.get("scopes") or spec.get("scopeSelector"):
            continue  # a scoped quota counts only some pods (BestEffort, Terminating...); trials are neither
        status = quota.get("status", {})
        hard, used = status.get("hard") or spec.get("hard", {}), status.get("used", {})
        for key, limit in hard.items():
            if need.get(key) and quantity(used.get(key, 0)) + need[key] > quantity(limit):
                return quota["metadata"]["name"], key, quantity(limit), quantity(used.get(key, 0))
    return None


def what_to_stop(pods, key, missing, mine):
    """The running workloads to stop first to free `missing` of `key`: training first, the biggest first."""
    holding = {}
    for pod in pods:
        if pod.get("status", {}).get("phase") in TERMINAL_PHASES:
            continue
        owner = workload(pod)
        if owner in KEEP_RUNNING or owner[1] in mine:
            continue
        holding[owner] = holding.get(owner, 0) + pod_usage(pod.get("spec", {})).get(key, 0)
    order = sorted((o for o in holding if holding[o] > 0),
                   key=lambda o: (o[0] not in ("tfjob", "job"), -holding[o], o))
    if sum(holding[o] for o in order) < missing:
        return None  # stopping everything would not be enough
    chosen, freed = [], 0
    for owner in order:
        if freed >= missing:
            break
        chosen.append(owner)
        freed += holding[owner]
    return [(owner, holding[owner]) for owner in chosen]


def check_quota(namespace, need, count, mine=(), hint=""):
    """Raise, naming what to stop first, if the namespace's quotas cannot hold `need` (for `count` trials)."""
    quotas = kubectl_json("get", "resourcequotas", "-n", namespace).get("items", [])
    short = shortfall(quotas, need)
    if short is None:
        return
    name, key, hard, used = short
    resource = key.split(".")[-1] if "." in key else key
    pods = kubectl_json("get", "pods", "-n", namespace).get("items", [])
    stop = what_to_stop(pods, key, used + need[key] - hard, set(mine))
    trials = "a trial" if count == 1 else f"{count} trials"
    message = (f"the quota {name!r} of namespace {namespace} cannot hold {trials} beside what runs now: "
               f"{key} {shown(resource, used)} of {shown(resource, hard)} in use, {trials} "
               f"{'needs' if count == 1 else 'need'} "
               f"{shown(resource, need[key])} more")
    if stop is None:
        message += f"; the quota is too small for {trials} even with nothing else running"
    elif stop:
        names = ", ".join(f"{kind}/{n} ({shown(resource, amount)})" for (kind, n), amount in stop)
        commands = "; ".join(f"kubectl delete {kind} {n} -n {namespace}" for (kind, n), _ in stop)
        message += f"; stop first: {names} ({commands})"
    raise UserError(message + (f", {hint}" if hint else ""))


# ---------------------------------------------------------------- earlier runs of the sweep

def conditions(doc):
    return {c.get("type") for c in doc.get("status", {}).get("conditions", []) if c.get("status") == "True"}


def clear_earlier_run(sweep, namespace):
    """The TFJobs of an earlier run of `sweep`: refuse if one still runs, else delete them; their names."""
    items = kubectl_json("get", "tfjobs", "-n", namespace, "-l", f"sweep={sweep}").get("items", [])
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
    result = kubectl("get", "tfjob", trial.job, "-n", namespace, "-o", f"jsonpath={JSONPATH}", check=False)
    if result.returncode:
        return "Deleted" if "NotFound" in result.stderr else None  # anything else: try again next poll
    conditions = result.stdout.split()
    return next((c for c in DONE if c in conditions), None)


def submit(sweep, run_id, trials, docs, paths, namespace, parallel, interval):
    """Check, clear the earlier run, then create every trial, or `parallel` at a time as earlier ones finish."""
    at_once = min(parallel or len(trials), len(trials))
    need = tfjob_usage(docs[0])  # every trial is the same TFJob but for its flags
    earlier = clear_earlier_run(sweep, namespace)
    check_quota(namespace, {k: v * at_once for k, v in need.items()}, at_once, mine=earlier,
                hint=f"or run fewer at once (--parallel {at_once - 1}, or make sweep SWEEP_PARALLEL={at_once - 1})"
                if at_once > 1 else "")
    if earlier:
        kubectl("delete", "tfjobs", "-n", namespace, "-l", f"sweep={sweep}", "--wait=true")
        print(f"deleted the {len(earlier)} finished trial(s) of the sweep's earlier run; their files stay on the "
              "volume", flush=True)
    by_id = dict(zip((t.id for t in trials), paths))

    def start(trial):
        print(kubectl("create", "-f", by_id[trial.id]).stdout.strip(), flush=True)

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
            check_quota(namespace, need, 1, mine=[t.job for t in trials])
            return True
        quotas = kubectl_json("get", "resourcequotas", "-n", namespace).get("items", [])
        if shortfall(quotas, need) is None:
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
