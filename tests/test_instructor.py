"""The instructor's per-attendee setup: valid objects, safe to hand to strangers, and a quota the steps fit in.

What an attendee gets is checked as the cluster would judge it: strict
schema validation; Pod Security (the attendee's namespace enforces
`restricted`, and the one privileged pod, the NFS server, lives in the
instructor's storage namespace); the volume bound to that attendee's claim
only; NetworkPolicy semantics evaluated over every attendee's policies (a pod
reaches its own namespace and DNS, nothing of another attendee's and not the
NFS servers); and a Role that allows every kind the attendee's steps apply
and nothing that reaches beyond the namespace. Then the command itself, on a
stand-in kubectl: what it applies, in which order, and its kubeconfigs.

Why one module of some 450 lines: every check above reads the same rendered namespace of one attendee;
split, each part would render and read it again.
"""
import ipaddress
import json
import stat
import subprocess
import sys

import pytest
import yaml

from support import (
    KUBE,
    REPO,
    VERSIONS,
    assert_one_line_error,
    containers,
    pod_templates,
    pods_of,
    quantity,
    real_kubectl,
    requested,
    run_script,
    validate,
)
from support import attendee_objects as objects
from tfk8s.instructor import namespaces, plan
from tfk8s.kube import pod_security, render

# kind -> (API group, resource) for what the workshop's manifests hold.
RESOURCES = {"Deployment": ("apps", "deployments"), "Service": ("", "services"), "Job": ("batch", "jobs"),
             "TFJob": ("kubeflow.org", "tfjobs"), "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
             "ConfigMap": ("", "configmaps"), "CronJob": ("batch", "cronjobs"),
             "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
             "PodDisruptionBudget": ("policy", "poddisruptionbudgets")}
APPLY = ("get", "list", "watch", "create", "update", "patch", "delete")  # what kubectl apply and delete use
STORAGE = plan.STORAGE_NAMESPACE


def instructor_objects(names=("alice", "bob"), **options):
    """Everything `instructor-render` writes, as documents."""
    files = namespaces.rendered_files(list(names), **options)
    return [d for text in files.values() for d in yaml.safe_load_all(text) if d]


def role(namespace="alice"):
    return next(d for d in objects(namespace) if d["kind"] == "Role")


def allows(role_doc, group, resource, verb):
    return any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
               for rule in role_doc["rules"])


def katib_busiest():
    """Katib's step 9b at its busiest, as the cluster makes it: values.yaml's parallelTrialCount trials (the operator's
    pods, each Chief with Katib's collector) and the suggestion pod (tfk8s.kube.cluster_model)."""
    from tfk8s.kube import cluster_model
    made = cluster_model.cluster_made("alice")["katib.yaml"]
    parallel = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())["katib"]["parallelTrialCount"]
    trial = [d for d in made if d["kind"] == "Pod"]
    suggestion = [d["spec"]["template"] for d in made if d["kind"] == "Deployment"]
    return trial * parallel + suggestion


def pipeline_widest():
    """A notebook pipeline's two side-by-side steps as Argo makes their pods (tfk8s.kube.cluster_model)."""
    from tfk8s.kube import cluster_model
    made = cluster_model.cluster_made("alice")["pipeline.yaml"]
    return [p for p in made if "-s2-" in p["metadata"]["name"]]


@pytest.mark.parametrize("rwx", [None, "standard-rwx"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_the_instructor_applies_passes_strict_validation(version, rwx):
    docs = instructor_objects(rwx_storage_class=rwx)
    assert [d["kind"] for d in objects()] == ["Namespace", "ResourceQuota", "LimitRange", "ServiceAccount",
                                              "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy",
                                              "NetworkPolicy", "NetworkPolicy"]
    for doc in docs:
        validate(doc, version)


# ---------------------------------------------------------------- Pod Security

def namespace_levels(docs):
    return {d["metadata"]["name"]: pod_security.namespace_level(d) for d in docs if d["kind"] == "Namespace"}


@pytest.mark.parametrize("rwx", [None, "standard-rwx"])
def test_attendee_namespaces_enforce_restricted_in_both_storage_modes(rwx):
    levels = namespace_levels(instructor_objects(rwx_storage_class=rwx))
    assert levels["alice"] == levels["bob"] == ("restricted", "latest")
    for doc in objects():
        if doc["kind"] == "Namespace":
            labels = doc["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == \
                "restricted"
    assert (STORAGE in levels) == (rwx is None)


def test_every_pod_meets_the_enforced_level_of_its_namespace_and_the_privileged_one_is_the_instructors():
    docs = instructor_objects()
    levels = namespace_levels(docs)
    found = []
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        for where, meta, spec in pod_security.pod_templates(doc):
            level, version = levels[namespace]
            assert pod_security.evaluate(meta, spec, level, version) == [], where
            found.append((namespace, where, pod_security.evaluate(meta, spec, "baseline")))
    privileged = [(ns, where) for ns, where, failures in found if failures]
    assert privileged == [(STORAGE, "Deployment/nfs-alice"), (STORAGE, "Deployment/nfs-bob")]
    assert levels[STORAGE] == ("privileged", "latest")
    # And an attendee's own pods may not do what the server does: restricted refuses it in their namespace.
    (server,) = [d for d in docs if d["metadata"]["name"] == "nfs-alice" and d["kind"] == "Deployment"]
    lines = pod_security.violations([server], *levels["alice"])
    assert len(lines) == 1 and 'privileged (container "nfs-server" must not set securityContext.privileged=true)' \
        in lines[0]


def test_the_nfs_server_is_privileged_only_where_its_comments_say_why():
    text = (namespaces.TEMPLATES / "nfs-server.yaml.j2").read_text()
    server = next(d for d in yaml.safe_load_all(namespaces.render_nfs_server("alice")) if d["kind"] == "Deployment")
    ((_, template),) = pod_templates(server)
    by_name = {c["name"]: c for _, c in containers(template)}
    assert by_name["nfs-server"]["securityContext"] == {"privileged": True}
    before = text[:text.index("privileged: true")].splitlines()[-6:]
    assert "kernel" in " ".join(before).lower() and "nfs" in " ".join(before).lower()
    init = by_name["export-owner"]["securityContext"]
    assert init["runAsUser"] == 0 and init["allowPrivilegeEscalation"] is False
    assert init["capabilities"]["drop"] == ["ALL"] and "SYS_ADMIN" not in init["capabilities"]["add"]
    assert "chown 1000:1000 /exports" in " ".join(by_name["export-owner"]["args"])
    assert template["spec"]["automountServiceAccountToken"] is False
    assert {p["containerPort"] for c in by_name.values() for p in c.get("ports", [])} == {2049}


# ---------------------------------------------------------------- the volume: one attendee's, bound to one claim

def test_each_attendee_gets_a_server_and_a_volume_bound_to_their_claim_only():
    docs = instructor_objects(("alice", "bob"))
    volumes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolume"}
    claims = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"
              and d["metadata"]["name"] == "mnist-nfs"}
    assert set(volumes) == {"mnist-nfs-alice", "mnist-nfs-bob"} and set(claims) == {"alice", "bob"}
    for name in ("alice", "bob"):
        pv, claim = volumes[f"mnist-nfs-{name}"], claims[name]
        assert pv["spec"]["claimRef"] == {"namespace": name, "name": "mnist-nfs"}  # no other namespace binds it
        assert claim["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pv["spec"]["storageClassName"] == claim["spec"]["storageClassName"] == ""
        size = claim["spec"]["resources"]["requests"]["storage"]
        assert quantity(pv["spec"]["capacity"]["storage"]) >= quantity(size)
        assert pv["spec"]["nfs"] == {"server": f"nfs-{name}.{STORAGE}.svc.cluster.local", "path": "/"}
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == f"nfs-{name}")
        assert service["metadata"]["namespace"] == STORAGE
        assert service["spec"]["selector"]["mnist-workshop/attendee"] == name
    (pv,) = [d for d in yaml.safe_load_all(namespaces.render_nfs_server("alice", server="10.96.0.42"))
             if d["kind"] == "PersistentVolume"]
    assert pv["spec"]["nfs"]["server"] == "10.96.0.42"  # nodes mount by the Service's ClusterIP


def test_with_filestore_there_is_no_server_and_the_claim_names_the_class():
    docs = instructor_objects(("alice",), rwx_storage_class="standard-rwx", rwx_size="1Ti")
    assert not [d for d in docs if d["kind"] in ("PersistentVolume", "Deployment")]
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["storageClassName"] == "standard-rwx" and claim["spec"]["resources"]["requests"] == {
        "storage": "1Ti"}


# ---------------------------------------------------------------- NetworkPolicy, evaluated

def selects(selector, labels):
    """A Kubernetes label selector against labels ({} selects everything)."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        present, value = e["key"] in labels, labels.get(e["key"])
        if not {"In": present and value in e.get("values", []), "NotIn": value not in e.get("values", []),
                "Exists": present, "DoesNotExist": not present}[e["operator"]]:
            return False
    return True


NAMESPACE_LABELS = {"alice": {}, "bob": {}, STORAGE: {}, "kube-system": {}}


def peer_matches(peer, ns, labels, ip, own_namespace):
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(block["cidr"]) and not any(
            ipaddress.ip_address(ip) in ipaddress.ip_network(x) for x in block.get("except", []))
    if ns is None:  # outside the cluster's pods
        return False
    in_namespace = (selects(peer["namespaceSelector"], {**NAMESPACE_LABELS.get(ns, {}),
                                                        "kubernetes.io/metadata.name": ns})
                    if "namespaceSelector" in peer else ns == own_namespace)
    return in_namespace and selects(peer.get("podSelector") or {}, labels)


def port_matches(rule, port, protocol):
    ports = rule.get("ports")
    return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def side_allows(policies, ns, labels, direction, peer, port, protocol):
    """Does `ns`'s policy let this pod's traffic go (Egress) or come (Ingress)? Not isolated: yes."""
    selecting = [p for p in policies.get(ns, []) if selects(p["spec"]["podSelector"], labels)
                 and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    return any(port_matches(rule, port, protocol) and (peers not in rule or any(
        peer_matches(x, *peer, own_namespace=ns) for x in rule[peers]))
        for p in selecting for rule in p["spec"].get(key) or [])


def connection(policies, source, target, port, protocol="TCP"):
    """source/target: (namespace or None, pod labels, ip or None)."""
    return (side_allows(policies, source[0], source[1], "Egress", target, port, protocol)
            and side_allows(policies, target[0], target[1], "Ingress", source, port, protocol))


@pytest.fixture(scope="module")
def policies():
    found = {}
    for doc in instructor_objects(("alice", "bob")):
        if doc["kind"] == "NetworkPolicy":
            found.setdefault(doc["metadata"]["namespace"], []).append(doc)
    return found


def test_every_attendee_pod_is_isolated_by_the_namespaces_policies(policies):
    docs = render.render(render.load(sorted(KUBE.glob("*.yaml"))), "r.example.com/mnist", "v1", "alice")
    templates = [t for d in docs for _, t in pod_templates(d)]
    assert len(templates) >= 8
    for template in templates:
        labels = template["metadata"]["labels"]
        for direction in ("Ingress", "Egress"):
            assert any(selects(p["spec"]["podSelector"], labels) and direction in p["spec"]["policyTypes"]
                       for p in policies["alice"]), (direction, labels)


def test_pods_reach_their_own_namespace_and_dns_and_nothing_of_anyone_else(policies):
    chief = ("alice", {"app": "mnist-train", "training.kubeflow.org/replica-type": "chief"}, "10.8.0.5")
    worker = ("alice", {"app": "mnist-train", "training.kubeflow.org/replica-type": "worker"}, "10.8.0.6")
    serving = ("alice", {"app": "mnist-serving"}, "10.8.0.7")
    bobs = ("bob", {"app": "mnist-train"}, "10.8.1.5")
    nfs = (STORAGE, {"app": "nfs-server", "mnist-workshop/attendee": "alice"}, "10.8.2.5")
    dns = ("kube-system", {"k8s-app": "kube-dns"}, "10.8.3.5")
    metadata = (None, {}, "169.254.169.254")
    assert connection(policies, chief, worker, 2222) and connection(policies, worker, chief, 2222)
    assert connection(policies, worker, serving, 8500)
    assert connection(policies, chief, dns, 53, "UDP") and connection(policies, chief, dns, 53, "TCP")
    assert not connection(policies, chief, dns, 8080)
    assert not connection(policies, bobs, chief, 2222) and not connection(policies, chief, bobs, 2222)
    assert not connection(policies, bobs, serving, 8500)
    assert not connection(policies, chief, nfs, 2049) and not connection(policies, bobs, nfs, 2049)
    assert not connection(policies, chief, metadata, 80)
    # The NFS servers admit NFS only, from anywhere: the nodes' kubelets mount them, from outside any pod.
    assert connection(policies, (None, {}, "10.132.0.9"), nfs, 2049)
    assert not connection(policies, (None, {}, "10.132.0.9"), nfs, 111)


# ---------------------------------------------------------------- RBAC

def test_role_is_namespaced_and_bound_in_the_same_namespace_to_the_attendee_only():
    docs = {d["kind"]: d for d in objects("bob")}
    assert "ClusterRole" not in docs and "ClusterRoleBinding" not in docs
    binding = docs["RoleBinding"]
    assert docs["Role"]["metadata"]["namespace"] == binding["metadata"]["namespace"] == "bob"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "attendee"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "attendee", "namespace": "bob"}]
    accounts = {d["metadata"]["name"]: d for d in objects("bob") if d["kind"] == "ServiceAccount"}
    assert accounts["default"]["automountServiceAccountToken"] is False


def test_role_grants_no_secrets_no_rbac_no_exec_no_network_policy_and_no_wildcards():
    for rule in role()["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        assert "secrets" not in rule["resources"], rule
        assert not {"rbac.authorization.k8s.io", "networking.k8s.io"} & set(rule["apiGroups"]), rule
        assert not {"pods/exec", "pods/attach", "serviceaccounts/token", "persistentvolumes", "nodes",
                    "namespaces", "endpoints", "endpointslices", "networkpolicies"} & set(rule["resources"]), rule
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "resourceNames" not in rule


def test_role_can_apply_and_delete_every_kind_the_attendees_steps_apply():
    kinds = {d["kind"] for d in render.render(render.load(sorted(KUBE.glob("*.yaml"))), "r.example.com/mnist",
                                              "v1", "alice")}
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim", "TFJob", "CronJob"} <= kinds
    the_role = role()
    for kind in kinds:
        assert kind in RESOURCES, f"{kind} in kube/: add it to the attendee Role (and to RESOURCES here)"
        group, resource = RESOURCES[kind]
        for verb in APPLY:
            assert allows(the_role, group, resource, verb), f"{verb} {resource}"


def test_role_can_follow_logs_port_forward_and_read_why_a_pod_waits():
    the_role = role()
    for group, resource, verb in [("", "pods", "list"), ("", "pods", "watch"), ("", "pods/log", "get"),
                                  ("", "pods/portforward", "create"), ("", "events", "list"),
                                  ("", "resourcequotas", "get"), ("apps", "replicasets", "list")]:
        assert allows(the_role, group, resource, verb), f"{verb} {resource}"
    assert not allows(the_role, "", "pods", "create")  # pods come from Jobs, TFJobs and Deployments only
    assert not allows(the_role, "", "secrets", "get")


# ---------------------------------------------------------------- the quota holds every step

def test_quota_holds_every_step_with_serving_at_its_maximum_and_is_the_capacity_plans():
    hard = next(d for d in objects() if d["kind"] == "ResourceQuota")["spec"]["hard"]
    assert hard == plan.quota_hard()
    most = next(d for d in yaml.safe_load_all((KUBE / "serving-autoscale.yaml").read_text())
                if d["kind"] == "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    notebook = yaml.safe_load_all(namespaces.render_notebook("alice", "r.example.com/nb@sha256:" + "0" * 64))
    jupyterlab = next(d for d in notebook if d and d["kind"] == "Deployment")["spec"]["template"]
    standing = pods_of("tensorboard.yaml") + pods_of("serving.yaml", replicas=most) + [jupyterlab]
    values = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())
    trial = pods_of("tfjob.yaml")
    chief_and_workers = trial[:1] + trial[1:2] * values["workers"]
    steps = {"job": pods_of("job.yaml"), "tfjob": trial, "tfjob-ps": pods_of("tfjob-ps.yaml"),
             "sweep": chief_and_workers * plan.SWEEP_PARALLEL, "retrain": pods_of("retrain-cronjob.yaml"),
             "batch": pods_of("batch-predict.yaml"), "katib": katib_busiest(), "pipeline": pipeline_widest()}
    for step, own in steps.items():
        pods = standing + own
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory", "ephemeral-storage"):
                total = requested(pods, bound, resource)
                assert total <= quantity(hard[f"{bound}.{resource}"]) + 1e-9, f"{step} {bound}.{resource}: {total:g}"
        assert len(pods) <= int(hard["pods"]), step
    # The busiest step fills it: Katib's, at 8.5 CPU and 13 pods beside serving at 4 pods and JupyterLab (measured
    # from the manifests and the cluster model's pods).
    katib = standing + steps["katib"]
    assert requested(katib, "requests", "cpu") == pytest.approx(quantity(hard["requests.cpu"])) == 8.5
    assert len(katib) == int(hard["pods"]) == 13
    assert quantity(hard["requests.storage"]) == quantity(
        yaml.safe_load((KUBE / "storage.yaml").read_text())["spec"]["resources"]["requests"]["storage"])
    assert hard["persistentvolumeclaims"] == "1"
    assert {k: v for k, v in hard.items() if k.endswith("storageclass.storage.k8s.io/persistentvolumeclaims")} == {
        f"{c}.storageclass.storage.k8s.io/persistentvolumeclaims": "0" for c in plan.FILESTORE_MINIMUM}


def test_with_filestore_the_quota_counts_the_claim_at_its_size_and_allows_that_class_only():
    hard = next(d for d in objects(rwx_storage_class="premium-rwx", rwx_size="2560Gi")
                if d["kind"] == "ResourceQuota")["spec"]["hard"]
    assert hard["requests.storage"] == "2560Gi"
    assert hard["premium-rwx.storageclass.storage.k8s.io/persistentvolumeclaims"] == "1"
    assert hard["standard-rwx.storageclass.storage.k8s.io/persistentvolumeclaims"] == "0"


def test_no_workshop_container_exceeds_the_limit_range():
    limit = next(d for d in objects() if d["kind"] == "LimitRange")["spec"]["limits"][0]["max"]
    for template in pods_of(*[p.name for p in KUBE.glob("*.yaml")]):
        for _, c in containers(template):
            for resource in ("cpu", "memory"):
                assert quantity(c["resources"]["limits"][resource]) <= quantity(limit[resource]), c["name"]


# ---------------------------------------------------------------- the command

def instructor(*args, path=None):
    return run_script("instructor.py", *args, env={"PATH": path} if path else None)


def test_render_writes_the_storage_namespace_and_one_file_per_attendee(tmp_path):
    result = instructor("render", "--output_dir", tmp_path, "alice", "bob")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admission.yaml", "alice.yaml", "bob.yaml",
                                                          f"{STORAGE}.yaml"]
    for name in ("alice", "bob"):
        docs = [d for d in yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()) if d]
        assert {d["metadata"].get("namespace", name) for d in docs if d["kind"] != "PersistentVolume"} \
            <= {name, STORAGE}


@pytest.mark.parametrize("names,fragment", [
    (["Alice"], "cannot be an attendee's namespace"),
    (["kube-system"], "cannot be an attendee's namespace"),
    ([STORAGE], "cannot be an attendee's namespace"),
    (["a" * 60], "at most 59"),
    (["alice", "alice"], "named twice"),
    (["--duration", "2 days", "alice"], "hours or minutes"),
    (["--rwx_storage_class", "standard-rwx", "--rwx_size", "100Gi", "alice"], "below the smallest standard-rwx"),
])
def test_create_rejects_bad_input_in_one_line(tmp_path, names, fragment):
    assert_one_line_error(instructor("create", "--output_dir", tmp_path, *names), fragment)


def test_create_without_a_cluster_renders_the_files_only(tmp_path):
    result = instructor("create", "--output_dir", tmp_path, "alice", path=str(tmp_path / "nothing"))
    assert result.returncode == 0, result.stderr
    assert "rendered only" in result.stdout and (tmp_path / "alice.yaml").exists()


def test_create_applies_namespace_then_server_then_volume_on_its_clusterip_then_claim_then_kubeconfig(
        tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    out = tmp_path / "out"
    result = instructor("create", "--output_dir", out, "--duration", "12h", "alice", "bob", path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = []
    for call in calls():
        args = call["args"]
        if "apply" in args:
            docs = [d for d in yaml.safe_load_all(call["stdin"]) if d]
            steps += [f"apply {d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}" for d in docs]
            for doc in docs:
                if doc["kind"] == "PersistentVolume":
                    assert doc["spec"]["nfs"]["server"] == "10.96.7.7"  # the Service's ClusterIP
        elif args[:1] != ["config"]:
            steps.append(" ".join(a for a in args if not a.startswith("--timeout")))
    # First the API server's address, for the notebook pipelines' NetworkPolicies: read before anything changes.
    assert steps.pop(0) == ("get endpointslices --namespace default --selector kubernetes.io/service-name=kubernetes "
                            "--output json")
    alice = [s for s in steps if "alice" in s]
    order = ["apply Namespace//alice", f"apply Deployment/{STORAGE}/nfs-alice",
             f"--namespace {STORAGE} rollout status deployment/nfs-alice",
             "apply PersistentVolume//mnist-nfs-alice", "apply PersistentVolumeClaim/alice/mnist-nfs",
             "--namespace alice wait --for=jsonpath={.status.phase}=Bound persistentvolumeclaim/mnist-nfs",
             "apply ServiceAccount/alice/notebook", "apply ServiceAccount/alice/pipeline-executor",
             "apply NetworkPolicy/alice/jupyterlab-api-server", "apply NetworkPolicy/alice/pipeline-api-server",
             "create token attendee --namespace alice --duration 12h"]
    assert [s for s in alice if s in order] == order
    # The admission policies first (they hold for every attendee namespace by its label), then storage.
    assert steps[:4] == [f"apply {kind}//{name}" for name in ("workshop-experiment-trials-are-tfjobs",
                                                              "workshop-disruption-allowed")
                         for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
    assert steps[4] == f"apply Namespace//{STORAGE}"
    for name in ("alice", "bob"):
        kubeconfig = out / f"{name}.kubeconfig"
        assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
        config = yaml.safe_load(kubeconfig.read_text())
        (context,) = config["contexts"]
        assert config["current-context"] == context["name"] and context["context"]["namespace"] == name
        assert config["users"][0]["user"] == {"token": f"token-for-{name}-12h"}
        assert config["clusters"][0]["cluster"] == {"server": "https://203.0.113.10",
                                                    "certificate-authority-data": "Q0EgREFUQQ=="}
        # The real kubectl's client reads it back.
        view = subprocess.run([real_kubectl(), "config", "view", "--minify", "--output", "json", "--kubeconfig",
                               kubeconfig], capture_output=True, text=True, timeout=60)
        assert view.returncode == 0, view.stderr
        assert json.loads(view.stdout)["contexts"][0]["context"]["namespace"] == name


def test_create_with_filestore_applies_no_server_and_waits_for_no_binding(tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    result = instructor("create", "--output_dir", tmp_path, "--rwx_storage_class", "standard-rwx", "alice",
                        path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    applied = [d["kind"] for c in calls() if "apply" in c["args"] for d in yaml.safe_load_all(c["stdin"]) if d]
    assert "Deployment" not in applied and "PersistentVolume" not in applied and "PersistentVolumeClaim" in applied
    assert not [c for c in calls() if "wait" in c["args"]]


def test_a_kubectl_failure_is_one_line(tmp_path, fake_kubectl):
    path, _ = fake_kubectl
    bad = tmp_path / "bin" / "kubectl"
    bad.write_text(f"#!{sys.executable}\nimport sys\nif sys.argv[1:3] == ['config', 'current-context']: "
                   "print('ctx'); sys.exit(0)\nsys.exit('error: You must be logged in to the server (Unauthorized)')\n")
    result = instructor("create", "--output_dir", tmp_path / "out", "alice", path=path)
    assert_one_line_error(result, "kubectl get endpointslices --namespace default --selector "
                          "kubernetes.io/service-name=kubernetes --output json: error: You must be logged in to the "
                          "server (Unauthorized)")


def test_kubeconfigs_need_kubectl(tmp_path):
    result = instructor("kubeconfigs", "--output_dir", tmp_path, "alice", path=str(tmp_path))
    assert_one_line_error(result, "kubectl is not installed")


def test_delete_removes_namespace_volume_and_server(fake_kubectl):
    path, calls = fake_kubectl
    result = instructor("delete", "alice", path=path)
    assert result.returncode == 0, result.stderr
    deleted = [" ".join(a for a in c["args"] if a != "--ignore-not-found") for c in calls()]
    assert deleted == ["delete namespace alice", "delete persistentvolume mnist-nfs-alice",
                       f"--namespace {STORAGE} delete deployment,service,persistentvolumeclaim nfs-alice"]
