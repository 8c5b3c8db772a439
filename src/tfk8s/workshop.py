"""Two helpers of make/local.mk: the sweep winner's export (`make serve-best`), and `make clean-local`.

    python -m tfk8s.workshop best-export RESULTS_CSV   # print the export directory of the sweep's rank 1
    python -m tfk8s.workshop best-export --cluster RESULTS_CSV   # the same of a cluster sweep, as the pods see it
    python -m tfk8s.workshop clean RUNS                # delete RUNS, unless a trainer is writing there
"""
import csv
import shutil
import sys
from pathlib import Path

from tfk8s.cli import ArgumentParser, UserError, entry_point
from tfk8s.sweep.trials import NFS
from tfk8s.trainer import lock


def best_export(results_csv, cluster=False):
    """The export directory (TensorFlow Serving's --model_base_path) of the rank-1 trial of a ranking that
    `templated/run.sh --results` wrote: here, its `export` column is that trial's newest version; of a cluster
    sweep (`cluster`, ranked from TensorBoard), the trial's export directory on the shared volume itself."""
    path = Path(results_csv)
    if not path.is_file():
        then = "(make sweep), then make serve-best SWEEP_TENSORBOARD=..." if cluster else "(make sweep-local), then " \
                                                                                   "make serve-best"
        raise UserError(f"no ranking {path}: run the sweep first {then}")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a ranking written by make sweep-results ({err})") from None
    best = [row for row in rows if row.get("rank") == "1"]
    if not best:
        raise UserError(f"{path}: no trial is ranked (none has finished): see make sweep-results")
    if cluster:
        export_dir = best[0].get("export") or ""
        if not export_dir.startswith(f"{NFS}/"):
            raise UserError(f"{path}: the winner {best[0].get('trial')}'s export {export_dir or '(none)'} is not on "
                            f"the shared volume ({NFS}): rank the cluster sweep with make sweep-results "
                            "SWEEP_TENSORBOARD=...")
        return export_dir
    version = best[0].get("export") or ""
    if not version or not Path(version).is_dir():
        raise UserError(f"the winner {best[0].get('trial')} has no export to serve ({version or 'none'}): "
                        "its trial did not finish; run make sweep-local again")
    return str(Path(version).parent)


def live_trainers(runs):
    """The trainers that still hold a lock under `runs`: [(model_dir, who)]."""
    me, found = lock.identity(), []
    for path in sorted(Path(runs).rglob(lock.LOCK_NAME)):
        holder = lock.WriterLock(path.parent, say=lambda _: None)
        record, inode, age = holder.inspect()
        if inode is not None and lock.gone_because(record, me, age) is None:
            found.append((path.parent, lock.describe(record)))
    return found


def clean(runs):
    """Delete `runs` (every local model, export, sweep and log), refusing while a trainer writes there."""
    path = Path(runs)
    if not path.exists():
        print(f"nothing to clean: {path} does not exist")
        return
    here = Path.cwd().resolve()
    if path.resolve() == here or here not in path.resolve().parents:
        raise UserError(f"{path} is not a directory inside this checkout ({here}): make clean-local deletes only that")
    busy = live_trainers(path)
    if busy:
        model_dir, who = busy[0]
        raise UserError(f"{model_dir} is being written by a trainer, {who}: stop it (Ctrl-C in its terminal), "
                        "then make clean-local")
    shutil.rmtree(path)
    print(f"deleted {path} (every local model, export, sweep run and log); stop any server still serving from it")


@entry_point
def main(argv=None):
    p = ArgumentParser(prog="python -m tfk8s.workshop", description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", required=True)
    best = actions.add_parser("best-export", help="print the export directory of the sweep's winner")
    best.add_argument("--cluster", action="store_true", help="a cluster sweep's ranking: the directory as the pods "
                                                              "see it, on the shared volume")
    best.add_argument("csv")
    actions.add_parser("clean", help="delete RUNS unless a trainer writes there").add_argument("runs")
    args = p.parse_args(argv)
    if args.action == "best-export":
        print(best_export(args.csv, args.cluster))
    else:
        clean(args.runs)


if __name__ == "__main__":
    sys.exit(main())
