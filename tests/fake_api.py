"""A stand-in for kubectl and the API server behind it, with state: enough of a namespace to run a sweep against.

Run as `kubectl` (a PATH entry whose kubectl execs this file), it keeps the
namespace in a JSON file (FAKE_API_STATE) and records every call. What it
knows, as the API server and the controllers behind it would answer:

- `config current-context` / `config view` (for `make check-cluster`);
- `create -f FILE`: a TFJob or an Experiment; AlreadyExists for a name taken;
  the file is read by the real kubectl that REAL_KUBECTL names (`kubectl create
  --dry-run=client`-like client-side parsing, with `label --local`);
- `get resourcequotas|pods|tfjobs|experiments|trials [NAME] [-l k=v] -o json|jsonpath=...`:
  a quota's `status.used` is summed from the pods that are not finished,
  independently of the code under test; a TFJob's pods exist while it runs;
- a TFJob is Running for FAKE_POLLS polls of its status (default 0), then
  Succeeded (Failed if its name is in FAKE_FAIL), and its pods finish;
- `delete KIND NAME | -l k=v [--wait=true]` (an Experiment takes its Trials with it);
- an Experiment: Katib's controller, played plainly. At the first status poll
  after FAKE_POLLS, its trials exist (the grid's combinations, up to
  maxTrialCount, named <experiment>-<8 characters>), each Succeeded with the
  observation FAKE_KATIB_METRICS gives its assignment ({"learning_rate=0.1,
  hidden_layers=1": [validation, test]}; 0.5 and 0.5 otherwise), and the
  Experiment Succeeded, its currentOptimalTrial the trial with the highest
  validation value (the first of equals).

Tests seed the state with `write_state`, read it with `read_state`.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

UNITS = {"m": 0.001, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
PLURAL = {"tfjob": "tfjobs", "tfjobs": "tfjobs", "pod": "pods", "pods": "pods", "experiment": "experiments",
          "experiments": "experiments", "trial": "trials", "trials": "trials", "resourcequota": "resourcequotas",
          "resourcequotas": "resourcequotas", "quota": "resourcequotas", "suggestions": "suggestions",
          "suggestion": "suggestions"}
KINDS = {"TFJob": "tfjobs", "Experiment": "experiments", "Trial": "trials", "Pod": "pods",
         "ResourceQuota": "resourcequotas"}
GROUPS = {"tfjobs": "kubeflow.org", "experiments": "kubeflow.org", "trials": "kubeflow.org",
          "suggestions": "kubeflow.org", "pods": "", "resourcequotas": ""}


def amount(text):
    """A Kubernetes quantity as a number (cores or bytes), written here independently of the package."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * UNITS[unit]


def empty_state(namespace="alice"):
    return {"namespace": namespace, "calls": [], "objects": {k: [] for k in set(KINDS.values())}}


def read_state(path):
    return json.loads(Path(path).read_text())


def write_state(path, state):
    Path(path).write_text(json.dumps(state))


def pod(name, spec, labels=None, phase="Running", owner=None):
    meta = {"name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def pods_of(doc):
    """The pods a workload runs, named and labelled as its controller names and labels them."""
    name, kind, spec = doc["metadata"]["name"], doc["kind"], doc.get("spec", {})
    if kind == "TFJob":
        return [pod(f"{name}-{rtype.lower()}-{i}", replica["template"]["spec"],
                    {"training.kubeflow.org/job-name": name,
                     "training.kubeflow.org/replica-type": rtype.lower(),
                     "training.kubeflow.org/replica-index": str(i)})
                for rtype, replica in spec["tfReplicaSpecs"].items() for i in range(replica.get("replicas", 1))]
    if kind == "Job":
        return [pod(f"{name}-x7k2p", spec["template"]["spec"], {"job-name": name,
                                                                 "batch.kubernetes.io/job-name": name})]
    if kind in ("Deployment", "StatefulSet"):
        return [pod(f"{name}-5d9c8b7f6-{i:05d}", spec["template"]["spec"], {"pod-template-hash": "5d9c8b7f6"},
                    owner={"kind": "ReplicaSet", "name": f"{name}-5d9c8b7f6"}) for i in range(spec.get("replicas", 1))]
    return []


def used(state, quota):
    """status.used of `quota`: what the pods that have not finished request and limit."""
    totals = {}
    live = [p for p in state["objects"]["pods"] if p["status"]["phase"] not in ("Succeeded", "Failed")]
    for key in quota["spec"]["hard"]:
        if key == "pods":
            totals[key] = len(live)
            continue
        if key.startswith("count/"):
            totals[key] = len(state["objects"].get(key.split("/")[1].split(".")[0], []))
            continue
        bound, _, resource = key.rpartition(".")
        bound = bound or "requests"
        if bound not in ("requests", "limits"):
            continue
        totals[key] = sum(amount(c.get("resources", {}).get(bound, {}).get(resource, 0))
                          for p in live for c in p["spec"].get("containers", []))
    return {k: (str(int(v)) if float(v).is_integer() else f"{v:g}") for k, v in totals.items()}


def matches(obj, selector):
    labels = obj.get("metadata", {}).get("labels", {})
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def parse_file(path):
    """The documents of a manifest as kubectl reads them: the real kubectl's client-side parsing (REAL_KUBECTL)."""
    result = subprocess.run([os.environ["REAL_KUBECTL"], "label", "--local", "-f", path, "standin=read", "-o",
                             "json"], capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr.strip() or "error: kubectl could not read " + path)
    doc = json.loads(result.stdout)
    docs = doc["items"] if doc.get("kind") == "List" else [doc]
    for d in docs:
        d["metadata"]["labels"].pop("standin", None)
    return docs


def option(args, *names):
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def positional(args):
    """The words of a kubectl call that are not options or their values."""
    words, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-n", "--namespace", "-l", "--selector", "-o", "--output", "-f", "--filename"):
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def jsonpath_conditions(obj):
    return " ".join(c["type"] for c in obj.get("status", {}).get("conditions", []) if c.get("status") == "True")


def grid(parameters):
    axes = []
    for p in parameters:
        space = p["feasibleSpace"]
        if p["parameterType"] == "int":
            axes.append([(p["name"], str(v)) for v in range(int(space["min"]), int(space["max"]) + 1,
                                                             int(space.get("step", 1)))])
        else:
            axes.append([(p["name"], v) for v in space["list"]])
    combinations = [[]]
    for axis in axes:
        combinations = [c + [pair] for c in combinations for pair in axis]
    return combinations


def run_experiment(state, experiment):
    """What Katib's controller leaves behind once an Experiment is done: its Trials, its status."""
    import hashlib
    name, spec = experiment["metadata"]["name"], experiment["spec"]
    outcomes = json.loads(os.environ.get("FAKE_KATIB_METRICS", "{}"))
    trials, best = [], None
    for combination in grid(spec["parameters"])[:spec["maxTrialCount"]]:
        key = ",".join(f"{k}={v}" for k, v in combination)
        suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[b % 27] for b in hashlib.sha256(key.encode()).digest()[:8])
        validation, test = outcomes.get(key, [0.5, 0.5])
        metrics = [{"name": "eval/accuracy", "min": str(validation - 0.1), "max": str(validation),
                    "latest": str(validation)},
                   {"name": "test/accuracy", "min": str(test), "max": str(test), "latest": str(test)}]
        trial = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
                 "metadata": {"name": f"{name}-{suffix}", "labels": {"katib.kubeflow.org/experiment": name}},
                 "spec": {"parameterAssignments": [{"name": k, "value": v} for k, v in combination],
                          "objective": spec["objective"]},
                 "status": {"conditions": [{"type": "Created", "status": "True"},
                                           {"type": "Running", "status": "False"},
                                           {"type": "Succeeded", "status": "True"}],
                            "observation": {"metrics": metrics}}}
        trials.append(trial)
        if best is None or validation > best[0]:
            best = (validation, trial)
    state["objects"]["trials"] += trials
    experiment["status"] = {
        "conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                       {"type": "Succeeded", "status": "True", "reason": "ExperimentMaxTrialsReached"}],
        "trials": len(trials), "trialsSucceeded": len(trials),
        "currentOptimalTrial": {"bestTrialName": best[1]["metadata"]["name"],
                                "parameterAssignments": best[1]["spec"]["parameterAssignments"],
                                "observation": best[1]["status"]["observation"]}}


def finish(state, job, outcome):
    state.setdefault("events", []).append(["finished", job["metadata"]["name"]])
    job["status"]["conditions"].append({"type": outcome, "status": "True"})
    for c in job["status"]["conditions"]:
        if c["type"] == "Running":
            c["status"] = "False"
    for p in state["objects"]["pods"]:
        if p["metadata"]["labels"].get("training.kubeflow.org/job-name") == job["metadata"]["name"]:
            p["status"]["phase"] = "Succeeded" if outcome == "Succeeded" else "Failed"


def requests(args, state):
    """The API requests (verb, group, resource) a kubectl call makes, as RBAC sees them."""
    words = positional(args)
    verb = words[0]
    if verb == "config":
        return []
    if verb == "create":
        kinds = [d["kind"] for d in parse_file(option(args, "-f", "--filename"))]
        return [("create", GROUPS[KINDS[k]], KINDS[k]) for k in kinds]
    plural = PLURAL.get(words[1]) if len(words) > 1 else None
    named = len(words) > 2
    if verb == "get":
        return [("get" if named else "list", GROUPS[plural], plural)] + (
            [("watch", GROUPS[plural], plural)] if "-w" in args or "--watch" in args else [])
    if verb == "delete":  # kubectl lists what a selector names, deletes each, and waits with list and watch
        return [(v, GROUPS[plural], plural) for v in (["delete"] if named else ["list", "delete"])
                + (["list", "watch"] if "--wait=false" not in args else [])]
    if verb == "wait":
        return [(v, GROUPS[plural], plural) for v in ("get", "list", "watch")]
    return [(verb, GROUPS.get(plural, "?"), plural)]


def answer(state, args):
    words = positional(args)
    if words[:2] == ["config", "current-context"]:
        return 0, "workshop\n", ""
    if words[:2] == ["config", "view"]:
        return 0, state["namespace"], ""
    namespace = option(args, "-n", "--namespace") or state["namespace"]
    if namespace != state["namespace"]:
        return 1, "", f'Error from server (Forbidden): namespace "{namespace}" is not yours\n'
    selector, output = option(args, "-l", "--selector"), option(args, "-o", "--output")
    verb = words[0]
    if verb == "create":
        out = ""
        for doc in parse_file(option(args, "-f", "--filename")):
            plural = KINDS[doc["kind"]]
            name = doc["metadata"]["name"]
            if any(o["metadata"]["name"] == name for o in state["objects"][plural]):
                return 1, out, (f'Error from server (AlreadyExists): error when creating "{args[-1]}": '
                                f'{plural}.{GROUPS[plural]} "{name}" already exists\n')
            doc["status"] = {"conditions": [{"type": "Created", "status": "True"}]}
            if plural in ("tfjobs", "experiments"):
                doc["status"]["conditions"].append({"type": "Running", "status": "True"})
                doc["polls"] = 0
            if plural == "tfjobs":
                state["objects"]["pods"] += pods_of(doc)
            state["objects"][plural].append(doc)
            state.setdefault("events", []).append(["created", name])
            out += f"{doc['kind'].lower()}.{GROUPS[plural]}/{name} created\n"
        return 0, out, ""
    plural = PLURAL.get(words[1]) if len(words) > 1 else None
    if plural is None:
        return 1, "", f"error: the stand-in does not know {' '.join(args)}\n"
    name = words[2] if len(words) > 2 else None
    found = [o for o in state["objects"].setdefault(plural, []) if (name is None or o["metadata"]["name"] == name)
             and matches(o, selector)]
    if verb == "delete":
        if name and not found and "--ignore-not-found" in args:
            return 0, "", ""
        if name and not found:
            return 1, "", f'Error from server (NotFound): {plural}.{GROUPS[plural]} "{name}" not found\n'
        for obj in found:
            state["objects"][plural].remove(obj)
            if plural == "tfjobs":
                state["objects"]["pods"] = [p for p in state["objects"]["pods"] if p["metadata"]["labels"].get(
                    "training.kubeflow.org/job-name") != obj["metadata"]["name"]]
            if plural == "experiments":
                state["objects"]["trials"] = [t for t in state["objects"]["trials"] if t["metadata"]["labels"].get(
                    "katib.kubeflow.org/experiment") != obj["metadata"]["name"]]
        text = "".join(f"{plural[:-1]}.{GROUPS[plural]}/{o['metadata']['name']} deleted\n" for o in found)
        return 0, text or "No resources found\n", ""
    if verb != "get":
        return 1, "", f"error: the stand-in does not know {' '.join(args)}\n"
    if name and not found:
        return 1, "", f'Error from server (NotFound): {plural}.{GROUPS[plural]} "{name}" not found\n'
    if plural == "tfjobs" and name and output and output.startswith("jsonpath="):
        job = found[0]
        job["polls"] += 1
        if job["polls"] > int(os.environ.get("FAKE_POLLS", "0")) and "Succeeded" not in jsonpath_conditions(job) \
                and "Failed" not in jsonpath_conditions(job):
            failing = os.environ.get("FAKE_FAIL", "").split(",")
            finish(state, job, "Failed" if job["metadata"]["name"] in failing else "Succeeded")
        return 0, jsonpath_conditions(job), ""
    if plural == "experiments" and name:
        experiment = found[0]
        experiment["polls"] += 1
        if experiment["polls"] > int(os.environ.get("FAKE_POLLS", "0")) and "Succeeded" not in jsonpath_conditions(
                experiment):
            run_experiment(state, experiment)
    shown = []
    for obj in found:
        obj = json.loads(json.dumps(obj))
        obj.pop("polls", None)
        if plural == "resourcequotas":
            obj["status"] = {"hard": obj["spec"]["hard"], "used": used(state, obj)}
        shown.append(obj)
    if output == "json":
        body = shown[0] if name else {"apiVersion": "v1", "kind": "List", "items": shown}
        return 0, json.dumps(body), ""
    if output and output.startswith("jsonpath="):
        return 1, "", "error: the stand-in answers this jsonpath for one TFJob only\n"
    return 0, "".join(o["metadata"]["name"] + "\n" for o in shown) or "No resources found\n", ""


def main():
    path = os.environ["FAKE_API_STATE"]
    state = read_state(path)
    args = sys.argv[1:]
    state["calls"].append(args)
    state.setdefault("requests", []).extend(list(r) for r in requests(args, state))
    code, out, err = answer(state, args)
    write_state(path, state)
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


if __name__ == "__main__":
    main()
