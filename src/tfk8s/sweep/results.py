"""A sweep's results: every trial's accuracy, read back from its TensorBoard event files.

The trainer writes the validation accuracy to <model_dir>/eval and the final
test accuracy to <model_dir>/test (tag `accuracy`). TensorBoard's own reader
(EventAccumulator) reads them; TF2's tf.summary.scalar stores tensors, so the
values are read as tensors. Trials still training or never started are listed
as such, below the finished ones. `main` prints the ranking, names the export
to serve, and writes <sweep>-results.csv and a plot, <sweep>-results.png.
"""
import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import PercentFormatter
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from tfk8s import versions

FINISHED, UNFINISHED, MISSING = "finished", "unfinished", "missing"


@dataclass
class Result:
    trial: object                 # sweep.Trial
    model_dir: Path
    export_dir: Path
    status: str = MISSING
    step: int = None              # the last evaluated step
    validation: float = None      # the last validation accuracy (model_dir/eval)
    test: float = None            # the final test accuracy (model_dir/test)
    export: Path = None           # the newest version under export_dir
    rank: int = None              # 1 for the best finished trial; None for the others


def last_value(run_dir, tag="accuracy"):
    """(step, value) of the latest `tag` in the event files of `run_dir`, or (None, None)."""
    if not run_dir.is_dir():
        return None, None
    reader = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    reader.Reload()
    tags = reader.Tags()
    if tag in tags[event_accumulator.TENSORS]:
        events = [(e.step, e.wall_time, tensor_util.make_ndarray(e.tensor_proto).item()) for e in reader.Tensors(tag)]
    elif tag in tags[event_accumulator.SCALARS]:  # summaries written by TF1-style writers
        events = [(e.step, e.wall_time, e.value) for e in reader.Scalars(tag)]
    else:
        return None, None
    step, _, value = max(events)  # a restarted trial re-evaluates a step: the newest one counts
    return step, float(value)


def collect(trials, root, nfs):
    """One Result per trial, its paths mapped from the volume (`nfs`) to `root`."""
    results = []
    for trial in trials:
        local = lambda path: Path(root) / Path(path).relative_to(nfs)
        result = Result(trial, local(trial.model_dir), local(trial.export_dir))
        result.step, result.validation = last_value(result.model_dir / "eval")
        _, result.test = last_value(result.model_dir / "test")
        result.export = versions.newest(result.export_dir)
        if result.test is not None:
            result.status = FINISHED
        elif result.model_dir.is_dir():
            result.status = UNFINISHED
        results.append(result)
    return rank(results)


def rank(results):
    """Finished trials by test accuracy, then unfinished ones by validation accuracy, then missing ones."""
    order = {FINISHED: 0, UNFINISHED: 1, MISSING: 2}
    results = sorted(results, key=lambda r: (order[r.status], -(r.test if r.status == FINISHED else r.validation or 0),
                                             r.trial.id))
    for number, result in enumerate(results, 1):
        result.rank = number if result.status == FINISHED else None
    return results


def percent(value):
    return "" if value is None else f"{value:.2%}"


def table(results):
    """The ranking as rows of text cells, a header first."""
    params = list(results[0].trial.params)
    rows = [["rank", "trial", *params, "status", "step", "validation", "test", "export"]]
    for r in results:
        rows.append([str(r.rank or "-"), r.trial.id, *(str(r.trial.labels[p]) for p in params), r.status,
                     "" if r.step is None else str(r.step), percent(r.validation), percent(r.test),
                     str(r.export or "")])
    return rows


def write_csv(results, path):
    params = list(results[0].trial.params)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["rank", "trial", "job", *params, "status", "step", "validation_accuracy", "test_accuracy",
                      "model_dir", "export"])
        for r in results:
            out.writerow([r.rank or "", r.trial.id, r.trial.job, *(r.trial.labels[p] for p in params), r.status,
                          "" if r.step is None else r.step, "" if r.validation is None else f"{r.validation:.6f}",
                          "" if r.test is None else f"{r.test:.6f}", r.model_dir, r.export or ""])


def plot(results, path, sweep):
    """Validation and test accuracy by learning rate (log scale), one line per value of the other grid flags."""
    others = [p for p in results[0].trial.params if p != "learning_rate"]
    key = lambda r: tuple(r.trial.params[p] for p in others)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, metric, title in zip(axes, ("validation", "test"), ("validation accuracy (last evaluation)",
                                                                  "test accuracy (final)")):
        for group, members in itertools.groupby(sorted(results, key=key), key=key):
            points = sorted((r.trial.settings["learning_rate"], getattr(r, metric)) for r in members
                            if getattr(r, metric) is not None)
            if points:
                label = ", ".join(f"{p}={v}" for p, v in zip(others, group)) or "all trials"
                ax.plot(*zip(*points), marker="o", label=label)
        best = results[0]
        if best.status == FINISHED and getattr(best, metric) is not None:
            ax.scatter([best.trial.settings["learning_rate"]], [getattr(best, metric)], s=220, marker="*",
                       color="gold", edgecolors="black", zorder=3, label=f"best: {best.trial.id}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing to plot before any trial has evaluated
            ax.legend(fontsize="small")
    axes[0].set_ylabel("accuracy")
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.suptitle(f"sweep {sweep}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(trials, sweep, volume, nfs, out):
    """Print the ranking and the export to serve; write <sweep>-results.csv and .png to `out`.

    `volume` is the local directory that holds what the cluster has under `nfs`.
    """
    results = collect(trials, volume, nfs)
    finished = sum(r.status == FINISHED for r in results)
    events = Path(volume) / "runs" / sweep
    print(f"sweep {sweep}: {finished} of {len(results)} trials finished (event files in {events})")
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / f"{sweep}-results.csv", out / f"{sweep}-results.png"
    write_csv(results, csv_path)
    plot(results, png_path, sweep)
    best = results[0]
    if best.status == FINISHED:
        print(f"best: {best.trial.id} ({best.trial.describe()}): test accuracy {best.test:.2%}, "
              f"validation accuracy {percent(best.validation)}")
        if best.export:
            print(f"serve: {best.export}\n"
                  f"       (on the cluster: TensorFlow Serving --model_base_path={best.trial.export_dir}, "
                  "which serves its newest version)")
        else:
            print(f"serve: nothing yet, {best.export_dir} holds no export")
    else:
        print("best: none yet, no trial has finished")
    print(f"wrote {csv_path} and {png_path}")
