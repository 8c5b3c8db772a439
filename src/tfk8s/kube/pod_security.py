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
to it, as the API server does) and `forbidden` joins them as the API server's
`violates PodSecurity "restricted:latest": ...` message.
"""
import json
import re
import sys
from pathlib import Path

import yaml

from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point

LEVELS = ("privileged", "baseline", "restricted")
LATEST = (1, 37)  # the newest MinimumVersion of any check (the sysctls of 1.37)
VERSION = re.compile(r"v1\.(0|[1-9][0-9]*)")
LABEL = "pod-security.kubernetes.io/"

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}
SELINUX_TYPES_1_31 = SELINUX_TYPES | {"container_engine_t"}
SYSCTLS = {(1, 0): {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"},
           (1, 27): {"net.ipv4.ip_local_reserved_ports"},
           (1, 29): {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                     "net.ipv4.tcp_keepalive_probes"},
           (1, 32): {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"},
           (1, 37): {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}}
# Volume sources restricted allows; any other source names the volume's type.
ALLOWED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                   "projected", "secret")
NAMED_VOLUMES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                 "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte",
                 "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"


# ---------------------------------------------------------------- the library's helpers

def join_quote(items):
    """["a", "b"] -> '"a", "b"' (no escaping, as the library's joinQuote)."""
    return '"' + '", "'.join(items) + '"' if items else ""


def plural(singular, plural_form, count):
    return singular if count == 1 else plural_form


def go_quote(text):
    """Go's %q for the annotation values the library prints."""
    return json.dumps(text, ensure_ascii=False)


def containers(spec):
    """Every container the checks visit: init containers, then containers, then ephemeral containers."""
    return [c for kind in CONTAINER_LISTS for c in (spec.get(kind) or []) if isinstance(c, dict)]


def security(obj):
    """A pod's or a container's securityContext ({} when unset)."""
    return obj.get("securityContext") or {}


def user_namespace(spec):
    """The 1.35 relaxations apply when the pod asks for its own user namespace (hostUsers: false)."""
    return spec.get("hostUsers") is False


def windows(spec):
    return (spec.get("os") or {}).get("name") == "windows"


def offending(spec, items_of):
    """(names of the containers for which items_of(container) is not empty, the set of all those items)."""
    names, items = [], set()
    for c in containers(spec):
        found = items_of(c)
        if found:
            names.append(c.get("name", ""))
            items.update(found)
    return names, items


def setters(pod_bad, bad_containers):
    """['pod', 'containers "a", "b"'] for the details that name both."""
    found = ["pod"] if pod_bad else []
    if bad_containers:
        found.append(f'{plural("container", "containers", len(bad_containers))} {join_quote(bad_containers)}')
    return found


# ---------------------------------------------------------------- baseline checks

def host_namespaces(meta, spec):
    found = [f"{field}=true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    return ("host namespaces", ", ".join(found)) if found else None


def privileged(meta, spec):
    bad = [c.get("name", "") for c in containers(spec) if security(c).get("privileged") is True]
    if bad:
        return "privileged", (f'{plural("container", "containers", len(bad))} {join_quote(bad)} '
                              "must not set securityContext.privileged=true")
    return None


def capabilities_baseline(meta, spec):
    bad, added = offending(spec, lambda c: [cap for cap in ((security(c).get("capabilities") or {}).get("add") or [])
                                            if cap not in BASELINE_CAPABILITIES])
    if bad:
        return "non-default capabilities", (f'{plural("container", "containers", len(bad))} {join_quote(bad)} '
                                            f"must not include {join_quote(sorted(added))} in "
                                            "securityContext.capabilities.add")
    return None


def host_path_volumes(meta, spec):
    bad = [v.get("name", "") for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    return ("hostPath volumes", f'{plural("volume", "volumes", len(bad))} {join_quote(bad)}') if bad else None


def host_ports(meta, spec):
    bad, ports = offending(spec, lambda c: [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")])
    if bad:
        return "hostPort", (f'{plural("container", "containers", len(bad))} {join_quote(bad)} '
                            f'{plural("uses", "use", len(bad))} {plural("hostPort", "hostPorts", len(ports))} '
                            f"{', '.join(sorted(ports))}")
    return None


def app_armor_profile(meta, spec):
    allowed = ("RuntimeDefault", "Localhost")
    values = set()
    pod_profile = security(spec).get("appArmorProfile")
    pod_bad = pod_profile is not None and pod_profile.get("type") not in allowed
    if pod_bad:
        values.add(pod_profile.get("type") or "")
    bad = []
    for c in containers(spec):
        profile = security(c).get("appArmorProfile")
        if profile is not None and profile.get("type") not in allowed:
            bad.append(c.get("name", ""))
            values.add(profile.get("type") or "")
    who = setters(pod_bad, bad)
    annotations = sorted(f"{key}={go_quote(value)}" for key, value in (meta.get("annotations") or {}).items()
                         if key.startswith(APPARMOR_ANNOTATION)
                         and not (value == "" or value == "runtime/default" or value.startswith("localhost/")))
    listed = sorted(values) + annotations
    if annotations:
        who.append(plural("annotation", "annotations", len(annotations)))
    if who:
        return (plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(listed)),
                f"{' and '.join(who)} must not set AppArmor profile type to {join_quote(listed)}")
    return None


def se_linux_options(allowed_types):
    def check(meta, spec):
        types, user, role = set(), False, False

        def valid(options):
            nonlocal user, role
            ok = True
            if options.get("type", "") not in allowed_types:
                types.add(options.get("type", ""))
                ok = False
            if options.get("user"):
                user, ok = True, False
            if options.get("role"):
                role, ok = True, False
            return ok

        pod_options = security(spec).get("seLinuxOptions")
        pod_bad = pod_options is not None and not valid(pod_options)
        bad = [c.get("name", "") for c in containers(spec)
               if security(c).get("seLinuxOptions") is not None and not valid(security(c)["seLinuxOptions"])]
        who = setters(pod_bad, bad)
        if not who:
            return None
        data = [f'{plural("type", "types", len(types))} {join_quote(sorted(types))}'] if types else []
        data += ["user may not be set"] if user else []
        data += ["role may not be set"] if role else []
        return "seLinuxOptions", f"{' and '.join(who)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}"
    return check


def proc_mount(meta, spec):
    bad, kinds = offending(spec, lambda c: [security(c)["procMount"]]
                           if security(c).get("procMount") not in (None, "Default") else [])
    if bad:
        return "procMount", (f'{plural("container", "containers", len(bad))} {join_quote(bad)} '
                             f"must not set securityContext.procMount to {join_quote(sorted(kinds))}")
    return None


def proc_mount_1_35_baseline(meta, spec):
    return None if user_namespace(spec) else proc_mount(meta, spec)


def seccomp_annotations(meta, spec):
    """Before 1.19 seccomp was set by annotations, and those are what baseline judged."""
    def valid(value):
        return value in ("runtime/default", "docker/default") or value.startswith("localhost/")
    annotations = meta.get("annotations") or {}
    bad = set()
    if SECCOMP_POD_ANNOTATION in annotations and not valid(annotations[SECCOMP_POD_ANNOTATION]):
        bad.add(f"{SECCOMP_POD_ANNOTATION}={go_quote(annotations[SECCOMP_POD_ANNOTATION])}")
    for c in containers(spec):
        key = SECCOMP_CONTAINER_ANNOTATION + c.get("name", "")
        if key in annotations and not valid(annotations[key]):
            bad.add(f"{key}={go_quote(annotations[key])}")
    if bad:
        return "seccompProfile", f"forbidden {plural('annotation', 'annotations', len(bad))} {', '.join(sorted(bad))}"
    return None


def valid_seccomp(profile):
    return profile.get("type") in ("RuntimeDefault", "Localhost")


def seccomp_baseline(meta, spec):
    values = set()
    pod_profile = security(spec).get("seccompProfile")
    pod_bad = pod_profile is not None and not valid_seccomp(pod_profile)
    if pod_bad:
        values.add(pod_profile.get("type") or "")
    bad = []
    for c in containers(spec):
        profile = security(c).get("seccompProfile")
        if profile is not None and not valid_seccomp(profile):
            bad.append(c.get("name", ""))
            values.add(profile.get("type") or "")
    who = setters(pod_bad, bad)
    if who:
        return "seccompProfile", (f"{' and '.join(who)} must not set securityContext.seccompProfile.type to "
                                  f"{join_quote(sorted(values))}")
    return None


def sysctls(allowed):
    def check(meta, spec):
        bad = [s.get("name", "") for s in security(spec).get("sysctls") or [] if s.get("name", "") not in allowed]
        return ("forbidden sysctls", ", ".join(bad)) if bad else None
    return check


def windows_host_process(meta, spec):
    def host_process(obj):
        return (security(obj).get("windowsOptions") or {}).get("hostProcess") is True
    who = setters(host_process(spec), [c.get("name", "") for c in containers(spec) if host_process(c)])
    if who:
        return "hostProcess", f"{' and '.join(who)} must not set securityContext.windowsOptions.hostProcess=true"
    return None


def host_probes_and_lifecycle(meta, spec):
    def hosts(handler):
        handler = handler or {}
        return [h for h in ((handler.get("httpGet") or {}).get("host"), (handler.get("tcpSocket") or {}).get("host"))
                if h]
    bad, found = set(), set()
    for c in containers(spec):
        lifecycle = c.get("lifecycle") or {}
        for handler in (c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                        lifecycle.get("postStart"), lifecycle.get("preStop")):
            named = hosts(handler)
            if named:
                bad.add(c.get("name", ""))
                found.update(named)
    if bad:
        return "probe or lifecycle host", (
            f'{plural("container", "containers", len(bad))} {join_quote(sorted(bad))} '
            f'{plural("uses", "use", len(bad))} '
            f'{plural("probe or lifecycle host", "probe or lifecycle hosts", len(found))} {join_quote(sorted(found))}')
    return None


# ---------------------------------------------------------------- restricted checks

def restricted_volumes(meta, spec):
    bad, kinds = [], set()
    for volume in spec.get("volumes") or []:
        if any(volume.get(source) is not None for source in ALLOWED_VOLUMES):
            continue
        bad.append(volume.get("name", ""))
        kinds.add(next((source for source in NAMED_VOLUMES if volume.get(source) is not None), "unknown"))
    if bad:
        return "restricted volume types", (
            f'{plural("volume", "volumes", len(bad))} {join_quote(bad)} {plural("uses", "use", len(bad))} '
            f'{plural("restricted volume type", "restricted volume types", len(kinds))} {join_quote(sorted(kinds))}')
    return None


def allow_privilege_escalation(meta, spec):
    bad = [c.get("name", "") for c in containers(spec) if security(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return "allowPrivilegeEscalation != false", (
            f'{plural("container", "containers", len(bad))} {join_quote(bad)} '
            "must set securityContext.allowPrivilegeEscalation=false")
    return None


def unless_windows(check):
    """From 1.25 the Linux-only restricted checks skip pods that declare `os.name: windows`."""
    def checked(meta, spec):
        return None if windows(spec) else check(meta, spec)
    return checked


def unless_user_namespace(check):
    """From 1.35 the root-user checks allow a pod that runs in its own user namespace."""
    def checked(meta, spec):
        return None if user_namespace(spec) else check(meta, spec)
    return checked


def run_as_non_root(meta, spec):
    pod_value = security(spec).get("runAsNonRoot")
    explicit, implicit = [], []
    for c in containers(spec):
        value = security(c).get("runAsNonRoot")
        if value is False:
            explicit.append(c.get("name", ""))
        elif value is None and pod_value is not True:
            implicit.append(c.get("name", ""))
    who = setters(pod_value is False, explicit)
    if who:
        return "runAsNonRoot != true", f"{' and '.join(who)} must not set securityContext.runAsNonRoot=false"
    if implicit:
        return "runAsNonRoot != true", (f'pod or {plural("container", "containers", len(implicit))} '
                                        f"{join_quote(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def run_as_user(meta, spec):
    who = setters(security(spec).get("runAsUser") == 0,
                  [c.get("name", "") for c in containers(spec) if security(c).get("runAsUser") == 0])
    return ("runAsUser=0", f"{' and '.join(who)} must not set runAsUser=0") if who else None


def seccomp_restricted(meta, spec):
    values = set()
    pod_profile = security(spec).get("seccompProfile")
    pod_bad = pod_profile is not None and not valid_seccomp(pod_profile)
    pod_set = pod_profile is not None and not pod_bad
    if pod_bad:
        values.add(pod_profile.get("type") or "")
    explicit, implicit = [], []
    for c in containers(spec):
        profile = security(c).get("seccompProfile")
        if profile is not None:
            if not valid_seccomp(profile):
                explicit.append(c.get("name", ""))
                values.add(profile.get("type") or "")
        elif not pod_set:
            implicit.append(c.get("name", ""))
    who = setters(pod_bad, explicit)
    if who:
        return "seccompProfile", (f"{' and '.join(who)} must not set securityContext.seccompProfile.type to "
                                  f"{join_quote(sorted(values))}")
    if implicit:
        return "seccompProfile", (f'pod or {plural("container", "containers", len(implicit))} {join_quote(implicit)} '
                                  'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


def capabilities_restricted(meta, spec):
    missing_drop, adding, added = [], [], set()
    for c in containers(spec):
        capabilities = security(c).get("capabilities")
        if capabilities is None:
            missing_drop.append(c.get("name", ""))
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(c.get("name", ""))
        extra = [cap for cap in capabilities.get("add") or [] if cap != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c.get("name", ""))
            added.update(extra)
    details = []
    if missing_drop:
        details.append(f'{plural("container", "containers", len(missing_drop))} {join_quote(missing_drop)} '
                       'must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f'{plural("container", "containers", len(adding))} {join_quote(adding)} '
                       f"must not include {join_quote(sorted(added))} in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


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
    job template, each replica type of a TFJob."""
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name", "")
    spec = doc.get("spec") or {}
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
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
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
