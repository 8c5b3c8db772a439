"""What Katib v0.19 reads from a trial and which trial it calls best, reimplemented to run on this machine.

So that a local run shows the value Katib will optimise, this follows Katib's code:

- the TensorFlowEvent collector (tfevent_loader.py): every file under the
  collector's directory, read with TensorBoard's EventAccumulator (all events
  kept); a metric named `<dir>/<tag>` takes the tags that start with <tag> in
  event files whose directory path ends with <dir>; a bare name takes every tag
  that starts with it, anywhere (so `accuracy` would mix validation and test);
  one log per event, its time the event's wall time to the second;
- the File collector in JSON format (file-metricscollector.go): one JSON object
  per line, a metric's value a string under its name, the time under `timestamp`;
- no log of the objective: a single "unavailable" one;
- the trial's observation (trial_controller_util.go getMetrics): per metric the
  min, the max and the latest value (the newest time; on a tie the later log);
- the objective value (status_util.go): the metric strategy's pick (min, max or
  latest), falling back to latest when min or max is unavailable;
- the best trial (updateTrialsSummary): the highest objective value (lowest for
  minimize) over the trials that have one, the earlier trial on a tie.
"""
import json
import math
import os
from datetime import UTC, datetime

UNAVAILABLE = "unavailable"


def should_consider(tag, metric_name, event_file):
    """Katib's _should_consider: does this tag in this event file count as this metric?"""
    parent = os.path.dirname(metric_name) if len(metric_name.split("/")) >= 2 else os.path.dirname(event_file)
    return tag.startswith(metric_name.split("/")[-1]) and os.path.dirname(event_file).endswith(parent)


def seconds(wall_time):
    """An event's time as the collector stamps it (rfc3339 of the wall time, to the second)."""
    return float(math.floor(wall_time))


def tfevent_logs(directory, metric_names):
    """[(time, metric name, value text)] as the TensorFlowEvent collector reports them for `directory`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.tag_types import SCALARS, TENSORS
    from tensorboard.util import tensor_util
    logs = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isdir(path):
                continue
            try:
                accumulator = EventAccumulator(path, size_guidance={SCALARS: 0, TENSORS: 0})
                accumulator.Reload()
                tags = accumulator.Tags()
                for tag in tags[TENSORS]:
                    for metric in metric_names:
                        if should_consider(tag, metric, path):
                            logs += [(seconds(e.wall_time), metric, str(tensor_util.make_ndarray(e.tensor_proto)))
                                     for e in accumulator.Tensors(tag)]
                for tag in tags[SCALARS]:
                    for metric in metric_names:
                        if should_consider(tag, metric, path):
                            logs += [(seconds(e.wall_time), metric, str(e.value)) for e in accumulator.Scalars(tag)]
            except Exception:  # as the collector does: any error of one file, and on to the next
                continue
    return with_objective(logs, metric_names)


def json_logs(path, metric_names):
    """[(time, metric name, value text)] as the File collector reports a JSON-lines file."""
    logs = []
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        return with_objective([], metric_names)
    for line in lines:
        if not line:
            continue
        record = json.loads(line)
        stamp = parse_time(record.get("timestamp"))
        for metric in metric_names:
            if isinstance(record.get(metric), str):
                logs.append((stamp, metric, record[metric]))
    return with_objective(logs, metric_names)


def parse_time(text):
    """An RFC 3339 timestamp as seconds; none (or a bad one) is Go's zero time, before every other."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return datetime(1, 1, 1, tzinfo=UTC).timestamp()


def with_objective(logs, metric_names):
    """No value of the objective (the first name): Katib stores one log saying it is unavailable."""
    if not any(name == metric_names[0] for _, name, _ in logs):
        return [(datetime.now(UTC).timestamp(), metric_names[0], UNAVAILABLE)]
    return logs


def number(text):
    """Go's strconv.ParseFloat, for the values Katib compares: a float, or None."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def observation(logs, strategies):
    """{metric: {"min", "max", "latest"}} as Katib's trial controller sums a trial's logs up (rows by time)."""
    metrics = {s["name"]: {"min": UNAVAILABLE, "max": UNAVAILABLE, "latest": UNAVAILABLE} for s in strategies}
    newest = {}
    for stamp, name, text in sorted(logs, key=lambda log: log[0]):  # the database answers ORDER BY time
        metric = metrics.get(name)
        if metric is None:
            continue
        value = number(text)
        if value is not None:
            if metric["min"] == UNAVAILABLE:
                metric["min"] = metric["max"] = text
            elif value < float(metric["min"]):
                metric["min"] = text
            elif value > float(metric["max"]):
                metric["max"] = text
        if name not in newest or not newest[name] > stamp:
            newest[name] = stamp
            metric["latest"] = text
    return metrics


def objective_value(metrics, strategies, objective):
    """The value Katib compares trials on (getObjectiveMetricValue): the objective's strategy, min or max falling
    back to latest when unavailable; "unavailable" when the trial has no such metric."""
    metric = (metrics or {}).get(objective)
    strategy = next((s["value"] for s in strategies if s["name"] == objective), None)
    if metric is None or strategy not in ("min", "max", "latest"):
        return UNAVAILABLE
    if strategy != "latest" and metric[strategy] == UNAVAILABLE:
        return metric["latest"]
    return metric[strategy]


def best(values, maximize=True):
    """The index of the best of [objective value text], as Katib's updateTrialsSummary picks it; -1 if none.

    Unavailable values are skipped; a value that is not a number becomes the best (Katib: "for string
    metrics values best trial is the latest"); otherwise the highest (lowest), the earlier on a tie.
    """
    best_index, best_value = -1, 0.0
    for index, text in enumerate(values):
        if text == UNAVAILABLE:
            continue
        value = number(text)
        if value is None:
            best_index = index
            continue
        if best_index == -1:
            best_index, best_value = index, value
        if (value > best_value) if maximize else (value < best_value):
            best_index, best_value = index, value
    return best_index
