"""Run commands as the steps of a pipeline: on the cluster as an Argo Workflow, or here (--help).

    python src/flow.py run -c "python src/main.py --steps 2000 >> python src/batch_predict.py & echo done"
    python src/flow.py run -c "..." --dry_run            # print the Workflow it would submit
    python src/flow.py run -c "..." --dry_run --pod FILE # the same outside the cluster, from a pod's description
    python src/flow.py run -c "..." --local              # run the steps as processes here

`>>`: the next stage starts when every step of this one succeeded; `&`: the steps of one stage run side by
side. Each step is a command line split as a POSIX shell splits words (quotes), run without a shell.

In JupyterLab on the cluster, each step runs in a pod of its own with this notebook's image, volumes, working
directory and user: change a line of src/, run again, the new code runs. The command prints each step's state
and log as it runs, then the Workflow's phase; it exits 0 only when every step succeeded, otherwise it names
the step that failed. Ctrl-C stops the Workflow (exit 130).
"""
import argparse

from tfk8s.cli import ArgumentParser, UsageError, duration, entry_point
from tfk8s.flow import run


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.replace(" (--help).", "."),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser("run", help="run a pipeline", description=(
        "Run a pipeline: '>>' separates stages (the next starts when all of this one succeeded), '&' the steps of "
        "a stage (side by side); each step's words are split as a POSIX shell splits them and run without a "
        "shell. By default its steps run on the cluster as an Argo Workflow built from this JupyterLab pod."))
    sub.add_argument("-c", "--command", dest="text", required=True, metavar="TEXT",
                     help='the pipeline, e.g. "python src/main.py >> python src/a.py & python src/b.py"')
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true",
                      help="run the steps here as processes, in the current directory (python is this interpreter)")
    mode.add_argument("--dry_run", action="store_true", help="print the Workflow it would submit, submit nothing")
    sub.add_argument("--name", metavar="NAME",
                     help="the Workflow's name (default: pipeline-<UTC yyyymmdd-hhmmss>-<4 random characters>)")
    sub.add_argument("--pod", metavar="FILE",
                     help="with --dry_run outside the cluster: the JupyterLab pod's description "
                          "(kubectl get pod NAME -o json) to build the Workflow from")
    sub.add_argument("--poll", type=duration(maximum=60), default=run.POLL, metavar="SECONDS",
                     help=f"seconds between two reads of the Workflow's status (default {run.POLL:g})")
    args = parser.parse_args(argv)
    if args.pod and not args.dry_run:
        raise UsageError("--pod is for --dry_run: a submitted Workflow is built from this pod's own description")
    if args.local and args.name:
        raise UsageError("--name names the Workflow: --local submits none")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    if args.local:
        run.run_local(args.text)
    else:
        run.run_cluster(args.text, args.name, args.dry_run, args.pod, args.poll)


if __name__ == "__main__":
    main()
