"""The command-line tools the instructor's commands call besides kubectl (gcloud, docker, crane): each
call's CompletedProcess, with a missing or silent tool as one line."""
import shutil
import subprocess

from tfk8s.cli import UserError


def installed(name):
    return shutil.which(name) is not None


def call(name, *args, timeout=120):
    """Run `name ARGS`; its CompletedProcess, whatever it answered. The tool missing or silent is a UserError."""
    try:
        return subprocess.run([name, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError(f"{name} is not installed") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{name} {' '.join(map(str, args))}: no answer after {timeout} s") from None


def complaint(result):
    """The tool's own complaint, on one line."""
    return " ".join((result.stderr.strip() or result.stdout.strip()
                     or f"failed with exit code {result.returncode}").split())


def run(name, *args, timeout=120):
    """The tool's stdout; a failure is a UserError quoting it."""
    result = call(name, *args, timeout=timeout)
    if result.returncode != 0:
        raise UserError(f"{name} {' '.join(map(str, args))}: {complaint(result)}")
    return result.stdout
