"""What pods ask for, as a ResourceQuota and the scheduler count it.

A pod's request (or limit) of a resource is the larger of the sum over its
containers and the largest of its init containers (which run one at a time,
before the others; a sidecar, `restartPolicy: Always`, counts in both), plus
the pod's overhead: Kubernetes' PodRequests and PodLimits. A limit without a
request is the request too, as the API server defaults it. A quota adds that up over the namespace's pods that are not
finished; the scheduler needs it free on one node. Quantities are Kubernetes
quantities ("500m", "2", "2Gi", "1e3"); CPU is counted in millicores and
memory and storage in bytes, as whole numbers, rounded up as the API server
rounds them. Ephemeral storage (the node's disk: emptyDirs, logs, writable
layers) is counted like memory.
"""
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)")
SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
            "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
            "E": Decimal("1e18"), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30),
            "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60)}
MI, GI = 2**20, 2**30
KEYS = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods", "requests.ephemeral-storage",
        "limits.ephemeral-storage")
FIELDS = ("requests_cpu", "requests_memory", "limits_cpu", "limits_memory", "pods", "requests_ephemeral",
          "limits_ephemeral")  # Usage's figures, in the order of KEYS
# (field, bound, resource) of what a container states
AMOUNTS = (("requests_cpu", "requests", "cpu"), ("requests_memory", "requests", "memory"),
           ("limits_cpu", "limits", "cpu"), ("limits_memory", "limits", "memory"),
           ("requests_ephemeral", "requests", "ephemeral-storage"), ("limits_ephemeral", "limits", "ephemeral-storage"))


def quantity(value):
    """A Kubernetes quantity as a Decimal in its base unit (cores, bytes); ValueError if it is not one."""
    text = str(value).strip()
    match = QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (like 500m, 2, 4Gi)")
    number, exponent, suffix = match.groups()
    if exponent:
        return Decimal(number + exponent)
    return Decimal(number) * SUFFIXES[suffix or ""]


def millicores(value):
    return math.ceil(quantity(value) * 1000)


def whole(value):
    """Bytes (or any count) rounded up to a whole number."""
    return math.ceil(quantity(value))


def cpu_text(milli):
    """8100 -> '8100m', 8000 -> '8': the shortest exact form."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_text(size):
    """Bytes as Gi or Mi when exact, else bytes rounded up to Mi."""
    if size % GI == 0:
        return f"{size // GI}Gi"
    return f"{math.ceil(size / MI)}Mi"


def cores(milli):
    """8100 -> '8.1' for tables."""
    return f"{milli / 1000:g}"


def gib(size):
    """Bytes -> '14.5' GiB for tables."""
    return f"{size / GI:.1f}".removesuffix(".0")


@dataclass
class Usage:
    """What pods count against a quota: CPU in millicores, memory and ephemeral storage in bytes, the number
    of pods."""
    requests_cpu: int = 0
    requests_memory: int = 0
    limits_cpu: int = 0
    limits_memory: int = 0
    pods: int = 0
    names: list = field(default_factory=list, compare=False)
    requests_ephemeral: int = 0
    limits_ephemeral: int = 0

    def __add__(self, other):
        return Usage(**{f: getattr(self, f) + getattr(other, f) for f in FIELDS}, names=self.names + other.names)

    def __sub__(self, other):
        return Usage(**{f: getattr(self, f) - getattr(other, f) for f in FIELDS},
                     names=[n for n in self.names if n not in other.names])

    def as_quota(self):
        """The quota keys and their values in base units (millicores for CPU)."""
        return {key: getattr(self, f) for key, f in zip(KEYS, FIELDS, strict=True)}

    def fits(self, other):
        """True when every figure of self is at most other's."""
        return all(a <= b for a, b in zip(self.as_quota().values(), other.as_quota().values(), strict=True))


def total(usages):
    found = Usage()
    for usage in usages:
        found = found + usage
    return found


def container_amount(container, bound, resource):
    value = ((container.get("resources") or {}).get(bound) or {}).get(resource)
    if value is None and bound == "requests":  # a limit without a request: the request is the limit
        value = ((container.get("resources") or {}).get("limits") or {}).get(resource)
    if value is None:
        return 0
    return millicores(value) if resource == "cpu" else whole(value)


def pod_usage(spec, name=""):
    """One pod's Usage from its spec: PodRequests and PodLimits (k8s.io/component-helpers resource/helpers.go).
    Init containers run one at a time before the others; a sidecar (an init container with `restartPolicy:
    Always`) runs on beside every init container after it and beside the pod's containers."""
    figures = {}
    for key, bound, resource in AMOUNTS:
        running = sum(container_amount(c, bound, resource) for c in spec.get("containers") or [])
        init = sidecars = 0
        for c in spec.get("initContainers") or []:
            amount = container_amount(c, bound, resource)
            if c.get("restartPolicy") == "Always":
                sidecars += amount
                running += amount
                init = max(init, sidecars)
            else:
                init = max(init, amount + sidecars)
        overhead = (spec.get("overhead") or {}).get(resource)
        extra = 0 if overhead is None else (millicores(overhead) if resource == "cpu" else whole(overhead))
        figures[key] = max(running, init) + extra
    return Usage(**figures, pods=1, names=[name] if name else [])


def workload_pods(doc, replicas=None):
    """[(pod name pattern, Usage)] for every pod the object runs at once; `replicas` overrides a
    Deployment's count (an autoscaler's maximum). A TFJob runs each replica type's `replicas` (default 1)."""
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name", "")
    spec = doc.get("spec") or {}
    if kind == "TFJob":
        return [(f"{name}-{rtype.lower()}-{i}", pod_usage(r["template"]["spec"], f"{name}-{rtype.lower()}-{i}"))
                for rtype, r in spec.get("tfReplicaSpecs", {}).items() for i in range(r.get("replicas", 1))]
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        count = spec.get("replicas", 1) if replicas is None else replicas
        return [(f"{name}-{i}", pod_usage(spec["template"]["spec"], f"{name}-{i}")) for i in range(count)]
    if kind == "Job":
        return [(name, pod_usage(spec["template"]["spec"], name))] * spec.get("parallelism", 1)
    if kind == "CronJob":
        return [(name, pod_usage(spec["jobTemplate"]["spec"]["template"]["spec"], name))]
    if kind == "Pod":
        return [(name, pod_usage(spec, name))]
    return []
