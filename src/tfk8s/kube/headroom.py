"""Will a TFJob fit in the namespace's quota? Asked before it is applied, so it is never left half-created.

    python src/quota_check.py --namespace alice kube/tfjob.yaml

The training operator creates a TFJob's pods one by one; a pod the quota
refuses is retried (FailedCreatePod, `exceeded quota`), while the replicas
already created hold their CPUs and wait for it, until the job's deadline.
So `make tfjob` and `make tfjob-ps` first compare what every replica asks
for with what the namespace's ResourceQuota has left (its status: hard minus
used, plus what the TFJob of the same name, about to be replaced, holds now),
and when it does not fit, say in one line which running workload to stop
first: the smallest one whose pods would free enough, a training one before
TensorBoard or serving.
"""
from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.kube import kubectl
from tfk8s.kube.resources import KEYS, cores, gib, millicores, pod_usage, total, whole, workload_pods

JOB_LABEL = "training.kubeflow.org/job-name"
BATCH_LABELS = ("batch.kubernetes.io/job-name", "job-name")
ALIASES = {"cpu": "requests.cpu", "memory": "requests.memory"}  # a quota's short keys
MAX_PODS = 1000  # the replicas of one TFJob this check plans pod by pod; a workshop namespace holds a few dozen


def quota_figures(values):
    """A quota's hard or used map as {key: number} for the keys a Usage has (millicores for CPU)."""
    found = {}
    for key, value in (values or {}).items():
        key = ALIASES.get(key, key)
        if key in KEYS:
            found[key] = millicores(value) if key.endswith("cpu") else whole(value)
    return found


def describe(figures):
    parts = []
    for key, value in figures.items():
        if key.endswith("cpu"):
            parts.append(f"{key} {cores(value)}")
        elif key.endswith(("memory", "ephemeral-storage")):
            parts.append(f"{key} {gib(value)}Gi")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def running(pods):
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")]


def unit_of(pod, sweeps):
    """(what to stop, how) for the workload a pod belongs to."""
    labels = pod["metadata"].get("labels") or {}
    if JOB_LABEL in labels:
        name = labels[JOB_LABEL]
        if name in sweeps:
            return (f"the sweep {sweeps[name]}", f"Ctrl-C its make sweep, then kubectl delete tfjobs "
                                                 f"--selector sweep={sweeps[name]}")
        return f"TFJob {name}", f"kubectl delete tfjob {name}"
    for label in BATCH_LABELS:
        if label in labels:
            return f"Job {labels[label]}", f"kubectl delete job {labels[label]}"
    owner = next(iter(pod["metadata"].get("ownerReferences") or []), {})
    if owner.get("kind") == "ReplicaSet":
        name = owner["name"].rsplit("-", 1)[0]
        return f"Deployment {name}", f"kubectl delete deployment {name}"
    return f"pod {pod['metadata']['name']}", f"kubectl delete pod {pod['metadata']['name']}"


def what_to_stop(pods, sweeps, short):
    """The workload whose pods free every short figure (the smallest such, training first), else the largest."""
    units = {}
    for pod in pods:
        units.setdefault(unit_of(pod, sweeps), []).append(pod_usage(pod.get("spec") or {}))
    if not units:
        return None
    freed = {unit: total(usages).as_quota() for unit, usages in units.items()}

    def training(unit):
        return unit[0].startswith(("the sweep", "TFJob", "Job"))
    enough = [u for u in units if all(freed[u][k] >= gap for k, gap in short.items())]
    if enough:
        return min(enough, key=lambda u: (not training(u), freed[u]["requests.cpu"], freed[u]["requests.memory"]))
    return max(units, key=lambda u: (training(u), freed[u]["requests.cpu"], freed[u]["requests.memory"]))


def sweeps_of(namespace):
    """{TFJob name: its sweep} of the namespace's sweep trials (none if they cannot be read)."""
    try:
        return {t["metadata"]["name"]: t["metadata"]["labels"]["sweep"]
                for t in kubectl.items("tfjobs", "--namespace", namespace)
                if "sweep" in (t["metadata"].get("labels") or {})}
    except UserError:
        return {}


def shortage(namespace, needed, freed_jobs=(), quotas=None):
    """The first quota of `namespace` that cannot hold `needed` (a Usage) now, as (quota, short, free, pods);
    None when every quota holds it. The pods of the TFJobs `freed_jobs` (about to be replaced) count as free.
    `quotas`: the namespace's ResourceQuotas if already read."""
    if quotas is None:
        quotas = kubectl.items("resourcequotas", "--namespace", namespace)
    if not quotas:
        return None
    pods = running(kubectl.items("pods", "--namespace", namespace))
    replaced = [p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_LABEL) in set(freed_jobs)]
    freed = total(pod_usage(p.get("spec") or {}) for p in replaced).as_quota()
    needs = needed.as_quota()
    for quota in quotas:
        status = quota.get("status") or {}
        hard = quota_figures(status.get("hard") or (quota.get("spec") or {}).get("hard"))
        used = quota_figures(status.get("used"))
        free = {k: hard[k] - used.get(k, 0) + freed[k] for k in hard}
        short = {k: needs[k] - free[k] for k in hard if needs[k] > free[k]}
        if short:
            return quota, short, free, [p for p in pods if p not in replaced]
    return None


def require(namespace, needed, asking, freed_jobs=(), hint="", quotas=None):
    """Raise a one-line UserError naming what to stop first when the quota cannot hold `needed` now.

    `asking` says who asks, with its verb ("TFJob mnist-tfjob needs", "2 trials need"); `hint` adds
    another way out (", or run fewer at once ...").
    """
    found = shortage(namespace, needed, freed_jobs, quotas)
    if found is None:
        return
    quota, short, free, others = found
    needs = needed.as_quota()
    stop = what_to_stop(others, sweeps_of(namespace), short)
    advice = (f": stop {stop[0]} first ({stop[1]})" if stop else
              ": nothing else runs; the quota itself is too small, ask the instructor")
    raise UserError(f"{asking} {describe({k: needs[k] for k in short})} but the quota "
                    f"{quota['metadata']['name']} has {describe({k: max(0, free[k]) for k in short})} free"
                    f"{advice}{hint}")


def check(docs, namespace):
    """A one-line verdict for the TFJobs in `docs`; UserError (naming what to stop) when the quota cannot hold them."""
    tfjobs = [d for d in docs if d.get("kind") == "TFJob"]
    if not tfjobs:
        raise UsageError("no TFJob in the manifest")
    need = total(u for d in tfjobs for _, u in workload_pods(d))
    names = [d["metadata"]["name"] for d in tfjobs]
    what = " and ".join(f"TFJob {n}" for n in names)
    quotas = kubectl.items("resourcequotas", "--namespace", namespace)
    if not quotas:
        return f"{what}: no ResourceQuota in namespace {namespace}, nothing to check"
    require(namespace, need, f"{what} {'need' if len(names) > 1 else 'needs'}", freed_jobs=names, quotas=quotas)
    return f"{what} fits the quota ({describe(need.as_quota())})"


def parse_args(argv=None):
    p = ArgumentParser(description="Say whether the TFJobs of a manifest fit in the namespace's ResourceQuota "
                                   "now, and if not, what to stop first (asks kubectl).")
    p.add_argument("files", nargs="+", metavar="FILE", help="TFJob manifests, e.g. kube/tfjob.yaml")
    p.add_argument("--namespace", required=True, help="the namespace the TFJob goes to")
    return p.parse_args(argv)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    docs = [doc for path in args.files for doc in yamlfile.documents(path, must_hold="a TFJob")]
    for doc in docs:  # before any pod is planned: 10**9 replicas took minutes
        specs = ((doc.get("spec") or {}).get("tfReplicaSpecs") or {}) if isinstance(doc, dict) else {}
        count = sum(s.get("replicas", 1) for s in specs.values() if isinstance(s, dict)
                    and isinstance(s.get("replicas", 1), int))
        if count > MAX_PODS:
            raise UserError(f"{(doc.get('metadata') or {}).get('name')}: {count} replicas, more pods than any "
                            f"namespace quota here holds (at most {MAX_PODS} are planned)")
    print(check(docs, args.namespace))

