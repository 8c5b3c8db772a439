"""Give each attendee a namespace on the workshop cluster, storage outside it, and a kubeconfig.

    python src/instructor.py render --output_dir runs/instructor alice bob   # the files only
    python src/instructor.py create --output_dir runs/instructor alice bob   # render, apply, kubeconfigs
    python src/instructor.py kubeconfigs --output_dir runs/instructor alice  # fresh tokens
    python src/instructor.py delete alice bob                                # after the workshop
    python src/instructor.py registry --project P alice=alice@example.com    # a registry each

Per attendee: the namespace (Pod Security restricted, a ResourceQuota from
the capacity plan, a LimitRange, a ServiceAccount with a Role limited to what
the labs do, NetworkPolicies that keep its pods among themselves), from
namespace.yaml.j2; its storage: an NFS server in the instructor's namespace
workshop-storage and the PersistentVolume mnist-nfs-<name> reserved for the
attendee's claim (nfs-server.yaml.j2), or, with a managed ReadWriteMany class
(Filestore), just the claim; and <name>.kubeconfig with a token of the
attendee's ServiceAccount, the file to hand to that attendee.
"""
import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2
import yaml

from tfk8s.cli import UsageError, UserError
from tfk8s.flow import rights
from tfk8s.instructor import plan
from tfk8s.kube import kubectl, pins, render
from tfk8s.kube.resources import memory_text
from tfk8s.paths import KUBE, RUNS, TEMPLATED

TEMPLATES = TEMPLATED / "instructor"
SERVICE_ACCOUNT = "attendee"
STORAGE_NAMESPACE = plan.STORAGE_NAMESPACE
# A namespace name short enough for the Service nfs-<name> (a DNS label of at most 63).
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,57}[a-z0-9])?")
RESERVED = {"default", "kubeflow", "kube-system", "kube-public", "kube-node-lease", STORAGE_NAMESPACE}
DURATION = re.compile(r"(\d+)([hm])")

# The Kubernetes project's NFS test server, at the version its own end-to-end tests pin (kubernetes
# test/utils/image/manifest.go, VolumeNFSServer: volume/nfs 1.4; 1.6.0, pinned before, could not be confirmed
# there). Its digest is in pinned-images.yaml (tfk8s.kube.pins), once `make instructor-pin-images` resolved it.
NFS_IMAGE = "registry.k8s.io/e2e-test-images/volume/nfs:1.4"

# Sizes of a container that states none, and the most one container may ask for.
# Ephemeral storage (the node's disk) for a container that states none: what Katib's collector and
# suggestion would get if they stated none (they state Katib's defaults, 500Mi and 5Gi).
CONTAINER = {"default_request_cpu": "100m", "default_request_memory": "128Mi",
             "default_limit_cpu": "500m", "default_limit_memory": "512Mi",
             "default_request_ephemeral": "64Mi", "default_limit_ephemeral": "1Gi",
             "max_cpu": "4", "max_memory": "8Gi"}


def container_sizes():
    """CONTAINER, and the most ephemeral storage one container may ask for: the largest the workshop runs."""
    return {**CONTAINER, "max_ephemeral": memory_text(plan.ephemeral_maximum())}

ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                 keep_trailing_newline=True)


def check_names(names):
    for name in names:
        if not NAME.fullmatch(name) or name in RESERVED:
            raise UsageError(f"{name!r} cannot be an attendee's namespace: use lower-case letters, digits and '-' "
                             f"(at most 59), and none of {', '.join(sorted(RESERVED))}")
    if len(set(names)) != len(names):
        raise UsageError("an attendee is named twice")


def render_namespace(namespace, sweep_parallel=plan.SWEEP_PARALLEL, rwx_storage_class=None, rwx_size="1Ti"):
    """The YAML that gives `namespace` to an attendee: namespace, quota, limits, role, network policy."""
    return ENVIRONMENT.get_template("namespace.yaml.j2").render(
        namespace=namespace, hard=plan.quota_hard(sweep_parallel, rwx_storage_class, rwx_size),
        container=container_sizes())


# Where `make instructor-notebook` records the notebook image it pushed (IMAGE@sha256:...).
NOTEBOOK_IMAGE_RECORD = RUNS / "notebook-image"
PINNED = re.compile(r"\S+@sha256:[0-9a-f]{64}")
JUPYTERLAB_REVISIONS = 2  # the jupyterlab Deployment's revisionHistoryLimit (notebook.yaml.j2)


def role_rules(granted):
    """Role rules ({group, resource, verbs}) granting exactly `granted`, a set of (verb, group, resource)."""
    by_resource = {}
    for verb, group, resource in granted:
        by_resource.setdefault((group, resource), set()).add(verb)
    return [{"group": group, "resource": resource, "verbs": sorted(verbs)}
            for (group, resource), verbs in sorted(by_resource.items())]


def notebook_image(given=None, record=None):
    """The JupyterLab image: `given` (--notebook_image), else the one `make instructor-notebook` recorded, else
    None (the attendees get no JupyterLab). A reference without a digest is a UsageError."""
    record = NOTEBOOK_IMAGE_RECORD if record is None else record
    image = given or (record.read_text().strip() if record.is_file() else "")
    if image and not PINNED.fullmatch(image):
        raise UsageError(f"notebook image {image!r} is not IMAGE@sha256:<64 hex> (make instructor-notebook "
                         "prints it)")
    return image or None


def api_server():
    """{"cidrs": [...], "port": N} of the `kubernetes` Service's endpoints (the API server as a pod reaches it),
    read from the cluster in kubectl's context."""
    slices = kubectl.items("endpointslices", "--namespace", "default", "--selector",
                           "kubernetes.io/service-name=kubernetes")
    addresses = sorted({a for s in slices for e in s.get("endpoints") or [] for a in e.get("addresses") or []})
    ports = sorted({p["port"] for s in slices for p in s.get("ports") or [] if p.get("port")})
    if not addresses or len(ports) != 1:
        raise UserError("the Service kubernetes in default has no single-port endpoints: cannot tell the pods "
                        "where the API server is")
    return {"cidrs": [f"{a}/32" if ":" not in a else f"{a}/128" for a in addresses], "port": ports[0]}


def render_notebook(namespace, image=None, apiserver=None):
    """The attendee's notebook pipelines (notebook.yaml.j2): the accounts notebook and pipeline-executor, their
    Roles, JupyterLab when `image` is given, and the API server's NetworkPolicies when `apiserver` is."""
    return ENVIRONMENT.get_template("notebook.yaml.j2").render(
        namespace=namespace, command_rules=role_rules(rights.COMMAND_RIGHTS),
        executor_rules=role_rules(rights.EXECUTOR_RIGHTS), notebook_image=image, apiserver=apiserver,
        revision_history=JUPYTERLAB_REVISIONS)


def render_storage_namespace():
    return ENVIRONMENT.get_template("storage-namespace.yaml.j2").render(storage_namespace=STORAGE_NAMESPACE)


def render_admission():
    """The cluster's ValidatingAdmissionPolicies for attendee namespaces (templated/instructor/admission.yaml.j2)."""
    return ENVIRONMENT.get_template("admission.yaml.j2").render()


def render_nfs_server(namespace, server=None, the_pins=None):
    """The attendee's NFS server (disk, Deployment, Service) and PersistentVolume; `server`: the ClusterIP. The
    server runs NFS_IMAGE by the digest of `the_pins` (default: pinned-images.yaml's), its tag while it has none."""
    the_pins = pins.read() if the_pins is None else the_pins
    return ENVIRONMENT.get_template("nfs-server.yaml.j2").render(
        namespace=namespace, storage_namespace=STORAGE_NAMESPACE, server=server, disk_size=plan.NFS_DISK,
        nfs_image=pins.pinned(NFS_IMAGE, the_pins))


def warn_unpinned(the_pins, path, rwx_storage_class=None):
    """One warning line when the NFS servers would run their image by tag only."""
    if not rwx_storage_class:
        pins.warn(pins.unpinned([NFS_IMAGE], the_pins), path)


def render_claim(namespace, rwx_storage_class=None, rwx_size="1Ti"):
    """The attendee's claim mnist-nfs (kube/storage.yaml), as `make storage` applies it."""
    return render.dump(render.render(render.load([KUBE / "storage.yaml"]), render.TRAINER_IMAGE, "0.1.0",
                                     namespace, rwx_storage_class, rwx_size))


def render_kubeconfig(namespace, cluster, server, ca_data, token, expires):
    return ENVIRONMENT.get_template("kubeconfig.yaml.j2").render(
        namespace=namespace, cluster=cluster, server=server, ca_data=ca_data, token=token, expires=expires)


def rendered_files(names, sweep_parallel=plan.SWEEP_PARALLEL, rwx_storage_class=None, rwx_size="1Ti",
                   the_pins=None, image=None, apiserver=None):
    """{file name: YAML} for everything the instructor applies: the admission policies, the storage namespace
    (NFS only), then per attendee its namespace's objects, its storage, its claim and its notebook pipelines
    (JupyterLab of `image`, the API server at `apiserver`), in the order they are applied."""
    files = {"admission.yaml": render_admission()}
    if not rwx_storage_class:
        files[f"{STORAGE_NAMESPACE}.yaml"] = render_storage_namespace()
    for name in names:
        parts = [render_namespace(name, sweep_parallel, rwx_storage_class, rwx_size)]
        if not rwx_storage_class:
            parts.append(render_nfs_server(name, the_pins=the_pins))
        parts.append(render_claim(name, rwx_storage_class, rwx_size))
        parts.append(render_notebook(name, image, apiserver))
        files[f"{name}.yaml"] = "".join(part if part.startswith("---") else "---\n" + part for part in parts)
    return files


def write_files(files, out):
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror}") from None
    for name in files:
        print(f"{out / name}")


# ---------------------------------------------------------------- on the cluster

def split(text, cluster_scoped):
    """The documents of `text` that are (or are not) PersistentVolumes, as YAML for kubectl."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    return render.dump([d for d in docs if (d["kind"] == "PersistentVolume") == cluster_scoped])


def create_storage(name, the_pins=None):
    """The NFS server of one attendee, then its PersistentVolume on the server's ClusterIP."""
    kubectl.run("apply", "-f", "-", stdin=split(render_nfs_server(name, the_pins=the_pins), cluster_scoped=False))
    kubectl.run("--namespace", STORAGE_NAMESPACE, "rollout", "status", f"deployment/nfs-{name}", "--timeout=5m",
                timeout=330)
    ip = kubectl.run("--namespace", STORAGE_NAMESPACE, "get", "service", f"nfs-{name}",
                     "--output", "jsonpath={.spec.clusterIP}").strip()
    if not ip:
        raise UserError(f"the Service nfs-{name} in {STORAGE_NAMESPACE} has no ClusterIP")
    kubectl.run("apply", "-f", "-", stdin=split(render_nfs_server(name, ip, the_pins), cluster_scoped=True))
    print(f"{name}: PersistentVolume mnist-nfs-{name} -> NFS server {ip}:/")


def create(names, out, duration, sweep_parallel=plan.SWEEP_PARALLEL, rwx_storage_class=None, rwx_size="1Ti",
           the_pins=None, image=None):
    """Render, then (with a cluster in kubectl's context) apply every attendee's objects and write kubeconfigs.
    The API server's address, which the notebook pipelines' NetworkPolicies name, is read from the cluster."""
    cluster = kubectl.has_context()
    apiserver = api_server() if cluster else None
    files = rendered_files(names, sweep_parallel, rwx_storage_class, rwx_size, the_pins, image, apiserver)
    write_files(files, out)
    say_notebook(image, apiserver, cluster)
    if not cluster:
        print(f"no cluster in kubectl's context: rendered only. Apply: kubectl apply -f {out}/<name>.yaml")
        return
    # Admission rules for every attendee namespace (by its label): no PodDisruptionBudget that blocks drains, no
    # Experiment reading another namespace's ConfigMap.
    kubectl.run("apply", "-f", "-", stdin=render_admission())
    if not rwx_storage_class:
        kubectl.run("apply", "-f", "-", stdin=render_storage_namespace())
    for name in names:
        kubectl.run("apply", "-f", "-", stdin=render_namespace(name, sweep_parallel, rwx_storage_class, rwx_size))
        if not rwx_storage_class:
            create_storage(name, the_pins)
        kubectl.run("apply", "-f", "-", stdin=render_claim(name, rwx_storage_class, rwx_size))
        if not rwx_storage_class:
            kubectl.run("--namespace", name, "wait", "--for=jsonpath={.status.phase}=Bound",
                        "persistentvolumeclaim/mnist-nfs", "--timeout=2m", timeout=150)
        kubectl.run("apply", "-f", "-", stdin=render_notebook(name, image, apiserver))
        print(f"{name}: namespace, quota, role, network policy, storage and notebook pipelines applied")
    write_kubeconfigs(names, out, duration)


def say_notebook(image, apiserver, cluster=True):
    """One line for what the attendees' notebook pipelines lack: JupyterLab without an image, the API server's
    NetworkPolicies without a cluster to read its address from."""
    if not image:
        print(f"no notebook image (--notebook_image, or {NOTEBOOK_IMAGE_RECORD.relative_to(RUNS.parent)} from "
              "make instructor-notebook): rendered without JupyterLab")
    if not apiserver and not cluster:
        print("no cluster to read the API server's address from: rendered without the NetworkPolicies that let "
              "JupyterLab and the pipelines' steps reach it")


def delete(names):
    """The attendees' namespaces (with all they hold), their volumes and their NFS servers."""
    for name in names:
        kubectl.run("delete", "namespace", name, "--ignore-not-found", timeout=600)
        kubectl.run("delete", "persistentvolume", f"mnist-nfs-{name}", "--ignore-not-found", timeout=300)
        kubectl.run("--namespace", STORAGE_NAMESPACE, "delete", "deployment,service,persistentvolumeclaim",
                    f"nfs-{name}", "--ignore-not-found", timeout=300)
        print(f"{name}: deleted")


def current_cluster():
    """Name, server and CA (base64) of the current context's cluster, as the attendees must see it."""
    config = json.loads(kubectl.run("config", "view", "--minify", "--raw", "--output", "json"))
    try:
        entry = config["clusters"][0]
        cluster = entry["cluster"]
    except (KeyError, IndexError, TypeError, json.JSONDecodeError):
        raise UserError("kubectl has no current context: point it at the workshop cluster first") from None
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data and cluster.get("certificate-authority"):
        ca_data = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    if not ca_data:
        raise UserError(f"the cluster {entry['name']} in your kubeconfig has no certificate authority to pass on")
    return entry["name"], cluster["server"], ca_data


def write_kubeconfigs(names, out, duration):
    cluster, server, ca_data = current_cluster()
    number, unit = DURATION.fullmatch(duration).groups()
    expires = datetime.now(UTC) + timedelta(**{"hours" if unit == "h" else "minutes": int(number)})
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        token = kubectl.run("create", "token", SERVICE_ACCOUNT, "--namespace", name, "--duration", duration).strip()
        path = out / f"{name}.kubeconfig"
        path.write_text(render_kubeconfig(name, cluster, server, ca_data, token, f"{expires:%Y-%m-%d %H:%M} UTC"))
        path.chmod(0o600)  # it holds a credential
        print(f"{name}: {path} (token valid for {duration})")


# ---------------------------------------------------------------- the registry: one repository per attendee

REGISTRY_LOCATION = "europe"
ACCOUNT = re.compile(r"([^=\s]+)=([^=\s@]+@[^=\s@]+\.[^=\s@]+)")


def repository(name):
    return f"workshop-{name}"


def attendee_image(name, project, location=REGISTRY_LOCATION):
    """The IMAGE the attendee `name` pushes and the nodes pull: their own repository, nowhere else."""
    return f"{location}-docker.pkg.dev/{project}/{repository(name)}/mnist"


def parse_accounts(pairs):
    """[(name, email)] from NAME=EMAIL arguments; a UsageError naming the first that is not one."""
    found = []
    for pair in pairs:
        match = ACCOUNT.fullmatch(pair)
        if not match:
            raise UsageError(f"{pair!r} is not NAME=EMAIL (an attendee's namespace name and their Google "
                             "account, e.g. alice=alice@example.com)")
        found.append(match.groups())
    check_names([name for name, _ in found])
    return found


def registry_commands(accounts, project, node_service_account, location=REGISTRY_LOCATION):
    """The gcloud commands that give each attendee a Docker repository of their own in Artifact Registry:
    immutable tags (a tag, once pushed, always names the same digest), the attendee the only writer, the
    nodes' service account a reader."""
    where = ("--location", location, "--project", project)
    commands = []
    for name, email in accounts:
        repo = repository(name)
        commands.append(["artifacts", "repositories", "create", repo, "--repository-format=docker",
                         "--immutable-tags", f"--description=the workshop image of {name}", *where])
        commands.append(["artifacts", "repositories", "add-iam-policy-binding", repo, *where,
                         f"--member=user:{email}", "--role=roles/artifactregistry.writer"])
        commands.append(["artifacts", "repositories", "add-iam-policy-binding", repo, *where,
                         f"--member=serviceAccount:{node_service_account}", "--role=roles/artifactregistry.reader"])
    return commands


def create_registries(accounts, project, node_service_account, location=REGISTRY_LOCATION):
    """Run registry_commands (a repository that exists is kept, and its tags made immutable), then print
    each attendee's IMAGE."""
    from tfk8s.instructor import tools
    for command in registry_commands(accounts, project, node_service_account, location):
        print("gcloud " + " ".join(command))
        result = tools.call("gcloud", *command)
        if result.returncode != 0 and command[2] == "create" and "ALREADY_EXISTS" in result.stderr:
            tools.run("gcloud", "artifacts", "repositories", "update", command[3], "--immutable-tags",
                      *command[-4:])
        elif result.returncode != 0:
            raise UserError(f"gcloud {' '.join(command[:4])}: {tools.complaint(result)}")
    for name, _ in accounts:
        print(f"{name}: IMAGE={attendee_image(name, project, location)}")
