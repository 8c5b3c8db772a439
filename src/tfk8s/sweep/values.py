"""The sweep's inputs, checked before anything is rendered: the values file, and every name that reaches YAML.

A value that ends up in a manifest is checked against the rule the API server
applies to that field (a namespace is a DNS-1123 label, a TFJob name a
DNS-1035 label, a label a qualified name and a label value, an image a
reference with a tag or digest), so a mistake is one line here and not a
rejected or, worse, a silently different object on the cluster.
"""
import difflib
import math
import re

from tfk8s import yamlfile
from tfk8s.cli import UsageError
from tfk8s.kube import render  # the namespace and image rules of the manifests' renderer

KEYS = ("name", "workers", "grid", "flags", "katib")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
MAX_LABEL = 63

DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
MAX_IMAGE_NAME = 255

MAX_WORKERS = 15  # a trial is a Chief and its workers: tfjob_local.MAX_REPLICAS (16) replicas at most


def did_you_mean(word, candidates):
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_namespace(namespace):
    """A namespace is a DNS-1123 label: the API server refuses anything else."""
    if not isinstance(namespace, str) or not render.DNS_LABEL.fullmatch(namespace):
        raise UsageError(f"--namespace {namespace!r} is not a namespace name: at most {MAX_LABEL} lower-case "
                         "letters, digits and '-', starting and ending with a letter or digit")
    return namespace


def split_image(image):
    """'registry:5000/team/mnist:v1@sha256:...' -> ('registry:5000/team/mnist', 'v1', 'sha256:...')."""
    name, _, digest = image.partition("@")
    path, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        name = path
    else:
        tag = ""
    return name, tag, digest


def check_image(image):
    """An image reference with a tag or a digest (a pinned image), as a container runtime parses it."""
    name, tag, digest = split_image(image) if isinstance(image, str) else ("", "", "")
    if (not render.IMAGE.fullmatch(name) or len(name) > MAX_IMAGE_NAME or (tag and not render.TAG.fullmatch(tag))
            or (digest and not DIGEST.fullmatch(digest)) or (not tag and "@" in image and not digest)):
        raise UsageError(f"--image {image!r} is not an image reference such as "
                         "registry.example.com/team/mnist:v1 (lower-case path, then :tag or @sha256:digest)")
    if not tag and not digest:
        raise UsageError(f"--image {image!r} has no tag: name the version to run, e.g. {image}:v1")
    if tag == "latest" and not digest:
        raise UsageError(f"--image {image!r}: 'latest' is not a version (every pull may get another image): "
                         "give the tag you pushed")
    return image


def check_label(key, value, where):
    """A Kubernetes label: a qualified name and a value of at most 63 safe characters."""
    if not isinstance(key, str) or len(key) > MAX_LABEL or not LABEL_NAME.fullmatch(key):
        raise UsageError(f"{where}: {key!r} cannot be a Kubernetes label name "
                         "(at most 63 letters, digits, '-', '_' and '.')")
    if len(value) > MAX_LABEL or not LABEL_VALUE.fullmatch(value):
        raise UsageError(f"{where}: {value!r} cannot be a Kubernetes label value "
                         "(at most 63 letters, digits, '-', '_' and '.')")


def check_sweep_name(name, longest_suffix=""):
    """A trial's TFJob, its pods and their Services are named after the sweep: DNS-1035 labels."""
    if not name:
        raise UsageError("the sweep has no name: set `name:` in the values file or give --name")
    if not isinstance(name, str) or not DNS_1035.fullmatch(name):
        raise UsageError(f"the sweep's name {name!r} must be lower-case letters, digits and '-', "
                         "starting with a letter (set it with --name or in the values file)")
    longest = f"{name}{longest_suffix}"
    if len(longest) > MAX_LABEL:
        raise UsageError(f"the sweep's name {name!r} is too long: a trial's Service {longest} "
                         f"would exceed {MAX_LABEL} characters")
    return name


def read_text(path, what):
    """A text file's content; a missing, unreadable or binary file is one line."""
    return yamlfile.read_text(path, what, UsageError)


def load(path):
    """Read the values file and check its shape (the trainer judges the flags' values later)."""
    values = yamlfile.load(read_text(path, "the values file"), str(path), UsageError)
    if not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping with the keys {', '.join(KEYS)}")
    for key in values:
        if key not in KEYS:
            raise UsageError(f"{path}: unknown key {key!r}{did_you_mean(key, KEYS)} (the keys are {', '.join(KEYS)})")
    workers = values.get("workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UsageError(f"{path}: workers must be a whole number, 0 or more, not {workers!r}")
    if workers > MAX_WORKERS:  # checked before any trial is planned (10**9 workers took minutes, or MemoryError)
        raise UsageError(f"{path}: workers {workers} is more than {MAX_WORKERS}, the most a trial runs beside its "
                         "Chief (the local runner's bound; a namespace's quota holds far fewer)")
    grid, flags = values.get("grid"), values.get("flags") or {}
    if not isinstance(grid, dict) or not grid:
        raise UsageError(f"{path}: grid must map at least one trainer flag to a list of values")
    if not isinstance(flags, dict):
        raise UsageError(f"{path}: flags must map trainer flags to one value each, not {flags!r}")
    for name, options in grid.items():
        if not isinstance(name, str):
            raise UsageError(f"{path}: grid: {name!r} is not a flag name")
        if not isinstance(options, list) or not options:
            raise UsageError(f"{path}: grid.{name} must be a non-empty list of values, not {options!r}")
        if not all(isinstance(v, (str, int, float)) for v in options):
            raise UsageError(f"{path}: grid.{name} must list plain values (numbers, words, true/false)")
        if len(set(map(repr, options))) < len(options):
            raise UsageError(f"{path}: grid.{name} lists a value twice: {options}")
    for name, value in flags.items():
        if not isinstance(name, str):
            raise UsageError(f"{path}: flags: {name!r} is not a flag name")
        if not isinstance(value, (str, int, float)):
            raise UsageError(f"{path}: flags.{name} must be one plain value, not {value!r}")
        if name in grid:
            raise UsageError(f"{path}: {name} is both in grid and in flags")
    katib = values.get("katib") or {}
    if not isinstance(katib, dict):
        raise UsageError(f"{path}: katib must be a mapping (see templated/values.yaml), not {katib!r}")
    return {"name": values.get("name"), "workers": workers, "grid": grid, "flags": flags, "katib": katib}


def count_trials(grid):
    """How many combinations the grid holds, without listing them."""
    return math.prod(len(options) for options in grid.values())


def check_trial_count(grid, max_trials, path):
    """Refuse a grid larger than --max_trials before a single combination is built."""
    count = count_trials(grid)
    if count > max_trials:
        sizes = " x ".join(f"{len(options)} {name}" for name, options in grid.items())
        raise UsageError(f"{path}: the grid holds {count:,} trials ({sizes}), more than --max_trials {max_trials}: "
                         "shorten its lists, or raise --max_trials if you mean it")
    return count
