"""What the cluster's own controllers create from what an attendee applies, built by their rules.

Nothing here is applied by anyone: these are the objects the training
operator, Katib, the CronJob controller and the autoscaler write, modelled
from their code at the pinned versions so that every offline check (Pod
Security, the quota, schemas, NetworkPolicy coverage) runs on what will
really run, not only on what this repository writes.

    python src/cluster_model.py --namespace alice --image REG/alice-mnist --tag v1 --output_dir runs/render/cluster-made

Sources (each field below names its file):
  training operator v1.9.4 (github.com/kubeflow/trainer, formerly kubeflow/training-operator):
    pkg/controller.v1/common/pod.go createNewPod (lines 383-435), pkg/controller.v1/common/service.go
    CreateNewService (211-244), pkg/controller.v1/common/job_controller.go GenLabels (236-242),
    pkg/controller.v1/tensorflow/tfjob_controller.go SetClusterSpec (555-588), IsMasterRole (598-605),
    pkg/core/service.go GetPortsFromJob (83-101), pkg/core/pod.go SetRestartPolicy (81-88).
  Katib v0.19.0 (github.com/kubeflow/katib):
    pkg/webhook/v1beta1/pod/inject_webhook.go Mutate (131-203), getMetricsCollectorContainer (206-252),
    getMetricsCollectorArgs (309-345); pkg/webhook/v1beta1/pod/utils.go wrapWorkerContainer (155-199),
    getMarkCompletedCommand (217-221), mutateMetricsCollectorVolume (230-264), mutatePodMetadata (266-284),
    mutatePodEnv (286-311), getSidecarContainerName (313-319);
    pkg/controller.v1beta1/suggestion/composer/composer.go DesiredDeployment (72-146), DesiredService
    (149-182), desiredContainers (184-262); pkg/controller.v1beta1/util/labels.go SuggestionLabels (27-37);
    pkg/controller.v1beta1/util/suggestion.go (names, 26-34); pkg/apis/config/v1beta1/defaults.go
    (resources and pull policy, 20-38, 123-135); manifests/v1beta1/installs/katib-standalone/katib-config.yaml.
  Kubernetes 1.30, pkg/controller/cronjob/utils.go getJobFromTemplate2: the Job of a CronJob.
  Argo Workflows v4.1.2 (github.com/argoproj/argo-workflows), its default (legacy: init + wait) pod layout:
    workflow/controller/workflowpod.go build (lines 398-966), newInitContainers/standardInitContainer (1027-1116),
    newWaitContainer (1118-1122), getExecutorLogOpts (1206-1210), createEnvVars (1212-1252), createVolumes
    (1261-1278), newExecContainer (1280-1322), addSchedulingConstraints (1348-1406, the securityContext),
    addVolumeReferences (1444-1543), addOutputArtifactsVolumes (1685-1736), setupServiceAccount (1823-1859);
    workflow/controller/workflowpod_layout.go
    legacyLayout; workflow/controller/dag.go taskNodeName (118-120); workflow/util/pod_name.go GeneratePodName
    (POD_NAMES v2, the default); pkg/apis/workflow/v1alpha1/workflow_types.go Workflow.NodeID (3870-3877);
    workflow/common/common.go (names, labels, paths); workflow/controller/controller.go (progress ticks, 237-238);
    cmd/workflow-controller/main.go (log level and format defaults, 211-213).
"""
import copy
import json
import posixpath
from pathlib import Path

import yaml

from tfk8s.cli import ArgumentParser, UserError, entry_point
from tfk8s.flow.workflow import fnv32a
from tfk8s.flow.workflow import pod_name as argo_pod_name
from tfk8s.kube import katib_check, render
from tfk8s.kube.tfjob_local import DEFAULT_PORT, PORT_NAME, not_run_by_the_operator, operator_tf_config, replica_specs
from tfk8s.paths import KUBE, TEMPLATED

KATIB_NAMESPACE = "kubeflow"
DB_MANAGER = f"katib-db-manager.{KATIB_NAMESPACE}:6789"   # katibmanager GetDBManagerAddr (consts/const.go 159-169)
SUGGESTION_PORT = 6789             # consts/const.go DefaultSuggestionPort, name suggestion-api
TF_PORT, TF_PORT_NAME = 2222, "tfjob-port"
EXAMPLE_TRIAL = "abcdefgh"         # Katib names a trial <experiment>-<8 random characters>
OWNER_UID = "00000000-0000-0000-0000-000000000000"  # the owner's uid, which only the API server knows
HEADER = ("# Made by the cluster, not applied by anyone: what the training operator v1.9.4, Katib v0.19.0,\n"
          "# the CronJob controller and the autoscaler create from the objects beside this directory\n"
          "# (src/tfk8s/kube/cluster_model.py, from their code). Every offline check runs on these too.\n")

# Katib's defaults for a container it builds from katib-config (pkg/apis/config/v1beta1/defaults.go 27-38):
# a suggestion, an early-stopping or a metrics-collector container with no resources of its own gets these.
DEFAULT_RESOURCES = {"requests": {"cpu": "50m", "memory": "10Mi", "ephemeral-storage": "500Mi"},
                     "limits": {"cpu": "500m", "memory": "100Mi", "ephemeral-storage": "5Gi"}}
PULL_POLICY = "IfNotPresent"       # defaults.go DefaultImagePullPolicy

# The katib-standalone install's katib-config.yaml (v0.19.0), the entries the workshop can reach: its
# collectors, the suggestion algorithms the values file allows (src/tfk8s/sweep/katib.py ALGORITHMS),
# medianstop, and its trialResources. No securityContext anywhere and injectSecurityContext unset (false).
STANDALONE_CONFIG = {
    "init": {"controller": {"webhookPort": 8443, "trialResources": [
        "TrainJob.v1alpha1.trainer.kubeflow.org", "Job.v1.batch", "TFJob.v1.kubeflow.org",
        "PyTorchJob.v1.kubeflow.org", "MPIJob.v1.kubeflow.org", "XGBoostJob.v1.kubeflow.org"]},
        "certGenerator": {"enable": True}},
    "runtime": {
        "metricsCollectors": [
            {"kind": "StdOut", "image": "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0"},
            {"kind": "File", "image": "ghcr.io/kubeflow/katib/file-metrics-collector:v0.19.0"},
            {"kind": "TensorFlowEvent", "image": "ghcr.io/kubeflow/katib/tfevent-metrics-collector:v0.19.0",
             "resources": {"limits": {"memory": "1Gi"}}}],
        "suggestions": [
            {"algorithmName": "random", "image": "ghcr.io/kubeflow/katib/suggestion-hyperopt:v0.19.0"},
            {"algorithmName": "grid", "image": "ghcr.io/kubeflow/katib/suggestion-optuna:v0.19.0"},
            {"algorithmName": "bayesianoptimization", "image": "ghcr.io/kubeflow/katib/suggestion-skopt:v0.19.0"}],
        "earlyStoppings": [
            {"algorithmName": "medianstop", "image": "ghcr.io/kubeflow/katib/earlystopping-medianstop:v0.19.0"}],
    },
}


def katib_config(text=None):
    """The KatibConfig the cluster runs: the workshop's (templated/instructor/katib-config.yaml.j2, what
    `make instructor-katib` installs) by default, or the one parsed from `text`."""
    if text is None:
        from tfk8s.instructor import katib  # the instructor's template renders it
        text = yaml.safe_load(katib.config_text())["data"]["katib-config.yaml"]
    return yaml.safe_load(text)


def with_defaults(resources):
    """defaults.go setResourceRequirements: each of cpu, memory, ephemeral-storage unset gets Katib's default."""
    out = copy.deepcopy(resources or {})
    for bound in ("requests", "limits"):
        out[bound] = {**DEFAULT_RESOURCES[bound], **(out.get(bound) or {})}
    return out


def entry(items, key, value, what):
    found = [item for item in items if item.get(key) == value]
    if not found:  # katibconfig/config.go: "failed to find ... config for ..."
        raise UserError(f"katib-config has no {what} {value!r}")
    return found[-1]  # config.go keeps the last entry of that name


# ---------------------------------------------------------------- the training operator

def operator_labels(job):
    """job_controller.go GenLabels: operator and job name (tfjob_controller.go controllerName)."""
    return {"training.kubeflow.org/operator-name": "tfjob-controller",
            "training.kubeflow.org/job-name": job.replace("/", "-")}


def tfjob_objects(tfjob):
    """The pods and headless Services the operator creates for a TFJob: [(kind, doc)] with kind Pod/Service.

    None for a suspended TFJob or one another controller manages."""
    if not_run_by_the_operator(tfjob):
        return []
    meta = tfjob["metadata"]
    job, namespace = meta["name"], meta.get("namespace", "default")
    specs = replica_specs(tfjob)
    chief = any(t in specs for t in ("Chief", "Master"))
    owner = [{"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "name": job, "controller": True,
              "blockOwnerDeletion": True, "uid": OWNER_UID}]
    out = []
    for rtype, spec in specs.items():
        rt = rtype.lower()
        template = copy.deepcopy(spec["template"])
        # tensorflow_defaults.go setTensorflowDefaultPort: tfjob-port 2222 on the `tensorflow` container, unless
        # it names that port itself; core/service.go GetPortsFromJob: that container's ports, by name.
        container = next(c for c in template["spec"]["containers"] if c["name"] == "tensorflow")
        if not any(p.get("name") == PORT_NAME for p in container.get("ports", [])):
            container["ports"] = [*container.get("ports", []), {"name": PORT_NAME, "containerPort": DEFAULT_PORT}]
        ports = container["ports"]
        for index in range(spec.get("replicas", 1)):
            name = f"{job}-{rt}-{index}"  # util.go GenGeneralName
            labels = {**operator_labels(job), "training.kubeflow.org/replica-type": rt,
                      "training.kubeflow.org/replica-index": str(index)}
            pod_labels = dict(labels)
            # tfjob_controller.go IsMasterRole: Chief/Master, or worker 0 when there is neither.
            if (rtype in ("Chief", "Master")) if chief else (rtype == "Worker" and index == 0):
                pod_labels["training.kubeflow.org/job-role"] = "master"
            pod_meta = copy.deepcopy(template.get("metadata") or {})
            pod_meta.update(name=name, namespace=namespace, ownerReferences=owner,
                            labels={**(pod_meta.get("labels") or {}), **pod_labels})
            pod_spec = copy.deepcopy(template["spec"])
            # tfjob_controller.go SetClusterSpec: TF_CONFIG on the `tensorflow` container of a distributed job.
            tf_config = operator_tf_config(tfjob, rtype, index)
            if tf_config is not None:
                container = next(c for c in pod_spec["containers"] if c["name"] == "tensorflow")
                container["env"] = [*container.get("env", []), {"name": "TF_CONFIG", "value": tf_config}]
            # core/pod.go SetRestartPolicy (81-88): ExitCode becomes Never on the pod (the operator restarts it).
            policy = spec.get("restartPolicy", "Never")
            pod_spec["restartPolicy"] = "Never" if policy == "ExitCode" else policy
            out.append({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec})
            # service.go CreateNewService: headless, selecting exactly this replica, the container's ports.
            out.append({"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                                     "ownerReferences": owner},
                        "spec": {"clusterIP": "None", "selector": labels,
                                 "ports": [{"name": p.get("name", ""), "port": p["containerPort"]} for p in ports]}})
    return out


# ---------------------------------------------------------------- Katib

def trial_name(experiment):
    return f"{experiment['metadata']['name']}-{EXAMPLE_TRIAL}"


def trial_job(experiment, name=None):
    """The TFJob Katib's trial controller creates for one trial (katib_check.run_spec, parameters substituted)."""
    defaulted = katib_check.defaults(experiment)
    namespace = experiment["metadata"].get("namespace", "default")
    job = katib_check.run_spec(defaulted, name or trial_name(experiment), namespace,
                               katib_check.example_assignments(defaulted))
    job["metadata"]["ownerReferences"] = [{"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
                                           "name": job["metadata"]["name"], "controller": True, "uid": OWNER_UID}]
    return job


def collector_container(experiment, trial, primary, config):
    """inject_webhook.go getMetricsCollectorContainer and getMetricsCollectorArgs, for the built-in collectors."""
    spec = katib_check.defaults(experiment)["spec"]
    collector = spec["metricsCollectorSpec"]
    kind = collector["collector"]["kind"]
    found = entry(config["runtime"]["metricsCollectors"], "kind", kind, "metrics collector")
    objective = spec["objective"]
    metrics = ";".join([objective["objectiveMetricName"], *objective.get("additionalMetricNames", [])])
    args = ["-t", trial, "-m", metrics, "-o-type", objective["type"], "-s-db", DB_MANAGER]
    path, _ = mount_path(collector)
    if path:
        args += ["-path", path]
    source = collector.get("source") or {}
    if (source.get("filter") or {}).get("metricsFormat"):
        args += ["-f", ";".join(source["filter"]["metricsFormat"])]
    if kind == "File" and source.get("fileSystemPath"):
        args += ["-format", source["fileSystemPath"].get("format", "TEXT")]
    if kind == "StdOut":
        args += ["-format", "TEXT"]
    if found.get("waitAllProcesses") is not None:
        args += ["-w", str(found["waitAllProcesses"]).lower()]
    container = {"name": "metrics-logger-and-collector" if kind in ("StdOut", "File") else "metrics-collector",
                 "image": found["image"], "args": args, "imagePullPolicy": found.get("imagePullPolicy", PULL_POLICY),
                 "resources": with_defaults(found.get("resources"))}
    # inject_webhook.go 244-250: only with init.controller.injectSecurityContext, a copy of containers[0]'s.
    if ((config.get("init") or {}).get("controller") or {}).get("injectSecurityContext"):
        if primary.get("securityContext") is not None:
            container["securityContext"] = copy.deepcopy(primary["securityContext"])
    return container


def mount_path(collector):
    """utils.go getMountPath: (path, kind) of the built-in collectors."""
    kind = collector["collector"]["kind"]
    if kind == "StdOut":
        return "/var/log/katib/metrics.log", "File"
    files = (collector.get("source") or {}).get("fileSystemPath") or {}
    if kind in ("File", "TensorFlowEvent"):
        return files.get("path", ""), "File" if kind == "File" else "Directory"
    return "", ""


def inject(pod, experiment, config):
    """A trial's pod after Katib's pod webhook (inject_webhook.go Mutate): trial labels and KATIB_TRIAL_NAME on
    every pod of the trial; on its primary pod the collector container, the shared emptyDir, a shared process
    namespace and the primary container's command wrapped in `sh -c` so that its end is marked for the collector."""
    spec = katib_check.defaults(experiment)["spec"]
    template = spec["trialTemplate"]
    trial = pod["metadata"]["labels"]["training.kubeflow.org/job-name"]
    out = copy.deepcopy(pod)
    # utils.go mutatePodMetadata: the Trial's labels (the Experiment's, and katib.kubeflow.org/experiment).
    labels = {**(experiment["metadata"].get("labels") or {}),
              "katib.kubeflow.org/experiment": experiment["metadata"]["name"], "katib.kubeflow.org/trial": trial}
    out["metadata"]["labels"] = {**out["metadata"]["labels"], **labels}
    primary_name = template["primaryContainerName"]
    containers = out["spec"]["containers"]
    primary = next(c for c in containers if c["name"] == primary_name)
    # utils.go mutatePodEnv.
    primary["env"] = [*primary.get("env", []), {"name": "KATIB_TRIAL_NAME", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.labels['katib.kubeflow.org/trial']"}}}]
    wanted = template.get("primaryPodLabels")
    if wanted and any(pod["metadata"]["labels"].get(k) != v for k, v in wanted.items()):
        return out  # Mutate 161-163: not the primary pod
    collector = spec["metricsCollectorSpec"]
    original_first = pod["spec"]["containers"][0]
    sidecar = collector_container(experiment, trial, original_first, config)
    containers.append(sidecar)
    out["spec"]["shareProcessNamespace"] = True
    path, kind = mount_path(collector)
    if path:
        directory = str(Path(path).parent) if kind == "File" else path
        mount = {"name": "metrics-volume", "mountPath": directory}
        for container in containers:
            if container["name"] in (sidecar["name"], primary_name):
                container["volumeMounts"] = [*container.get("volumeMounts", []), mount]
        out["spec"]["volumes"] = [*out["spec"].get("volumes", []), {"name": "metrics-volume", "emptyDir": {}}]
        # utils.go wrapWorkerContainer (StdOut, File, TensorFlowEvent).
        args = [*primary.get("command", []), *primary.get("args", [])]
        command = ["sh", "-c"]
        if args[:1] in (["sh"], ["bash"]) and args[1:2] == ["-c"]:
            command, args = args[:2], args[2:]
        if collector["collector"]["kind"] == "StdOut":
            args.append(f"1>{path} 2>&1")
        if spec.get("earlyStopping"):
            args += ["||", f"if test -f {directory}/$$$$.pid && [ $(head -n 1 {directory}/$$.pid) = early-stopped ]; "
                     "then echo Training Container was Early Stopped; else echo Training Container was Failed; "
                     "exit 1; fi"]
        args += ["&&", f"echo completed > {directory}/$$$$.pid"]
        primary["command"], primary["args"] = command, [" ".join(args)]
    return out


def suggestion_objects(experiment, config):
    """The suggestion Deployment and Service Katib's controller creates for an Experiment (composer.go)."""
    meta, spec = experiment["metadata"], katib_check.defaults(experiment)["spec"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    algorithm = spec["algorithm"]["algorithmName"]
    found = entry(config["runtime"]["suggestions"], "algorithmName", algorithm, "suggestion algorithm")
    deployment_name = f"{name}-{algorithm}"  # util/suggestion.go GetSuggestionDeploymentName
    labels = {**(meta.get("labels") or {}), "katib.kubeflow.org/deployment": deployment_name,
              "katib.kubeflow.org/experiment": name, "katib.kubeflow.org/suggestion": name,
              "sidecar.istio.io/inject": "false"}  # util/labels.go SuggestionLabels
    # composer.go desiredContainers: katib-config's entry is a whole Container (its securityContext
    # included), named `suggestion`, with port 6789 and gRPC probes (enableGRPCProbeInSuggestion: true).
    container = {k: copy.deepcopy(v) for k, v in found.items()
                 if k not in ("algorithmName", "serviceAccountName", "volumeMountPath", "persistentVolumeClaimSpec",
                              "persistentVolumeSpec", "persistentVolumeLabels")}
    container.setdefault("name", "suggestion")
    container["imagePullPolicy"] = container.get("imagePullPolicy", PULL_POLICY)
    container["resources"] = with_defaults(container.get("resources"))
    container["ports"] = [*container.get("ports", []), {"name": "suggestion-api", "containerPort": SUGGESTION_PORT}]
    probe = {"grpc": {"port": SUGGESTION_PORT, "service": "manager.v1beta1.Suggestion"}, "initialDelaySeconds": 10}
    container.setdefault("readinessProbe", {**probe, "periodSeconds": 10})
    container.setdefault("livenessProbe", {**probe, "periodSeconds": 120, "failureThreshold": 12})
    containers = [container]
    ports = [{"name": "suggestion-api", "port": SUGGESTION_PORT}]
    if spec.get("earlyStopping"):
        # composer.go 245-260: the early-stopping container has only image, pull policy, port and resources,
        # whatever katib-config says: no securityContext can reach it.
        stopping = entry(config["runtime"].get("earlyStoppings", []), "algorithmName",
                         spec["earlyStopping"]["algorithmName"], "early stopping algorithm")
        containers.append({"name": "early-stopping", "image": stopping["image"],
                           "imagePullPolicy": stopping.get("imagePullPolicy", PULL_POLICY),
                           "ports": [{"name": "earlystop-api", "containerPort": 6788}],
                           "resources": with_defaults(stopping.get("resources"))})
        ports.append({"name": "earlystop-api", "port": 6788})
    owner = [{"apiVersion": "kubeflow.org/v1beta1", "kind": "Suggestion", "name": name, "controller": True,
              "uid": OWNER_UID}]
    pod_spec = {"containers": containers}
    if spec.get("earlyStopping"):
        pod_spec["serviceAccountName"] = deployment_name  # composer.go 137-139
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": deployment_name, "namespace": namespace, "labels": meta.get("labels") or {},
                               "ownerReferences": owner},
                  "spec": {"selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": deployment_name, "namespace": namespace, "ownerReferences": owner},
               "spec": {"selector": labels, "ports": ports, "type": "ClusterIP"}}
    return [deployment, service]


def experiment_objects(experiment, config):
    """Everything Katib and the operator create for one trial of the Experiment (its primary pod mutated) and
    the Experiment's suggestion."""
    made = []
    for doc in tfjob_objects(trial_job(experiment)):
        made.append(inject(doc, experiment, config) if doc["kind"] == "Pod" else doc)
    return made + suggestion_objects(experiment, config)


# ---------------------------------------------------------------- the other controllers

def cronjob_job(cronjob, scheduled_minutes=0):
    """The Job the CronJob controller creates (cronjob/utils.go getJobFromTemplate2): <cronjob>-<minutes since
    the epoch of its scheduled time>, the job template's labels, annotations and spec, owned by the CronJob."""
    template = cronjob["spec"]["jobTemplate"]
    meta = template.get("metadata") or {}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{cronjob['metadata']['name']}-{scheduled_minutes}",
                         "namespace": cronjob["metadata"].get("namespace", "default"),
                         "labels": copy.deepcopy(meta.get("labels") or {}),
                         "annotations": {**copy.deepcopy(meta.get("annotations") or {}),
                                         "batch.kubernetes.io/cronjob-scheduled-timestamp": "1970-01-01T00:00:00Z"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                              "name": cronjob["metadata"]["name"], "controller": True,
                                              "uid": OWNER_UID}]},
            "spec": copy.deepcopy(template["spec"])}


def serving_at_maximum(deployment, hpa):
    """The serving Deployment as the HorizontalPodAutoscaler may leave it: at maxReplicas."""
    out = copy.deepcopy(deployment)
    out["spec"]["replicas"] = hpa["spec"]["maxReplicas"]
    return out


# ---------------------------------------------------------------- Argo Workflows

ARGO_WORKFLOW_LABEL = "workflows.argoproj.io/workflow"    # common.go LabelKeyWorkflow
VAR_RUN_ARGO = "/var/run/argo"                             # common.go VarRunArgoPath
MAIN_FILESYSTEM_DIR = "/mainctrfs"                          # common.go ExecutorMainFilesystemDir
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # common.go ServiceAccountTokenMountPath
TOKEN_VOLUME = "exec-sa-token"                             # common.go ServiceAccountTokenVolumeName
# The controller's flags at their defaults (main.go: --loglevel info, --log-format text, --gloglevel 0), as
# getExecutorLogOpts passes them on to every argoexec command.
EXECUTOR_LOG_OPTS = ["--loglevel", "info", "--log-format", "text", "--gloglevel", "0"]
# controller.go: ARGO_PROGRESS_PATCH_TICK_DURATION 1m and ARGO_PROGRESS_FILE_TICK_DURATION 3s by default, both
# non-zero, so build() hands the progress file and ticks to every container (Go's Duration.String()).
PROGRESS_ENV = [{"name": "ARGO_PROGRESS_FILE", "value": f"{VAR_RUN_ARGO}/progress"},
                {"name": "ARGO_PROGRESS_PATCH_TICK_DURATION", "value": "1m0s"},
                {"name": "ARGO_PROGRESS_FILE_TICK_DURATION", "value": "3s"}]
EXAMPLE_DEADLINE = "1970-01-01T01:00:00Z"  # ARGO_DEADLINE: the Workflow's start (unknown here) plus its deadline


def go_duration(text):
    """A duration as Argo's podGC.deleteDelayDuration takes it ("10m", "1h", "30s" or seconds), written as Go's
    time.Duration.String() writes it ("10m0s")."""
    units = {"h": 3600, "m": 60, "s": 1}
    seconds = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def merged(defaults, over):
    """`over` merged onto `defaults` (maps key by key, anything else replaced): the controller's workflowDefaults
    under a Workflow (workflow/util MergeTo, a strategic merge patch of the Workflow onto the defaults)."""
    if not isinstance(defaults, dict) or not isinstance(over, dict):
        return copy.deepcopy(over)
    out = copy.deepcopy(defaults)
    for key, value in over.items():
        out[key] = merged(out.get(key), value) if key in out else copy.deepcopy(value)
    return out


def exec_env(workflow_name):
    """createEnvVars: what every executor container gets first."""
    return [{"name": "ARGO_POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "ARGO_POD_UID", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}},
            {"name": "ARGO_WORKFLOW_NAME", "value": workflow_name},
            {"name": "ARGO_WORKFLOW_UID", "value": OWNER_UID}]


def exec_container(name, executor, workflow_name, token):
    """newExecContainer: the executor config's image, pull policy, resources, securityContext and args, as they
    are (no securityContext in the config: none on the container), and the executor's token when it has one."""
    container = {"name": name, "image": executor.get("image", "quay.io/argoproj/argoexec:v4.1.2"),
                 "command": ["argoexec", name, *EXECUTOR_LOG_OPTS],
                 "env": exec_env(workflow_name) + copy.deepcopy(executor.get("env") or [])}
    for key in ("imagePullPolicy", "resources", "securityContext", "args"):
        if executor.get(key) is not None:
            container[key] = copy.deepcopy(executor[key])
    if token:
        container["volumeMounts"] = [{"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True}]
    return container


def workflow_pods(workflow, argo_config):
    """The pods Argo's controller creates for a Workflow of the pipeline command's shape (a `dag` entrypoint
    whose tasks each run a `container` template), one per step, under the controller's `argo_config`
    (tfk8s.instructor.argo.config(): executor, workflowDefaults)."""
    wf = merged((argo_config.get("workflowDefaults") or {}), workflow)
    meta, spec = wf["metadata"], wf["spec"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    executor = argo_config.get("executor") or {}
    templates = {t["name"]: t for t in spec["templates"]}
    owner = [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": name, "uid": OWNER_UID,
              "controller": True, "blockOwnerDeletion": True}]
    executor_account = (spec.get("executor") or {}).get("serviceAccountName")
    if not executor_account and spec.get("automountServiceAccountToken") is False:
        # setupServiceAccount: the Workflow is refused, no pod is made.
        raise UserError("executor.serviceAccountName must not be empty if automountServiceAccountToken is false")
    pods = []
    for task in templates[spec["entrypoint"]]["dag"]["tasks"]:
        template = templates[task["template"]]
        node_name = f"{name}.{task['name']}"                    # dag.go taskNodeName
        node_id = f"{name}-{fnv32a(node_name)}"                 # Workflow.NodeID
        pod_name = argo_pod_name(name, template["name"], node_name)  # GeneratePodName, v2
        env = [{"name": "ARGO_NODE_ID", "value": node_id}, {"name": "ARGO_INCLUDE_SCRIPT_OUTPUT", "value": "false"},
               {"name": "ARGO_DEADLINE", "value": EXAMPLE_DEADLINE}, {"name": "ARGO_WORKFLOW_NAME", "value": name},
               *PROGRESS_ENV]
        annotations = {"workflows.argoproj.io/node-name": node_name, "workflows.argoproj.io/node-id": node_id,
                       "kubectl.kubernetes.io/default-container": "main"}
        if spec.get("podGC"):
            gc = spec["podGC"]
            annotations["workflows.argoproj.io/pod-gc-strategy"] = (
                f"{gc.get('strategy', '')}/{go_duration(gc.get('deleteDelayDuration') or '5s')}")
        labels = {ARGO_WORKFLOW_LABEL: name, "workflows.argoproj.io/completed": "false"}
        labels.update((spec.get("podMetadata") or {}).get("labels") or {})
        labels.update((template.get("metadata") or {}).get("labels") or {})
        pod_spec = {"restartPolicy": "Never",
                    "volumes": [{"name": "var-run-argo", "emptyDir": {}}, {"name": "tmp-dir-argo", "emptyDir": {}},
                                *copy.deepcopy(template.get("volumes") or [])]}
        if spec.get("activeDeadlineSeconds"):  # at most the Workflow's: what is left of it when the pod is made
            pod_spec["activeDeadlineSeconds"] = spec["activeDeadlineSeconds"]
        if spec.get("serviceAccountName"):
            pod_spec["serviceAccountName"] = template.get("serviceAccountName") or spec["serviceAccountName"]
        if spec.get("automountServiceAccountToken") is False:
            pod_spec["automountServiceAccountToken"] = False
        if executor_account:
            pod_spec["volumes"].append({"name": TOKEN_VOLUME, "secret": {
                "secretName": f"{executor_account}.service-account-token"}})  # docs/service-account-secrets.md
        main = copy.deepcopy(template["container"])
        main["name"] = "main"
        main["command"] = [f"{VAR_RUN_ARGO}/argoexec", "emissary", *EXECUTOR_LOG_OPTS, "--", *main.get("command", [])]
        main["env"] = [*(main.get("env") or []), {"name": "ARGO_CONTAINER_NAME", "value": "main"},
                       *copy.deepcopy(env)]
        main["volumeMounts"] = [*(main.get("volumeMounts") or []), {"name": "var-run-argo", "mountPath": VAR_RUN_ARGO}]
        wait = exec_container("wait", executor, name, executor_account)
        wait["env"] += [{"name": "ARGO_CONTAINER_NAME", "value": "wait"}, *copy.deepcopy(env)]
        # addOutputArtifactsVolumes: each mount of main again, under /mainctrfs and never read-only, for the wait
        # container to collect output artifacts from (it mounts the step's volumes, the attendee's claim too).
        mirrored = [{**{k: v for k, v in m.items() if k != "readOnly"},
                     "mountPath": posixpath.join(MAIN_FILESYSTEM_DIR, m["mountPath"].lstrip("/"))}
                    for m in template["container"].get("volumeMounts") or []]
        wait["volumeMounts"] = [*wait.get("volumeMounts", []), *mirrored,
                                {"name": "tmp-dir-argo", "mountPath": "/tmp", "subPath": "0"},
                                {"name": "var-run-argo", "mountPath": VAR_RUN_ARGO}]
        init = exec_container("init", executor, name, executor_account)
        template_env = {k: v for k, v in template.items() if k != "inputs"}
        init["env"] += [{"name": "ARGO_CONTAINER_NAME", "value": "init"},
                        {"name": "ARGO_TEMPLATE", "value": json.dumps({**template_env, "inputs": {}},
                                                                      separators=(",", ":"))}, *copy.deepcopy(env)]
        init["volumeMounts"] = [*init.get("volumeMounts", []), {"name": "var-run-argo", "mountPath": VAR_RUN_ARGO}]
        pod_spec["initContainers"] = [init]
        pod_spec["containers"] = [wait, main]
        # addVolumeReferences: each Workflow volume a container mounts, once, in the order of the mounts.
        known = {v["name"] for v in pod_spec["volumes"]}
        for mount in template["container"].get("volumeMounts") or []:
            volume = next((v for v in spec.get("volumes") or [] if v["name"] == mount["name"]), None)
            if volume is None:
                raise UserError(f"volume '{mount['name']}' not found in workflow spec")
            if volume["name"] not in known:
                pod_spec["volumes"].append(copy.deepcopy(volume))
                known.add(volume["name"])
        security = template.get("securityContext") or spec.get("securityContext")
        if security:
            pod_spec["securityContext"] = copy.deepcopy(security)
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                                  "annotations": annotations, "ownerReferences": owner},
                     "spec": pod_spec})
    return pods


def jupyterlab(namespace, image):
    """The attendee's JupyterLab Deployment as `make instructor-namespaces` renders it."""
    from tfk8s.instructor import namespaces  # the instructor's template renders it
    return only([d for d in yaml.safe_load_all(namespaces.render_notebook(namespace, image)) if d], "Deployment")


# The name the model gives the lab's Workflow (the command names it pipeline-<UTC time>-<4 characters>).
LAB_WORKFLOW = "pipeline-19700101-000000-abcd"


def lab_pipeline(namespace, image, text=None):
    """The lab's Workflow (tfk8s.flow.lab.LAB_PIPELINE, or `text`) exactly as the pipeline command
    (tfk8s.flow.workflow.build) submits it from the attendee's JupyterLab pod."""
    from tfk8s.flow import lab, pipeline, workflow
    deployment = jupyterlab(namespace, image)
    template = deployment["spec"]["template"]
    pod = {"metadata": {**template["metadata"], "name": "jupyterlab-0", "namespace": namespace},
           "spec": template["spec"]}
    return workflow.build(pod, pipeline.parse(lab.LAB_PIPELINE if text is None else text), LAB_WORKFLOW)


def argo_config():
    from tfk8s.instructor import argo  # the instructor's template renders it
    return argo.config()


# ---------------------------------------------------------------- all of it, for one namespace

def only(docs, kind):
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def cluster_made(namespace, image=render.TRAINER_IMAGE, tag="0.1.0", experiment=None, config=None, digest=None):
    """{file name: [docs]} of what the cluster creates in `namespace` from the workshop's manifests, the trainer
    pulled as IMAGE:TAG@DIGEST (as `make push` recorded it) when `digest` is given."""
    load = lambda name: render.render(render.load([KUBE / name]), image, tag, namespace, digest=digest)
    config = katib_config() if config is None else config
    files = {name: tfjob_objects(only(load(name), "TFJob")) for name in ("tfjob.yaml", "tfjob-ps.yaml")}
    files["retrain-cronjob.yaml"] = [cronjob_job(only(load("retrain-cronjob.yaml"), "CronJob"))]
    files["serving-autoscale.yaml"] = [serving_at_maximum(only(load("serving.yaml"), "Deployment"),
                                                          only(load("serving-autoscale.yaml"),
                                                               "HorizontalPodAutoscaler"))]
    if experiment is None:
        experiment = workshop_experiment(namespace, render.reference(image, tag, digest))
    files["katib.yaml"] = experiment_objects(experiment, config)
    # JupyterLab runs the notebook image (`make instructor-notebook`); the model stands in the trainer image.
    notebook = render.reference(image, tag, digest)
    files["notebook.yaml"] = [jupyterlab(namespace, notebook)]
    files["pipeline.yaml"] = workflow_pods(lab_pipeline(namespace, notebook), argo_config())
    return files


def workshop_experiment(namespace, image):
    """The Experiment `make katib-sweep` creates from templated/values.yaml."""
    from tfk8s.sweep import katib, trials
    from tfk8s.sweep import values as sweep_values
    from tfk8s.sweep.sweep import MAX_TRIALS
    path = TEMPLATED / "values.yaml"
    values = sweep_values.load(path)
    return katib.render(values, values["name"], namespace, image, trials.load_base(), path, MAX_TRIALS).doc


def dump(docs):
    return HEADER + "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=120) for doc in docs)


def parse_args(argv=None):
    p = ArgumentParser(description="Write what the cluster's controllers create from the workshop's manifests "
                                   "(operator pods and Services, Katib's mutated trial pod and suggestion, the "
                                   "CronJob's Job, serving at the autoscaler's maximum) to --output_dir.")
    p.add_argument("--namespace", default="default")
    p.add_argument("--image", default=render.TRAINER_IMAGE)
    p.add_argument("--tag", default="0.1.0")
    p.add_argument("--digest", help="the digest `make push` recorded (sha256:...), pinned after IMAGE:TAG")
    p.add_argument("--output_dir", type=render.directory, required=True)
    return p.parse_args(argv)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    files = cluster_made(args.namespace, args.image, args.tag, digest=args.digest)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for name, docs in files.items():
            (args.output_dir / name).write_text(dump(docs))
    except OSError as err:
        raise UserError(f"cannot write to {args.output_dir}: {err.strerror}") from None
    print(f"{args.output_dir}: what the cluster creates ({', '.join(files)}), not applied by anyone")

