"""Trials on this machine: each TFJob run by src/tfjob_local.py (one process per replica), N at a time."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tfk8s.cli import UserError
from tfk8s.kube import reaper
from tfk8s.paths import SRC
from tfk8s.sweep import cluster


class SweepInterruptedError(UserError):
    """Ctrl-C (or `kill`, a closed terminal) during a local sweep: exit 130, as a shell reports SIGINT."""

    exit_code = 130

    def __init__(self, finished, total, message=None):
        super().__init__(message or f"interrupted: {finished} of {total} trials had finished")
        self.finished, self.total = finished, total


@contextlib.contextmanager
def quiet_stderr():
    """Keep TensorFlow's C++ runtime notices (no CUDA here, cuInit failed) off the terminal.

    The runtime prints them straight to file descriptor 2, whatever
    TF_CPP_MIN_LOG_LEVEL says; a sweep's preview has nothing to say about GPUs.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_hparams_config(trials, logdir):
    """The experiment for TensorBoard's HParams view: the grid's domains and the metrics to compare."""
    with quiet_stderr():
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp
        hparams = [hp.HParam(flag, hp.Discrete(sorted({t.params[flag] for t in trials})))
                   for flag in trials[0].params]
        metrics = [hp.Metric("accuracy", group="eval", display_name="validation accuracy"),
                   hp.Metric("accuracy", group="test", display_name="test accuracy"),
                   hp.Metric("loss", group="eval", display_name="validation loss")]
        with tf.summary.create_file_writer(str(logdir)).as_default():
            hp.hparams_config(hparams=hparams, metrics=metrics)


def run_local(trials, paths, root, logs, parallel, trainer_args):
    """Run every trial with src/tfjob_local.py (one process per replica), `parallel` trials at a time.

    All trials share `root`, so that its volume holds them side by side as the
    NFS claim does on the cluster; each trial's output goes to <logs>/<job>.log.
    Interrupted, it stops the running trials and raises SweepInterruptedError (how many had finished).
    """
    processes = {}
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def start(trial):
        log = logs / f"{trial.job}.log"
        command = [sys.executable, str(SRC / "tfjob_local.py"), str(Path(paths[trial.id]).resolve()),
                   "--root", str(Path(root).resolve())]
        if trainer_args:
            command += ["--", *trainer_args]
        with open(log, "w") as out:
            # If this sweep is killed outright, the kernel sends its runner SIGTERM, and the runner stops the
            # trial's replicas (and its watchdog ends): nothing of the sweep is left (reaper.die_with_runner).
            processes[trial.id] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL,
                                                   preexec_fn=reaper.die_with_runner(signal.SIGTERM))
        print(f"{trial.job}: started ({trial.describe()}), log {log}", flush=True)
        done = sum(process.poll() is not None for process in processes.values())
        if done:  # the time left, at the pace of the trials so far
            left = round((time.monotonic() - began) / done * (len(trials) - done))
            print(f"  about {left // 60}m{left % 60:02d}s left: {len(trials) - done} of {len(trials)} trials to go",
                  flush=True)

    def outcome(trial):
        code = processes[trial.id].poll()
        return None if code is None else "Succeeded" if code == 0 else f"Failed (exit code {code})"

    def stopped(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):  # `kill` or a closed terminal: as Ctrl-C, the trials stopped
        signal.signal(signum, stopped)
    try:
        outcomes = cluster.at_most(parallel, trials, start, outcome, interval=1.0)
    except KeyboardInterrupt:  # counted before the stop below, which ends the running trials with a failure
        raise SweepInterruptedError(sum(p.poll() == 0 for p in processes.values()), len(trials)) from None
    finally:
        for process in processes.values():  # interrupted: tfjob_local stops its replicas on SIGTERM
            if process.poll() is None:
                process.terminate()
                process.wait()
    cluster.report(outcomes, trials, f"their logs are {logs}/<job>.log")
