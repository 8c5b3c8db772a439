"""kubectl as the workshop's tools call it: its own error message becomes a one-line UserError."""
import json
import subprocess

from tfk8s.cli import UserError


def call(*args, stdin=None, timeout=120):
    """Run kubectl; its CompletedProcess, whatever it answered. kubectl missing or silent is a UserError."""
    try:
        return subprocess.run(["kubectl", *map(str, args)], input=stdin, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise UserError("kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"kubectl {' '.join(map(str, args))}: no answer after {timeout} s") from None


def failed(args, result):
    """kubectl's own complaint as a one-line UserError."""
    message = " ".join((result.stderr.strip() or f"failed with exit code {result.returncode}").split())
    return UserError(f"kubectl {' '.join(map(str, args))}: {message}")


def run(*args, stdin=None, timeout=120):
    """kubectl's stdout; kubectl missing or failing is a UserError that quotes it."""
    result = call(*args, stdin=stdin, timeout=timeout)
    if result.returncode != 0:
        raise failed(args, result)
    return result.stdout


def get(*args, timeout=120):
    """`kubectl get ARGS --output json`, parsed; a List's items, or the one object asked for."""
    text = run("get", *args, "--output", "json", timeout=timeout)
    try:
        found = json.loads(text) if text.strip() else {"items": []}
    except json.JSONDecodeError:
        raise UserError(f"kubectl get {' '.join(args)} did not answer JSON") from None
    return found


def get_optional(*args, timeout=120):
    """`kubectl get ARGS --output json` for one object, parsed; None when it does not exist."""
    result = call("get", *args, "--output", "json", timeout=timeout)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise failed(("get", *args), result)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise UserError(f"kubectl get {' '.join(map(str, args))} did not answer JSON") from None


def items(*args, timeout=120):
    """The objects of `kubectl get ARGS --output json` (a list)."""
    found = get(*args, timeout=timeout)
    return found.get("items", []) if "items" in found else [found]


def has_context():
    """True when kubectl is installed and has a current context (a cluster to talk to)."""
    try:
        result = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True,
                                timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())
