"""The Argo Workflow a pipeline becomes, built from the JupyterLab pod that submits it.

    build(pod, stages, name) -> the Workflow (a dict), from the pod as the API server returns it (a dict) and
    the stages of pipeline.parse (lists of argv lists); new_name() -> pipeline-<UTC time>-<4 random>

Each step runs in a pod of its own with what the notebook's container has: its image (the reference with its
digest), its working directory, environment, volumes and mounts, its securityContext and the pod's, the pod's
ServiceAccount. Not its token: the projected service-account volume (kube-api-access-*) and its mount are left
out and the Workflow says automountServiceAccountToken: false; Argo's executor uses
rights.EXECUTOR_SERVICE_ACCOUNT's token instead. Each step asks for what the trainer's Job asks for
(kube/job.yaml's container resources) and the Workflow has kube/job.yaml's deadline. The YAML itself is
workflow.yaml.j2, beside this file.
"""
import re
import secrets
import string
import time
from pathlib import Path

import jinja2
import yaml

from tfk8s.cli import UsageError, UserError
from tfk8s.flow import pipeline, rights

TEMPLATE = "workflow.yaml.j2"
ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
CONTAINER = "jupyterlab"   # the JupyterLab Deployment's container: the one a pod with several is read from
# kube/job.yaml's trainer container and Job (tests/test_flow_workflow.py holds them equal): the image has no
# kube/ directory, so the numbers are here.
RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "256Mi"},
             "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "2Gi"}}
ACTIVE_DEADLINE_SECONDS = 3600
# A Workflow's name is a label value on its pods: a DNS-1123 label, at most 63 characters (Argo v4.1.2
# workflow/validate/validate.go, maxCharsInObjectName).
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PREFIX = "pipeline"


def fnv32a(text):
    """Go's hash/fnv New32a of `text`, as Argo names nodes and pods."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def pod_name(workflow_name, template, node_name):
    """The pod Argo makes for a node (v2 names, the default): <workflow>-<template>-<fnv32a of the node's name>,
    the prefix cut to fit (Argo v4.1.2 workflow/util/pod_name.go GeneratePodName: maxK8sResourceNameLength 253 -
    k8sNamingHashLength 10 - 1); the Workflow's own name for its root node."""
    if node_name == workflow_name:
        return workflow_name
    prefix = f"{workflow_name}-{template}" if template else workflow_name
    return f"{prefix[:242]}-{fnv32a(node_name)}"


def new_name(now=None):
    """pipeline-<UTC yyyymmdd-hhmmss>-<4 random [a-z0-9]>."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{PREFIX}-{stamp}-{suffix}"


def check_name(name):
    if not NAME.fullmatch(name or ""):
        raise UsageError(f"--name {name!r}: a Workflow's name must be 1 to 63 lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit")
    return name


def is_token_volume(volume):
    """The service-account token the kubelet projects into a pod (kube-api-access-<random>): a projected volume
    with a serviceAccountToken source."""
    return any("serviceAccountToken" in source for source in volume.get("projected", {}).get("sources", []))


def container_of(pod):
    """The pod's container the notebook runs in: its only one, or the one named jupyterlab."""
    spec, name = pod.get("spec", {}), pod.get("metadata", {}).get("name", "?")
    containers = spec.get("containers", [])
    if len(containers) == 1:
        return containers[0]
    found = [c for c in containers if c.get("name") == CONTAINER]
    if not found:
        raise UserError(f"pod {name} has {len(containers)} containers and none named {CONTAINER}: "
                        "cannot tell which one's image and mounts the steps should have")
    return found[0]


def build(pod, stages, name):
    """The Workflow (a dict) that runs `stages` (lists of argv lists) as its steps, from the pod `pod`."""
    check_name(name)
    steps = pipeline.named(stages)
    spec, meta = pod.get("spec", {}), pod.get("metadata", {})
    container = container_of(pod)
    if not container.get("image"):
        raise UserError(f"pod {meta.get('name', '?')}: its container has no image")
    tokens = {v["name"] for v in spec.get("volumes", []) if is_token_volume(v)}
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] not in tokens]
    mounted = {m["name"] for m in mounts}
    volumes = [v for v in spec.get("volumes", []) if v["name"] in mounted]
    text = ENVIRONMENT.get_template(TEMPLATE).render(
        name=name, namespace=meta.get("namespace", "default"),
        service_account=spec.get("serviceAccountName", "default"),
        executor_service_account=rights.EXECUTOR_SERVICE_ACCOUNT,
        security_context=spec.get("securityContext"), volumes=volumes,
        active_deadline_seconds=ACTIVE_DEADLINE_SECONDS, image=container["image"],
        working_dir=container.get("workingDir"), env=container.get("env"), volume_mounts=mounts,
        container_security_context=container.get("securityContext"), resources=RESOURCES, stages=steps)
    return yaml.safe_load(text)
