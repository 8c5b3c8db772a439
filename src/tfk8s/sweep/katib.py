"""The sweep of a values file as one Katib Experiment (kubeflow.org/v1beta1, Katib v0.19).

The same values file as the templated sweep: the grid becomes the Experiment's
parameters (typed as Katib's suggestion services take them), the fixed flags
stay fixed, and the trial template is the templated sweep's own TFJob (kube/tfjob.yaml
with templated/trial.yaml.j2 merged onto it), with ${trialParameters.<flag>}
where a trial's values go and ${trialSpec.Name} in its model and export
directories, so two trials never share a directory. The `katib:` section of
the values file picks the algorithm, early stopping and the trial budget.

How the grid becomes parameters (Katib's webhook refuses a `list` for int and
double; its grid, Optuna's GridSampler in v0.19, enumerates an int as
range(min, max + 1, step), a double only with a step, a list as given):
whole numbers evenly spaced are an `int` with min, max and step (the same
values); other numbers are `discrete` (a list); words and switches are
`categorical`. A flag under `katib.ranges` is searched as a range instead
(`double` or `int`, for random and bayesianoptimization; grid needs a step).
"""
import re
from dataclasses import dataclass

import yaml

from tfk8s.cli import UsageError
from tfk8s.kube import katib_check
from tfk8s.sweep import trials as planning
from tfk8s.sweep import values as checks
from tfk8s.sweep.trials import NFS, TEMPLATES

TEMPLATE = "experiment.yaml.j2"
OBJECTIVE, TEST_METRIC = "eval/accuracy", "test/accuracy"  # the trainer's eval/ and test/ runs, tag `accuracy`
METRICS_DIR = "/var/log/katib/metrics"  # the collector's own directory in the trainer's container (an emptyDir)
METRICS_FILE = f"{METRICS_DIR}/metrics.json"
ALGORITHMS = ("grid", "random", "bayesianoptimization")
KEYS = ("algorithm", "algorithmSettings", "earlyStopping", "earlyStoppingSettings", "parallelTrialCount",
        "maxTrialCount", "maxFailedTrialCount", "ranges")
RANGE_KEYS = ("min", "max", "step", "distribution")
TRIAL_NAME = "trialName"                 # the trialParameter that stands for ${trialSpec.Name}
EXPERIMENT_LABEL = "katib-experiment"    # on every trial's TFJob
MAX_NAME = 40                            # Katib's webhook: an Experiment's name is at most 40 characters
# Katib's pod webhook joins the trainer's command and args with spaces into `sh -c`: nothing the shell reads.
SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:=,+@%-]+")
EXAMPLE_TRIAL = "abcdefgh"               # Katib names trials <experiment>-<8 characters>


@dataclass
class Experiment:
    doc: dict            # the Experiment, as applied
    candidates: dict     # flag -> the values a trial may get, as strings (a range: its ends)
    algorithm: str
    path: str            # the values file, for messages


def katib_settings(values, path):
    """The `katib:` section, its shape checked (Katib's own rules run on the rendered Experiment)."""
    katib = values["katib"]
    for key in katib:
        if key not in KEYS:
            raise UsageError(f"{path}: katib: unknown key {key!r}{checks.did_you_mean(key, KEYS)} "
                             f"(the keys are {', '.join(KEYS)})")
    algorithm = katib.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise UsageError(f"{path}: katib.algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
                         f"{checks.did_you_mean(algorithm, ALGORITHMS)}")
    for key in ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount"):
        value = katib.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{path}: katib.{key} must be a whole number, not {value!r}")
    if not isinstance(katib.get("earlyStopping", False), bool):
        raise UsageError(f"{path}: katib.earlyStopping must be true or false, not {katib['earlyStopping']!r}")
    for key in ("algorithmSettings", "earlyStoppingSettings", "ranges"):
        section = katib.get(key) or {}
        if not isinstance(section, dict):
            raise UsageError(f"{path}: katib.{key} must be a mapping, not {section!r}")
        for name, value in section.items():
            if key != "ranges" and not isinstance(value, (str, int, float)):
                raise UsageError(f"{path}: katib.{key}.{name} must be one plain value, not {value!r}")
    return katib, algorithm


def arithmetic(numbers):
    """(min, max, step) if the whole numbers are evenly spaced (as Katib's int grid enumerates them), else None."""
    ordered = sorted(numbers)
    steps = {b - a for a, b in zip(ordered, ordered[1:])}
    if len(steps) > 1 or 0 in steps:
        return None
    return ordered[0], ordered[-1], (steps.pop() if steps else 1)


def parameter(flag, options, parsed, spec, path):
    """One Katib parameter for a grid flag, and the values a trial may get (as strings)."""
    kind = type(parsed[0])
    if spec is not None:
        if not isinstance(spec, dict) or set(spec) - set(RANGE_KEYS) or not {"min", "max"} <= set(spec):
            raise UsageError(f"{path}: katib.ranges.{flag} must be a mapping with min and max (and optionally "
                             f"step, distribution), not {spec!r}")
        if kind not in (int, float) or kind is bool:
            raise UsageError(f"{path}: katib.ranges.{flag}: {flag} takes {kind.__name__} values, not a range")
        for key in ("min", "max", "step"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or (kind is int and not isinstance(value, int))):
                raise UsageError(f"{path}: katib.ranges.{flag}.{key} must be a {kind.__name__} number, not {value!r}")
        if not spec["min"] < spec["max"]:
            raise UsageError(f"{path}: katib.ranges.{flag}: min {spec['min']} must be below max {spec['max']}")
        space = {k: planning.label_value(spec[k]) for k in ("min", "max", "step") if spec.get(k) is not None}
        if spec.get("distribution") is not None:
            space["distribution"] = str(spec["distribution"])
        return ({"name": flag, "type": "double" if kind is float else "int", "space": space},
                [space["min"], space["max"]])
    if kind is bool:
        values = [f"--{flag}" if v else f"--no-{flag}" for v in parsed]
        return {"name": flag, "type": "categorical", "space": {"list": values}}, values
    values = [planning.label_value(v) for v in parsed]
    if kind is int and (found := arithmetic(parsed)):
        low, high, step = found
        return ({"name": flag, "type": "int", "space": {"min": str(low), "max": str(high), "step": str(step)}},
                values)
    return {"name": flag, "type": "discrete" if kind in (int, float) else "categorical",
            "space": {"list": values}}, values


def trial_args(common, grid, parsed, name):
    """The trainer's args in the trial template: fixed flags, placeholders for the grid, per-trial directories."""
    flags = dict(common)
    for flag in grid:
        flags[flag] = katib_check.placeholder(flag)
    trial = katib_check.placeholder(TRIAL_NAME)
    flags.update({"model_dir": f"{NFS}/runs/katib/{name}/{trial}", "export_dir": f"{NFS}/exports/katib/{name}/{trial}",
                  "metrics_dir": METRICS_DIR})
    args = []
    for flag, value in flags.items():
        if flag in grid and isinstance(parsed[flag][0], bool):
            args.append(value)  # --flag or --no-flag, as a whole
        else:
            args += planning.to_args({flag: value})
    return args


def render(values, name, namespace, image, base, path, max_trials):
    """The Experiment for the values file, checked by Katib's rules (offline) before anyone applies it."""
    katib, algorithm = katib_settings(values, path)
    grid = values["grid"]
    count = checks.check_trial_count(grid, max_trials, path)
    checks.check_sweep_name(name, f"-{EXAMPLE_TRIAL}-worker-{max(values['workers'] - 1, 0)}")
    if len(name) > MAX_NAME:
        raise UsageError(f"the sweep's name {name!r} is too long for a Katib Experiment (at most {MAX_NAME} "
                         "characters)")
    common = planning.check_flags(values, planning.parse_flags(planning.base_container(base).get("args", [])), path)
    parsed = {flag: [planning.trainer_parse({**common, flag: v})[flag] for v in options]
              for flag, options in grid.items()}
    ranges = katib.get("ranges") or {}
    for flag in ranges:
        if flag not in grid:
            raise UsageError(f"{path}: katib.ranges.{flag}: only a flag of the grid can be searched as a range")
    parameters, candidates = [], {}
    for flag, options in grid.items():
        found, candidates[flag] = parameter(flag, options, parsed[flag], ranges.get(flag), path)
        parameters.append(found)
    for flag, options in candidates.items():
        if ranges.get(flag) is not None:
            for end in options:
                try:
                    planning.trainer_parse({**common, flag: end})
                except UsageError as err:
                    raise UsageError(f"{path}: katib.ranges.{flag}: {err}") from None
    args = trial_args(common, grid, parsed, name)
    for arg in args + [v for options in candidates.values() for v in options]:
        if not SHELL_SAFE.fullmatch(re.sub(r"\$\{trialParameters\.[A-Za-z_]+\}", "x", arg)):
            raise UsageError(f"{path}: {arg!r} cannot go to a Katib trial: Katib runs the trainer's command "
                             "through a shell, so a flag's value may hold only letters, digits and ._/:=,+@%-")

    early = katib.get("earlyStopping", False)
    # Katib v0.19's TensorFlowEvent collector reads the event files once, after the trainer ends; its File
    # collector follows metrics.json as it grows, and only it takes the early-stopping rules.
    collector = ({"kind": "File", "path_kind": "File", "path": METRICS_FILE, "format": "JSON"} if early else
                 {"kind": "TensorFlowEvent", "path_kind": "Directory", "path": METRICS_DIR, "format": None})
    trial_parameters = [{"name": p["name"], "reference": p["name"], "description": f"the trainer's --{p['name']}"}
                        for p in parameters]
    trial_parameters.append({"name": TRIAL_NAME, "reference": "${trialSpec.Name}",
                             "description": "the trial's name: its model and export directories"})
    most = katib.get("maxTrialCount", count)  # default: the grid's size (and at most 2 at once, 3 failures)
    stringify = lambda section: {str(k): planning.label_value(v) for k, v in (katib.get(section) or {}).items()}
    text = TEMPLATES.get_template(TEMPLATE).render(
        name=name, namespace=namespace, objective=OBJECTIVE, test_metric=TEST_METRIC, algorithm=algorithm,
        algorithm_settings=stringify("algorithmSettings"), early_stopping=early,
        early_stopping_settings=stringify("earlyStoppingSettings"),
        parallel=katib.get("parallelTrialCount", min(2, most)), max_trials=most,
        max_failed=katib.get("maxFailedTrialCount", min(3, most)), collector=collector, parameters=parameters,
        trial_parameters=trial_parameters)
    doc = yaml.safe_load(text)
    labels = {**base["metadata"].get("labels", {}), EXPERIMENT_LABEL: name}
    doc["spec"]["trialTemplate"]["trialSpec"] = planning.tfjob(base, labels, image, values["workers"], args)
    if doc["spec"]["maxTrialCount"] > max_trials:
        raise UsageError(f"{path}: katib.maxTrialCount {doc['spec']['maxTrialCount']} is more than --max_trials "
                         f"{max_trials}: lower it, or raise --max_trials if you mean it")
    experiment = Experiment(doc, candidates, algorithm, path)
    problems = katib_check.problems(doc) or katib_check.trial_problems(doc, katib_check.example_assignments(doc))
    if problems:
        raise UsageError(f"{path}: Katib would refuse this Experiment: {problems[0]}")
    return experiment
