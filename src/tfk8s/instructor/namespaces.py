"""Give each attendee a namespace on the workshop cluster: a quota, and a role limited to what the steps need.

    python templated/instructor/namespaces.py --out runs/instructor alice bob
    python templated/instructor/namespaces.py --out runs/instructor --kubeconfigs alice bob

The first renders runs/instructor/<name>.yaml for each attendee (Namespace,
ResourceQuota, LimitRange, ServiceAccount, Role, RoleBinding) from
namespace.yaml.j2, ready for `kubectl apply -f`. The second, once those are
applied, asks the cluster of the current kubectl context for a token of each
attendee's ServiceAccount (`kubectl create token --duration`) and writes
runs/instructor/<name>.kubeconfig from kubeconfig.yaml.j2: the file to hand to
that attendee. `make instructor-namespaces ATTENDEES="alice bob"` does both,
and creates each attendee's storage in between.
"""
import base64
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2

from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.paths import TEMPLATED

TEMPLATES = TEMPLATED / "instructor"
SERVICE_ACCOUNT = "attendee"
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
RESERVED = {"default", "kubeflow", "kube-system", "kube-public", "kube-node-lease"}
DURATION = re.compile(r"(\d+)([hm])")

# What one attendee's pods may ask for together (see the ResourceQuota's comment).
QUOTA = {"requests_cpu": "8", "requests_memory": "16Gi", "limits_cpu": "20", "limits_memory": "40Gi",
         "pods": 20, "claims": 5}
# Sizes of a container that states none, and the most one container may ask for.
CONTAINER = {"default_request_cpu": "100m", "default_request_memory": "128Mi",
             "default_limit_cpu": "500m", "default_limit_memory": "512Mi",
             "max_cpu": "4", "max_memory": "8Gi"}

ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                 keep_trailing_newline=True)


def render_namespace(namespace, privileged_storage=True):
    """The YAML that gives `namespace` to an attendee."""
    return ENVIRONMENT.get_template("namespace.yaml.j2").render(
        namespace=namespace, privileged_storage=privileged_storage, quota=QUOTA, container=CONTAINER)


def render_kubeconfig(namespace, cluster, server, ca_data, token, expires):
    return ENVIRONMENT.get_template("kubeconfig.yaml.j2").render(
        namespace=namespace, cluster=cluster, server=server, ca_data=ca_data, token=token, expires=expires)


def kubectl(*args):
    """Run kubectl; its own error message becomes ours."""
    try:
        result = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("kubectl is not installed (it is needed for --kubeconfigs)") from None
    if result.returncode != 0:
        raise UserError(f"kubectl {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def current_cluster():
    """Name, server and CA (base64) of the current context's cluster, as the attendees must see it."""
    config = json.loads(kubectl("config", "view", "--minify", "--raw", "--output", "json"))
    try:
        entry = config["clusters"][0]
        cluster = entry["cluster"]
    except (KeyError, IndexError):
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
    for name in names:
        token = kubectl("create", "token", SERVICE_ACCOUNT, "--namespace", name, "--duration", duration).strip()
        path = out / f"{name}.kubeconfig"
        path.write_text(render_kubeconfig(name, cluster, server, ca_data, token, f"{expires:%Y-%m-%d %H:%M} UTC"))
        path.chmod(0o600)  # it holds a credential
        print(f"{name}: {path} (token valid for {duration})")


def parse_args(argv=None):
    p = ArgumentParser(description="Render each attendee's namespace, quota and role; "
                                   "with --kubeconfigs, write their kubeconfigs too.")
    p.add_argument("attendees", nargs="+", metavar="NAME", help="attendee names, used as namespace names")
    p.add_argument("--out", type=Path, default=Path("runs/instructor"), help="where the files go")
    p.add_argument("--rwx-storage-class", help="the attendees use this managed ReadWriteMany class instead of "
                                               "the in-cluster NFS server: their namespaces then enforce the "
                                               "restricted Pod Security level")
    p.add_argument("--kubeconfigs", action="store_true",
                   help="also write <name>.kubeconfig with a fresh token (needs the namespaces applied)")
    p.add_argument("--duration", default="24h", help="how long the tokens last (e.g. 12h, 48h)")
    args = p.parse_args(argv)
    for name in args.attendees:
        if not NAME.fullmatch(name) or name in RESERVED:
            raise UsageError(f"{name!r} cannot be a namespace name: use lower-case letters, digits and '-' "
                             f"(at most 63), and none of {', '.join(sorted(RESERVED))}")
    if len(set(args.attendees)) != len(args.attendees):
        raise UsageError("an attendee is named twice")
    if not DURATION.fullmatch(args.duration):
        raise UsageError(f"--duration {args.duration!r} must be hours or minutes, such as 24h or 90m")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.attendees:
        path = args.out / f"{name}.yaml"
        path.write_text(render_namespace(name, privileged_storage=not args.rwx_storage_class))
        print(f"{name}: {path}")
    if args.kubeconfigs:
        write_kubeconfigs(args.attendees, args.out, args.duration)
