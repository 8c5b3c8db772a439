"""The pipeline command's calls to the API server, from inside the JupyterLab pod (standard library only).

Where it finds what it needs, as a pod's in-cluster client does (client-go rest.InClusterConfig):
- the server: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (the kubelet sets both in every pod);
- the token, the cluster's CA and the namespace: the files token, ca.crt and namespace in
  /var/run/secrets/kubernetes.io/serviceaccount, or in the directory $TFK8S_SERVICEACCOUNT_DIR names (tests);
  the token is read again for every request, as the kubelet renews it in place;
- its own pod's name: $HOSTNAME (a pod's host name is its name).

Exactly these calls, each a right of rights.COMMAND_RIGHTS (CALLS says which; the tests hold the command's real
requests to them): its own pod and a step's pod (get pods), a step's `main` log followed (get pods/log), a
Workflow created, read, and stopped with a merge patch of spec.shutdown (create, get, patch workflows).
"""
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tfk8s.cli import UserError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DIR_VARIABLE = "TFK8S_SERVICEACCOUNT_DIR"
GROUP, VERSION = "argoproj.io", "v1alpha1"
TIMEOUT = 30.0          # seconds for a request's answer
LOG_TIMEOUT = 600.0     # seconds a followed log may stay silent before the stream is opened again
# (verb, API group, resource) of each call, as RBAC sees it
CALLS = {
    "pod": ("get", "", "pods"),
    "log_lines": ("get", "", "pods/log"),
    "create_workflow": ("create", GROUP, "workflows"),
    "workflow": ("get", GROUP, "workflows"),
    "terminate": ("patch", GROUP, "workflows"),
}


class NotInClusterError(UserError):
    """No service-account token or API server address here: not in a pod."""


class ApiError(UserError):
    """The API server answered with an error status; the message names the call and its reason."""

    def __init__(self, what, status, reason, message):
        super().__init__(f"{what}: the API server answered {status} {reason}: {message}")
        self.status = status


class Client:
    def __init__(self, server, account_dir, pod_name, timeout=TIMEOUT):
        self.server, self.dir, self.pod_name, self.timeout = server.rstrip("/"), Path(account_dir), pod_name, timeout
        self.namespace = self.read("namespace")
        try:
            self.context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        except (OSError, ssl.SSLError) as err:
            raise NotInClusterError(f"cannot use the service account's ca.crt ({self.dir / 'ca.crt'}): "
                                    f"{getattr(err, 'strerror', None) or err}") from None

    def read(self, name):
        try:
            return (self.dir / name).read_text().strip()
        except OSError as err:
            raise NotInClusterError(f"cannot read the service account's {name} ({self.dir / name}: "
                                    f"{err.strerror})") from None

    @classmethod
    def in_cluster(cls):
        """The client of the pod this runs in; NotInClusterError (one line) elsewhere."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        account_dir = Path(os.environ.get(DIR_VARIABLE) or SERVICE_ACCOUNT_DIR)
        if not host or not port or not (account_dir / "token").is_file():
            raise NotInClusterError("not in a pod of the cluster (no KUBERNETES_SERVICE_HOST or no service-account "
                                    f"token in {account_dir}): run it in JupyterLab's terminal, or use --local")
        if ":" in host:
            host = f"[{host}]"  # an IPv6 address
        return cls(f"https://{host}:{port}", account_dir, os.environ.get("HOSTNAME") or socket.gethostname())

    # ------------------------------------------------------------ requests

    def open(self, method, path, what, body=None, content_type="application/json", timeout=None):
        """The response to one request (open: the caller reads it); ApiError for an error status."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.read('token')}", "Accept": "application/json",
            **({"Content-Type": content_type} if data is not None else {})})
        try:
            return urllib.request.urlopen(request, context=self.context, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as err:
            try:
                status = json.loads(err.read())
                reason, message = status.get("reason") or err.reason, status.get("message") or err.reason
            except (ValueError, OSError, AttributeError):
                reason, message = err.reason, f"{err.code} {err.reason}"
            raise ApiError(what, err.code, reason, message) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(f"{what}: cannot reach the API server at {self.server}: {reason}") from None

    def call(self, method, path, what, body=None, content_type="application/json"):
        with self.open(method, path, what, body, content_type) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise UserError(f"{what}: the API server's answer is not JSON") from None

    def pod_path(self, name):
        return f"/api/v1/namespaces/{self.namespace}/pods/{urllib.parse.quote(name)}"

    def workflows_path(self, name=None):
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/workflows"
        return path + (f"/{urllib.parse.quote(name)}" if name else "")

    # ------------------------------------------------------------ the calls (CALLS)

    def pod(self, name=None):
        """A pod of the namespace (this one's own by default), as the API server returns it."""
        name = name or self.pod_name
        return self.call("GET", self.pod_path(name), f"reading pod {name} in namespace {self.namespace}")

    def create_workflow(self, doc):
        name = doc["metadata"]["name"]
        return self.call("POST", self.workflows_path(), f"creating workflow {name} in namespace {self.namespace}",
                         doc)

    def workflow(self, name):
        return self.call("GET", self.workflows_path(name), f"reading workflow {name}")

    def terminate(self, name):
        """Ask Argo to stop the Workflow: spec.shutdown Terminate (its running pods are stopped, nothing more
        starts; `argo terminate` does the same)."""
        return self.call("PATCH", self.workflows_path(name), f"stopping workflow {name}",
                         {"spec": {"shutdown": "Terminate"}}, content_type="application/merge-patch+json")

    def log_lines(self, pod, container="main", since_time=None):
        """The container's log, followed: (timestamp, line) as they come, until the container ends (or the stream
        stays silent LOG_TIMEOUT seconds: socket.timeout)."""
        query = {"container": container, "follow": "true", "timestamps": "true"}
        if since_time:
            query["sinceTime"] = since_time
        path = f"{self.pod_path(pod)}/log?{urllib.parse.urlencode(query)}"
        with self.open("GET", path, f"reading the log of pod {pod}", timeout=LOG_TIMEOUT) as response:
            for raw in response:
                stamp, _, line = raw.decode(errors="replace").rstrip("\n").partition(" ")
                yield stamp, line
