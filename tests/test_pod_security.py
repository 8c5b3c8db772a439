"""The offline Pod Security checker against hand-made pods: every check, both levels, the versions that change them.

Each case starts from a pod that meets `restricted` and breaks one rule; the
expected reasons and details are the API server's words (those of the
pod-security-admission library's checks and its own tests), so a message
printed here is the message `kubectl apply` would print.
"""
import copy

import pytest

from support import assert_one_line_error, run_script
from tfk8s.kube import pod_security

LEVELS = ("baseline", "restricted")


def good_pod():
    """A pod that meets restricted:latest: non-root, no escalation, no capabilities, RuntimeDefault seccomp."""
    secure = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {"metadata": {"name": "p"},
            "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "initContainers": [{"name": "init", "image": "i", "securityContext": dict(secure)}],
                     "containers": [{"name": "a", "image": "i", "securityContext": copy.deepcopy(secure)},
                                    {"name": "b", "image": "i", "securityContext": copy.deepcopy(secure)}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
                                 {"name": "tmp", "emptyDir": {}}]}}


def failures(pod, level, version="latest"):
    return [(reason, detail) for _, reason, detail in
            pod_security.evaluate(pod["metadata"], pod["spec"], level, version)]


def container(pod, name):
    spec = pod["spec"]
    return next(c for kind in ("initContainers", "containers", "ephemeralContainers")
                for c in spec.get(kind, []) if c["name"] == name)


def sc(pod, name):
    return container(pod, name).setdefault("securityContext", {})


def test_the_good_pod_meets_every_level_and_version():
    for level in ("privileged", *LEVELS):
        for version in ("latest", "v1.0", "v1.24", "v1.30", "v1.35", "v1.99"):
            assert failures(good_pod(), level, version) == []


# ---------------------------------------------------------------- baseline checks: refused at both levels

def breaks(mutate):
    pod = good_pod()
    mutate(pod)
    return pod


BASELINE = {
    "hostNamespaces": (lambda p: p["spec"].update(hostNetwork=True, hostIPC=True),
                       ("host namespaces", "hostNetwork=true, hostIPC=true")),
    "privileged": (lambda p: (sc(p, "a").update(privileged=True), sc(p, "init").update(privileged=True)),
                   ("privileged", 'containers "init", "a" must not set securityContext.privileged=true')),
    "hostPorts": (lambda p: container(p, "b").update(ports=[{"containerPort": 80, "hostPort": 8080},
                                                            {"containerPort": 90, "hostPort": 10000}]),
                  ("hostPort", 'container "b" uses hostPorts 10000, 8080')),
    "appArmorProfile": (lambda p: (p["spec"]["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
                                   sc(p, "a").update(appArmorProfile={"type": "Localhost",
                                                                      "localhostProfile": "x"}),
                                   sc(p, "b").update(appArmorProfile={"type": "Unconfined"})),
                        ("forbidden AppArmor profile",
                         'pod and container "b" must not set AppArmor profile type to "Unconfined"')),
    "appArmor annotations": (lambda p: p["metadata"].update(annotations={
                                 "container.apparmor.security.beta.kubernetes.io/a": "unconfined",
                                 "container.apparmor.security.beta.kubernetes.io/b": "localhost/mine"}),
                             ("forbidden AppArmor profile", 'annotation must not set AppArmor profile type to '
                              '"container.apparmor.security.beta.kubernetes.io/a="unconfined""')),
    "appArmor annotations, several": (lambda p: p["metadata"].update(annotations={
                                          f"container.apparmor.security.beta.kubernetes.io/{c}": value
                                          for c, value in (("", "bogus"), ("a", ""), ("b", "runtime/default"),
                                                           ("c", "localhost/"), ("e", "unconfined"))}),
                                      ("forbidden AppArmor profiles", 'annotations must not set AppArmor profile '
                                       'type to "container.apparmor.security.beta.kubernetes.io/="bogus"", '
                                       '"container.apparmor.security.beta.kubernetes.io/e="unconfined""')),
    "seLinuxOptions": (lambda p: (p["spec"]["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
                                  sc(p, "a").update(seLinuxOptions={"user": "root", "role": "r", "type": "x_t"}),
                                  sc(p, "b").update(seLinuxOptions={"type": "container_t"})),
                       ("seLinuxOptions", 'pod and container "a" set forbidden securityContext.seLinuxOptions: '
                        'types "spc_t", "x_t"; user may not be set; role may not be set')),
    "sysctls": (lambda p: p["spec"]["securityContext"].update(sysctls=[
                    {"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.msgmax", "value": "1"},
                    {"name": "net.core.somaxconn", "value": "1"}]),
                ("forbidden sysctls", "kernel.msgmax, net.core.somaxconn")),
    "windowsHostProcess": (lambda p: (p["spec"]["securityContext"].update(windowsOptions={"hostProcess": True}),
                                      sc(p, "a").update(windowsOptions={"hostProcess": True})),
                           ("hostProcess", 'pod and container "a" must not set '
                            "securityContext.windowsOptions.hostProcess=true")),
    "hostProbesAndHostLifecycle": (lambda p: (
        container(p, "b").update(readinessProbe={"httpGet": {"port": 80, "host": "10.0.0.1"}},
                                 lifecycle={"preStop": {"tcpSocket": {"port": 1, "host": "metadata"}}}),
        container(p, "a").update(livenessProbe={"tcpSocket": {"port": 80, "host": "10.0.0.1"}})),
        ("probe or lifecycle host", 'containers "a", "b" use probe or lifecycle hosts "10.0.0.1", "metadata"')),
}


@pytest.mark.parametrize("case", BASELINE, ids=list(BASELINE))
@pytest.mark.parametrize("level", LEVELS)
def test_a_baseline_violation_is_refused_at_both_levels(case, level):
    mutate, expected = BASELINE[case]
    assert failures(breaks(mutate), level) == [expected]
    assert failures(breaks(mutate), "privileged") == []


# Baseline checks that restricted replaces with a stricter one of its own.
OVERRIDDEN = {
    "hostPathVolumes": (lambda p: p["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
                        ("hostPath volumes", 'volume "root"'),
                        ("restricted volume types", 'volume "root" uses restricted volume type "hostPath"')),
    "capabilities": (lambda p: sc(p, "a")["capabilities"].update(add=["NET_ADMIN", "CHOWN", "SYS_ADMIN"]),
                     ("non-default capabilities", 'container "a" must not include "NET_ADMIN", "SYS_ADMIN" in '
                      "securityContext.capabilities.add"),
                     ("unrestricted capabilities", 'container "a" must not include "CHOWN", "NET_ADMIN", '
                      '"SYS_ADMIN" in securityContext.capabilities.add')),
    "seccompProfile": (lambda p: sc(p, "b").update(seccompProfile={"type": "Unconfined"}),
                       ("seccompProfile", 'container "b" must not set securityContext.seccompProfile.type to '
                        '"Unconfined"'),
                       ("seccompProfile", 'container "b" must not set securityContext.seccompProfile.type to '
                        '"Unconfined"')),
    "procMount": (lambda p: sc(p, "init").update(procMount="Unmasked"),
                  ("procMount", 'container "init" must not set securityContext.procMount to "Unmasked"'),
                  ("procMount", 'container "init" must not set securityContext.procMount to "Unmasked"')),
}


@pytest.mark.parametrize("case", OVERRIDDEN, ids=list(OVERRIDDEN))
def test_restricted_replaces_some_baseline_checks_with_its_own(case):
    mutate, at_baseline, at_restricted = OVERRIDDEN[case]
    assert failures(breaks(mutate), "baseline") == [at_baseline]
    assert failures(breaks(mutate), "restricted") == [at_restricted]


def test_inline_nfs_is_refused_by_restricted_but_a_claim_on_an_nfs_volume_is_not():
    pod = breaks(lambda p: p["spec"]["volumes"].extend([
        {"name": "share", "nfs": {"server": "10.0.0.9", "path": "/"}},
        {"name": "old", "gitRepo": {"repository": "r"}}, {"name": "what"}]))
    assert failures(pod, "baseline") == []
    assert failures(pod, "restricted") == [("restricted volume types", 'volumes "share", "old", "what" use '
                                            'restricted volume types "gitRepo", "nfs", "unknown"')]
    assert failures(good_pod(), "restricted") == []  # its data volume is a persistentVolumeClaim


# ---------------------------------------------------------------- restricted-only checks

RESTRICTED = {
    "allowPrivilegeEscalation": (
        lambda p: (sc(p, "a").pop("allowPrivilegeEscalation"), sc(p, "b").update(allowPrivilegeEscalation=True),
                   container(p, "init").pop("securityContext")),
        [("allowPrivilegeEscalation != false", 'containers "init", "a", "b" must set '
          "securityContext.allowPrivilegeEscalation=false"),
         ("unrestricted capabilities", 'container "init" must set securityContext.capabilities.drop=["ALL"]')]),
    "runAsNonRoot implicit": (
        lambda p: (p["spec"]["securityContext"].pop("runAsNonRoot"), sc(p, "b").update(runAsNonRoot=True)),
        [("runAsNonRoot != true", 'pod or containers "init", "a" must set securityContext.runAsNonRoot=true')]),
    "runAsNonRoot explicit": (
        lambda p: (p["spec"]["securityContext"].update(runAsNonRoot=False), sc(p, "a").update(runAsNonRoot=False),
                   sc(p, "b").update(runAsNonRoot=False)),
        [("runAsNonRoot != true", 'pod and containers "a", "b" must not set securityContext.runAsNonRoot=false')]),
    "runAsUser": (
        lambda p: (p["spec"]["securityContext"].update(runAsUser=0), sc(p, "init").update(runAsUser=0)),
        [("runAsUser=0", 'pod and container "init" must not set runAsUser=0')]),
    "seccompProfile implicit": (
        lambda p: (p["spec"]["securityContext"].pop("seccompProfile"),
                   sc(p, "a").update(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})),
        [("seccompProfile", 'pod or containers "init", "b" must set securityContext.seccompProfile.type to '
          '"RuntimeDefault" or "Localhost"')]),
    "capabilities drop": (
        lambda p: (sc(p, "a")["capabilities"].update(drop=["all"]), sc(p, "b").pop("capabilities"),
                   sc(p, "init")["capabilities"].update(add=["NET_BIND_SERVICE"])),
        [("unrestricted capabilities", 'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]')]),
}


@pytest.mark.parametrize("case", RESTRICTED, ids=list(RESTRICTED))
def test_a_restricted_violation_passes_baseline_and_is_refused_by_restricted(case):
    mutate, expected = RESTRICTED[case]
    assert failures(breaks(mutate), "baseline") == []
    assert failures(breaks(mutate), "restricted") == expected


def test_ephemeral_containers_are_checked_too():
    pod = breaks(lambda p: p["spec"].update(ephemeralContainers=[{"name": "debug", "image": "busybox:1"}]))
    assert failures(pod, "restricted") == [
        ("allowPrivilegeEscalation != false",
         'container "debug" must set securityContext.allowPrivilegeEscalation=false'),
        ("unrestricted capabilities", 'container "debug" must set securityContext.capabilities.drop=["ALL"]')]


# Every capability of linux/capability.h (41, CAP_CHOWN to CAP_CHECKPOINT_RESTORE), as a pod spells it.
LINUX_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE")


def test_restricted_lets_a_container_add_net_bind_service_alone_and_baseline_its_thirteen_defaults():
    # check_capabilities_restricted.go: anything but NET_BIND_SERVICE; check_capabilities_baseline.go: anything
    # outside the container runtimes' default set (AUDIT_WRITE ... SYS_CHROOT, without NET_RAW since v1.0).
    admitted = {level: [] for level in LEVELS}
    for capability in LINUX_CAPABILITIES:
        pod = breaks(lambda p, cap=capability: sc(p, "a")["capabilities"].update(add=[cap]))
        for level in LEVELS:
            if not failures(pod, level):
                admitted[level].append(capability)
    assert admitted["restricted"] == ["NET_BIND_SERVICE"]
    assert admitted["baseline"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                                    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP"]


def test_reasons_come_baseline_first_then_restricted_each_in_the_librarys_order():
    """The NFS server of the workshop's storage namespace, as the API server would refuse it in an attendee's."""
    spec = {"initContainers": [{"name": "export-owner", "image": "i", "securityContext": {
                "runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
                "seccompProfile": {"type": "RuntimeDefault"}}}],
            "containers": [{"name": "nfs-server", "image": "i", "securityContext": {"privileged": True},
                            "ports": [{"containerPort": 2049}]}],
            "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": "d"}}]}
    assert pod_security.evaluate({}, spec, "baseline") == [
        ("privileged", "privileged", 'container "nfs-server" must not set securityContext.privileged=true')]
    found = pod_security.evaluate({}, spec, "restricted")
    assert [check for check, _, _ in found] == ["privileged", "allowPrivilegeEscalation", "capabilities_restricted",
                                                "runAsNonRoot", "runAsUser", "seccompProfile_restricted"]
    assert pod_security.forbidden_detail(found) == (
        'privileged (container "nfs-server" must not set securityContext.privileged=true), '
        'allowPrivilegeEscalation != false (container "nfs-server" must set '
        'securityContext.allowPrivilegeEscalation=false), '
        'unrestricted capabilities (container "nfs-server" must set securityContext.capabilities.drop=["ALL"]; '
        'container "export-owner" must not include "CHOWN", "DAC_OVERRIDE", "FOWNER" in '
        'securityContext.capabilities.add), '
        'runAsNonRoot != true (container "export-owner" must not set securityContext.runAsNonRoot=false), '
        'runAsUser=0 (container "export-owner" must not set runAsUser=0), '
        'seccompProfile (pod or container "nfs-server" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")')


def test_selinux_comes_before_seccomp_in_go_byte_order():
    pod = breaks(lambda p: (sc(p, "a").update(seccompProfile={"type": "Unconfined"}),
                            sc(p, "a").update(seLinuxOptions={"role": "x"})))
    assert [reason for reason, _ in failures(pod, "baseline")] == ["seLinuxOptions", "seccompProfile"]


def test_a_null_selinux_type_is_the_empty_type_which_is_allowed():
    # Go decodes "type": null as "", one of the allowed types (check_seLinuxOptions.go).
    assert failures(breaks(lambda p: sc(p, "a").update(seLinuxOptions={"type": None})), "restricted") == []


# ---------------------------------------------------------------- versions

def test_versions_follow_the_checks_minimum_versions():
    as_root = breaks(lambda p: p["spec"]["securityContext"].update(runAsUser=0))
    assert failures(as_root, "restricted", "v1.22") == []                 # runAsUser=0 is refused from 1.23
    assert failures(as_root, "restricted", "v1.23") == [("runAsUser=0", "pod must not set runAsUser=0")]
    probe_host = breaks(lambda p: container(p, "a").update(startupProbe={"httpGet": {"port": 1, "host": "h"}}))
    assert failures(probe_host, "baseline", "v1.33") == []                # probe hosts are refused from 1.34
    assert failures(probe_host, "baseline", "v1.34") != []
    engine = breaks(lambda p: sc(p, "a").update(seLinuxOptions={"type": "container_engine_t"}))
    assert failures(engine, "baseline", "v1.30") != [] and failures(engine, "baseline", "v1.31") == []
    rmem = breaks(lambda p: p["spec"]["securityContext"].update(sysctls=[{"name": "net.ipv4.tcp_rmem", "value": "1"}]))
    assert failures(rmem, "baseline", "v1.31") == [("forbidden sysctls", "net.ipv4.tcp_rmem")]
    assert failures(rmem, "baseline", "v1.32") == []
    slow = breaks(lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "net.ipv4.tcp_slow_start_after_idle", "value": "0"}]))
    assert failures(slow, "baseline", "v1.36") != [] and failures(slow, "baseline", "latest") == []
    unmasked = breaks(lambda p: sc(p, "a").update(procMount="Unmasked"))
    # Before 1.35 restricted runs the baseline procMount check; from 1.35 its own (same words).
    assert failures(unmasked, "restricted", "v1.34") == failures(unmasked, "restricted", "v1.35") != []


def test_user_namespaces_relax_the_root_checks_from_1_35_except_restricted_procmount():
    pod = breaks(lambda p: (p["spec"].update(hostUsers=False), p["spec"]["securityContext"].update(
        runAsNonRoot=False, runAsUser=0), sc(p, "a").update(procMount="Unmasked")))
    assert [r for r, _ in failures(pod, "restricted", "v1.34")] == ["procMount", "runAsNonRoot != true",
                                                                     "runAsUser=0"]
    assert [r for r, _ in failures(pod, "restricted", "v1.35")] == ["procMount"]
    assert failures(pod, "baseline", "v1.35") == []


def test_windows_pods_skip_the_linux_only_restricted_checks_from_1_25():
    pod = breaks(lambda p: (p["spec"].update(os={"name": "windows"}), p["spec"]["securityContext"].pop(
        "seccompProfile"), sc(p, "a").clear()))
    assert [r for r, _ in failures(pod, "restricted", "v1.24")] == [
        "allowPrivilegeEscalation != false", "unrestricted capabilities", "seccompProfile"]
    assert failures(pod, "restricted", "v1.25") == []


def test_seccomp_annotations_are_judged_only_before_1_19():
    pod = breaks(lambda p: p["metadata"].update(annotations={
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
        "container.seccomp.security.alpha.kubernetes.io/a": "docker/default"}))
    assert failures(pod, "baseline", "v1.18") == [
        ("seccompProfile", 'forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined"')]
    assert failures(pod, "baseline", "v1.19") == []


def test_versions_above_the_newest_are_the_newest_and_bad_ones_are_refused():
    assert pod_security.parse_version("v1.99") == pod_security.parse_version("latest") == pod_security.LATEST
    for bad in ("1.30", "v2.0", "v1.030", "newest"):
        with pytest.raises(ValueError):
            pod_security.parse_version(bad)


# ---------------------------------------------------------------- workloads and the command

def test_every_pod_template_of_a_workload_is_found():
    pod = good_pod()
    template = {"metadata": pod["metadata"], "spec": pod["spec"]}
    docs = [{"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}},
            {"kind": "CronJob", "metadata": {"name": "c"},
             "spec": {"jobTemplate": {"spec": {"template": template}}}},
            {"kind": "TFJob", "metadata": {"name": "t"},
             "spec": {"tfReplicaSpecs": {"Chief": {"template": template}, "Worker": {"template": template}}}},
            {"kind": "ConfigMap", "metadata": {"name": "m"}}]
    assert [where for d in docs for where, _, _ in pod_security.pod_templates(d)] == [
        "Deployment/d", "CronJob/c", "TFJob/t/Chief", "TFJob/t/Worker"]
    docs[2]["spec"]["tfReplicaSpecs"]["Worker"]["template"] = breaks(
        lambda p: p["spec"].update(hostPID=True))
    assert pod_security.violations(docs) == [
        'TFJob/t/Worker: violates PodSecurity "restricted:latest": host namespaces (hostPID=true)']
    # A Katib Experiment's trials are its trialSpec's pods: the same TFJob inside the Experiment.
    experiment = {"kind": "Experiment", "metadata": {"name": "e"}, "spec": {"trialTemplate": {"trialSpec": docs[2]}}}
    assert pod_security.violations([experiment]) == [
        'Experiment/e/TFJob/t/Worker: violates PodSecurity "restricted:latest": host namespaces (hostPID=true)']


def test_command_reports_violations_and_a_bad_version_in_one_line(tmp_path):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("kind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n"
                        "      containers: [{name: c, image: i, securityContext: {privileged: true}}]\n")
    result = run_script("pod_security.py", "--level", "baseline", manifest)
    assert result.returncode == 1
    assert result.stderr.strip() == (f'{manifest}: Job/j: violates PodSecurity "baseline:latest": '
                                     'privileged (container "c" must not set securityContext.privileged=true)')
    assert_one_line_error(run_script("pod_security.py", "--version", "1.30", manifest), '"latest" or "v1.x"')
