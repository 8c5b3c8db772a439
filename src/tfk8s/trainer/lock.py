"""One writer per --model_dir: a lock file with a lease, that works on a shared NFS volume.

Two trainers writing one model_dir would overwrite each other's checkpoints.
The writer (the chief) holds `<model_dir>/trainer.lock`, created with
O_CREAT|O_EXCL (atomic on a local disk and on NFSv3/v4) and holding who took
it: host, pid, replica, a token. While the writer runs, a thread touches the
file every HEARTBEAT seconds: the file's modification time, set by the file
system (by the server, on NFS), is the lease. fcntl/flock locks are not used:
on NFS they hang on the lock daemon and on client recovery, and a pod on
another node could not tell whether their holder lives.

A trainer that finds the lock refuses, in one line naming the holder, unless
the holder is provably gone, and then takes the lock over, saying why:
- same host and PID namespace: its pid is dead, a zombie, or another process now;
- the same host name but another boot or PID namespace: the writer's own pod,
  restarted (a TFJob's replicas keep their pod names, which are their host
  names, and Kubernetes runs at most one pod of a name): taken over at once
  inside Kubernetes, by the lease elsewhere (two containers can share a host name);
- any host: the lease expired, LEASE seconds without a heartbeat. Both times
  come from the same file system's clock (the lock's mtime against the mtime
  of a file written now), so clocks that differ between nodes do not matter.

The holder checks that the lock is still its own before each checkpoint and
export (a holder paused past its lease may have lost it): if not, it stops
without writing.
"""
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from tfk8s.cli import UserError

LOCK_NAME = "trainer.lock"
HEARTBEAT = 5.0   # seconds between touches of the lock
LEASE = 30.0      # seconds without a touch after which any trainer may take the lock over


def read_text(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_start(pid):
    """(state, start time in clock ticks since boot) of `pid` from /proc, None if it is gone;
    ("?", None) where there is no /proc and the pid exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?", None


def identity():
    """Who this process is, as far as another trainer can check it."""
    pid = os.getpid()
    namespace = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    started = process_start(pid)
    return {"host": socket.gethostname(), "pid": pid, "pid_namespace": namespace,
            "boot_id": read_text("/proc/sys/kernel/random/boot_id"),
            "start_ticks": started[1] if started else None}


def describe(holder):
    if not holder:
        return "an unknown trainer (its lock file is empty or unreadable)"
    replica = f" ({holder['replica']})" if holder.get("replica") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{replica}"


def gone_because(holder, me, age, environ=os.environ):
    """Why the lock's holder is certainly gone, or None if it may still be writing."""
    if holder and holder.get("host") == me["host"]:
        same_machine = holder.get("boot_id") == me["boot_id"]
        if same_machine and holder.get("pid_namespace") == me["pid_namespace"]:
            pid = holder.get("pid")
            if pid == me["pid"]:
                return f"pid {pid} is this process now"
            found = process_start(pid) if isinstance(pid, int) and pid > 0 else None
            if found is None:
                return f"pid {pid} is no longer running"
            state, ticks = found
            if state == "Z":
                return f"pid {pid} has exited"
            if ticks is not None and holder.get("start_ticks") not in (None, ticks):
                return f"pid {pid} is another process now"
            return None
        if not same_machine:
            return f"host {me['host']} has been restarted since (another boot): its earlier run is over"
        if "KUBERNETES_SERVICE_HOST" in environ:
            return f"it is an earlier container of this pod ({me['host']}): pods of one name never run together"
    if age > LEASE:
        return f"its lease expired: not renewed for {age:.0f}s (lease {LEASE:.0f}s)"
    return None


class WriterLock:
    """The lock on a model_dir, held by its one writer: acquire(), check() before writing, release()."""

    def __init__(self, model_dir, replica="", say=print):
        self.path = Path(model_dir) / LOCK_NAME
        self.me = {**identity(), "replica": replica, "token": uuid.uuid4().hex}
        self.say = say
        self.lost = None
        self.stopped = threading.Event()
        self.thread = None

    # ------------------------------------------------------------ taking it

    def acquire(self):
        """Take the lock (taking over a dead holder's), start the heartbeat; UserError if another trainer holds it."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder, inode, age = self.inspect()
                if inode is None:
                    continue  # released while we looked
                why = gone_because(holder, self.me, age)
                if why is None:
                    raise UserError(self.refusal(holder, age)) from None
                self.say(f"taking over the lock {self.path} of {describe(holder)}: {why}")
                self.remove_stale(holder, inode)
                continue
            try:
                record = {**self.me, "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                os.write(fd, (json.dumps(record) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self.thread = threading.Thread(target=self.heartbeat, name="model_dir lock", daemon=True)
            self.thread.start()
            return self
        raise UserError(f"could not take the lock {self.path}: other trainers keep taking it; "
                        "run one trainer per --model_dir")

    def refusal(self, holder, age):
        renewed = f"its lock {self.path} was renewed {age:.0f}s ago"
        if holder and holder.get("host") != self.me["host"]:
            renewed += f" (a lock not renewed for {LEASE:.0f}s is taken over)"
        return (f"--model_dir {self.path.parent} is in use by another trainer, {describe(holder)}; {renewed}: "
                "wait for it to finish, stop it, or choose another --model_dir")

    def inspect(self):
        """(holder's record or {}, the lock's inode or None if it is gone, its age by the file system's clock)."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                text = f.read(4096)
        except FileNotFoundError:
            return {}, None, 0.0
        try:
            holder = json.loads(text)
            holder = holder if isinstance(holder, dict) else {}
        except ValueError:
            holder = {}  # being written, or damaged
        return holder, stat.st_ino, self.clock() - stat.st_mtime

    def clock(self):
        """Now, by the clock of the file system that holds the lock: the mtime of a file written now.

        The probe's name is new on each call: the heartbeat and the writer's check() may both read the clock at
        the moment the lock is taken over, and one must not remove the other's probe.
        """
        probe = self.path.with_name(f".{LOCK_NAME}.clock.{self.me['token']}.{uuid.uuid4().hex}")
        try:
            probe.write_bytes(b"")
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)

    def remove_stale(self, holder, inode):
        """Remove the dead holder's lock, and only it: moved aside atomically, checked, then deleted."""
        aside = self.path.with_name(f".{LOCK_NAME}.stale.{self.me['token']}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another trainer removed it first
        try:
            if aside.stat().st_ino != inode:  # a newer lock replaced the stale one meanwhile: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)

    # ------------------------------------------------------------ holding it

    def owner_token(self):
        try:
            return json.loads(self.path.read_bytes()).get("token")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            return ""

    def heartbeat(self):
        while not self.stopped.wait(HEARTBEAT):
            token = self.owner_token()
            if token != self.me["token"]:
                holder, _, _ = self.inspect() if token else ({}, None, 0)
                self.lost = f"taken over by {describe(holder)}" if token else "its lock file was removed"
                return
            try:
                os.utime(self.path)  # now, by the file system's clock (NFS: the server's)
            except OSError:
                pass  # a passing NFS error: the lease covers several missed heartbeats

    def check(self):
        """Raise a UserError if the lock is no longer ours: we must not write to model_dir."""
        token = self.owner_token() if self.lost is None else ""
        if token not in (self.me["token"], ""):
            self.lost = f"taken over by {describe(self.inspect()[0])}" if token else "its lock file was removed"
        if self.lost:
            paused = (f", probably while this process was paused past its {LEASE:.0f}s lease"
                      if self.lost.startswith("taken over") else "")
            raise UserError(f"lost the lock on --model_dir {self.path.parent} ({self.lost}){paused}: stopped "
                            "without writing; run one trainer per --model_dir")

    def release(self):
        self.stopped.set()
        if self.thread:
            self.thread.join()
        if self.lost is None and self.owner_token() == self.me["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
