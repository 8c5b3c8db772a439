"""Where the trainer writes, checked before it trains: one line if --model_dir or --export_dir cannot take it.

Before TensorFlow is even imported, the writer (the chief) makes sure that
each directory is a directory (created if missing) and takes a file written
into it (a read-only volume, a permission, a full disk), then takes the
lock on model_dir (lock.py). Once the model is built, it checks that each
file system has room for at least one checkpoint and one export. What
happens later (the disk fills up while it trains) ends the run in one line
too (train.py and export.py call `failure`), with the checkpoints saved so
far intact.
"""
import errno
import os
import re
import time
from pathlib import Path

from tfk8s.cli import UsageError, UserError
from tfk8s.trainer.lock import WriterLock

STARTED = time.time()  # about when this process started (imported before TensorFlow)
PROBE_BYTES = 4096

WHAT_TO_DO = {
    errno.EROFS: "the volume is mounted read-only: mount it read-write or choose another directory",
    errno.EACCES: "this user may not write there: fix its permissions (on a cluster, the volume's owner or "
                  "the pod's fsGroup) or choose another directory",
    errno.EPERM: "this user may not write there: fix its permissions or choose another directory",
    errno.ENOSPC: "the disk is full: free space on it or choose another directory",
    errno.EDQUOT: "the disk quota is spent: free space on it or choose another directory",
    errno.EFBIG: "a file grew past the size allowed (ulimit -f): lift the limit",
    errno.ENOTDIR: "a part of the path is a file: choose another directory",
}


def reason(err):
    """The part of an OSError or TensorFlow error that says what went wrong ('No space left on device')."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(getattr(err, "message", "") or err).split())
    text = re.sub(r"\s*\[Op:\w+\]$", "", text)
    return text.rsplit("; ", 1)[-1]


def what_to_do(err):
    """The advice for an error's errno (read from a TensorFlow error's message too)."""
    code = getattr(err, "errno", None)
    if code not in WHAT_TO_DO:
        text = reason(err)
        code = next((c for c in WHAT_TO_DO if os.strerror(c) == text), None)
    return WHAT_TO_DO.get(code, "check the volume and choose another directory if it stays so")


def failure(action, flag, path, err, then):
    """A UserError for a write that failed: `cannot <action> in <flag> <path>: <reason>; <then>; <advice>`."""
    return UserError(f"cannot {action} in {flag} {path}: {reason(err)}; {then}; {what_to_do(err)}")


def check_directory(flag, path):
    """Create `path` if missing and write a probe file into it; a one-line error if it cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory: give a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{flag} {path}: a part of the path is a file, not a directory") from None
    except OSError as err:
        raise UserError(f"cannot create {flag} {path}: {reason(err)}; {what_to_do(err)}") from None
    probe = path / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"cannot write in {flag} {path}: {reason(err)}; {what_to_do(err)}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def prepare(args, role):
    """Check the writer's directories and take the lock on model_dir; the lock (None on other replicas)."""
    if not role.is_chief:
        return None  # only the chief writes model_dir and export_dir
    check_directory("--model_dir", args.model_dir)
    writer = WriterLock(args.model_dir, role.name).acquire()  # before anything else is written
    try:
        check_directory("--export_dir", args.export_dir)
    except UserError:
        writer.release()
        raise
    return writer


def megabytes(n):
    return f"{n / 1e6:.1f} MB"


def check_space(model_dir, checkpoint_bytes, export_dir, export_bytes):
    """One line, before training, if a file system has no room for one checkpoint and one export."""
    needs = {}  # device -> (a path on it, [(flag, what)], bytes)
    for flag, path, what, size in (("--model_dir", model_dir, "one checkpoint", checkpoint_bytes),
                                   ("--export_dir", export_dir, "one export", export_bytes)):
        path_on, uses, total = needs.get(os.stat(path).st_dev, (path, [], 0))
        needs[os.stat(path).st_dev] = (path_on, uses + [(flag, what)], total + size)
    for path, uses, size in needs.values():
        stats = os.statvfs(path)
        free = stats.f_bavail * stats.f_frsize
        if free < size:
            flags = " and ".join(flag for flag, _ in uses)
            raise UserError(f"{flags} {path}: {megabytes(free)} free, less than this model needs there "
                            f"({megabytes(size)} for {' and '.join(what for _, what in uses)}): "
                            "free space on it or choose another directory")
