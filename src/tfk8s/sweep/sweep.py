"""A hyperparameter sweep: one TFJob per combination of the values in templated/values.yaml.

    templated/run.sh --dry_run --output_dir /tmp/sweep   # write one TFJob per trial, submit nothing
    templated/run.sh                                     # submit them to the cluster
    templated/run.sh --local --parallel 2                # run them here, two at a time
    templated/run.sh --results                           # rank the trials by validation accuracy

The trials and their TFJobs: trials.py; the cluster (quota, earlier runs,
N at a time): cluster.py; the ranking: results.py.
"""
import argparse
import os
import sys
from pathlib import Path

from tfk8s.cli import ArgumentParser, UserError, duration, entry_point, split_at_dashes
from tfk8s.kube import kubectl
from tfk8s.paths import REPO, RUNS, TEMPLATED
from tfk8s.sweep import cluster, local
from tfk8s.sweep import trials as planning
from tfk8s.sweep import values as checks
from tfk8s.sweep.trials import BASE, NFS

VALUES = TEMPLATED / "values.yaml"
LOCAL_ROOTS = RUNS / "tfjob-local"  # --local: <this>/<sweep> stands for the cluster, as for tfjob_local
MAX_TRIALS = 30  # two at a time, four to five minutes each: an hour of a workshop's cluster


def newest_run(source, sweep, where):
    """The id of the sweep's newest run that `source` holds."""
    found = sorted({run.split("/")[1] for run in source.runs() if run.startswith(sweep + "/")
                    and len(run.split("/")) > 2 and planning.RUN_ID.fullmatch(run.split("/")[1])},
                   key=planning.run_order)
    if not found:
        raise UserError(f"no run of sweep {sweep} in {where}: run the sweep first (or check --name, --root)")
    return found[-1]


# ---------------------------------------------------------------- command line

HELP = f"""
modes (the default submits the trials to the cluster):
  (none)                 check that the namespace's quota holds --parallel trials beside what runs (else
                         name what to stop first), delete the finished trials of the sweep's earlier run,
                         then `kubectl create` each trial, --parallel at a time
  --dry_run --output_dir DIR
                         write one TFJob per trial, DIR/<sweep>-tNN.yaml (DIR holds nothing else: files
                         this tool wrote there before are replaced, others make it refuse)
  --local                run every trial here with src/tfjob_local.py (one process per replica), 1 at a
                         time unless --parallel; trainer flags after -- are appended to every trial's:
                           templated/run.sh --local -- --dataset mini --steps 300
                         --root (default runs/tfjob-local/<sweep>) stands for the cluster: its nfs/ is the
                         volume ({NFS}), logs/<run>/<job>.log the trials' output, manifests/<run>/ their TFJobs
  --delete               delete the sweep's TFJobs (kubectl delete -l sweep=<name>); their files stay
  --results              rank the trials of the sweep's newest run (or --run_id) by validation accuracy
                         (the last evaluation: test accuracy is shown beside it, never used to choose),
                         and name the export to serve; write <sweep>-results.csv and a plot of accuracy by
                         learning rate, <sweep>-results.png, to --output_dir (default: --root; with
                         --tensorboard, runs/sweep/<sweep>). Read from the event files under --root, or with
                         --tensorboard URL from a running TensorBoard

every run of a sweep has an id (UTC start time, YYYYMMDD-HHMMSS): its trials train into
{NFS}/runs/<sweep>/<run>/tNN and export to {NFS}/exports/<sweep>/<run>/tNN, so a second run starts afresh
and keeps the first one's files

files:
  {VALUES.relative_to(REPO)}  name, workers, grid (flag: [values], one trial per combination; at most
                         --max_trials) and flags (flag: value, for every trial); flags are src/main.py's,
                         without dashes
  {BASE.relative_to(REPO)}        every trial is this TFJob with its own name (<sweep>-tNN), labels (sweep,
                         run, trial, one per grid flag), image, Worker count and trainer flags

results of a cluster sweep, with no access to the pods: TensorBoard over {NFS}/runs has them all.
  make tensorboard                                          (in another terminal: localhost:6006)
  templated/run.sh --results --tensorboard http://localhost:6006

--katib: the same sweep as one Katib Experiment (Katib v0.19; the values file's katib: section picks the
algorithm, early stopping and the trial budget); its trials are the same TFJobs, each training into
{NFS}/runs/katib/<sweep>/<trial> and exporting to {NFS}/exports/katib/<sweep>/<trial>.
  --katib --dry_run --output_dir DIR   write DIR/<sweep>-experiment.yaml, checked as Katib would check it
  --katib                              create it (a finished one of the same name is deleted first), follow it
                                       to its end and print the best trial
  --katib --results                    rank its trials from the Trials' observed metrics (CSV and plot)
  --katib --local                      run its grid here (root: runs/katib-local/<sweep>; each run claims an id,
                                       its trials' logs in logs/<run>/, their TFJobs in manifests/<run>/) and
                                       rank the trials with Katib's metric collector and rule, as Katib would
  --katib --delete                     delete the Experiment (its trials and their TFJobs)
"""


def parse_args(argv):
    argv, trainer_args = split_at_dashes(sys.argv[1:] if argv is None else argv)
    p = ArgumentParser(prog="templated/run.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="A hyperparameter sweep: one TFJob per combination of the values file's grid.",
                       epilog=HELP, usage="%(prog)s [options] [--dry_run --output_dir DIR | --local | --delete | "
                                          "--results] [-- TRAINER_FLAGS...]")
    p.add_argument("--values", metavar="FILE", help=f"the sweep's values file (default: {VALUES.relative_to(REPO)})")
    p.add_argument("--name", metavar="SWEEP", help="the sweep's name (default: the values file's name)")
    p.add_argument("--namespace", help="the trials' namespace (default: kube/tfjob.yaml's, else 'default')")
    p.add_argument("--image", help="the trainer image, with its tag (default: kube/tfjob.yaml's)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="at most N trials at once; each of the rest starts when one finishes (default: on the "
                        "cluster all at once, with --local 1)")
    p.add_argument("--poll", type=duration(), default=os.environ.get("SWEEP_POLL", "15"), metavar="SECONDS",
                   help="on the cluster, how often to ask for the trials' (or the Katib Experiment's) status "
                        "(default: %(default)s, or the environment's SWEEP_POLL: `make sweep SWEEP_POLL=5`)")
    p.add_argument("--max_trials", type=int, default=MAX_TRIALS, metavar="N",
                   help="refuse a grid of more than N combinations (default: %(default)s)")
    p.add_argument("--run_id", metavar="ID", help="with --results: the run to rank (default: the newest); "
                                                  "with --dry_run: the id to write (default: now)")
    p.add_argument("--root", metavar="DIR", help="with --local and --results: the local stand-in for the cluster "
                                                  "(default: runs/tfjob-local/<sweep>)")
    p.add_argument("--output_dir", metavar="DIR", help="where --dry_run writes the YAML and --results the CSV "
                                                        "and PNG")
    p.add_argument("--tensorboard", metavar="URL", help="with --results: read the trials from this TensorBoard "
                                                         "(e.g. http://localhost:6006 of `make tensorboard`)")
    p.add_argument("--katib", action="store_true", help="the same sweep as one Katib Experiment (see below)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry_run", action="store_true", help="write the trials' YAML to --output_dir, submit nothing")
    mode.add_argument("--local", action="store_true", help="run the trials on this machine")
    mode.add_argument("--delete", action="store_true", help="delete the sweep's TFJobs from the cluster")
    mode.add_argument("--results", action="store_true", help="rank the trials and name the export to serve")
    args = p.parse_args(argv)
    args.trainer_args = trainer_args
    if args.dry_run and not args.output_dir:
        p.error("--dry_run needs --output_dir DIR")
    if trainer_args and not args.local:
        p.error("trainer flags after -- go with --local only; for the cluster, put them in the values file")
    if args.parallel is not None and args.parallel < 1:
        p.error(f"--parallel must be 1 or more, not {args.parallel}")
    if args.max_trials < 1:
        p.error(f"--max_trials must be 1 or more, not {args.max_trials}")
    if args.tensorboard and not args.results:
        p.error("--tensorboard goes with --results")
    if args.tensorboard and not args.tensorboard.startswith(("http://", "https://")):
        p.error(f"--tensorboard {args.tensorboard!r} must be a URL such as http://localhost:6006")
    if args.run_id is not None:
        planning.check_run_id(args.run_id)
    if args.katib and (args.tensorboard or args.run_id):
        p.error("--katib takes neither --tensorboard nor --run_id: Katib names its trials and keeps their metrics")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    values_path = args.values or os.path.relpath(VALUES)
    values = checks.load(values_path)
    name = args.name or values["name"]
    base = planning.load_base()
    namespace = checks.check_namespace(args.namespace if args.namespace is not None
                                       else base["metadata"].get("namespace", "default"))
    if args.delete:
        checks.check_sweep_name(name)
        cluster.require_kubectl()
        deleted = kubectl.run("delete", "tfjobs", "-n", namespace, "-l", f"sweep={name}").strip()
        print(deleted or f"no TFJobs labelled sweep={name} in namespace {namespace}")
        return

    container = planning.base_container(base)
    if args.katib:
        return katib_main(args, values, values_path, name, base, namespace, container)
    image = checks.check_image(args.image or container["image"])
    base_flags = planning.parse_flags(container.get("args", []))
    root = Path(args.root or os.path.relpath(LOCAL_ROOTS / (name if isinstance(name, str) else "sweep")))
    if args.results:
        checks.check_sweep_name(name)
        from tfk8s.sweep import results
        if args.tensorboard:
            source, volume = results.TensorBoardAPI(args.tensorboard), None
        else:
            volume = planning.volume_dir(root, container)
            source = results.EventFiles(volume / "runs")
        run_id = args.run_id or newest_run(source, name, source)
        trials = planning.plan(values, name, base_flags, values_path, run_id, args.max_trials)
        found = results.collect(trials, source, f"{NFS}/runs", volume, NFS)
        out = args.output_dir or (root if volume is not None or args.root else os.path.relpath(RUNS / "sweep" / name))
        results.report(found, name, f"sweep {name}, run {run_id} ({source})", Path(out), local=volume is not None)
        return

    # A local run claims its id (and with it its logs/<run>/ and manifests/<run>/): two sweeps started at once
    # in one --root run side by side, each with its own trials, logs and results.
    run_id = (planning.claim_run(root / "logs", args.run_id) if args.local
              else args.run_id or planning.new_run_id())
    try:
        trials = planning.plan(values, name, base_flags, values_path, run_id, args.max_trials)
        docs = planning.render(trials, name, run_id, namespace, image, values["workers"], base)
    except UserError:
        if args.local:
            (root / "logs" / run_id).rmdir()  # nothing ran: the id goes back
        raise
    if args.dry_run:
        for path in planning.write_manifests(trials, docs, args.output_dir):
            print(path)
    elif args.local:
        paths = dict(zip((t.id for t in trials), planning.write_manifests(trials, docs, root / "manifests" / run_id,
                                                                          "--root's manifests/<run>/")))
        volume = planning.volume_dir(root, container)
        local.write_hparams_config(trials, volume / "runs" / name / run_id)
        rank = ("templated/run.sh --results" + (f" --values {args.values}" if args.values else "")
                + (f" --name {name}" if args.name else "") + (f" --root {args.root}" if args.root else ""))
        try:
            local.run_local(trials, paths, root, root / "logs" / run_id, args.parallel or 1, args.trainer_args)
        except local.SweepInterruptedError as stop:
            # A run is never resumed: the same command claims a new run id and trains every trial afresh.
            raise local.SweepInterruptedError(stop.finished, stop.total,
                f"interrupted: {stop.finished} of {stop.total} trials of run {run_id} had finished, their files "
                f"stay in {volume}/{{runs,exports}}/{name}/{run_id} (rank them: {rank} --run_id {run_id}); the same "
                "command starts a new run, every trial from the start") from None
        print(f"all {len(trials)} trials of run {run_id} succeeded; rank them with: {rank}")
    else:
        import tempfile
        cluster.require_kubectl()
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as out:
            paths = planning.write_manifests(trials, docs, out)
            cluster.submit(name, run_id, trials, docs, paths, namespace, args.parallel, args.poll)


def katib_main(args, values, values_path, name, base, namespace, container):
    """The --katib modes: the Experiment previewed, created and followed, ranked, run here, or deleted."""
    from tfk8s.sweep import katib, katib_cluster
    if args.delete:
        cluster.require_kubectl()
        katib_cluster.delete(checks.check_sweep_name(name), namespace)
        return
    image = checks.check_image(args.image or container["image"])
    experiment = katib.render(values, name, namespace, image, base, values_path, args.max_trials)
    if args.dry_run:
        print(katib_cluster.write_experiment(experiment, args.output_dir))
    elif args.local:
        from tfk8s.sweep import katib_local
        root = Path(args.root or os.path.relpath(RUNS / "katib-local" / name))
        entries, failure = katib_local.run(experiment, namespace, root, args.parallel or 1, args.trainer_args)
        katib_cluster.report(experiment.doc, entries, Path(args.output_dir or root),
                             f"Katib Experiment {name}, run here", volume=planning.volume_dir(root, container))
        if failure:
            raise failure
    elif args.results:
        cluster.require_kubectl()
        out = Path(args.output_dir or os.path.relpath(RUNS / "katib"))
        katib_cluster.show_results(experiment, namespace, out)
    else:
        cluster.require_kubectl()
        katib_cluster.print_best(katib_cluster.submit(experiment, namespace, args.poll))
        print("the ranked table and plot: make katib-results (templated/run.sh --katib --results)")
