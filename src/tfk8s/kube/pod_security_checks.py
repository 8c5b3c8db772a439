"""The Pod Security Standards' checks, one function each, as the pod-security-admission library words them.

Each function takes a pod's metadata and spec (plain dicts, as in a manifest)
and returns None when the pod passes, else (reason, detail) with the
library's own words. Which checks a level runs at a version, and in which
order, is tfk8s.kube.pod_security's registry.
"""
import json

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
            kind = options.get("type") or ""  # Go decodes a JSON null as ""
            if kind not in allowed_types:
                types.add(kind)
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
