"""A hyperparameter sweep: one TFJob per combination of the values in templated/values.yaml.

    templated/run.sh --dry-run --out /tmp/sweep    # write one TFJob per trial, submit nothing
    templated/run.sh                               # submit them all to the cluster
    templated/run.sh --local --parallel 2          # run them here, two at a time
    templated/run.sh --results                     # rank the trials by test accuracy

A trial's TFJob is kube/tfjob.yaml with the per-trial parts of
templated/trial.yaml.j2 merged onto it (name, labels, image, Worker count,
the trainer's flags): kube/tfjob.yaml stays the one source of truth for what a
training pod is. Each trial trains into /mnt/nfs/runs/<sweep>/<trial> and
exports to /mnt/nfs/exports/<sweep>/<trial>, so TensorBoard on /mnt/nfs/runs
shows the trials side by side and no two trials ever write the same files.
The trainer itself (src/main.py) judges every flag in the values file.
"""
import argparse
import contextlib
import difflib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.kube import tfjob_check
from tfk8s.paths import KUBE, REPO, RUNS, SRC, TEMPLATED
from tfk8s.trainer import flags as trainer_flags  # the trainer's own parser, without TensorFlow

BASE = KUBE / "tfjob.yaml"
TEMPLATE = "trial.yaml.j2"
VALUES = TEMPLATED / "values.yaml"
NFS = "/mnt/nfs"                          # where the shared volume is mounted in every pod
LOCAL_ROOTS = RUNS / "tfjob-local"  # --local: <this>/<sweep> stands for the cluster, as for tfjob_local
KEYS = ("name", "workers", "grid", "flags")
SWEEP_SETS = ("model_dir", "export_dir")  # per trial, never from the values file
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
MAX_NAME = 63                             # a Service per replica is named <job>-worker-<i>: a DNS-1035 label
# The types of a TFJob's conditions that are true now, e.g. "Created Running" or "Created Succeeded".
JSONPATH = '{.status.conditions[?(@.status=="True")].type}'
DONE = ("Succeeded", "Failed")


@dataclass
class Trial:
    id: str          # t01, t02, ...: the trial's directory under the sweep's runs and exports
    job: str         # <sweep>-t01: the TFJob's name
    params: dict     # the grid's values for this trial, as the trainer parsed them
    settings: dict   # every trainer flag's value for this trial (src/main.py's parsed arguments)
    args: list       # the trainer's argument list in the TFJob
    labels: dict     # parameter -> Kubernetes label value
    model_dir: str   # /mnt/nfs/runs/<sweep>/<id>
    export_dir: str  # /mnt/nfs/exports/<sweep>/<id>

    def describe(self):
        return " ".join(f"{k}={label_value(v)}" for k, v in self.params.items())


# ---------------------------------------------------------------- the trainer's view of flags

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


def trainer_parse(flags):
    """The trainer's parsed arguments for `flags`, or its own complaint as a UsageError."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return vars(trainer_flags.parse_args(to_args(flags)))
    except SystemExit:  # argparse's error: src/cli.py printed one line and exited
        message = re.sub(r" \(see \S+ --help\)$", "", captured.getvalue().strip().splitlines()[-1])
        raise UsageError(message.removeprefix("error: ")) from None


def parse_flags(args):
    """['--dataset', 'full', '--no-augment', '--steps=300'] -> {'dataset': 'full', 'augment': False, 'steps': '300'}."""
    flags, i = {}, 0
    while i < len(args):
        name, equals, value = str(args[i]).removeprefix("--").partition("=")
        if not equals and i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
            value, i = args[i + 1], i + 1
        elif not equals:
            value = not name.startswith("no-")
            name = name.removeprefix("no-")
        flags[name] = value
        i += 1
    return flags


def to_args(flags):
    """The inverse of parse_flags: True and False become --flag and --no-flag."""
    args = []
    for name, value in flags.items():
        if value is True or value is False:
            args.append(f"--{name}" if value else f"--no-{name}")
        else:
            args += [f"--{name}", label_value(value)]
    return args


def label_value(value):
    """How a parameter reads in a label, a flag and a table: 0.01, 1e-05, 2, true, full."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the values file

def load_values(path):
    """Read and check the values file's shape (the trainer checks the values themselves later)."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping with the keys {', '.join(KEYS)}")
    for key in values:
        if key not in KEYS:
            raise UsageError(f"{path}: unknown key {key!r}{did_you_mean(key, KEYS)} (the keys are {', '.join(KEYS)})")
    workers = values.get("workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UsageError(f"{path}: workers must be a whole number, 0 or more, not {workers!r}")
    grid, flags = values.get("grid"), values.get("flags") or {}
    if not isinstance(grid, dict) or not grid:
        raise UsageError(f"{path}: grid must map at least one trainer flag to a list of values")
    if not isinstance(flags, dict):
        raise UsageError(f"{path}: flags must map trainer flags to one value each, not {flags!r}")
    for name, options in grid.items():
        if not isinstance(options, list) or not options:
            raise UsageError(f"{path}: grid.{name} must be a non-empty list of values, not {options!r}")
        if not all(isinstance(v, (str, int, float)) for v in options):
            raise UsageError(f"{path}: grid.{name} must list plain values (numbers, words, true/false)")
        if len(set(map(repr, options))) < len(options):
            raise UsageError(f"{path}: grid.{name} lists a value twice: {options}")
    for name, value in flags.items():
        if not isinstance(value, (str, int, float)):
            raise UsageError(f"{path}: flags.{name} must be one plain value, not {value!r}")
        if name in grid:
            raise UsageError(f"{path}: {name} is both in grid and in flags")
    return {"name": values.get("name"), "workers": workers, "grid": grid, "flags": flags}


def did_you_mean(word, candidates):
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_sweep_name(name, workers, trials):
    """A trial's TFJob, its pods and their Services are named after the sweep: DNS-1035 labels."""
    if not name:
        raise UsageError("the sweep has no name: set `name:` in the values file or give --name")
    if not isinstance(name, str) or not DNS_1035.fullmatch(name):
        raise UsageError(f"the sweep's name {name!r} must be lower-case letters, digits and '-', "
                         "starting with a letter (set it with --name or in the values file)")
    longest = f"{name}-t{trials:02d}-worker-{max(workers - 1, 0)}"
    if len(longest) > MAX_NAME:
        raise UsageError(f"the sweep's name {name!r} is too long: a trial's Service {longest} "
                         f"would exceed {MAX_NAME} characters")


def plan(values, name, base_flags, path):
    """The trials: one per combination of the grid, in order, each checked by the trainer."""
    grid, fixed = values["grid"], values["flags"]
    combinations = list(itertools.product(*grid.values()))
    check_sweep_name(name, values["workers"], len(combinations))
    for section, names in (("grid", grid), ("flags", fixed)):
        for flag in set(names) & set(SWEEP_SETS):
            raise UsageError(f"{path}: {section}.{flag}: the sweep sets it for each trial "
                             f"({NFS}/runs/<sweep>/<trial>, {NFS}/exports/<sweep>/<trial>)")
    known = set(trainer_parse({})) - set(SWEEP_SETS)
    for section, names in (("grid", grid), ("flags", fixed)):
        for flag in names:
            if flag not in known:
                raise UsageError(f"{path}: {section}.{flag} is not a flag of the trainer{did_you_mean(flag, known)} "
                                 "(see python src/main.py --help)")
    common = {**base_flags, **fixed}
    try:
        context = f"{BASE.relative_to(REPO)}: the trainer's args"
        trainer_parse(base_flags)
        context = f"{path}: flags"
        trainer_parse(common)
        for flag, options in grid.items():
            for value in options:
                context = f"{path}: grid.{flag}"
                trainer_parse({**common, flag: value})
    except UsageError as err:
        raise UsageError(f"{context}: {err}") from None

    width = max(2, len(str(len(combinations))))
    trials = []
    for number, combination in enumerate(combinations, 1):
        trial_id = f"t{number:0{width}d}"
        flags = {**common, **dict(zip(grid, combination)),
                 "model_dir": f"{NFS}/runs/{name}/{trial_id}", "export_dir": f"{NFS}/exports/{name}/{trial_id}"}
        try:
            settings = trainer_parse(flags)
        except UsageError as err:
            raise UsageError(f"{path}: trial {trial_id} ({dict(zip(grid, combination))}): {err}") from None
        params = {flag: settings[flag] for flag in grid}
        labels = {flag: label_value(value) for flag, value in params.items()}
        for flag, value in labels.items():
            if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
                raise UsageError(f"{path}: grid.{flag}: {value!r} cannot be a Kubernetes label value "
                                 "(at most 63 letters, digits, '-', '_' and '.')")
        trials.append(Trial(trial_id, f"{name}-{trial_id}", params, settings, to_args({**flags, **params}),
                            labels, flags["model_dir"], flags["export_dir"]))
    return trials


# ---------------------------------------------------------------- rendering

def load_base():
    """kube/tfjob.yaml as a plain tree (its YAML alias *trainer expanded: each replica its own copy)."""
    try:
        docs = [d for d in yaml.safe_load_all(BASE.read_text()) if d]
    except OSError as err:
        raise UserError(f"cannot read {BASE.relative_to(REPO)}, the TFJob every trial is built on: "
                        f"{err.strerror}") from None
    tfjobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "TFJob"]
    if len(tfjobs) != 1:
        raise UserError(f"{BASE.relative_to(REPO)} must hold exactly one TFJob, not {len(tfjobs)}")
    return json.loads(json.dumps(tfjobs[0]))


def base_container(base):
    """The `tensorflow` container of the base's first replica: its image and trainer args are the defaults."""
    replica = next(iter(base["spec"]["tfReplicaSpecs"].values()))
    return next(c for c in replica["template"]["spec"]["containers"] if c.get("name") == tfjob_check.CONTAINER)


def merge(base, overlay):
    """`overlay` onto `base` as `kubectl patch` would: mappings by key, lists of named items by name."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{k: merge(base[k], v) if k in base else v for k, v in overlay.items()}}
    named = lambda items: isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)
    if named(base) and named(overlay):
        patches = {item["name"]: item for item in overlay}
        merged = [merge(item, patches.pop(item["name"])) if item["name"] in patches else item for item in base]
        return merged + list(patches.values())
    return overlay


def render(trials, sweep, namespace, image, workers, base):
    """One TFJob per trial, each checked as the API server and the operator would check it."""
    replica_types = list(base["spec"]["tfReplicaSpecs"])
    if workers and "Worker" not in replica_types:
        raise UserError(f"{BASE.relative_to(REPO)} has no Worker replica to give {workers} workers")
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATED), undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True).get_template(TEMPLATE)
    docs = []
    for trial in trials:
        overlay = yaml.safe_load(template.render(trial=trial, sweep=sweep, namespace=namespace, image=image,
                                                 workers=workers, replica_types=replica_types))
        doc = merge(base, overlay)
        specs = doc["spec"]["tfReplicaSpecs"]
        for replica_type in [t for t, spec in specs.items() if spec.get("replicas", 1) == 0]:
            del specs[replica_type]
        found = tfjob_check.problems(doc)
        if found:
            raise UserError(f"trial {trial.job} would be rejected by the cluster: {found[0]}")
        docs.append(doc)
    return docs


def write_manifests(trials, docs, out):
    """One file per trial, <out>/<job>.yaml; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for trial, doc in zip(trials, docs):
        path = out / f"{trial.job}.yaml"
        header = (f"# Trial {trial.id} of sweep {doc['metadata']['labels']['sweep']}: {trial.describe()}\n"
                  "# Rendered by templated/run.sh from kube/tfjob.yaml and templated/trial.yaml.j2:"
                  " edit those and the values file, not this.\n")
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=120))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- running trials, N at a time

def at_most(parallel, trials, start, outcome, interval):
    """Start `parallel` trials, then the next each time one finishes; return {trial id: outcome}.

    `start(trial)` launches a trial; `outcome(trial)` is None while it runs,
    then a word such as "Succeeded" or "Failed".
    """
    waiting, running, outcomes, began = list(trials), [], {}, {}
    while waiting or running:
        while waiting and len(running) < parallel:
            trial = waiting.pop(0)
            start(trial)
            running.append(trial)
            began[trial.id] = time.time()
        finished = [(trial, result) for trial in running if (result := outcome(trial))]
        for trial, result in finished:
            running.remove(trial)
            outcomes[trial.id] = result
            print(f"{trial.job}: {result} after {time.time() - began[trial.id]:.0f}s ({trial.describe()}); "
                  f"{len(outcomes)} of {len(trials)} done", flush=True)
        if not finished and (waiting or running):
            time.sleep(interval)
    return outcomes


def report(outcomes, trials, where):
    failed = [t.job for t in trials if outcomes.get(t.id) != "Succeeded"]
    if failed:
        raise UserError(f"{len(failed)} of {len(trials)} trials did not succeed: {', '.join(failed)} ({where})")


def kubectl(*args, check=True):
    exe = shutil.which("kubectl")
    if not exe:
        raise UserError("kubectl is not on PATH: install it and point it at your cluster, or preview with "
                        "--dry-run --out DIR, or run the sweep here with --local")
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if check and result.returncode:
        last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise UserError(f"kubectl {' '.join(map(str, args[:2]))} failed: {last}")
    return result


def tfjob_outcome(trial, namespace):
    """'Succeeded' or 'Failed' once the TFJob's condition says so; 'Deleted' if it is gone; else None."""
    result = kubectl("get", "tfjob", trial.job, "-n", namespace, "-o", f"jsonpath={JSONPATH}", check=False)
    if result.returncode:
        return "Deleted" if "NotFound" in result.stderr else None  # anything else: try again next poll
    conditions = result.stdout.split()
    return next((c for c in DONE if c in conditions), None)


def submit(sweep, trials, paths, namespace, parallel, interval):
    """kubectl apply every trial, or `parallel` at a time, submitting the next as one finishes."""
    by_id = dict(zip((t.id for t in trials), paths))

    def start(trial):
        print(kubectl("apply", "-f", by_id[trial.id]).stdout.strip(), flush=True)

    watch = f"kubectl get tfjobs -n {namespace} -l sweep={sweep} -L {','.join(['trial', *trials[0].params])}"
    if not parallel or parallel >= len(trials):
        for trial in trials:
            start(trial)
        print(f"submitted {len(trials)} trials; watch them with: {watch}")
        return
    print(f"submitting {len(trials)} trials, {parallel} at a time (polling every {interval:g}s; "
          f"Ctrl-C stops submitting, the submitted ones go on); watch them with: {watch}", flush=True)
    outcomes = at_most(parallel, trials, start, lambda trial: tfjob_outcome(trial, namespace), interval)
    report(outcomes, trials, f"kubectl describe tfjob -n {namespace} NAME")


def run_local(trials, paths, root, parallel, trainer_args):
    """Run every trial with src/tfjob_local.py (one process per replica), `parallel` trials at a time.

    All trials share `root`, so that its volume holds them side by side as the
    NFS claim does on the cluster; each trial's output goes to <root>/logs/<job>.log.
    """
    processes, logs = {}, root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def start(trial):
        log = logs / f"{trial.job}.log"
        command = [sys.executable, str(SRC / "tfjob_local.py"), str(Path(paths[trial.id]).resolve()),
                   "--root", str(Path(root).resolve())]
        if trainer_args:
            command += ["--", *trainer_args]
        with open(log, "w") as out:
            processes[trial.id] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        print(f"{trial.job}: started ({trial.describe()}), log {log}", flush=True)

    def outcome(trial):
        code = processes[trial.id].poll()
        return None if code is None else "Succeeded" if code == 0 else f"Failed (exit code {code})"

    try:
        outcomes = at_most(parallel, trials, start, outcome, interval=1.0)
    finally:
        for process in processes.values():  # interrupted: tfjob_local stops its replicas on SIGTERM
            if process.poll() is None:
                process.terminate()
                process.wait()
    report(outcomes, trials, f"their logs are {logs}/<job>.log")


def write_hparams_config(trials, logdir):
    """The experiment for TensorBoard's HParams view: the grid's domains and the metrics to compare."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    hparams = [hp.HParam(flag, hp.Discrete(sorted({t.params[flag] for t in trials}))) for flag in trials[0].params]
    metrics = [hp.Metric("accuracy", group="eval", display_name="validation accuracy"),
               hp.Metric("accuracy", group="test", display_name="test accuracy"),
               hp.Metric("loss", group="eval", display_name="validation loss")]
    with quiet_stderr(), tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def volume_dir(root, container):
    """The directory standing for the NFS claim under a tfjob_local --root: <root>/<volume name>."""
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == NFS), None)
    if mount is None:
        raise UserError(f"{BASE.relative_to(REPO)}: the tensorflow container mounts nothing at {NFS}")
    return Path(root) / mount["name"] / mount.get("subPath", "")


# ---------------------------------------------------------------- command line

HELP = f"""
modes (the default submits every trial to the cluster with kubectl apply):
  --dry-run --out DIR  write one TFJob per trial, DIR/<sweep>-tNN.yaml, and print their paths
  --local              run every trial here with src/tfjob_local.py (one process per replica), 1 at a
                       time unless --parallel; trainer flags after -- are appended to every trial's:
                         templated/run.sh --local -- --dataset mini --steps 300
                       --root (default runs/tfjob-local/<sweep>) stands for the cluster: its nfs/ is the
                       volume ({NFS}), logs/<job>.log the trials' output, manifests/ their TFJobs
  --delete             delete the sweep's TFJobs (kubectl delete -l sweep=<name>); their files stay
  --results            rank the trials by final test accuracy, read from their TensorBoard event files
                       under <root>/nfs/runs/<sweep>/, and name the best one's export; write the table to
                       <out>/<sweep>-results.csv and a plot of accuracy by learning rate to
                       <out>/<sweep>-results.png (--out defaults to --root)

files:
  {VALUES.relative_to(REPO)}  name, workers, grid (flag: [values], one trial per combination) and
                         flags (flag: value, for every trial); flags are src/main.py's, without dashes
  {BASE.relative_to(REPO)}        every trial is this TFJob with its own name (<sweep>-tNN), labels (sweep,
                         trial, one per grid flag), image, Worker count and trainer flags, training into
                         {NFS}/runs/<sweep>/tNN and exporting to {NFS}/exports/<sweep>/tNN

results of a cluster sweep: copy its event files and export versions (not the weights) out of the
TensorBoard pod, which mounts the volume, then read them as a local sweep's:
  mkdir -p runs/cluster/nfs
  kubectl exec -n NAMESPACE deploy/tensorboard -- tar -C {NFS} -cf - --exclude='*.data-*' \\
      --exclude='*.index' runs/SWEEP exports/SWEEP | tar -C runs/cluster/nfs -xf -
  templated/run.sh --results --root runs/cluster     (runs/cluster/nfs/... is {NFS}/... on the cluster)
"""


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = ArgumentParser(prog="templated/run.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="A hyperparameter sweep: one TFJob per combination of the values file's grid.",
                       epilog=HELP, usage="%(prog)s [options] [--dry-run --out DIR | --local | --delete | "
                                          "--results] [-- TRAINER_FLAGS...]")
    p.add_argument("--values", metavar="FILE", help=f"the sweep's values file (default: {VALUES.relative_to(REPO)})")
    p.add_argument("--name", metavar="SWEEP", help="the sweep's name (default: the values file's name)")
    p.add_argument("--namespace", help="the trials' namespace (default: kube/tfjob.yaml's, else 'default')")
    p.add_argument("--image", help="the trainer image, with its tag (default: kube/tfjob.yaml's)")
    p.add_argument("--parallel", type=int, metavar="N",
                   help="at most N trials at once; each of the rest starts when one finishes (default: on the "
                        "cluster all at once, with --local 1)")
    p.add_argument("--poll", type=float, default=15.0, metavar="SECONDS",
                   help="with --parallel on the cluster, how often to ask for the trials' status "
                        "(default: %(default)g)")
    p.add_argument("--root", metavar="DIR", help="with --local and --results: the local stand-in for the cluster "
                                                  "(default: runs/tfjob-local/<sweep>)")
    p.add_argument("--out", metavar="DIR", help="where --dry-run writes the YAML and --results the CSV and PNG")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="write the trials' YAML to --out, submit nothing")
    mode.add_argument("--local", action="store_true", help="run the trials on this machine")
    mode.add_argument("--delete", action="store_true", help="delete the sweep's TFJobs from the cluster")
    mode.add_argument("--results", action="store_true", help="rank the trials and name the export to serve")
    args = p.parse_args(argv)
    args.trainer_args = trainer_args
    if args.dry_run and not args.out:
        p.error("--dry-run needs --out DIR")
    if trainer_args and not args.local:
        p.error("trainer flags after -- go with --local only; for the cluster, put them in the values file")
    if args.parallel is not None and args.parallel < 1:
        p.error(f"--parallel must be 1 or more, not {args.parallel}")
    if args.poll <= 0:
        p.error(f"--poll must be positive, not {args.poll:g}")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    values_path = args.values or os.path.relpath(VALUES)
    values = load_values(values_path)
    name = args.name or values["name"]
    base = load_base()
    namespace = args.namespace or base["metadata"].get("namespace", "default")
    if args.delete:
        check_sweep_name(name, 0, 1)
        deleted = kubectl("delete", "tfjobs", "-n", namespace, "-l", f"sweep={name}").stdout.strip()
        print(deleted or f"no TFJobs labelled sweep={name} in namespace {namespace}")
        return

    container = base_container(base)
    trials = plan(values, name, parse_flags(container.get("args", [])), values_path)
    root = Path(args.root or os.path.relpath(LOCAL_ROOTS / name))
    if args.results:
        from tfk8s.sweep import results  # (TensorBoard's reader: TensorFlow is loaded, quietly, by plan())
        results.main(trials, name, volume_dir(root, container), NFS, Path(args.out or root))
        return

    docs = render(trials, name, namespace, args.image or container["image"], values["workers"], base)
    if args.dry_run:
        for path in write_manifests(trials, docs, args.out):
            print(path)
    elif args.local:
        paths = dict(zip((t.id for t in trials), write_manifests(trials, docs, root / "manifests")))
        write_hparams_config(trials, volume_dir(root, container) / "runs" / name)
        run_local(trials, paths, root, args.parallel or 1, args.trainer_args)
        print(f"all {len(trials)} trials succeeded; rank them with: templated/run.sh --results"
              + (f" --values {args.values}" if args.values else "")
              + (f" --name {name}" if args.name else "") + (f" --root {args.root}" if args.root else ""))
    else:
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as out:
            submit(name, trials, write_manifests(trials, docs, out), namespace, args.parallel, args.poll)
