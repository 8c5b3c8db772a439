"""Fill in the image, its tag and the namespace of the workshop's manifests, so no one edits YAML by hand.

The files in kube/ name the trainer image ghcr.io/example/mnist-trainer:0.1.0
and no namespace. The Makefile pipes them through this script into kubectl:

    python src/render_manifests.py --image REGISTRY/you/mnist --tag v1 --namespace alice \
        kube/tensorboard.yaml | kubectl apply -f -
    python src/render_manifests.py --image REGISTRY/you/mnist --tag v1 --namespace alice \
        --output_dir runs/render kube/*.yaml          # one file each, to read or to hand to GitOps

What changes: every container that runs the trainer image gets
IMAGE:TAG@sha256:..., the digest `make push` recorded in runs/pushed-image
(--pushed_image; one line `IMAGE:TAG@sha256:<64 hex>`): a node pulls exactly
the image that was pushed, whatever the tag points at later. A record that is
missing, or is of another IMAGE:TAG, is refused ("run make push first"); for
a review without a push, --placeholder_digest writes sha256:000...0, which no
registry serves. An upstream image listed in pinned-images.yaml (TensorFlow
Serving) gets the digest that file records (`make instructor-pin-images`
fills it in); while it records none, the tag alone, with one warning line.
Every namespaced object gets the namespace. The shared claim mnist-nfs
(kube/storage.yaml) names its volume, mnist-nfs-<namespace>: the instructor's
PersistentVolume reserved for it. With --rwx_storage_class it asks that
storage class (Filestore on GKE) for a ReadWriteMany volume of --rwx_size
instead.
"""
import json
import re
from pathlib import Path

import yaml

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.kube import pins

TRAINER_IMAGE = "ghcr.io/example/mnist-trainer"   # the image the plain manifests name
CLAIM = "mnist-nfs"                                 # the ReadWriteMany claim every pod mounts
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass", "ValidatingWebhookConfiguration",
                  "MutatingWebhookConfiguration"}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
IMAGE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# For reviewing the objects without a push (`make render PLACEHOLDER_DIGEST=1`): no registry serves it.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
PUSHED_IMAGE = "runs/pushed-image"   # what `make push` (and `make build-remote`) writes: IMAGE:TAG@sha256:...


def load(paths):
    """Every document of every file, in order (empty documents skipped)."""
    docs = []
    for path in map(Path, paths):
        found = yamlfile.documents(path)
        for doc in found:
            if not isinstance(doc, dict) or "kind" not in doc:
                raise UserError(f"{path}: every document must be a Kubernetes object with a kind")
        # A JSON round trip turns YAML aliases (a TFJob's `*trainer`) into independent copies.
        docs += [json.loads(json.dumps(doc)) for doc in found]
    return docs


def containers(node):
    """Every container (of containers, initContainers, ephemeralContainers) anywhere in `node`."""
    if isinstance(node, list):
        for item in node:
            yield from containers(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            yield from containers(value)


def retag(node, image):
    """Point every container running the trainer image (any tag) at `image`."""
    for container in containers(node):
        current = container.get("image", "")
        if current == TRAINER_IMAGE or current.startswith((TRAINER_IMAGE + ":", TRAINER_IMAGE + "@")):
            container["image"] = image


def pin_upstream(node, the_pins):
    """Point every container running an upstream image of pinned-images.yaml at its digest (tfk8s.kube.pins)."""
    for container in containers(node):
        if "image" in container:
            container["image"] = pins.pinned(container["image"], the_pins)


def images(docs):
    return [c["image"] for c in containers(docs) if "image" in c]


def pushed_digest(path, image, tag):
    """The digest the record at `path` names for image:tag; a UserError if it is missing or of another image."""
    wanted = f"{image}:{tag}"
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"no record of a push of {wanted} ({path} is missing): run make push first") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    lines = text.splitlines()
    reference, _, digest = (lines[0] if len(lines) == 1 else "").strip().rpartition("@")
    if not DIGEST.fullmatch(digest) or not reference:
        raise UserError(f"{path} is not one line IMAGE:TAG@sha256:<64 hex digits>: run make push first")
    if reference != wanted:
        raise UserError(f"{path} records a push of {reference}, not {wanted}: run make push first")
    return digest


def reference(image, tag, digest=None):
    """IMAGE:TAG@DIGEST, or IMAGE:TAG without a digest (the library's callers that pull nothing)."""
    return f"{image}:{tag}@{digest}" if digest else f"{image}:{tag}"


def render(docs, image, tag, namespace, rwx_storage_class=None, rwx_size="1Ti", digest=None, the_pins=None):
    """The documents as they are applied in `namespace`, running `image:tag@digest` and the upstream images
    by the digests of `the_pins` (default: pinned-images.yaml's) (new dicts; `docs` untouched)."""
    the_pins = pins.read() if the_pins is None else the_pins
    out = []
    for doc in json.loads(json.dumps(docs)):
        kind, meta = doc["kind"], doc.setdefault("metadata", {})
        if kind not in CLUSTER_SCOPED:
            rest = {k: v for k, v in meta.items() if k != "namespace"}
            doc["metadata"] = meta = {**({"name": rest.pop("name")} if "name" in rest else {}),
                                      "namespace": namespace, **rest}
        retag(doc, reference(image, tag, digest))
        pin_upstream(doc, the_pins)
        spec = doc.get("spec", {})
        if kind == "PersistentVolumeClaim" and meta.get("name") == CLAIM:
            if rwx_storage_class:
                spec.pop("volumeName", None)
                spec["storageClassName"] = rwx_storage_class
                spec["resources"] = {"requests": {"storage": rwx_size}}
            elif "volumeName" in spec:
                spec["volumeName"] = f"{CLAIM}-{namespace}"
        out.append(doc)
    return out


def dump(docs):
    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False) for doc in docs)


def directory(text):
    """An argparse type for --output_dir: a path, never the empty string (which would mean here)."""
    if not text.strip():
        raise UsageError("--output_dir is empty: name the directory to write to")
    return Path(text)


def parse_args(argv=None):
    p = ArgumentParser(description="Print the manifests with the image, tag and namespace filled in "
                                   "(pipe into `kubectl apply -f -`), or write them to --output_dir.")
    p.add_argument("files", nargs="*", metavar="FILE", help="manifests, e.g. kube/tensorboard.yaml")
    p.add_argument("--image", default=TRAINER_IMAGE, help="the trainer image, without its tag")
    p.add_argument("--tag", default="0.1.0", help="the trainer image's tag")
    p.add_argument("--namespace", default="default", help="the namespace every namespaced object goes to")
    pinned = p.add_mutually_exclusive_group()
    pinned.add_argument("--pushed_image", metavar="FILE", default=PUSHED_IMAGE,
                        help=f"the record `make push` wrote, IMAGE:TAG@sha256:... (default {PUSHED_IMAGE}): "
                             "the trainer image is pulled by that digest")
    pinned.add_argument("--placeholder_digest", action="store_true",
                        help=f"for reviewing without a push: pin {PLACEHOLDER_DIGEST[:15]}..., which no registry "
                             "serves (what is applied must come from a push)")
    p.add_argument("--print_reference", action="store_true",
                   help="print IMAGE:TAG@sha256:... from the record and stop (for the sweep's --image)")
    p.add_argument("--rwx_storage_class", help="the claim mnist-nfs asks this ReadWriteMany storage class "
                                               "(e.g. standard-rwx on GKE) instead of the instructor's NFS volume")
    p.add_argument("--rwx_size", default="1Ti", help="the claim's size with --rwx_storage_class "
                                                     "(at least the class's smallest volume: 1Ti for standard-rwx)")
    p.add_argument("--pins", type=Path, default=pins.PINS, metavar="FILE",
                   help="the upstream images' digests (default pinned-images.yaml; make instructor-pin-images)")
    p.add_argument("--output_dir", type=directory, help="write each FILE, rendered, to this directory under its own "
                                                   "name instead of printing them all")
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
    if not args.files and not args.print_reference:
        raise UsageError("name the manifests to render, e.g. kube/tensorboard.yaml")
    return args


def uses_trainer_image(docs):
    return TRAINER_IMAGE in json.dumps(docs)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    def pinned():
        return PLACEHOLDER_DIGEST if args.placeholder_digest else pushed_digest(args.pushed_image, args.image,
                                                                                args.tag)
    if args.print_reference:
        print(reference(args.image, args.tag, pinned()))
        return
    docs = load(args.files)
    # A manifest without the trainer image (the claim, the model config) needs no push.
    digest = pinned() if uses_trainer_image(docs) else None
    the_pins = pins.read(args.pins)
    pins.warn(pins.unpinned(images(docs), the_pins), args.pins)
    options = (args.image, args.tag, args.namespace, args.rwx_storage_class, args.rwx_size, digest, the_pins)
    if args.output_dir is None:
        print(dump(render(docs, *options)), end="")
        return
    names = [Path(f).name for f in args.files]
    if len(set(names)) != len(names):
        raise UsageError("two FILEs share a name: --output_dir would write one over the other")
    rendered = {name: dump(render(load([path]), *options)) for name, path in zip(names, args.files, strict=True)}
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (args.output_dir / name).write_text(text)
    except OSError as err:
        raise UserError(f"cannot write to {args.output_dir}: {err.strerror}") from None
    print(f"{args.output_dir}: {', '.join(names)} for namespace {args.namespace}, image "
          f"{reference(args.image, args.tag, digest)}")
