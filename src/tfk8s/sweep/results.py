"""A sweep's results: every trial's accuracy, the ranking, the best trial and the export to serve.

The trainer writes the validation accuracy to <model_dir>/eval and the final
test accuracy to <model_dir>/test (tag `accuracy`). They are read either from
the event files themselves (TensorBoard's own reader, EventAccumulator: a
local sweep, or a copy) or from a running TensorBoard's HTTP API (a cluster
sweep: `make tensorboard` forwards localhost:6006 to the TensorBoard over
/mnt/nfs/runs, so no one needs `kubectl exec`).

The best trial is chosen on validation accuracy alone (its last evaluation,
that of the exported model). The test accuracy is printed beside it, never used
to choose: a choice made on the test set would leak it into the model and
overstate the winner's accuracy. `report` prints the ranking, names the export
to serve, and writes <sweep>-results.csv and a plot, <sweep>-results.png.
"""
import csv
import itertools
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tfk8s import rest, versions
from tfk8s.cli import UserError

FINISHED, UNFINISHED, MISSING = "finished", "unfinished", "missing"
EARLY_STOPPED, FAILED = "early-stopped", "failed"  # a Katib trial's ends beside finishing
RANKED = (FINISHED, EARLY_STOPPED)  # the trials with a final validation accuracy
TAG = "accuracy"


@dataclass
class Result:
    id: str                       # the trial: t01, ... (or a Katib trial's name)
    job: str                      # its TFJob
    params: dict                  # grid flag -> value, as the trainer took it
    model_dir: str                # where it trained (as the pods see it)
    export_dir: str               # where it exports (as the pods see it): TensorFlow Serving's base path
    status: str = MISSING
    step: int = None              # the last evaluated step
    validation: float = None      # the last validation accuracy: what the choice is made on
    test: float = None            # the final test accuracy: reported, not used to choose
    export: Path = None           # its newest export version, when the volume is on this machine
    rank: int = None              # 1 for the best finished trial; None for the others
    notes: dict = field(default_factory=dict)

    def describe(self):
        return " ".join(f"{k}={text(v)}" for k, v in self.params.items())


def text(value):
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- where the values come from

class EventFiles:
    """Run directories on this machine, read with TensorBoard's EventAccumulator."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)

    def __str__(self):
        return str(self.logdir)

    def runs(self):
        return sorted(str(p.parent.relative_to(self.logdir)) for p in self.logdir.rglob("events.out.tfevents.*"))

    def events(self, run, tag=TAG):
        """[(step, wall_time, value)] of `tag` in the event files of `run` (a directory under the logdir)."""
        run_dir = self.logdir / run
        if not run_dir.is_dir():
            return []
        from tfk8s.sweep.local import quiet_stderr
        with quiet_stderr():  # TensorBoard's reader loads TensorFlow, which talks about GPUs on fd 2
            from tensorboard.backend.event_processing import event_accumulator
            from tensorboard.util import tensor_util
            reader = event_accumulator.EventAccumulator(
                str(run_dir), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
            reader.Reload()
        tags = reader.Tags()
        if tag in tags[event_accumulator.TENSORS]:  # TF2's tf.summary.scalar writes tensors
            return [(e.step, e.wall_time, float(tensor_util.make_ndarray(e.tensor_proto).item()))
                    for e in reader.Tensors(tag)]
        if tag in tags[event_accumulator.SCALARS]:  # TF1-style writers
            return [(e.step, e.wall_time, float(e.value)) for e in reader.Scalars(tag)]
        return []


class TensorBoardAPI:
    """The same values from a running TensorBoard's HTTP API (its scalars plugin), e.g. over a port-forward."""

    def __init__(self, url, timeout=30):
        self.url, self.timeout = url.rstrip("/"), timeout
        self._tags = None

    def __str__(self):
        return f"TensorBoard at {self.url}"

    def get(self, path, **query):
        address = f"{self.url}/data/plugin/scalars/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            status, answer = rest.call(address, timeout=self.timeout)
        except rest.UnreachableError as err:
            raise UserError(f"cannot reach TensorBoard at {self.url} ({err}): start it first, on the cluster "
                            "with `make tensorboard` (it forwards localhost:6006)") from None
        except (rest.NotHttpError, rest.NotJsonError):
            raise UserError(f"{self.url} answered something other than TensorBoard's JSON") from None
        if status == 404 and path == "scalars":
            return []  # no such run or tag (yet)
        if status != 200:
            raise UserError(f"TensorBoard at {self.url} answered {status} for {path}: is it TensorBoard?")
        return answer

    def runs(self):
        if self._tags is None:
            self._tags = self.get("tags")
        return sorted(self._tags)

    def events(self, run, tag=TAG):
        self.runs()  # which runs hold which tags: one request, then only the scalars that exist
        if tag not in self._tags.get(run, {}):
            return []
        return [(int(step), float(wall_time), float(value)) for wall_time, step, value in
                self.get("scalars", run=run, tag=tag)]


def last(events):
    """(step, value) of the newest event: a restarted trial re-evaluates a step, the latest one counts."""
    if not events:
        return None, None
    step, _, value = max(events)
    return step, value


# ---------------------------------------------------------------- ranking

def collect(trials, source, runs_root, volume=None, nfs=None):
    """One Result per sweep trial; `runs_root` is the volume's runs directory as the pods see it.

    With `volume` (the local directory holding what the pods see under `nfs`), the newest export
    version of each trial is looked up there too.
    """
    found = []
    for trial in trials:
        run = str(Path(trial.model_dir).relative_to(runs_root))
        result = Result(trial.id, trial.job, trial.params, trial.model_dir, trial.export_dir)
        result.step, result.validation = last(source.events(f"{run}/eval"))
        _, result.test = last(source.events(f"{run}/test"))
        if volume is not None:
            result.export = versions.newest(Path(volume) / Path(trial.export_dir).relative_to(nfs))
        if result.test is not None:
            result.status = FINISHED
        elif result.validation is not None or any(r == run or r.startswith(run + "/") for r in source.runs()):
            result.status = UNFINISHED
        found.append(result)
    return rank(found)


def rank(results):
    """Finished (or early-stopped) trials by validation accuracy (ties: in trial order), then unfinished ones,
    failed ones, missing ones. The test accuracy plays no part: the choice is made on the validation set."""
    order = {FINISHED: 0, EARLY_STOPPED: 0, UNFINISHED: 1, FAILED: 2, MISSING: 3}
    results = sorted(results, key=lambda r: (order[r.status] if r.validation is not None or r.status not in RANKED
                                             else 1, -(r.validation if r.validation is not None else -1)))
    number = 0
    for result in results:
        ranked = result.status in RANKED and result.validation is not None
        number += ranked
        result.rank = number if ranked else None
    return results


def percent(value):
    return "" if value is None else f"{value:.2%}"


def table(results, local=True):
    """The ranking as rows of text cells, a header first; the export is a local version, or the cluster path."""
    params = list(results[0].params)
    rows = [["rank", "trial", *params, "status", "step", "validation", "test", "export"]]
    for r in results:
        rows.append([str(r.rank or "-"), r.id, *(text(r.params.get(p, "")) for p in params), r.status,
                     "" if r.step is None else str(r.step), percent(r.validation), percent(r.test),
                     str(r.export or "") if local else r.export_dir])
    return rows


def write_csv(results, path, local=True):
    params = list(results[0].params)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["rank", "trial", "job", *params, "status", "step", "validation_accuracy", "test_accuracy",
                      "model_dir", "export"])
        for r in results:
            out.writerow([r.rank or "", r.id, r.job, *(text(r.params.get(p, "")) for p in params), r.status,
                          "" if r.step is None else r.step, "" if r.validation is None else f"{r.validation:.6f}",
                          "" if r.test is None else f"{r.test:.6f}", r.model_dir,
                          r.export or "" if local else r.export_dir])


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot(results, path, title):
    """Validation and test accuracy by learning rate (or the first parameter), one line per value of the others.

    The star marks the trial chosen on validation accuracy, in both panels: on the test panel it shows
    what that choice scores, which need not be the highest test accuracy.
    """
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    names = list(results[0].params)
    x_name = "learning_rate" if "learning_rate" in names else names[0]
    others = [p for p in names if p != x_name]
    xs = [number(r.params.get(x_name)) for r in results]
    numeric = all(x is not None for x in xs)
    log = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
    key = lambda r: tuple(text(r.params.get(p)) for p in others)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, metric, panel in zip(axes, ("validation", "test"),
                                 ("validation accuracy (last evaluation): chooses the best",
                                  "test accuracy (final): reported, not used to choose")):
        for group, members in itertools.groupby(sorted(results, key=key), key=key):
            points = sorted((number(r.params.get(x_name)) if numeric else text(r.params.get(x_name)),
                             getattr(r, metric)) for r in members if getattr(r, metric) is not None)
            if points:
                label = ", ".join(f"{p}={v}" for p, v in zip(others, group)) or "all trials"
                ax.plot(*zip(*points), marker="o", label=label)
        best = results[0]
        if best.rank == 1 and getattr(best, metric) is not None:
            x = number(best.params.get(x_name)) if numeric else text(best.params.get(x_name))
            ax.scatter([x], [getattr(best, metric)], s=220, marker="*", color="gold", edgecolors="black",
                       zorder=3, label=f"chosen: {best.id}")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(x_name.replace("_", " "))
        ax.set_title(panel, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing to plot before any trial has evaluated
            ax.legend(fontsize="small")
    axes[0].set_ylabel("accuracy")
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def writable_dir(out):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file, not a directory: give a directory for the CSV and plot")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --output_dir {out}: {err.strerror}") from None
    return out


def report(results, name, heading, out, local=False):
    """Print the ranking and the export to serve; write <name>-results.csv and .png to `out`."""
    out = writable_dir(out)
    finished = sum(r.status in RANKED for r in results)
    print(f"{heading}: {finished} of {len(results)} trials finished")
    rows = table(results, local)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    csv_path, png_path = out / f"{name}-results.csv", out / f"{name}-results.png"
    try:
        write_csv(results, csv_path, local)
        plot(results, png_path, heading)
    except OSError as err:
        raise UserError(f"cannot write the results into {out}: {err.strerror}") from None
    best = results[0]
    if best.rank == 1:
        print(f"best: {best.id} ({best.describe()}): validation accuracy {percent(best.validation)} "
              f"(what it was chosen on); test accuracy {percent(best.test)} (reported, not used to choose)")
        print(serve_line(best, local))
    else:
        print("best: none yet, no trial has finished")
    print(f"wrote {csv_path} and {png_path}")
    return best if best.rank == 1 else None


def serve_line(best, local):
    """How to serve the best trial: its newest version here, or its export directory on the cluster."""
    serving = f"TensorFlow Serving --model_base_path={best.export_dir}, which serves its newest version"
    if not local:
        return f"serve: {serving}"
    if best.export:
        return f"serve: {best.export}\n       (on the cluster: {serving})"
    return f"serve: nothing yet, the export directory of {best.id} holds no version"
