"""The watchdog of a local TFJob run: if the runner dies, it stops what the runner started.

    python reaper.py GRACE_SECONDS       # started by tfjob_local.py (Watchdog); instructions on stdin

tfjob_local.py starts it in a session of its own and writes one line to its
stdin for each replica's process group it starts (`+PGID`) and for each one
that has ended (`-PGID`), then `done` when it ends normally. If stdin closes
without `done`, the runner is gone (SIGKILL, a crash): the groups still
listed get SIGTERM, then SIGKILL after the grace period, as Kubernetes stops a
pod. Standard library only, run as a plain script: it starts in a few
milliseconds and needs nothing from the package.

The runner's side is here too: Watchdog, its handle on this process, and
die_with_runner, which has the kernel kill a replica's main process when the
runner dies (PR_SET_PDEATHSIG, Linux), covering the moment before the
watchdog has heard of a new group.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time


def group_members(pgid):
    """The live (not zombie) processes of process group `pgid`; on systems without /proc, [pgid] if it has any."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(entry))
    return members


def signal_groups(groups, signum):
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def stop_groups(groups, grace):
    """SIGTERM to every group, then SIGKILL to those with a process left after `grace` seconds."""
    signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_members(g) for g in groups):
        time.sleep(0.1)
    signal_groups([g for g in groups if group_members(g)], signal.SIGKILL)


# ---------------------------------------------------------------- the runner's side

PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_runner(signum=signal.SIGKILL):
    """A preexec_fn that has the kernel send the child `signum` (SIGKILL) when this runner dies (Linux; None
    elsewhere); a runner that died before the request took effect: the child sends it to itself.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: replicas
    are started from the main thread only (supervise), which lives as long as the runner.
    """
    if LIBC is None:
        return None
    runner = os.getpid()

    def preexec():
        LIBC.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != runner:  # the runner died before the request took effect
            os.kill(os.getpid(), signum)

    return preexec


class Watchdog:
    """This script, run in a session of its own: it kills the replicas' groups if the runner dies first."""

    def __init__(self, grace):
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(grace)], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, text=True, start_new_session=True)

    def tell(self, line):
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except OSError:
            pass  # the watchdog was killed: PR_SET_PDEATHSIG still covers every replica's main process

    def watch(self, pgid):
        self.tell(f"+{pgid}")

    def forget(self, pgid):
        self.tell(f"-{pgid}")

    def close(self):
        """The runner is ending normally, every replica stopped: the watchdog has nothing to do."""
        self.tell("done")
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait(timeout=30)


def main():
    grace = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    for signum in (signal.SIGINT, signal.SIGHUP):  # meant for the runner, which stops the replicas itself
        signal.signal(signum, signal.SIG_IGN)
    groups = set()
    for line in sys.stdin:
        word = line.strip()
        if word == "done":
            return
        if word[1:].isdigit() and word[0] == "+":
            groups.add(int(word[1:]))
        elif word[1:].isdigit() and word[0] == "-":
            groups.discard(int(word[1:]))
    stop_groups(groups, grace)


if __name__ == "__main__":
    main()
