"""Run the workshop's pods as containers of the trainer image, as the kubelet would run them: `docker run`.

    python src/docker_run.py kube/job.yaml --image IMAGE:TAG -- --dataset mini --steps 300
    python src/docker_run.py kube/tfjob.yaml --image IMAGE:TAG --replicas Worker=1 -- --dataset mini --steps 300

A Job is one container; a TFJob is one container per replica, started,
restarted and stopped by the training operator's rules, with the TF_CONFIG it
gives (src/tfk8s/kube/tfjob_local.py decides both: the same code as
`make tfjob-local`). Arguments after `--` are appended to every container's.

What a pod spec becomes (pod_args):
  securityContext    runAsUser/runAsGroup -> --user, fsGroup and supplementalGroups -> --group-add,
                     runAsNonRoot refuses uid 0, readOnlyRootFilesystem -> --read-only,
                     capabilities -> --cap-drop/--cap-add, allowPrivilegeEscalation: false ->
                     no-new-privileges, seccompProfile RuntimeDefault -> Docker's default profile
                     (unset or Unconfined -> unconfined, as the kubelet without --seccomp-default)
  volumes            emptyDir -> a tmpfs (size: its sizeLimit; group fsGroup, setgid, as the kubelet
                     hands it over), persistentVolumeClaim -> a bind mount of <root>/claims/<claimName>
                     (owned by runAsUser and fsGroup, as the instructor's volume is), subPath and readOnly
  resources          limits.cpu -> --cpus, limits.memory -> --memory (no swap), requests.cpu ->
                     --cpu-shares (the kubelet's MilliCPUToShares); requests.memory only schedules
  the rest           command -> the entrypoint, args, env (literal values), workingDir,
                     terminationGracePeriodSeconds -> --stop-timeout, the pod's name -> --hostname

A TFJob's containers share one user-defined network; each answers to its
pod's name and the operator's headless Service names for it
(<job>-<type>-<index>, .<namespace>, .<namespace>.svc), which is what
TF_CONFIG names. One difference from a cluster: an emptyDir is memory here
(a tmpfs), so what a pod writes there counts against its memory limit.
"""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, UsageError, UserError, child_env, duration, entry_point, split_at_dashes
from tfk8s.kube import resources, tfjob_local
from tfk8s.paths import RUNS

DOCKER = os.environ.get("DOCKER", "docker")
LABEL = "tfk8s.docker-run"  # every container and network this runner makes carries it (value: the run's id)
JOB_BACKOFF_LIMIT = 6  # batch/v1 Job's default backoffLimit


def merged_security(pod_spec, container):
    """The container's effective securityContext: the pod's, overridden field by field by the container's."""
    pod = pod_spec.get("securityContext", {})
    own = container.get("securityContext", {})
    fields = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
    return {**{k: pod[k] for k in fields if k in pod}, **own}


def security_args(pod_spec, container, image_user=None):
    """--user, groups, capabilities, read-only root, no-new-privileges and seccomp for one container."""
    ctx = merged_security(pod_spec, container)
    pod = pod_spec.get("securityContext", {})
    args = []
    uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
    if uid is not None:
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    elif gid is not None:
        raise UserError(f"container {container['name']}: runAsGroup without runAsUser: this runner needs both")
    if ctx.get("runAsNonRoot"):
        effective = uid if uid is not None else (image_user or "").split(":")[0]
        if str(effective) in ("0", "root", ""):  # the kubelet's check (kuberuntime verifyRunAsNonRoot)
            raise UserError(f"container {container['name']} has runAsNonRoot and would run as root "
                            f"(runAsUser {uid}, image user {image_user!r})")
    groups = ([pod["fsGroup"]] if "fsGroup" in pod else []) + list(pod.get("supplementalGroups", []))
    for group in groups:
        args += ["--group-add", str(group)]
    if ctx.get("privileged"):
        raise UserError(f"container {container['name']} asks to be privileged: this runner refuses it")
    if ctx.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    caps = ctx.get("capabilities", {})
    args += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
    args += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    seccomp = ctx.get("seccompProfile", {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":  # RuntimeDefault: Docker's default profile, what containerd applies too
        raise UserError(f"container {container['name']}: seccompProfile {seccomp} is not supported here")
    return args


def claim_dir(claims_root, claim, owner):
    """The claim's stand-in: <claims_root>/<claim>, owned as the volume is on the cluster (uid, fsGroup)."""
    path = Path(claims_root) / claim
    path.mkdir(parents=True, exist_ok=True)
    uid, gid = owner
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        os.chmod(path, 0o2775)
    elif os.stat(path).st_uid != uid:
        raise UserError(f"{path} is not owned by uid {uid}, and only root can hand it over: "
                        f"sudo chown -R {uid}:{gid} {path}")
    return path


def volume_args(pod_spec, container, claims_root):
    """--tmpfs for each emptyDir, --mount for each claim, at the container's volumeMounts."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    ctx = merged_security(pod_spec, container)
    fs_group = pod_spec.get("securityContext", {}).get("fsGroup")
    uid = ctx.get("runAsUser", 0)
    owner = (uid, fs_group if fs_group is not None else ctx.get("runAsGroup", 0))
    args = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise UserError(f"container {container['name']} mounts {mount['name']}, which the pod does not define")
        read_only = mount.get("readOnly", False)
        if "emptyDir" in volume:
            if mount.get("subPath"):
                raise UserError(f"volume {mount['name']}: subPath of an emptyDir is not supported here")
            # The kubelet makes an emptyDir 0777; with fsGroup, group fsGroup and setgid (SetVolumeOwnership).
            options = ["ro" if read_only else "rw", "exec", "nosuid", "nodev"]
            options += [f"gid={fs_group}", "mode=2777"] if fs_group is not None else ["mode=0777"]
            size = volume["emptyDir"].get("sizeLimit")
            if size is not None:
                options.append(f"size={resources.whole(size)}")
            args += ["--tmpfs", f"{mount['mountPath']}:{','.join(options)}"]
        elif "persistentVolumeClaim" in volume:
            source = claim_dir(claims_root, volume["persistentVolumeClaim"]["claimName"], owner)
            if mount.get("subPath"):
                source = source / mount["subPath"]
                source.mkdir(parents=True, exist_ok=True)
                if os.geteuid() == 0:
                    os.chown(source, *owner)
            spec = f"type=bind,source={source},target={mount['mountPath']}"
            args += ["--mount", spec + (",readonly" if read_only else "")]
        else:
            kind = next((k for k in volume if k != "name"), "?")
            raise UserError(f"volume {mount['name']}: {kind} volumes are not supported here "
                            "(emptyDir and persistentVolumeClaim are)")
    return args


def resource_args(container):
    """CPU and memory as the kubelet sets its cgroups: limits as hard limits, the CPU request as shares."""
    limits = container.get("resources", {}).get("limits", {})
    requests = container.get("resources", {}).get("requests", {})
    args = []
    if "cpu" in limits:
        args += ["--cpus", f"{resources.millicores(limits['cpu']) / 1000:g}"]
    cpu_request = requests.get("cpu", limits.get("cpu"))  # a limit alone is also the request
    if cpu_request is not None:  # kubelet MilliCPUToShares (pkg/kubelet/cm/helpers_linux.go): at least 2
        args += ["--cpu-shares", str(max(2, resources.millicores(cpu_request) * 1024 // 1000))]
    if "memory" in limits:
        memory = resources.whole(limits["memory"])
        args += ["--memory", str(memory), "--memory-swap", str(memory)]  # no swap, as on a node
    return args


def environment_args(container, extra_env=None):
    args = []
    for var in container.get("env", []):
        if "value" not in var:
            raise UserError(f"env {var['name']} uses valueFrom, which this runner cannot resolve")
        args += ["--env", f"{var['name']}={var['value']}"]
    for name, value in (extra_env or {}).items():
        args += ["--env", f"{name}={value}"]
    return args


def pod_args(pod_spec, container, *, image, name, claims_root, extra_args=(), extra_env=None,
             network=None, aliases=(), run_id="", image_user=None):
    """The `docker run` command line of one pod's container (a list, for subprocess)."""
    args = [DOCKER, "run", "--rm", "--name", name, "--hostname", name[:63], "--label", f"{LABEL}={run_id}"]
    args += security_args(pod_spec, container, image_user)
    args += volume_args(pod_spec, container, claims_root)
    args += resource_args(container)
    args += environment_args(container, extra_env)
    if network:
        args += ["--network", network] + [a for alias in aliases for a in ("--network-alias", alias)]
    else:
        args += ["--network", "none"]  # a Job's pod talks to no one here
    if "workingDir" in container:
        args += ["--workdir", container["workingDir"]]
    grace = pod_spec.get("terminationGracePeriodSeconds")
    if grace is not None:
        args += ["--stop-timeout", str(grace)]
    command = list(container.get("command", []))
    if command:
        args += ["--entrypoint", command[0]]
    return args + [image] + command[1:] + list(container.get("args", [])) + list(extra_args)


# ---------------------------------------------------------------- the engine

def docker(*args, check=True):
    """A docker command's output; UserError with its message if it fails."""
    try:
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError(f"{DOCKER} is not installed: see docs/development.md (make/docker.sh start)") from None
    if check and result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise UserError(f"docker {args[0]}: {message[0]}")
    return result.stdout.strip()


def image_user(image):
    """The image's USER; UserError if the engine does not answer or the image is not there."""
    docker("version", "--format", "{{.Server.Version}}")
    if subprocess.run([DOCKER, "image", "inspect", image], capture_output=True).returncode != 0:
        raise UserError(f"no image {image} here: build it first (make build, or make/docker.sh build -t {image})")
    return docker("image", "inspect", "--format", "{{.Config.User}}", image)


def remove_run(run_id, network=None):
    """Remove every container of this run (a stopped runner's, or one whose client was killed) and its network."""
    ids = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}={run_id}", check=False).split()
    if ids:
        docker("rm", "--force", *ids, check=False)
    if network:
        docker("network", "rm", network, check=False)


def with_image(container, image):
    return {**container, "image": image}


# ---------------------------------------------------------------- a Job

def run_job(doc, image, root, extra_args):
    """A batch/v1 Job's pod as one container: a failed pod is replaced up to backoffLimit times."""
    spec = doc["spec"]["template"]["spec"]
    containers = spec.get("containers", [])
    if len(containers) != 1:
        raise UserError(f"job {doc['metadata']['name']} has {len(containers)} containers; this runner runs one")
    user = image_user(image)
    name, run_id = doc["metadata"]["name"], uuid.uuid4().hex[:12]
    limit = doc["spec"].get("backoffLimit", JOB_BACKOFF_LIMIT)
    log = root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        for attempt in range(limit + 1):
            argv = pod_args(spec, with_image(containers[0], image), image=image, name=f"{name}-{run_id}-{attempt}",
                            claims_root=root / "claims", extra_args=extra_args, run_id=run_id, image_user=user)
            print(f"[job] {' '.join(argv)}", flush=True)
            with open(log, "a") as out:
                process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           env=child_env(), errors="replace")
                for line in process.stdout:
                    sys.stdout.write(line)
                    out.write(line)
                code = process.wait()
            if code == 0:
                print(f"[job] job {name} succeeded in {time.monotonic() - started:.0f}s "
                      f"(claims under {root / 'claims'})", flush=True)
                return
            print(f"[job] pod {attempt} exited with code {code}", flush=True)
        raise UserError(f"job {name} failed: backoffLimit {limit} reached (last exit code {code}; log: {log})")
    finally:
        remove_run(run_id)


# ---------------------------------------------------------------- a TFJob

def service_names(job, rtype, index, namespace):
    """What a replica answers to: its pod's name and the operator's headless Service for it."""
    pod = f"{job}-{rtype.lower()}-{index}"
    return [pod, f"{pod}.{namespace}", f"{pod}.{namespace}.svc"]


def plan_containers(doc, image, root, extra_args, network, run_id, user):
    """One tfjob_local.Replica per pod the operator would create, its command being `docker run`."""
    job, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    replicas = []
    for rtype, spec in tfjob_local.replica_specs(doc).items():
        pod_spec = spec["template"]["spec"]
        container = with_image(tfjob_local.tensorflow_container(spec), image)
        for index in range(spec.get("replicas", 1)):
            config = tfjob_local.operator_tf_config(doc, rtype, index)
            argv = pod_args(pod_spec, container, image=image, name=f"{job}-{rtype.lower()}-{index}-{run_id}",
                            claims_root=root / "claims", extra_args=extra_args,
                            extra_env={"TF_CONFIG": config} if config else None, network=network,
                            aliases=service_names(job, rtype, index, namespace), run_id=run_id, image_user=user)
            replicas.append(tfjob_local.Replica(
                rtype, index, spec.get("restartPolicy", "Never"), argv, child_env(), str(root),
                root / "logs" / f"{job}-{rtype.lower()}-{index}.log",
                pod_spec.get("terminationGracePeriodSeconds", tfjob_local.GRACE_PERIOD)))
    return replicas


def run_tfjob(doc, image, root, extra_args, restart_delay):
    user = image_user(image)
    job, run_id = doc["metadata"]["name"], uuid.uuid4().hex[:12]
    network = f"{job}-{run_id}"
    # A user-defined bridge: Docker's DNS answers the replicas' aliases on it. It reaches nothing outside
    # this machine when the engine runs with --iptables=false, which training needs no more than this.
    docker("network", "create", "--driver", "bridge", "--label", f"{LABEL}={run_id}", network)
    try:
        replicas = plan_containers(doc, image, root, extra_args, network, run_id, user)
        tfjob_local.say(f"TFJob {job}: containers of {image} on network {network}; claims and logs under {root}")
        tfjob_local.run_job(doc, replicas, restart_delay)
    finally:
        remove_run(run_id, network)


def set_replicas(doc, assignments):
    """--replicas Worker=1: the manifest's replica counts changed, as an edit of the file would."""
    specs = doc["spec"]["tfReplicaSpecs"]
    for assignment in assignments:
        rtype, _, count = assignment.partition("=")
        match = next((t for t in specs if t.lower() == rtype.lower()), None)
        if match is None or not count.isdigit():
            raise UsageError(f"--replicas {assignment}: expected TYPE=N with TYPE one of {', '.join(specs)}")
        specs[match]["replicas"] = int(count)


@entry_point
def main(argv=None):
    own, extra = split_at_dashes(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(
        description="Run kube/job.yaml or a TFJob manifest as containers of the trainer image, under each "
                    "pod's securityContext, resources, environment, arguments and volumes.",
        usage="%(prog)s MANIFEST --image IMAGE[:TAG] [--root DIR] [--replicas TYPE=N] [-- ARGS...]")
    parser.add_argument("manifest", help="a YAML file holding one Job or one TFJob")
    parser.add_argument("--image", required=True, help="the trainer image to run (it must be here: make build)")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="where the claims' stand-ins and the logs go (default: runs/docker/<name>)")
    parser.add_argument("--replicas", action="append", default=[], metavar="TYPE=N",
                        help="change a TFJob replica count, e.g. Worker=1 (repeatable)")
    parser.add_argument("--restart_delay", type=duration(zero=True, maximum=3600),
                        default=tfjob_local.RESTART_DELAY, metavar="SECONDS",
                        help="seconds before a failed TFJob replica is started again")
    args = parser.parse_args(own)
    docs = yamlfile.documents(args.manifest, must_hold="a Job or a TFJob")
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise UserError(f"{args.manifest} holds {len(docs)} documents; expected one Job or one TFJob")
    kind = docs[0].get("kind")
    if kind == "TFJob":
        doc = tfjob_local.load_tfjob(args.manifest)
        set_replicas(doc, args.replicas)
        tfjob_local.count_replicas(doc)
    elif kind == "Job":
        doc = docs[0]
        if args.replicas:
            raise UsageError("--replicas is for a TFJob")
    else:
        raise UserError(f"{args.manifest} holds a {kind}; this runner runs a Job or a TFJob")
    root = (args.root or RUNS / "docker" / doc["metadata"]["name"]).resolve()
    if kind == "Job":
        run_job(doc, args.image, root, extra)
    else:
        run_tfjob(doc, args.image, root, extra, args.restart_delay)
