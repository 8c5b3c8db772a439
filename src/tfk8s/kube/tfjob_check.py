"""Check a TFJob before it reaches a cluster: the CRD's schema, strictly, then the operator's rules.

`kubectl apply` checks a TFJob against the openAPIV3Schema of the
CustomResourceDefinition that the Kubeflow training operator installs (v1.9.4's,
manifests/base/crds/kubeflow.org_tfjobs.yaml, copied in src/tfk8s/kube/schemas/),
then the operator's admission webhook adds what a schema cannot say: a
container named `tensorflow` in every replica, one Chief at most. This does
both offline, so a typo costs a second on a laptop instead of a failed job on
the cluster:

    python src/tfjob_check.py kube/tfjob.yaml kube/tfjob-ps.yaml

Unknown fields are errors, as with kubectl's default `--validate=strict`
(without it, the API server would silently drop a misspelt `restartPolcy`).
"""
import functools
import re
import sys
from pathlib import Path

import jsonschema
import yaml

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, entry_point

CRD = Path(__file__).resolve().parent / "schemas" / "kubeflow.org_tfjobs.yaml"
API_VERSION, KIND = "kubeflow.org/v1", "TFJob"
CONTAINER = "tensorflow"  # the operator injects TF_CONFIG into this container and reads its exit code
REPLICA_TYPES = ("Chief", "Master", "Worker", "PS", "Evaluator")
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")
SUCCESS_POLICIES = ("", "AllWorkers")
OPERATOR, MULTIKUEUE = "kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"  # common_types.go, v1.9.4
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")

# The API server checks a resource's own metadata as an ObjectMeta, not with the CRD's schema.
OBJECT_META = {
    "type": "object",
    "properties": {
        **{name: {"type": "string"} for name in (
            "name", "generateName", "namespace", "uid", "resourceVersion", "selfLink",
            "creationTimestamp", "deletionTimestamp")},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "generation": {"type": "integer"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}
INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def closed(schema):
    """A Kubernetes structural schema as plain JSON Schema, closed where Kubernetes rejects unknown fields.

    Kubernetes extensions: `x-kubernetes-preserve-unknown-fields` keeps an
    object open; `x-kubernetes-int-or-string` is an integer or a string;
    `x-kubernetes-embedded-resource` implies apiVersion, kind and metadata;
    `nullable` admits null; a list of type `set` has unique items (type `map`
    is checked by the `x-kubernetes-list-map-keys` keyword, see VALIDATOR).
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("x-kubernetes-embedded-resource"):
        out["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                             "metadata": OBJECT_META, **out.get("properties", {})}
    if "properties" in out:
        out["properties"] = {name: closed(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(out["additionalProperties"])
    if "items" in out:
        out["items"] = closed(out["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [closed(sub) for sub in out[key]]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def unique_map_keys(validator, keys, instance, schema):
    """`x-kubernetes-list-type: map`: no two items share their key fields (defaults applied)."""
    if not validator.is_type(instance, "array"):
        return
    item_properties = schema.get("items", {}).get("properties", {})
    seen = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        key = tuple((k, item.get(k, item_properties.get(k, {}).get("default"))) for k in keys)
        if key in seen:
            shown = ", ".join(f"{k}={v!r}" for k, v in key)
            yield jsonschema.ValidationError(f"duplicate entry with {shown}")
        seen.add(key)


FORMATS = jsonschema.FormatChecker(formats=())
for _name, (_low, _high) in INT_RANGES.items():
    FORMATS.checks(_name)(lambda value, low=_low, high=_high: not isinstance(value, int) or low <= value <= high)
VALIDATOR = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                         {"x-kubernetes-list-map-keys": unique_map_keys})


# The CRD is this package's own file (576 kB), not a user's: it is read with libyaml's parser where PyYAML has
# it (0.07 s of CPU against 0.44 s for the pure-Python parser, the same objects), which every command that
# checks a TFJob pays once.
CRD_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def schema_validator():
    """The validator for the CRD's served version (kubeflow.org/v1), built once."""
    crd = yaml.load(CRD.read_text(), Loader=CRD_LOADER)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == API_VERSION.split("/")[1])
    schema = closed(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return VALIDATOR(schema, format_checker=FORMATS)


def dotted(path):
    """['spec', 'containers', 0, 'image'] -> 'spec.containers[0].image'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error):
    """One line per schema error, naming the exact field."""
    path = dotted(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return [f'unknown field "{dotted([*error.absolute_path, name])}"'
                for name in sorted(set(error.instance) - set(known))]
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        return [f"{path}: must be an integer or a string, not {error.instance!r}"]
    if error.validator == "pattern" and "[KMGTPE]i" in error.validator_value:
        return [f"{path}: {error.instance!r} is not a quantity (like 500m, 2, 4Gi)"]
    if error.validator == "format" and error.validator_value in INT_RANGES:
        return [f"{path}: {error.instance} is out of range for {error.validator_value}"]
    return [f"{path or 'the document'}: {error.message}"]


def canonical_type(replica_type):
    """The operator's defaulting renames replica types case-insensitively ('worker' -> 'Worker')."""
    return next((t for t in REPLICA_TYPES if t.lower() == str(replica_type).lower()), None)


def containers_of(replica):
    containers = (((replica or {}).get("template") or {}).get("spec") or {}).get("containers")
    return [c for c in containers if isinstance(c, dict)] if isinstance(containers, list) else []


def operator_problems(doc):
    """The admission webhook's and controller's rules that the schema does not carry."""
    found = []
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    if not (isinstance(name, str) and DNS_1035_LABEL.fullmatch(name)):
        found.append(f"metadata.name: {name!r} is not a DNS-1035 label (at most 63 lower-case letters, "
                     "digits and '-', starting with a letter): pods and services are named after it")
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    specs = spec.get("tfReplicaSpecs")
    if not isinstance(specs, dict) or not specs:
        return found + ["spec.tfReplicaSpecs: must have at least one replica type (Chief, Worker, PS, ...)"]

    by_type = {}
    for replica_type, replica in specs.items():
        path = f"spec.tfReplicaSpecs.{replica_type}"
        replica = replica if isinstance(replica, dict) else {}
        canonical = canonical_type(replica_type)
        if canonical is None:
            found.append(f"{path}: unknown replica type {replica_type!r} (one of {', '.join(REPLICA_TYPES)})")
        else:
            by_type.setdefault(canonical, []).append(replica_type)
        if canonical in ("Chief", "Master") and replica.get("replicas", 1) != 1:
            found.append(f"{path}.replicas: must be 1 (a TensorFlow cluster has one chief), "
                         f"not {replica.get('replicas')}")
        elif isinstance(replica.get("replicas"), int) and replica["replicas"] < 1:
            # v1.9.4's TFJob webhook and CRD let it through (the controller then creates and deletes pod 0
            # over and over); the same operator's PyTorchJob webhook refuses it: that is the rule kept here.
            found.append(f"{path}.replicas: must be at least 1, not {replica['replicas']}")
        policy = replica.get("restartPolicy", "Never")
        if policy not in RESTART_POLICIES:
            found.append(f"{path}.restartPolicy: {policy!r} is not one of {', '.join(RESTART_POLICIES)}")
        containers = containers_of(replica)
        if not any(c.get("name") == CONTAINER for c in containers):
            found.append(f"{path}.template.spec.containers: needs a container named {CONTAINER!r} "
                         "(the operator gives it TF_CONFIG and watches its exit code)")
        for i, container in enumerate(containers):
            if not container.get("image"):
                found.append(f"{path}.template.spec.containers[{i}].image: is required")

    if isinstance(name, str) and DNS_1035_LABEL.fullmatch(name):
        # The operator names each replica's headless Service <job>-<type>-<index> (pkg/core/service.go): the API
        # server refuses a Service name that is not a DNS-1035 label, and the replica never gets its address.
        counts = {t: r.get("replicas", 1) for t, r in specs.items() if isinstance(r, dict)}
        longest = max((f"{name}-{t.lower()}-{max(n, 1) - 1}" for t, n in counts.items() if isinstance(n, int)),
                      key=len, default="")
        if len(longest) > 63:
            found.append(f"metadata.name: {name!r} is too long: the operator names a replica's Service {longest!r} "
                         f"({len(longest)} characters), and a Service name has at most 63")
    for canonical, names in by_type.items():
        if len(names) > 1:
            found.append(f"spec.tfReplicaSpecs: {' and '.join(map(repr, names))} are the same replica type {canonical}")
    chiefs = [n for t in ("Chief", "Master") for n in by_type.get(t, [])]
    if len(chiefs) > 1:
        found.append(f"spec.tfReplicaSpecs: at most one Chief or Master, not {' and '.join(chiefs)}")
    run_policy = spec.get("runPolicy") if isinstance(spec.get("runPolicy"), dict) else {}
    manager = run_policy.get("managedBy")
    if manager is not None and manager not in (OPERATOR, MULTIKUEUE):  # pkg/common/util/webhooks.go ValidateRunPolicy
        found.append(f"spec.runPolicy.managedBy: Unsupported value: {manager!r}: supported values: {OPERATOR!r}, "
                     f"{MULTIKUEUE!r}")
    if run_policy.get("cleanPodPolicy", "None") not in CLEAN_POD_POLICIES:
        found.append(f"spec.runPolicy.cleanPodPolicy: {run_policy['cleanPodPolicy']!r} is not one of "
                     f"{', '.join(CLEAN_POD_POLICIES)}")
    for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = run_policy.get(field)
        if isinstance(value, int) and value < 0:
            found.append(f"spec.runPolicy.{field}: must be 0 or more, not {value}")
    if spec.get("successPolicy", "") not in SUCCESS_POLICIES:
        found.append(f"spec.successPolicy: {spec['successPolicy']!r} is not one of '' (the default) or 'AllWorkers'")
    return found


def problems(doc):
    """Everything the API server and the operator would reject in `doc`, one line each; [] when valid."""
    if not isinstance(doc, dict):
        return [f"the document: a TFJob is a mapping, not {type(doc).__name__}"]
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return [f"apiVersion/kind: a TFJob is {API_VERSION}/{KIND}, not {doc.get('apiVersion')}/{doc.get('kind')}"]
    errors = sorted(schema_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [line for error in errors for line in describe(error)] + operator_problems(doc)


@entry_point
def main(argv=None):
    parser = ArgumentParser(description="Validate TFJob manifests against the kubeflow.org/v1 CRD (strictly) "
                                        "and the training operator's rules.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        for doc in yamlfile.documents(path, must_hold="a TFJob"):
            found = problems(doc)
            for line in found:
                print(f"{path}: {line}", file=sys.stderr)
            if not found:
                specs = doc["spec"]["tfReplicaSpecs"]
                shape = ", ".join(f"{t} x{s.get('replicas', 1)}" for t, s in specs.items())
                print(f"{path}: TFJob {doc['metadata']['name']} is valid ({shape})")
            failed = failed or bool(found)
    if failed:
        sys.exit(1)
