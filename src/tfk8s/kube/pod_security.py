"""The Pod Security Standards, check by check, as Kubernetes' pod-security-admission library evaluates them.

The API server enforces a namespace's `pod-security.kubernetes.io/enforce`
level on pods only: a Deployment, Job or CronJob whose template breaks it is
accepted (with a warning), and a TFJob is not looked at at all, until the
operator's pods are refused one by one (`FailedCreatePod` events, a TFJob stuck
in Created). So every pod template the workshop applies is checked here,
offline, with the same checks, the same reasons and the same details:

    python src/pod_security.py --level restricted kube/*.yaml

Each check reads the fields the library reads, in the same order (init
containers, containers, ephemeral containers), and words its failure as the
library does; `evaluate` runs the checks of a level at a version (`latest` is
the newest version the library knows, 1.37, and a version above it is clamped
to it, as the API server does) and `forbidden_detail` joins them as the API
server's `violates PodSecurity "restricted:latest": ...` message. The checks
themselves are in tfk8s.kube.pod_security_checks.
"""
import re
import sys

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, UsageError, entry_point
from tfk8s.kube.pod_security_checks import (
    SELINUX_TYPES,
    SELINUX_TYPES_1_31,
    SYSCTLS,
    allow_privilege_escalation,
    app_armor_profile,
    capabilities_baseline,
    capabilities_restricted,
    host_namespaces,
    host_path_volumes,
    host_ports,
    host_probes_and_lifecycle,
    plural,
    privileged,
    proc_mount,
    proc_mount_1_35_baseline,
    restricted_volumes,
    run_as_non_root,
    run_as_user,
    se_linux_options,
    seccomp_annotations,
    seccomp_baseline,
    seccomp_restricted,
    sysctls,
    unless_user_namespace,
    unless_windows,
    windows_host_process,
)

LEVELS = ("privileged", "baseline", "restricted")
LATEST = (1, 37)  # the newest MinimumVersion of any check (the sysctls of 1.37)
VERSION = re.compile(r"v1\.(0|[1-9][0-9]*)")
LABEL = "pod-security.kubernetes.io/"


# ---------------------------------------------------------------- the registry

# id -> (level, [(minimum version, check, ids it overrides), ...]), versions strictly increasing.
CHECKS = {
    "appArmorProfile": ("baseline", [((1, 0), app_armor_profile, ())]),
    "capabilities_baseline": ("baseline", [((1, 0), capabilities_baseline, ())]),
    "hostNamespaces": ("baseline", [((1, 0), host_namespaces, ())]),
    "hostPathVolumes": ("baseline", [((1, 0), host_path_volumes, ())]),
    "hostPorts": ("baseline", [((1, 0), host_ports, ())]),
    "hostProbesAndHostLifecycle": ("baseline", [((1, 34), host_probes_and_lifecycle, ())]),
    "privileged": ("baseline", [((1, 0), privileged, ())]),
    "procMount": ("baseline", [((1, 0), proc_mount, ()), ((1, 35), proc_mount_1_35_baseline, ())]),
    "seLinuxOptions": ("baseline", [((1, 0), se_linux_options(SELINUX_TYPES), ()),
                                    ((1, 31), se_linux_options(SELINUX_TYPES_1_31), ())]),
    "seccompProfile_baseline": ("baseline", [((1, 0), seccomp_annotations, ()), ((1, 19), seccomp_baseline, ())]),
    "sysctls": ("baseline", [(version, sysctls(set().union(*(names for v, names in SYSCTLS.items() if v <= version))),
                              ()) for version in SYSCTLS]),
    "windowsHostProcess": ("baseline", [((1, 0), windows_host_process, ())]),
    "allowPrivilegeEscalation": ("restricted", [((1, 8), allow_privilege_escalation, ()),
                                                ((1, 25), unless_windows(allow_privilege_escalation), ())]),
    "capabilities_restricted": ("restricted", [((1, 22), capabilities_restricted, ("capabilities_baseline",)),
                                               ((1, 25), unless_windows(capabilities_restricted),
                                                ("capabilities_baseline",))]),
    "procMount_restricted": ("restricted", [((1, 35), proc_mount, ("procMount",))]),
    "restrictedVolumes": ("restricted", [((1, 0), restricted_volumes, ("hostPathVolumes",))]),
    "runAsNonRoot": ("restricted", [((1, 0), run_as_non_root, ()),
                                    ((1, 35), unless_user_namespace(run_as_non_root), ())]),
    "runAsUser": ("restricted", [((1, 23), run_as_user, ()), ((1, 35), unless_user_namespace(run_as_user), ())]),
    "seccompProfile_restricted": ("restricted", [((1, 19), seccomp_restricted, ("seccompProfile_baseline",)),
                                                 ((1, 25), unless_windows(seccomp_restricted),
                                                  ("seccompProfile_baseline",))]),
}
# Baseline checks first, then restricted ones, each group in Go's byte order of their ids.
ORDER = ([i for i in sorted(CHECKS) if CHECKS[i][0] == "baseline"]
         + [i for i in sorted(CHECKS) if CHECKS[i][0] == "restricted"])


def parse_version(text):
    """'latest' or 'v1.N' -> (1, N), clamped to LATEST; anything else is an error (and the server reads latest)."""
    if text == "latest":
        return LATEST
    match = VERSION.fullmatch(str(text))
    if not match:
        raise ValueError(f'{text!r} must be "latest" or "v1.x"')
    return min((1, int(match.group(1))), LATEST)


def version_of(check_id, version):
    """The (check, overrides) of `check_id` in force at `version`, or None before its first version."""
    found = None
    for minimum, check, overrides in CHECKS[check_id][1]:
        if minimum <= version:
            found = (check, overrides)
    return found


def checks_for(level, version):
    """The ids and check functions a level runs at a version, in the library's order."""
    if level not in LEVELS:
        raise ValueError(f"{level!r} is not a Pod Security level ({', '.join(LEVELS)})")
    if level == "privileged":
        return []
    active = {i: version_of(i, version) for i in ORDER}
    active = {i: v for i, v in active.items() if v is not None}
    chosen = [i for i in ORDER if CHECKS[i][0] == "baseline" and i in active]
    if level == "restricted":
        overridden = {o for i in active if CHECKS[i][0] == "restricted" for o in active[i][1]}
        chosen = [i for i in ORDER if i in active and (CHECKS[i][0] == "restricted" or i not in overridden)]
    return [(i, active[i][0]) for i in chosen]


def evaluate(meta, spec, level="restricted", version="latest"):
    """[(check id, reason, detail), ...] for every check of `level` that the pod fails; [] when it passes."""
    version = parse_version(version) if isinstance(version, str) else min(version, LATEST)
    failures = []
    for check_id, check in checks_for(level, version):
        found = check(meta or {}, spec or {})
        if found is not None:
            reason, detail = found
            failures.append((check_id, reason or "unknown forbidden reason", detail))
    return failures


def forbidden_detail(failures):
    """'reason (detail), reason (detail)', as the API server words it."""
    return ", ".join(f"{reason} ({detail})" if detail else reason for _, reason, detail in failures)


def level_version(level, version):
    return f"{level}:{version if isinstance(version, str) else f'v{version[0]}.{version[1]}'}"


# ---------------------------------------------------------------- pods inside workloads

def pod_templates(doc):
    """[(where, metadata, spec)] for every pod a manifest makes: a Pod, a workload's template, a CronJob's
    job template, each replica type of a TFJob, and those of a Katib Experiment's trials."""
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name", "")
    spec = doc.get("spec") or {}
    if kind == "Experiment":  # Katib: every trial is its trialSpec (a TFJob here), with that kind's pods
        trial = (spec.get("trialTemplate") or {}).get("trialSpec") or {}
        return [(f"Experiment/{name}/{where}", meta, pod) for where, meta, pod in pod_templates(trial)]
    templates = []
    if kind == "Pod":
        templates = [(name, doc)]
    elif kind == "PodTemplate":
        templates = [(name, doc.get("template") or {})]
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"):
        templates = [(name, spec.get("template") or {})]
    elif kind == "CronJob":
        templates = [(name, ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})]
    elif kind == "TFJob":
        templates = [(f"{name}/{replica_type}", (replica or {}).get("template") or {})
                     for replica_type, replica in (spec.get("tfReplicaSpecs") or {}).items()]
    return [(f"{kind}/{where}", t.get("metadata") or {}, t.get("spec") or {}) for where, t in templates]


def violations(docs, level="restricted", version="latest"):
    """One line per pod template of `docs` that `level` refuses, worded as the API server words it."""
    lines = []
    for doc in docs:
        for where, meta, spec in pod_templates(doc):
            failures = evaluate(meta, spec, level, version)
            if failures:
                lines.append(f'{where}: violates PodSecurity "{level_version(level, version)}": '
                             f"{forbidden_detail(failures)}")
    return lines


def namespace_level(namespace_doc, mode="enforce"):
    """(level, version) a Namespace's labels set for `mode`: privileged when unset, as the API server reads it."""
    labels = (namespace_doc.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL + mode, "privileged"), labels.get(f"{LABEL}{mode}-version", "latest")


def parse_args(argv=None):
    p = ArgumentParser(description="Check every pod template in the manifests (Deployments, Jobs, CronJobs, "
                                   "TFJob replicas, ...) against a Pod Security level, as the API server would.")
    p.add_argument("files", nargs="+", metavar="FILE", help="manifests (multi-document YAML)")
    p.add_argument("--level", default="restricted", choices=LEVELS, help="the level to check (default: restricted)")
    p.add_argument("--version", default="latest", help='the level\'s version: "latest" (1.37) or v1.N')
    args = p.parse_args(argv)
    try:
        parse_version(args.version)
    except ValueError as err:
        raise UsageError(f"--version {err}") from None
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    failed = 0
    for path in args.files:
        docs = [d for d in yamlfile.documents(path, must_hold="Kubernetes objects") if isinstance(d, dict)]
        found = violations(docs, args.level, args.version)
        for line in found:
            print(f"{path}: {line}", file=sys.stderr)
        pods = sum(len(pod_templates(d)) for d in docs)
        if not found:
            print(f"{path}: {pods} pod {plural('template meets', 'templates meet', pods)} "
                  f"{level_version(args.level, args.version)}")
        failed += len(found)
    if failed:
        sys.exit(1)
