"""The workshop's connection contract (templated/instructor/connections.yaml), checked by network-config-analyzer.

    python src/instructor.py connections

Every connection the labs need must be allowed, and every one they must never
make denied, by the NetworkPolicies the instructor's commands apply
(namespace.yaml.j2, notebook.yaml.j2, katib.yaml.j2 and storage-namespace.yaml.j2, rendered for
two attendees alice and bob). The pods are the model's: what the attendees
apply and what the cluster makes of it (src/tfk8s/kube/cluster_model.py), the
NFS servers, Katib's and the training operator's pods with the labels of their
pinned manifests, and kube-dns.

The verdicts are network-config-analyzer's (IBM, PyPI network-config-analyzer),
not this module's: each connection becomes a one-rule NetworkPolicy, and the
analyzer answers whether the rendered policies permit (needed) or forbid
(forbidden) every connection that rule names.
"""
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tfk8s.cli import UserError
from tfk8s.instructor import katib, namespaces
from tfk8s.kube import cluster_model, render
from tfk8s.paths import KUBE, TEMPLATED

CONTRACT = TEMPLATED / "instructor" / "connections.yaml"
ATTENDEES = ("alice", "bob")
# Addresses that stand for what is not a pod (any address of that kind answers the same).
ADDRESSES = {"node": "10.128.0.2", "apiserver": "172.16.0.2"}
# The API server as the instructor's command reads it from the `kubernetes` Service's endpoints (GKE: the control
# plane's address, port 443), for the notebook pipelines' NetworkPolicies (namespaces.api_server).
API_SERVER = {"cidrs": [f"{ADDRESSES['apiserver']}/32"], "port": 443}
# Pods of the cluster's own namespaces, with the labels of their pinned manifests: Katib v0.19.0
# manifests/v1beta1/components/*/ (katib.kubeflow.org/component), training operator v1.9.4
# manifests/base/deployment.yaml (control-plane), and GKE's kube-dns (k8s-app).
SYSTEM_PODS = {
    "kubeflow/katib-controller": {"katib.kubeflow.org/component": "controller"},
    "kubeflow/katib-db-manager": {"katib.kubeflow.org/component": "db-manager"},
    "kubeflow/katib-mysql": {"katib.kubeflow.org/component": "mysql"},
    "kubeflow/katib-ui": {"katib.kubeflow.org/component": "ui"},
    "kubeflow/training-operator": {"control-plane": "kubeflow-training-operator"},
    "kube-system/kube-dns": {"k8s-app": "kube-dns"},
}


@dataclass
class Connection:
    needed: bool
    step: str
    what: str
    source: str
    target: str
    port: int
    protocol: str = "TCP"
    exempt: str = ""
    verdict: str = ""

    @property
    def holds(self):
        return self.verdict == ("allowed" if self.needed else "denied") or self.verdict.startswith("exempt")


def contract(path=CONTRACT):
    doc = yaml.safe_load(Path(path).read_text())
    found = []
    for needed, key in ((True, "needed"), (False, "forbidden")):
        for item in doc[key]:
            found.append(Connection(needed, item.get("step", "-"), item["what"], item["from"], item["to"],
                                    int(item["port"]), item.get("protocol", "TCP"), item.get("exempt", "")))
    return found


# ---------------------------------------------------------------- the model the analyzer reads

def pod(namespace, name, labels):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


def workload_pods(docs, namespace):
    """One Pod per workload or pod of `docs` (the analyzer needs only names and labels)."""
    out = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Pod":
            out.append(pod(namespace, name, doc["metadata"].get("labels") or {}))
        elif kind in ("Deployment", "Job"):
            out.append(pod(namespace, name, doc["spec"]["template"]["metadata"].get("labels") or {}))
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
            out.append(pod(namespace, name, template["metadata"].get("labels") or {}))
    return out


def resources(names=ATTENDEES):
    """Namespaces and pods: the attendees', the storage namespace's NFS servers, Katib's, the operator's, DNS."""
    namespace_docs, pods = {}, []
    for doc in yaml.safe_load_all("".join(namespaces.rendered_files(names).values())):
        if doc and doc["kind"] == "Namespace":
            namespace_docs[doc["metadata"]["name"]] = doc
        if doc and doc["kind"] == "Deployment":
            pods += workload_pods([doc], doc["metadata"]["namespace"])  # the NFS servers
    for name in names:
        applied = render.render(render.load(sorted(KUBE.glob("*.yaml"))), render.TRAINER_IMAGE, "0.1.0", name)
        made = [d for docs in cluster_model.cluster_made(name).values() for d in docs]
        pods += workload_pods([d for d in applied if d["kind"] != "TFJob"] + made, name)
    for where, labels in SYSTEM_PODS.items():
        namespace, name = where.split("/")
        namespace_docs.setdefault(namespace, {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}})
        pods.append(pod(namespace, name, labels))
    for name, doc in namespace_docs.items():
        doc["metadata"]["labels"] = {**(doc["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
    unique = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}
    return list(namespace_docs.values()), unique


def policies(names=ATTENDEES):
    """Every NetworkPolicy the instructor's commands apply for `names`."""
    text = "".join(namespaces.rendered_files(names, apiserver=API_SERVER).values()) + "".join(
        f"---\n{katib.render(n)}" for n in names)
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] == "NetworkPolicy"]


# ---------------------------------------------------------------- one connection, as a NetworkPolicy

def selector(labels):
    """matchLabels for a pod of the model, without labels whose value is a number: network-config-analyzer 2.1.0
    reads every scalar that parses as an integer as one, quoted or not, and then refuses it as a label value
    (FileScanners/GenericTreeScanner.py to_yaml_objects). The replica-index label is the one such: without it
    the selector names the replica's type, a superset that answers the same question."""
    return {"matchLabels": {k: v for k, v in labels.items() if not str(v).isdigit()}}


def peer(endpoint, pods):
    """(namespace or None, policy peer) for an endpoint: a pod of the model, or an address."""
    if endpoint in pods:
        meta = pods[endpoint]["metadata"]
        return meta["namespace"], {"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": meta["namespace"]}}, "podSelector": selector(meta["labels"])}
    address = ADDRESSES.get(endpoint, endpoint)
    if "/" in address or not address.replace(".", "").isdigit():
        raise UserError(f"{CONTRACT.name}: {endpoint!r} is neither a pod of the model nor an address")
    return None, {"ipBlock": {"cidr": f"{address}/32"}}


def query_policy(connection, pods):
    """The connection as a NetworkPolicy of one rule: ingress at the target pod, or egress from the source pod
    when the target is an address."""
    ports = [{"protocol": connection.protocol, "port": connection.port}]
    target_ns, target = peer(connection.target, pods)
    source_ns, source = peer(connection.source, pods)
    if target_ns is not None:
        labels = pods[connection.target]["metadata"]["labels"]
        namespace, kind, rule = target_ns, "Ingress", {"from": [source], "ports": ports}
    elif source_ns is not None:
        labels = pods[connection.source]["metadata"]["labels"]
        namespace, kind, rule = source_ns, "Egress", {"to": [target], "ports": ports}
    else:
        raise UserError(f"{CONTRACT.name}: {connection.source} -> {connection.target}: one end must be a pod")
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "contract", "namespace": namespace},
            "spec": {"podSelector": selector(labels), "policyTypes": [kind], kind.lower(): [rule]}}


@contextlib.contextmanager
def captured(path):
    """Standard output and error, down to the file descriptors, into `path` (the analyzer writes its warnings to a
    stderr it bound when imported)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def analyze(query, base, model):
    """network-config-analyzer's answer: 0 when the property (permits/forbids) holds, 1 when it does not."""
    from nca.nca_cli import nca_main
    log = Path(query[1]).with_suffix(".log")
    with captured(log):
        code = nca_main([f"--{query[0]}", str(query[1]), "--base_np_list", str(base), "--resource_list", str(model)])
    if code not in (0, 1):
        said = [line for line in log.read_text().splitlines() if line.strip()][-1:]
        raise UserError(f"network-config-analyzer could not run the query (exit {code}): {' '.join(said)}")
    return code


def check(names=ATTENDEES, path=CONTRACT):
    """The contract's connections, each with its verdict."""
    connections = contract(path)
    namespace_docs, pods = resources(names)
    with tempfile.TemporaryDirectory(prefix="connections-") as tmp:
        base, model = Path(tmp) / "policies.yaml", Path(tmp) / "model.yaml"
        base.write_text(yaml.safe_dump_all(policies(names)))
        model.write_text(yaml.safe_dump_all(namespace_docs + list(pods.values())))
        for i, connection in enumerate(connections):
            if connection.exempt:
                connection.verdict = f"exempt: {connection.exempt}"
                continue
            query = Path(tmp) / f"connection-{i}.yaml"
            query.write_text(yaml.safe_dump(query_policy(connection, pods)))
            if connection.needed:
                connection.verdict = "allowed" if analyze(("permits", query), base, model) == 0 else "DENIED"
            else:
                connection.verdict = "denied" if analyze(("forbids", query), base, model) == 0 else "ALLOWED"
    return connections


def table(connections):
    rows = [("", "step", "from", "to", "port", "verdict")]
    for c in connections:
        rows.append(("needed" if c.needed else "never", c.step if c.needed else c.what, c.source, c.target,
                     f"{c.port}/{c.protocol}", c.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
                     for r in rows)


def show(path=CONTRACT):
    connections = check(path=path)
    print(table(connections))
    wrong = [c for c in connections if not c.holds]
    if wrong:
        raise UserError(f"{len(wrong)} connection(s) break the contract: "
                        + "; ".join(f"{c.source} -> {c.target}:{c.port} {c.verdict}" for c in wrong))
    print(f"every needed connection allowed, every forbidden one denied ({len(connections)} in {path.name})")
