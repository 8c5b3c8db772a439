"""Fill in the image, its tag and the namespace of the workshop's manifests, so no one edits YAML by hand.

The files in kube/ name the trainer image ghcr.io/example/mnist-trainer:0.1.0
and no namespace. The Makefile pipes them through this script into kubectl:

    python src/render_manifests.py --image REGISTRY/you/mnist --tag v1 --namespace alice \
        kube/tensorboard.yaml | kubectl apply -f -

What changes: every container that runs the trainer image gets IMAGE:TAG;
every namespaced object gets the namespace. The shared storage (kube/nfs.yaml)
needs two more things, because a PersistentVolume belongs to the whole
cluster, not to a namespace: it is named mnist-nfs-<namespace> (attendees'
volumes must not collide) and reserved for that namespace's claim, and its
NFS server address is the one given with --nfs-server (the ClusterIP of the
nfs-server Service: nodes cannot resolve cluster DNS names). With
--rwx-storage-class the in-cluster NFS server is left out altogether and the
claim asks that storage class (Filestore on GKE) for a ReadWriteMany volume.
"""
import json
import re
from pathlib import Path

import yaml

from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point

TRAINER_IMAGE = "ghcr.io/example/mnist-trainer"   # the image the plain manifests name
CLAIM = "mnist-nfs"                                 # the ReadWriteMany claim every pod mounts
NFS_APP = "nfs-server"                              # the `app` label of the in-cluster NFS server's objects
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
IMAGE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")


def load(paths):
    """Every document of every file, in order (empty documents skipped)."""
    docs = []
    for path in map(Path, paths):
        try:
            text = path.read_text()
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}") from None
        try:
            found = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
        for doc in found:
            if not isinstance(doc, dict) or "kind" not in doc:
                raise UserError(f"{path}: every document must be a Kubernetes object with a kind")
        # A JSON round trip turns YAML aliases (a TFJob's `*trainer`) into independent copies.
        docs += [json.loads(json.dumps(doc)) for doc in found]
    return docs


def retag(node, image):
    """Point every container running the trainer image (any tag) at `image`."""
    if isinstance(node, list):
        for item in node:
            retag(item, image)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                for container in value:
                    current = container.get("image", "")
                    if current == TRAINER_IMAGE or current.startswith((TRAINER_IMAGE + ":", TRAINER_IMAGE + "@")):
                        container["image"] = image
            retag(value, image)


def render(docs, image, tag, namespace, nfs_server=None, rwx_storage_class=None, rwx_size="1Ti", scope="all"):
    """The documents as they are applied in `namespace`, running `image:tag` (new dicts; `docs` untouched)."""
    volume = f"{CLAIM}-{namespace}"
    out = []
    for doc in json.loads(json.dumps(docs)):
        kind, meta = doc["kind"], doc.setdefault("metadata", {})
        is_storage = meta.get("labels", {}).get("app") == NFS_APP or kind == "PersistentVolume"
        if rwx_storage_class and is_storage and not (kind == "PersistentVolumeClaim" and meta.get("name") == CLAIM):
            continue  # a managed ReadWriteMany class replaces the NFS server and its volume
        if kind not in CLUSTER_SCOPED:
            rest = {k: v for k, v in meta.items() if k != "namespace"}
            doc["metadata"] = meta = {**({"name": rest.pop("name")} if "name" in rest else {}),
                                      "namespace": namespace, **rest}
        retag(doc, f"{image}:{tag}")
        spec = doc.get("spec", {})
        if kind == "PersistentVolume" and meta.get("name") == CLAIM:
            meta["name"] = volume
            spec["claimRef"] = {"namespace": namespace, "name": CLAIM}
            if "nfs" in spec:
                spec["nfs"]["server"] = nfs_server or f"{NFS_APP}.{namespace}.svc.cluster.local"
        if kind == "PersistentVolumeClaim" and meta.get("name") == CLAIM:
            if rwx_storage_class:
                spec.pop("volumeName", None)
                spec["storageClassName"] = rwx_storage_class
                spec["resources"] = {"requests": {"storage": rwx_size}}
            elif "volumeName" in spec:
                spec["volumeName"] = volume
        if scope == "all" or (scope == "cluster") == (kind in CLUSTER_SCOPED):
            out.append(doc)
    if scope == "cluster" and not nfs_server and any(d["kind"] == "PersistentVolume" for d in out):
        raise UsageError("the PersistentVolume needs --nfs-server: the ClusterIP of the nfs-server Service "
                         "(`kubectl get service nfs-server -o jsonpath='{.spec.clusterIP}'`)")
    return out


def dump(docs):
    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False) for doc in docs)


def parse_args(argv=None):
    p = ArgumentParser(description="Print the manifests with the image, tag and namespace filled in "
                                   "(pipe into `kubectl apply -f -`).")
    p.add_argument("files", nargs="+", metavar="FILE", help="manifests, e.g. kube/nfs.yaml")
    p.add_argument("--image", default=TRAINER_IMAGE, help="the trainer image, without its tag")
    p.add_argument("--tag", default="0.1.0", help="the trainer image's tag")
    p.add_argument("--namespace", default="default", help="the namespace every namespaced object goes to")
    p.add_argument("--nfs-server", help="the NFS server's address for the PersistentVolume (the Service's ClusterIP)")
    p.add_argument("--rwx-storage-class", help="use this ReadWriteMany storage class (e.g. standard-rwx on GKE) "
                                               "instead of the in-cluster NFS server")
    p.add_argument("--rwx-size", default="1Ti", help="the claim's size with --rwx-storage-class "
                                                     "(Filestore's basic tier starts at 1Ti)")
    p.add_argument("--scope", choices=("all", "namespaced", "cluster"), default="all",
                   help="print only namespaced or only cluster-scoped objects (a PersistentVolume)")
    args = p.parse_args(argv)
    if not DNS_LABEL.fullmatch(args.namespace):
        raise UsageError(f"--namespace {args.namespace!r} is not a namespace name "
                         "(lower-case letters, digits and '-', at most 63)")
    if not IMAGE.fullmatch(args.image):
        raise UsageError(f"--image {args.image!r} is not an image name without a tag "
                         "(e.g. europe-docker.pkg.dev/project/workshop/mnist; give the tag with --tag)")
    if not TAG.fullmatch(args.tag):
        raise UsageError(f"--tag {args.tag!r} is not a valid image tag")
    if args.tag == "latest":
        raise UsageError("--tag latest is not reproducible (nodes may run different images under it): "
                         "give a version such as v1 or a git commit")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    docs = render(load(args.files), args.image, args.tag, args.namespace, args.nfs_server,
                  args.rwx_storage_class, args.rwx_size, args.scope)
    print(dump(docs), end="")
