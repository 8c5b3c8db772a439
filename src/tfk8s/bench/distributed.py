"""Benchmark: the same training in one process and on a TFJob's replicas (Chief + Workers), run here.

    python src/bench.py distributed                          # one process, then Chief + 1 Worker
    python src/bench.py distributed --replicas 3 --steps 1000

Both runs train from nothing for the same global steps with the same global
batch (each of N replicas takes 1/N of --batch_size), on the shipped mini
data, and are scored on the official 10k test set. The distributed run is
kube/tfjob.yaml with its Worker count set to --replicas minus one, run by
src/tfjob_local.py as the training operator would run it (TF_CONFIG, one
process per replica, MultiWorkerMirroredStrategy). Here every replica shares
this machine's cores, so the times show what the collective communication
costs, not a speed-up: on a cluster each replica has CPUs of its own.
Nothing is asserted: the figures depend on the machine and on what else runs.
"""
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tfk8s.cli import ArgumentParser, UsageError, UserError, child_env, entry_point
from tfk8s.paths import KUBE, REPO, RUNS, SRC
from tfk8s.trainer.flags import parse_args as trainer_flags

MANIFEST = KUBE / "tfjob.yaml"


def parse_args(argv=None):
    defaults = trainer_flags([])
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=2, help="replicas of the distributed run: a Chief and N-1 Workers")
    p.add_argument("--steps", type=int, default=defaults.steps, help="global training steps of both runs")
    p.add_argument("--batch_size", type=int, default=defaults.batch_size, help="global batch size of both runs")
    p.add_argument("--root", type=Path, default=RUNS / "bench-distributed",
                   help="where both runs write (their directories are emptied first)")
    args, extra = p.parse_known_args(argv)
    if args.replicas < 2:
        raise UsageError(f"--replicas must be at least 2 (a Chief and a Worker), not {args.replicas}")
    if args.steps < 1:
        raise UsageError(f"--steps must be positive, not {args.steps}")
    if args.batch_size % args.replicas:
        raise UsageError(f"--batch_size {args.batch_size} must split evenly over {args.replicas} replicas")
    args.trainer_args = ["--dataset", "mini", "--steps", str(args.steps), "--batch_size", str(args.batch_size),
                         *extra]
    trainer_flags(args.trainer_args)  # a bad trainer flag fails here, in one line, before any run
    return args


def distributed_manifest(replicas, path):
    """kube/tfjob.yaml with a Chief and replicas - 1 Workers, under its own name."""
    doc = yaml.safe_load(MANIFEST.read_text())
    doc["metadata"]["name"] = f"mnist-bench-{replicas}"
    doc["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = replicas - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(what, command, log_path):
    """Run `command`, its output into log_path; (seconds, test accuracy, num_replicas_in_sync)."""
    print(f"{what}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO).returncode
    seconds = time.monotonic() - began
    text = log_path.read_text()
    accuracy = re.findall(r"test accuracy ([\d.]+)%", text)
    in_sync = re.findall(r"num_replicas_in_sync=(\d+)", text)
    if code != 0 or not accuracy or not in_sync:
        raise UserError(f"{what} failed (exit {code}): see {log_path}")
    return seconds, float(accuracy[-1]) / 100, int(in_sync[0])


@entry_point
def main(argv=None):
    args = parse_args(argv)
    root = args.root.resolve()
    single_dir, job_dir = root / "one-process", root / f"tfjob-{args.replicas}"
    for directory in (single_dir, job_dir):
        shutil.rmtree(directory, ignore_errors=True)  # from nothing: a checkpoint left there would resume
        directory.mkdir(parents=True)
    rows = [("one process (main.py)", 1, *timed(
        "one process", [sys.executable, str(SRC / "main.py"), *args.trainer_args,
                        "--model_dir", str(single_dir / "model"), "--export_dir", str(single_dir / "export")],
        single_dir / "log.txt"))]
    manifest = distributed_manifest(args.replicas, job_dir / "tfjob.yaml")
    rows.append((f"TFJob: Chief + {args.replicas - 1} Worker{'s' if args.replicas > 2 else ''}", args.replicas,
                 *timed(f"TFJob, {args.replicas} replicas",
                        [sys.executable, str(SRC / "tfjob_local.py"), str(manifest), "--root", str(job_dir),
                         "--", *args.trainer_args], job_dir / "log.txt")))
    print()
    print(f"{'run':26}{'processes':>10}{'in sync':>9}{'global batch':>14}{'steps':>7}{'test accuracy':>15}"
          f"{'wall time':>11}{'images/s':>10}")
    for name, processes, seconds, accuracy, in_sync in rows:
        print(f"{name:26}{processes:>10}{in_sync:>9}{args.batch_size:>14}{args.steps:>7}{accuracy:>15.2%}"
              f"{seconds:>10.0f}s{args.steps * args.batch_size / seconds:>10,.0f}")
    print(f"logs: {single_dir / 'log.txt'}, {job_dir / 'log.txt'} (wall time includes start-up, "
          "evaluation and export; the replicas share this machine's cores)")
