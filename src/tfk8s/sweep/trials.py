"""A sweep's trials: one per combination of the values file's grid, each a TFJob built on kube/tfjob.yaml.

A trial's TFJob is kube/tfjob.yaml with the per-trial parts of
templated/trial.yaml.j2 merged onto it (name, labels, image, Worker count,
the trainer's flags): kube/tfjob.yaml stays the one source of truth for what a
training pod is. Each run of a sweep has its own id, and each trial trains
into /mnt/nfs/runs/<sweep>/<run>/<trial> and exports to
/mnt/nfs/exports/<sweep>/<run>/<trial>: a second run starts from scratch
instead of resuming the first one's checkpoints, and nothing of the first is
overwritten. The trainer's own flag parser (src/tfk8s/trainer/flags.py)
judges every flag of the values file.
"""
import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import yaml

from tfk8s.cli import UsageError, UserError
from tfk8s.kube import tfjob_check
from tfk8s.paths import KUBE, REPO, TEMPLATED
from tfk8s.sweep import values as checks
from tfk8s.trainer import flags as trainer_flags  # the trainer's own parser, without TensorFlow

BASE = KUBE / "tfjob.yaml"
TEMPLATE = "trial.yaml.j2"
NFS = "/mnt/nfs"                          # where the shared volume is mounted in every pod
SWEEP_SETS = ("model_dir", "export_dir", "metrics_dir")  # per trial, never from the values file
# A run's id: when it started, UTC, and a count when another run here started in the same second.
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}(-[0-9]{1,4})?")
# The first two lines of every file this tool writes: how it knows its own files in an output directory.
MARK = "# Rendered by templated/run.sh"


@dataclass
class Trial:
    id: str          # t01, t02, ...: the trial's directory under the run's runs and exports
    job: str         # <sweep>-t01: the TFJob's name
    params: dict     # the grid's values for this trial, as the trainer parsed them
    settings: dict   # every trainer flag's value for this trial (src/main.py's parsed arguments)
    args: list       # the trainer's argument list in the TFJob
    labels: dict     # parameter -> Kubernetes label value
    model_dir: str   # /mnt/nfs/runs/<sweep>/<run>/<id>
    export_dir: str  # /mnt/nfs/exports/<sweep>/<run>/<id>

    def describe(self):
        return " ".join(f"{k}={label_value(v)}" for k, v in self.params.items())


def new_run_id():
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def check_run_id(run_id):
    if not RUN_ID.fullmatch(run_id):
        raise UsageError(f"--run_id {run_id!r} is not a run's id: YYYYMMDD-HHMMSS (or YYYYMMDD-HHMMSS-N), "
                         "as the sweep names its runs")
    return run_id


def run_order(run_id):
    """A key that sorts run ids as their runs started (20250102-030405 < 20250102-030405-2 < ...-10)."""
    parts = run_id.split("-")
    return parts[0] + parts[1], int(parts[2]) if len(parts) > 2 else 1


def claim_run(runs_dir, run_id=None):
    """A run id of its own for a run here, claimed by creating <runs_dir>/<id> (mkdir is atomic: of two sweeps
    started in the same second, one gets <time>, the other <time>-2); `run_id` given: that one, or one line."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {runs_dir}: {err.strerror}") from None
    base = run_id or new_run_id()
    for count in range(1, 10000 if run_id is None else 2):
        candidate = base if count == 1 else f"{base}-{count}"
        try:
            (runs_dir / candidate).mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"cannot create {runs_dir / candidate}: {err.strerror}") from None
    raise UserError(f"run {base} already exists in {runs_dir}: give another --run_id, or none")


# ---------------------------------------------------------------- the trainer's view of flags

def trainer_parse(flags):
    """Every trainer flag's value for `flags` ({name: value}), or the trainer's complaint as a UsageError."""
    return vars(trainer_flags.parse(to_args(flags)))


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


# ---------------------------------------------------------------- planning

def check_flags(values, base_flags, path):
    """Every flag of the values file is the trainer's, and the trainer accepts each value: the fixed flags."""
    grid, fixed = values["grid"], values["flags"]
    for section, names in (("grid", grid), ("flags", fixed)):
        for flag in sorted(set(names) & set(SWEEP_SETS)):
            raise UsageError(f"{path}: {section}.{flag}: the sweep sets it for each trial "
                             f"({NFS}/runs/<sweep>/<run>/<trial>, {NFS}/exports/<sweep>/<run>/<trial>)")
    known = set(trainer_parse({})) - set(SWEEP_SETS)
    for section, names in (("grid", grid), ("flags", fixed)):
        for flag in names:
            if flag not in known:
                raise UsageError(f"{path}: {section}.{flag} is not a flag of the trainer"
                                 f"{checks.did_you_mean(flag, known)} (see python src/main.py --help)")
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
    return common


def plan(values, name, base_flags, path, run_id, max_trials):
    """The trials: one per combination of the grid, in order, each checked by the trainer."""
    grid = values["grid"]
    count = checks.check_trial_count(grid, max_trials, path)
    checks.check_sweep_name(name, f"-t{count:02d}-worker-{max(values['workers'] - 1, 0)}")
    common = check_flags(values, base_flags, path)
    width = max(2, len(str(count)))
    trials = []
    for number, combination in enumerate(itertools.product(*grid.values()), 1):
        trial_id = f"t{number:0{width}d}"
        flags = {**common, **dict(zip(grid, combination)),
                 "model_dir": f"{NFS}/runs/{name}/{run_id}/{trial_id}",
                 "export_dir": f"{NFS}/exports/{name}/{run_id}/{trial_id}"}
        try:
            settings = trainer_parse(flags)
        except UsageError as err:
            raise UsageError(f"{path}: trial {trial_id} ({dict(zip(grid, combination))}): {err}") from None
        params = {flag: settings[flag] for flag in grid}
        labels = {flag: label_value(value) for flag, value in params.items()}
        for flag, value in labels.items():
            checks.check_label(flag, value, f"{path}: grid.{flag}")
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


TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATED), undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True)


def tfjob(base, labels, image, workers, args, name=None, namespace=None):
    """One trial's TFJob: templated/trial.yaml.j2 rendered (every value JSON-escaped) and merged onto `base`.

    Without a name and namespace it is a template for a controller (Katib) that names each trial itself.
    """
    replica_types = list(base["spec"]["tfReplicaSpecs"])
    if workers and "Worker" not in replica_types:
        raise UserError(f"{BASE.relative_to(REPO)} has no Worker replica to give {workers} workers")
    text = TEMPLATES.get_template(TEMPLATE).render(name=name, namespace=namespace, labels=labels, image=image,
                                                   workers=workers, replica_types=replica_types, args=args)
    overlay = yaml.safe_load(text)
    doc = merge(base, overlay)
    if name is None:
        doc["metadata"].pop("name", None)
        doc["metadata"].pop("namespace", None)
    specs = doc["spec"]["tfReplicaSpecs"]
    for replica_type in [t for t, spec in specs.items() if spec.get("replicas", 1) == 0]:
        del specs[replica_type]
    return doc


def render(trials, sweep, run_id, namespace, image, workers, base):
    """One TFJob per trial, each checked as the API server and the operator would check it."""
    docs = []
    for trial in trials:
        labels = {"sweep": sweep, "run": run_id, "trial": trial.id, **trial.labels}
        doc = tfjob(base, labels, image, workers, trial.args, trial.job, namespace)
        found = tfjob_check.problems(doc)
        if found:
            raise UserError(f"trial {trial.job} would be rejected by the cluster: {found[0]}")
        docs.append(doc)
    return docs


# ---------------------------------------------------------------- files

def written_here(path):
    """Whether `path` is a file this tool wrote (its second line is MARK)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).split(b"\n")
    except OSError:
        return False
    return path.is_file() and len(head) > 1 and head[1].startswith(MARK.encode())


def fresh_output_dir(out, option="--output_dir"):
    """Make `out` an empty directory to write into: the files this tool wrote there before go; others stay and
    make it refuse. Every problem is one line, before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file, not a directory: give a directory to write the trials into")
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = sorted(out.iterdir())
    except OSError as err:
        raise UserError(f"cannot create {option} {out}: {err.strerror}") from None
    foreign = [p.name for p in entries if not written_here(p)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"{option} {out} holds files this sweep did not write ({shown}): "
                        "give an empty or new directory")
    try:
        for stale in entries:
            stale.unlink()
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write into {option} {out}: {err.strerror}") from None
    return out


def write_yaml(path, header, doc):
    """One rendered document, `header` (a line) and MARK first."""
    text = f"# {header}\n{MARK} from kube/tfjob.yaml and templated/: edit those and the values file, not this.\n"
    try:
        path.write_text(text + yaml.safe_dump(doc, sort_keys=False, width=120))
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    return path


def write_manifests(trials, docs, out, option="--output_dir"):
    """One file per trial, <out>/<job>.yaml, in a directory holding nothing else; returns their paths."""
    out = fresh_output_dir(out, option)
    return [write_yaml(out / f"{trial.job}.yaml", f"Trial {trial.id} of sweep {doc['metadata']['labels']['sweep']}"
                       f" (run {doc['metadata']['labels']['run']}): {trial.describe()}", doc)
            for trial, doc in zip(trials, docs)]


def volume_dir(root, container):
    """The directory standing for the NFS claim under a tfjob_local --root: <root>/<volume name>."""
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == NFS), None)
    if mount is None:
        raise UserError(f"{BASE.relative_to(REPO)}: the tensorflow container mounts nothing at {NFS}")
    return Path(root) / mount["name"] / mount.get("subPath", "")
