"""Notebook pipelines on Argo Workflows v4.1.2, the cluster side: `make instructor-argo` and its configmap, each
attendee's accounts, Roles, JupyterLab and NetworkPolicies (templated/instructor/notebook.yaml.j2), and the pods
Argo's controller makes of a pipeline's Workflow (tfk8s.kube.cluster_model.workflow_pods), under the same checks
as everything else the attendee runs: schemas, Pod Security `restricted`, requests and limits."""
import copy
import json
import subprocess

import pytest
import yaml

from support import REPO, VERSIONS, assert_one_line_error, run_script, validate
from tfk8s.flow import rights
from tfk8s.instructor import argo, connections, namespaces
from tfk8s.kube import cluster_model, pod_security

IMAGE = "r.example.com/alice-notebook@sha256:" + "ab" * 32
API = {"cidrs": ["172.16.0.2/32"], "port": 443}


def notebook_docs(image=IMAGE, apiserver=API, namespace="alice"):
    return [d for d in yaml.safe_load_all(namespaces.render_notebook(namespace, image, apiserver)) if d]


def by(docs, kind, name):
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def granted(role):
    """The (verb, group, resource) a Role grants, every combination of each rule."""
    return {(verb, group, resource) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def instructor(*args, path=None):
    return run_script("instructor.py", *args, env={"PATH": path} if path else None)


@pytest.fixture(scope="module")
def pipeline():
    return cluster_model.lab_pipeline("alice", IMAGE)


@pytest.fixture(scope="module")
def pods(pipeline):
    return cluster_model.workflow_pods(pipeline, argo.config())


# ---------------------------------------------------------------- the accounts and their rights

def test_the_notebook_account_may_do_exactly_what_the_pipeline_command_needs():
    docs = notebook_docs()
    assert granted(by(docs, "Role", rights.NOTEBOOK_SERVICE_ACCOUNT)) == rights.COMMAND_RIGHTS
    binding = by(docs, "RoleBinding", rights.NOTEBOOK_SERVICE_ACCOUNT)
    assert binding["roleRef"]["name"] == rights.NOTEBOOK_SERVICE_ACCOUNT
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "notebook", "namespace": "alice"}]


def test_the_executor_account_may_do_exactly_what_argos_executor_needs_and_has_its_token_secret():
    docs = notebook_docs()
    assert rights.EXECUTOR_RIGHTS == {("create", "argoproj.io", "workflowtaskresults"),
                                      ("patch", "argoproj.io", "workflowtaskresults")}
    assert granted(by(docs, "Role", rights.EXECUTOR_SERVICE_ACCOUNT)) == rights.EXECUTOR_RIGHTS
    binding = by(docs, "RoleBinding", rights.EXECUTOR_SERVICE_ACCOUNT)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-executor", "namespace": "alice"}]
    account = by(docs, "ServiceAccount", rights.EXECUTOR_SERVICE_ACCOUNT)
    assert account["automountServiceAccountToken"] is False
    # Argo finds the token by name: <account>.service-account-token (docs/service-account-secrets.md, v4.1.2).
    secret = by(docs, "Secret", "pipeline-executor.service-account-token")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "pipeline-executor"}


def test_the_attendee_only_reads_workflows():
    role = next(d for d in yaml.safe_load_all(namespaces.render_namespace("alice")) if d and d["kind"] == "Role")
    assert {g for g in granted(role) if g[1] == "argoproj.io"} == {
        (verb, "argoproj.io", "workflows") for verb in ("get", "list", "watch")}


def test_every_object_of_the_notebook_template_passes_strict_validation():
    for version in VERSIONS:
        for doc in notebook_docs():
            validate(doc, version)


# ---------------------------------------------------------------- JupyterLab

def test_jupyterlab_is_restricted_listens_on_loopback_and_sizes_every_container():
    deployment = by(notebook_docs(), "Deployment", "jupyterlab")
    assert pod_security.violations([deployment], "restricted") == []
    assert deployment["metadata"]["labels"] == {"app": "jupyterlab", "app.kubernetes.io/part-of": "mnist-workshop"}
    assert deployment["spec"]["replicas"] == 1
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == rights.NOTEBOOK_SERVICE_ACCOUNT
    assert spec["automountServiceAccountToken"] is True
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                       "fsGroupChangePolicy": "OnRootMismatch",
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    (main,) = spec["containers"]
    assert main["name"] == "jupyterlab" and main["image"] == IMAGE
    assert main["command"] == ["jupyter", "lab", "--ip=127.0.0.1", "--port=8888", "--no-browser",
                               "--ServerApp.root_dir=/mnt/nfs/work"]
    assert main["workingDir"] == "/mnt/nfs/work"
    assert main["ports"] == [{"name": "http", "containerPort": 8888}]
    assert {m["mountPath"]: m["name"] for m in main["volumeMounts"]} == {
        "/mnt/nfs": "nfs", "/tmp": "tmp", "/home/app": "home"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["nfs"]["persistentVolumeClaim"] == {"claimName": "mnist-nfs"}
    assert "emptyDir" in volumes["tmp"] and "emptyDir" in volumes["home"]
    (seed,) = spec["initContainers"]
    assert seed["image"] == IMAGE and "/app/workspace" in seed["command"][-1]
    for container in (main, seed):
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory", "ephemeral-storage"}, container["name"]


def test_the_seed_copies_only_missing_files(tmp_path):
    """The init container's script, run on a seed and a workspace where the attendee changed a file."""
    seed, work = tmp_path / "app" / "workspace", tmp_path / "mnt" / "nfs" / "work"
    (seed / "src").mkdir(parents=True)
    (seed / "src" / "main.py").write_text("seed\n")
    (seed / "notebooks").mkdir()
    (seed / "notebooks" / "lab.ipynb").write_text("{}\n")
    (work / "src").mkdir(parents=True)
    (work / "src" / "main.py").write_text("the attendee's edit\n")
    script = by(notebook_docs(), "Deployment", "jupyterlab")["spec"]["template"]["spec"]["initContainers"][0]
    code = script["command"][-1].replace("/app/workspace", str(seed)).replace("/mnt/nfs/work", str(work))
    exec(compile(code, "workspace", "exec"), {})
    assert (work / "src" / "main.py").read_text() == "the attendee's edit\n"
    assert (work / "notebooks" / "lab.ipynb").read_text() == "{}\n"


def test_without_a_notebook_image_there_is_no_jupyterlab_and_one_line_says_so(tmp_path):
    assert [d["kind"] for d in notebook_docs(image=None) if d["kind"] == "Deployment"] == []
    result = instructor("render", "--output_dir", tmp_path, "alice")
    assert result.returncode == 0, result.stderr
    assert ("no notebook image (--notebook_image, or runs/notebook-image from make instructor-notebook): "
            "rendered without JupyterLab") in result.stdout.splitlines()
    with_image = instructor("render", "--output_dir", tmp_path / "with", "--notebook_image", IMAGE, "alice")
    assert with_image.returncode == 0, with_image.stderr
    docs = [d for d in yaml.safe_load_all((tmp_path / "with" / "alice.yaml").read_text()) if d]
    assert by(docs, "Deployment", "jupyterlab")["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_the_recorded_notebook_image_is_used_and_a_tag_alone_is_refused(tmp_path):
    record = tmp_path / "notebook-image"
    record.write_text(IMAGE + "\n")
    assert namespaces.notebook_image(None, record) == IMAGE
    assert namespaces.notebook_image(None, tmp_path / "none") is None
    assert_one_line_error(instructor("render", "--output_dir", tmp_path, "--notebook_image", "r.example.com/nb:1",
                                     "alice"), "is not IMAGE@sha256:<64 hex>")


# ---------------------------------------------------------------- Argo's configuration and install

def test_the_executor_config_is_restricted_with_requests_and_limits_and_finished_pipelines_are_cleaned_up():
    config = argo.config()
    executor = config["executor"]
    assert executor["image"] == "quay.io/argoproj/argoexec:v4.1.2-nonroot"
    assert executor["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 8737, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    for bound in ("requests", "limits"):
        assert set(executor["resources"][bound]) == {"cpu", "memory", "ephemeral-storage"}
    defaults = config["workflowDefaults"]["spec"]
    assert defaults["ttlStrategy"] == {"secondsAfterCompletion": argo.TTL_SECONDS}
    assert defaults["podGC"] == {"strategy": "OnWorkflowSuccess", "deleteDelayDuration": argo.POD_GC_DELAY}
    assert set(config) == {"executor", "workflowDefaults"}  # config.go's keys, nothing else


def test_the_kustomization_pins_v4_1_2_and_leaves_argo_server_out():
    kustomization = yaml.safe_load((argo.KUSTOMIZATION / "kustomization.yaml").read_text())
    remote = [r for r in kustomization["resources"] if r.startswith("https://")]
    assert remote and all(r.endswith("?ref=v4.1.2") for r in remote)
    assert not [r for r in kustomization["resources"] if "argo-server" in r]
    assert kustomization["images"] == [{"name": "quay.io/argoproj/workflow-controller", "newTag": "v4.1.2"}]
    assert kustomization["namespace"] == "argo"


def test_instructor_argo_without_a_cluster_renders_the_configmap_only(tmp_path):
    result = instructor("argo", "--output_dir", tmp_path, path=str(tmp_path / "nothing"))
    assert result.returncode == 0, result.stderr
    assert "rendered only" in result.stdout
    assert yaml.safe_load((tmp_path / "argo-config.yaml").read_text()) == yaml.safe_load(argo.config_text())


def test_instructor_argo_applies_the_manifests_then_the_configmap_then_restarts_and_waits(tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    result = instructor("argo", "--output_dir", tmp_path, path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = [" ".join(c["args"]) for c in calls() if c["args"][:1] != ["config"]]
    assert done == [f"apply --server-side --force-conflicts -k {argo.KUSTOMIZATION}",
                    f"apply --server-side --force-conflicts --field-manager instructor-argo -f "
                    f"{tmp_path / 'argo-config.yaml'}",
                    "--namespace argo rollout restart deployment/workflow-controller",
                    "--namespace argo rollout status deployment/workflow-controller --timeout=10m",
                    "get crd workflows.argoproj.io workflowtaskresults.argoproj.io"]


def test_instructor_argo_runs_argos_images_by_their_pinned_digests(tmp_path, fake_kubectl):
    """With digests in pinned-images.yaml, the executor's image in the configmap and the controller's through a
    kustomization over the manifests (checked with kubectl's own kustomize, over a local stand-in of the base)."""
    from support import real_kubectl
    from tfk8s.kube import pins
    digests = {argo.CONTROLLER_IMAGE: "sha256:" + "3c" * 32, argo.EXECUTOR_IMAGE: "sha256:" + "4d" * 32}
    pinned = tmp_path / "pinned-images.yaml"
    pinned.write_text(pins.dump(pins.with_digests(pins.read(), digests)))
    base = tmp_path / "base"
    base.mkdir()
    (base / "kustomization.yaml").write_text(
        "resources: [controller.yaml]\nimages:\n  - {name: quay.io/argoproj/workflow-controller, newTag: v4.1.2}\n")
    (base / "controller.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: workflow-controller}\nspec:\n  selector: "
        "{matchLabels: {app: c}}\n  template:\n    metadata: {labels: {app: c}}\n    spec:\n      containers:\n"
        "        - {name: workflow-controller, image: 'quay.io/argoproj/workflow-controller:latest'}\n")
    out = tmp_path / "out"
    path, calls = fake_kubectl
    result = instructor("argo", "--pins", pinned, "--manifests", base, "--output_dir", out, path=path)
    assert result.returncode == 0 and "pulled by tag only" not in result.stderr, result.stdout + result.stderr
    config = argo.config((out / "argo-config.yaml").read_text())
    assert config["executor"]["image"] == f"{argo.EXECUTOR_IMAGE}@{digests[argo.EXECUTOR_IMAGE]}"
    applied = [c["args"] for c in calls() if c["args"][:1] == ["apply"]][0]
    assert applied == ["apply", "--server-side", "--force-conflicts", "-k", str(out / "argo")]
    built = subprocess.run([real_kubectl(), "kustomize", str(out / "argo")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (deployment,) = yaml.safe_load_all(built.stdout)
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        f"quay.io/argoproj/workflow-controller@{digests[argo.CONTROLLER_IMAGE]}"]


def test_instructor_argo_without_digests_says_in_one_warning_line_that_argo_is_pulled_by_tag(tmp_path):
    result = instructor("argo", "--output_dir", tmp_path, path=str(tmp_path / "nothing"))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert result.returncode == 0 and len(warnings) == 1, result.stderr
    assert argo.CONTROLLER_IMAGE in warnings[0] and argo.EXECUTOR_IMAGE in warnings[0]
    assert not (tmp_path / "argo").exists()


# ---------------------------------------------------------------- what Argo makes of a pipeline

def test_argos_names_are_fnv32a_as_go_computes_them():
    assert cluster_model.fnv32a("") == 0x811C9DC5 and cluster_model.fnv32a("a") == 0xE40C292C
    assert cluster_model.fnv32a("foobar") == 0xBF9CF968
    assert [cluster_model.go_duration(d) for d in ("10m", "5s", "1h", "90")] == ["10m0s", "5s", "1h0m0s", "1m30s"]


def test_the_lab_pipeline_is_the_briefs_shape(pipeline):
    spec = pipeline["spec"]
    assert spec["entrypoint"] == "pipeline" and spec["activeDeadlineSeconds"] == 3600
    (dag, *steps) = spec["templates"]
    assert [(t["name"], t.get("dependencies")) for t in dag["dag"]["tasks"]] == [
        ("s1-main", None), ("s2-batch-predict", ["s1-main"]), ("s2-batch-predict-2", ["s1-main"]),
        ("s3-model-config", ["s2-batch-predict", "s2-batch-predict-2"])]
    assert spec["serviceAccountName"] == "notebook" and spec["automountServiceAccountToken"] is False
    assert spec["executor"] == {"serviceAccountName": "pipeline-executor"}
    assert [v["name"] for v in spec["volumes"]] == ["nfs", "tmp", "home"]
    for step in steps:
        assert step["container"]["image"] == IMAGE and step["container"]["workingDir"] == "/mnt/nfs/work"


def test_each_step_pod_is_the_step_wrapped_by_argos_executor(pipeline, pods):
    name = pipeline["metadata"]["name"]
    assert [p["metadata"]["name"] for p in pods] == [
        f"{name}-{step}-{cluster_model.fnv32a(f'{name}.{step}')}"
        for step in ("s1-main", "s2-batch-predict", "s2-batch-predict-2", "s3-model-config")]
    pod = pods[0]
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"] == {"workflows.argoproj.io/workflow": name, "workflows.argoproj.io/completed": "false"}
    assert meta["annotations"]["workflows.argoproj.io/node-name"] == f"{name}.s1-main"
    assert meta["annotations"]["workflows.argoproj.io/pod-gc-strategy"] == "OnWorkflowSuccess/10m0s"
    assert meta["ownerReferences"][0]["kind"] == "Workflow"
    assert [c["name"] for c in spec["initContainers"]] == ["init"]
    assert [c["name"] for c in spec["containers"]] == ["wait", "main"]
    init, (wait, main) = spec["initContainers"][0], spec["containers"]
    step = pipeline["spec"]["templates"][1]["container"]
    assert main["command"] == ["/var/run/argo/argoexec", "emissary", "--loglevel", "info", "--log-format", "text",
                               "--gloglevel", "0", "--", *step["command"]]
    assert main["resources"] == step["resources"] and main["securityContext"] == step["securityContext"]
    assert init["command"][:2] == ["argoexec", "init"] and wait["command"][:2] == ["argoexec", "wait"]
    token = {"name": "exec-sa-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}
    assert token in init["volumeMounts"] and token in wait["volumeMounts"] and token not in main["volumeMounts"]
    # addOutputArtifactsVolumes (workflowpod.go 1685-1736): wait mounts each of main's volumes again, under
    # /mainctrfs and never read-only, after the token and before its /tmp; then /var/run/argo, as every container.
    assert "nfs" in [m["name"] for m in step["volumeMounts"]]  # the attendee's claim, read-write in wait too
    assert wait["volumeMounts"] == [token, *({**m, "mountPath": "/mainctrfs" + m["mountPath"]}
                                             for m in step["volumeMounts"]),
                                    {"name": "tmp-dir-argo", "mountPath": "/tmp", "subPath": "0"},
                                    {"name": "var-run-argo", "mountPath": "/var/run/argo"}]
    assert main["volumeMounts"] == [*step["volumeMounts"], {"name": "var-run-argo", "mountPath": "/var/run/argo"}]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["exec-sa-token"] == {"name": "exec-sa-token",
                                        "secret": {"secretName": "pipeline-executor.service-account-token"}}
    assert volumes["var-run-argo"] == {"name": "var-run-argo", "emptyDir": {}}
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "notebook"
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["restartPolicy"] == "Never"
    template = json.loads(next(e["value"] for e in init["env"] if e["name"] == "ARGO_TEMPLATE"))
    assert template["name"] == "s1-main"


def test_every_step_pod_passes_the_schemas_and_restricted(pods):
    for pod in pods:
        for version in VERSIONS:
            validate(pod, version)
    assert pod_security.violations(pods, "restricted") == []


def test_without_the_executors_security_context_every_step_pod_is_refused(pipeline):
    config = argo.config()
    del config["executor"]["securityContext"]
    refused = pod_security.violations(cluster_model.workflow_pods(pipeline, config), "restricted")
    assert len(refused) == 4
    assert all('containers "init", "wait" must set securityContext.allowPrivilegeEscalation=false' in r
               for r in refused), refused[0]


def test_a_workflow_without_a_security_context_is_given_the_defaults_one(pipeline):
    bare = copy.deepcopy(pipeline)
    del bare["spec"]["securityContext"]
    pods = cluster_model.workflow_pods(bare, argo.config())
    assert pods[0]["spec"]["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod_security.violations(pods, "restricted") == []
    without = cluster_model.workflow_pods(bare, {**argo.config(), "workflowDefaults": {}})
    assert pod_security.violations(without, "restricted") != []


# ---------------------------------------------------------------- connections

def test_without_the_notebook_policies_jupyterlab_and_the_steps_cannot_reach_the_api_server(monkeypatch):
    real = namespaces.render_notebook
    monkeypatch.setattr(namespaces, "render_notebook", lambda namespace, image=None, apiserver=None: real(
        namespace, image, None))
    broken = [c for c in connections.check() if not c.holds]
    assert {(c.source, c.target, c.verdict) for c in broken} == {
        ("alice/jupyterlab", "apiserver", "DENIED"),
        ("alice/pipeline-19700101-000000-abcd-s1-main-2243458929", "apiserver", "DENIED")}


def test_create_reads_the_api_server_from_the_kubernetes_services_endpoints(tmp_path, fake_kubectl):
    path, calls = fake_kubectl
    result = instructor("create", "--output_dir", tmp_path, "--notebook_image", IMAGE, "alice", path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [d for c in calls() if c["stdin"] for d in yaml.safe_load_all(c["stdin"]) if d]
    policy = by(docs, "NetworkPolicy", "jupyterlab-api-server")
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "172.16.0.2/32"}}],
                                        "ports": [{"protocol": "TCP", "port": 443}]}]
    assert by(docs, "NetworkPolicy", "pipeline-api-server")["spec"]["podSelector"] == {
        "matchExpressions": [{"key": "workflows.argoproj.io/workflow", "operator": "Exists"}]}
    assert by(docs, "Deployment", "jupyterlab")
    assert (REPO / "templated" / "instructor" / "notebook.yaml.j2").exists()
