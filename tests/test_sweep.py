"""The sweep (templated/run.sh): checked inputs, one valid TFJob per combination, a real local run, and results ranked
on validation accuracy from event files or TensorBoard (the cluster run: test_sweep_cluster.py)."""
import csv
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from support import (
    REPO,
    RUN,
    assert_one_line_error,
    container,
    flag,
    make,
    run_sweep,
    tf_events,
    wait_for,
    write_values,
)
from support import SWEEP_IMAGE as IMAGE
from support import TINY_VALUES as TINY
from tfk8s.cli import UsageError, UserError, child_env
from tfk8s.kube import tfjob_check
from tfk8s.ports import free_port
from tfk8s.sweep import results, trials
from tfk8s.trainer import flags as trainer_flags

DEFAULT_VALUES = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())
RUN_ID = "20250102-030405"
SHORT_TRAINING = ["--", "--steps", 30, "--eval_every", 15, "--checkpoint_every", 15]


# ---------------------------------------------------------------- rendering

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The default values file rendered for namespace alice and a registry of hers: (stdout, files)."""
    out = tmp_path_factory.mktemp("dry-run")
    result = run_sweep("--dry_run", "--output_dir", out, "--namespace", "alice", "--image", IMAGE,
                       "--run_id", RUN_ID)
    assert result.returncode == 0, result.stderr
    return result.stdout, sorted(out.glob("*.yaml"))


def test_dry_run_writes_one_valid_tfjob_per_combination_with_unique_names_paths_and_labels(dry_run):
    stdout, files = dry_run
    assert sorted(Path(line) for line in stdout.split()) == files

    grid = DEFAULT_VALUES["grid"]
    combinations = list(itertools.product(*grid.values()))
    assert len(files) == len(combinations) == 9
    docs = []
    for path in files:
        (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert tfjob_check.problems(doc) == [], path
        docs.append(doc)

    names = [d["metadata"]["name"] for d in docs]
    model_dirs = [flag(container(d)["args"], "model_dir") for d in docs]
    export_dirs = [flag(container(d)["args"], "export_dir") for d in docs]
    assert len(set(names)) == len(set(model_dirs)) == len(set(export_dirs)) == 9
    assert not set(model_dirs) & set(export_dirs)
    # Trial numbers follow the grid's order, so the same values file always gives the same names.
    for number, (doc, name, model_dir, export_dir) in enumerate(zip(docs, names, model_dirs, export_dirs), 1):
        labels = doc["metadata"]["labels"]
        trial = f"t{number:02d}"
        assert name == f"mnist-sweep-{trial}" and tfjob_check.DNS_1035_LABEL.fullmatch(name)
        assert labels["trial"] == trial and labels["sweep"] == "mnist-sweep" and labels["app"] == "mnist-train"
        assert labels["run"] == RUN_ID
        assert model_dir == f"/mnt/nfs/runs/mnist-sweep/{RUN_ID}/{trial}"
        assert export_dir == f"/mnt/nfs/exports/mnist-sweep/{RUN_ID}/{trial}"
        assert doc["metadata"]["namespace"] == "alice"
        assert (float(labels["learning_rate"]), int(labels["hidden_layers"])) == combinations[number - 1]
        for replica_type in ("Chief", "Worker"):
            c = container(doc, replica_type)
            assert c["image"] == IMAGE
            # The labels say what the trainer is told, in every replica.
            assert flag(c["args"], "learning_rate") == labels["learning_rate"]
            assert flag(c["args"], "hidden_layers") == labels["hidden_layers"]
            assert flag(c["args"], "steps") == str(DEFAULT_VALUES["flags"]["steps"])
        assert doc["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == DEFAULT_VALUES["workers"]


def test_a_trial_is_kube_tfjob_yaml_but_for_its_name_labels_image_and_trainer_flags(dry_run):
    """kube/tfjob.yaml is the one source of truth: undo a trial's own parts and the base is what is left."""
    trial = yaml.safe_load(dry_run[1][4].read_text())
    base = json.loads(json.dumps(yaml.safe_load((REPO / "kube" / "tfjob.yaml").read_text())))
    for labels in (trial["metadata"]["labels"], base["metadata"]["labels"]):
        for key in ("sweep", "run", "trial", "learning_rate", "hidden_layers"):
            labels.pop(key, None)
    for doc in (trial, base):
        doc["metadata"].pop("name")
        doc["metadata"].pop("namespace", None)
        for replica in doc["spec"]["tfReplicaSpecs"].values():
            c = replica["template"]["spec"]["containers"][0]
            c.pop("image"), c.pop("args")
    assert trial == base


@pytest.mark.parametrize("text, fragments", [
    ("name: s\ngrdi: {learning_rate: [0.1]}\n", ["unknown key 'grdi'", "did you mean 'grid'"]),
    ("name: s\ngrid: {lerning_rate: [0.1]}\n", ["grid.lerning_rate is not a flag of the trainer",
                                                 "did you mean 'learning_rate'"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {stepz: 10}\n", ["flags.stepz is not a flag of the trainer"]),
    ("name: s\ngrid: {learning_rate: [], hidden_layers: [1]}\n", ["grid.learning_rate must be a non-empty list"]),
    ("name: s\ngrid: {learning_rate: [0.1, -0.01]}\n", ["grid.learning_rate", "must be a positive number", "-0.01"]),
    ("name: s\ngrid: {hidden_layers: [1, 7]}\n", ["grid.hidden_layers", "must be 1 to 4", "7"]),
    ("name: s\ngrid: {hidden_layers: [1, two]}\n", ["grid.hidden_layers", "invalid int value: 'two'"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {model_dir: /tmp/x}\n", ["flags.model_dir", "the sweep sets it"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {metrics_dir: /x}\n", ["flags.metrics_dir", "the sweep sets it"]),
    ("name: My_Sweep\ngrid: {learning_rate: [0.1]}\n", ["'My_Sweep'", "lower-case letters"]),
    ("name: s\ngrid: {learning_rate: [0.1]}\nflags: {help: true}\n", ["flags.help is not a flag of the trainer"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    ("name: s\ngrid: {learning_rate: [0.1]\n", ["is not valid YAML"]),
    ("name: s\nworkers: 1000000000\ngrid: {learning_rate: [0.1]}\n", ["workers 1000000000 is more than 15"]),
    ("name: s\ngrid: {learning_rate: [0.1, 0.05, 0.10]}\n", ["grid.learning_rate lists a value twice"]),
], ids=["unknown-key", "unknown-grid-flag", "unknown-fixed-flag", "empty-list", "negative-learning-rate",
        "hidden-layers-7", "not-an-int", "sweep-owned-flag", "metrics-dir", "illegal-name", "help", "a-list",
        "bad-yaml", "huge-workers", "same-value-twice"])
def test_a_mistake_in_the_values_file_is_one_line_and_renders_nothing(tmp_path, text, fragments):
    values = write_values(tmp_path, text)
    result = run_sweep("--values", values, "--dry_run", "--output_dir", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert result.returncode == 2 and not (tmp_path / "out").exists()


def test_the_trainers_parser_answers_the_sweep_without_exiting_or_printing(capsys):
    """flags.parse: the parsed settings, or a UsageError carrying argparse's or the checks' message."""
    settings = trainer_flags.parse(["--learning_rate", "0.01", "--no-augment"])
    assert settings.learning_rate == 0.01 and settings.augment is False and settings.steps == 2200
    for argv, fragment in ([["--learning_rate", "x"], "invalid float value: 'x'"],
                           [["--stepz", "3"], "unrecognized arguments: --stepz 3"],
                           [["--hidden_layers", "9"], "--hidden_layers must be 1 to 4"]):
        with pytest.raises(UsageError, match=fragment.replace("-", r"\-")):
            trainer_flags.parse(argv)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("namespace", ["Bad_NS", "alice\nannotations:", "x: y", "-alice", "a" * 64, ""],
                         ids=["capitals", "newline", "colon", "dash", "too-long", "empty"])
def test_a_namespace_that_is_not_a_dns_label_is_one_line_and_writes_nothing(tmp_path, namespace):
    result = run_sweep("--dry_run", "--output_dir", tmp_path / "out", f"--namespace={namespace}")
    assert_one_line_error(result, "is not a namespace name")
    assert result.returncode == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("image, fragment", [
    ("registry.example.com/alice/mnist", "has no tag"),
    ("registry.example.com/alice/mnist:latest", "'latest' is not a version"),
    ("registry.example.com/Alice/mnist:v1", "is not an image reference"),
    ("registry.example.com/alice/mnist:v1\nannotations: x", "is not an image reference"),
    ("mnist: v1", "is not an image reference"),
    ("registry.example.com/alice/mnist@sha256:abc", "is not an image reference"),
])
def test_an_image_that_is_not_a_pinned_reference_is_one_line(tmp_path, image, fragment):
    result = run_sweep("--dry_run", "--output_dir", tmp_path / "out", "--image", image)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_an_image_pinned_by_digest_is_accepted(tmp_path):
    image = "registry.example.com:5000/alice/mnist@sha256:" + "0a" * 32
    result = run_sweep("--dry_run", "--output_dir", tmp_path, "--image", image, "--values",
                       write_values(tmp_path.parent, TINY))
    assert result.returncode == 0, result.stderr
    assert container(yaml.safe_load((tmp_path / "tiny-t01.yaml").read_text()))["image"] == image


def test_no_value_can_add_a_key_to_a_trial(tmp_path):
    """A flag value the trainer accepts (any text, for --data_dir) stays one string, however YAML-like it is."""
    sneaky = "/data\nmetadata:\n  annotations: {evil: 'yes'}\n# \"quoted\" : colon"
    values = write_values(tmp_path, TINY.replace("dataset: mini", f"data_dir: {json.dumps(sneaky)}"))
    out = tmp_path / "out"
    result = run_sweep("--values", values, "--dry_run", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load((out / "tiny-t01.yaml").read_text())
    assert set(doc["metadata"]) == {"name", "namespace", "labels"}
    assert "annotations" not in json.dumps(doc["spec"]["tfReplicaSpecs"]["Chief"]["template"]["metadata"])
    assert flag(container(doc)["args"], "data_dir") == sneaky
    assert tfjob_check.problems(doc) == []


def test_a_binary_values_file_is_one_line(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert_one_line_error(run_sweep("--values", values, "--dry_run", "--output_dir", tmp_path / "o"),
                          "is not a text file")
    assert_one_line_error(run_sweep("--values", tmp_path, "--dry_run", "--output_dir", tmp_path / "o"),
                          "cannot read the values file")


def test_an_output_dir_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path):
    values = write_values(tmp_path, TINY)
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert_one_line_error(run_sweep("--values", values, "--dry_run", "--output_dir", a_file),
                          f"--output_dir {a_file} is a file")
    assert a_file.read_text() == "mine"
    # /sys refuses new directories to everyone, root included: a read-only place that needs no set-up.
    assert_one_line_error(run_sweep("--values", values, "--dry_run", "--output_dir", "/sys/tfk8s-sweep"),
                          "cannot create --output_dir /sys/tfk8s-sweep")
    assert_one_line_error(run_sweep("--values", values, "--dry_run", "--output_dir", a_file / "sub"),
                          "cannot create --output_dir", "Not a directory")


def test_the_output_dir_is_written_afresh_and_files_it_did_not_write_make_it_refuse(tmp_path):
    out = tmp_path / "out"
    big = write_values(tmp_path, TINY.replace("hidden_layers: [1]", "hidden_layers: [1, 2, 3]"), "big.yaml")
    assert run_sweep("--values", big, "--dry_run", "--output_dir", out).returncode == 0
    assert len(list(out.iterdir())) == 6
    small = write_values(tmp_path, TINY)
    result = run_sweep("--values", small, "--dry_run", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny-t01.yaml", "tiny-t02.yaml"]  # no stale trial left

    (out / "notes.txt").write_text("my notes")
    result = run_sweep("--values", small, "--dry_run", "--output_dir", out)
    assert_one_line_error(result, "holds files this sweep did not write (notes.txt)")
    assert (out / "notes.txt").read_text() == "my notes" and len(list(out.iterdir())) == 3


def test_a_grid_larger_than_max_trials_is_refused_at_once_naming_its_size(tmp_path):
    grid = {f: list(range(1, 11)) for f in ("steps", "batch_size", "eval_every", "checkpoint_every",
                                             "keep_checkpoints", "seed")}
    values = tmp_path / "huge.yaml"
    values.write_text(yaml.safe_dump({"name": "huge", "grid": grid}))
    started = time.monotonic()
    result = run_sweep("--values", values, "--dry_run", "--output_dir", tmp_path / "out")
    print(f"refused a 10^6 grid in {time.monotonic() - started:.1f}s")  # reported, not asserted
    assert_one_line_error(result, "the grid holds 1,000,000 trials", "more than --max_trials 30")
    assert not (tmp_path / "out").exists()
    small = write_values(tmp_path, TINY.replace("hidden_layers: [1]", "hidden_layers: [1, 2, 3]"))
    assert_one_line_error(run_sweep("--values", small, "--max_trials", 5, "--dry_run", "--output_dir",
                                    tmp_path / "out"), "holds 6 trials (2 learning_rate x 3 hidden_layers)")
    assert run_sweep("--values", small, "--max_trials", 6, "--dry_run", "--output_dir", tmp_path / "out"
                     ).returncode == 0


def test_help_describes_every_flag_and_bad_flags_are_one_line():
    result = run_sweep("--help")
    assert result.returncode == 0
    for option in ("--values", "--name", "--dry_run", "--output_dir", "--namespace", "--image", "--parallel",
                   "--local", "--delete", "--results", "--root", "--poll", "--max_trials", "--run_id",
                   "--tensorboard", "make tensorboard", "validation accuracy"):
        assert option in result.stdout, option
    assert "exec" not in result.stdout and "--dry-run" not in result.stdout and "--out " not in result.stdout
    assert_one_line_error(run_sweep("--dry_run"), "--dry_run needs --output_dir DIR")
    assert_one_line_error(run_sweep("--dry_run", "--output_dir", "x", "--", "--steps", "5"), "--local only")
    assert_one_line_error(run_sweep("--parallel", "0"), "--parallel must be 1 or more")
    assert_one_line_error(run_sweep("--results", "--run_id", "yesterday"), "is not a run's id")
    assert_one_line_error(run_sweep("--tensorboard", "http://x"), "--tensorboard goes with --results")
    assert_one_line_error(run_sweep("--dry-run"), "unrecognized arguments: --dry-run")
    assert_one_line_error(run_sweep("--help", env={"VENV": "/nonexistent"}), "no virtualenv at /nonexistent")


# ---------------------------------------------------------------- results: chosen on validation accuracy
def write_events(run_dir, points, tag="accuracy"):
    """Event files as the trainer's tf.summary.scalar writes them (tensor summaries), without TensorFlow."""
    from tensorboard.summary import DirectoryOutput, Writer
    writer = Writer(DirectoryOutput(str(run_dir)))
    for step, value in points:
        writer.add_scalar(tag, value, step=step)
    writer.close()


@pytest.mark.slow  # reading event files, TensorBoard's reader loads TensorFlow
def test_results_choose_on_validation_accuracy_and_only_report_the_test_accuracy(tmp_path):
    """t02 has the best test accuracy, t01 the best validation accuracy: t01 is chosen, t02's test is not a vote."""
    values = write_values(tmp_path, TINY.replace("[0.05, 0.0001]", "[0.05, 0.0001, 0.001]"))
    runs = tmp_path / "root" / "nfs" / "runs" / "tiny" / RUN_ID
    figures = {"t01": (0.95, 0.90), "t02": (0.93, 0.99), "t03": (0.91, 0.92)}  # (validation, test)
    for trial, (validation, test) in figures.items():
        write_events(runs / trial / "eval", [(15, validation - 0.2), (30, validation)])
        write_events(runs / trial / "test", [(30, test)])
        (tmp_path / "root" / "nfs" / "exports" / "tiny" / RUN_ID / trial / "1").mkdir(parents=True)
    result = run_sweep("--values", values, "--results", "--root", tmp_path / "root", "--output_dir", tmp_path / "o")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "o" / "tiny-results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["t01", "t02", "t03"]  # by validation accuracy, not by test accuracy
    assert "best: t01 (learning_rate=0.05 hidden_layers=1): validation accuracy 95.00%" in result.stdout
    assert "test accuracy 90.00% (reported, not used to choose)" in result.stdout
    assert f"sweep tiny, run {RUN_ID}" in result.stdout


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 2x1 sweep trained for real, both trials at once, with the Chief alone (workers: 0)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    values = write_values(tmp_path, TINY)
    root = tmp_path / "root"
    result = run_sweep("--values", values, "--local", "--parallel", 2, "--root", root, *SHORT_TRAINING)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (root / "nfs" / "runs" / "tiny").iterdir()
    return {"tmp": tmp_path, "root": root, "volume": root / "nfs", "stdout": result.stdout, "run": run_dir.name,
            "values": values}


def events(run_dir):
    """{step: accuracy} of a run directory's event files."""
    return dict(tf_events(run_dir))


@pytest.mark.slow
def test_local_sweep_trains_every_trial_into_its_own_directories(local_sweep):
    volume, run = local_sweep["volume"], local_sweep["run"]
    assert trials.RUN_ID.fullmatch(run)
    assert f"all 2 trials of run {run} succeeded" in local_sweep["stdout"]
    for trial, learning_rate in (("t01", 0.05), ("t02", 0.0001)):
        model_dir = volume / "runs" / "tiny" / run / trial
        assert sorted(events(model_dir / "eval")) == [15, 30]  # the steps after -- reached the trainer
        assert list(events(model_dir / "test")) == [30]
        versions = [p for p in (volume / "exports" / "tiny" / run / trial).iterdir() if p.name.isdigit()]
        assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
        log = (local_sweep["root"] / "logs" / run / f"tiny-{trial}.log").read_text()
        assert f"--learning_rate {learning_rate}" in log and "num_replicas_in_sync=1" in log
    # The sweep's experiment for TensorBoard's HParams view sits at the run's root, beside the trials.
    (config,) = (volume / "runs" / "tiny" / run).glob("events.out.tfevents.*")
    assert b"_hparams_/experiment" in config.read_bytes()


def test_a_trials_result_is_its_newest_evaluation_of_its_highest_step_in_whatever_order_the_events_come():
    # (step, wall_time, value): a trial restarted after step 200 evaluated step 200 again; a reader may hand the
    # event files' scalars over file by file, so not in step or time order.
    events = [(200, 1009.0, 0.962), (100, 1000.0, 0.90), (200, 1004.0, 0.955), (150, 1002.0, 0.93)]
    assert results.last(events) == (200, 0.962)
    assert results.last(list(reversed(events))) == (200, 0.962)
    assert results.last([]) == (None, None)


def test_rank_orders_by_validation_accuracy_alone_then_unfinished_failed_and_missing_trials():
    def trial(name, status, validation=None, test=None):
        return results.Result(name, name, {}, "", "", status=status, validation=validation, test=test)
    ranked = results.rank([
        trial("missing", results.MISSING), trial("failed", results.FAILED, 0.99),
        trial("unfinished", results.UNFINISHED, 0.999), trial("low", results.FINISHED, 0.90, test=0.99),
        trial("first-of-equals", results.FINISHED, 0.95, test=0.90), trial("stopped", results.EARLY_STOPPED, 0.97),
        trial("second-of-equals", results.FINISHED, 0.95, test=0.95), trial("no-eval", results.FINISHED)])
    # The test accuracy plays no part; equals keep their trial order; a trial without a final validation accuracy
    # is not ranked, whatever it reached before it ended.
    assert [(r.id, r.rank) for r in ranked] == [
        ("stopped", 1), ("first-of-equals", 2), ("second-of-equals", 3), ("low", 4),
        ("unfinished", None), ("no-eval", None), ("failed", None), ("missing", None)]


@pytest.mark.slow
def test_results_rank_trials_by_their_event_files_and_show_unfinished_and_missing_ones(local_sweep):
    tmp_path, volume, run = local_sweep["tmp"], local_sweep["volume"], local_sweep["run"]
    runs = volume / "runs" / "tiny" / run
    finished = {trial: (events(runs / trial / "eval")[30], events(runs / trial / "test")[30])
                for trial in ("t01", "t02")}
    # The sweep grows by two learning rates: t03 has started (its evaluations only), t04 has not.
    shutil.copytree(runs / "t01" / "eval", runs / "t03" / "eval")
    grown = write_values(tmp_path, TINY.replace("[0.05, 0.0001]", "[0.05, 0.0001, 0.001, 0.2]"), "grown.yaml")
    try:
        result = run_sweep("--values", grown, "--results", "--root", local_sweep["root"], "--output_dir",
                           tmp_path / "out")
    finally:
        shutil.rmtree(runs / "t03")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "out" / "tiny-results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["finished", "finished", "unfinished", "missing"]
    assert [row["trial"] for row in rows[2:]] == ["t03", "t04"]

    ranked = sorted(finished, key=lambda trial: -finished[trial][0])  # by the validation accuracy the events hold
    assert [row["trial"] for row in rows[:2]] == ranked and [row["rank"] for row in rows] == ["1", "2", "", ""]
    for row in rows[:2]:
        validation, test = finished[row["trial"]]
        assert float(row["validation_accuracy"]) == pytest.approx(validation, abs=1e-6)
        assert float(row["test_accuracy"]) == pytest.approx(test, abs=1e-6)
        assert row["learning_rate"] == {"t01": "0.05", "t02": "0.0001"}[row["trial"]]
    assert float(rows[2]["validation_accuracy"]) == pytest.approx(finished["t01"][0], abs=1e-6)
    assert rows[2]["test_accuracy"] == rows[3]["validation_accuracy"] == ""

    best = rows[0]
    newest = max((volume / "exports" / "tiny" / run / best["trial"]).iterdir(), key=lambda p: int(p.name))
    assert best["export"] == str(newest)
    assert f"best: {best['trial']} (learning_rate={best['learning_rate']} hidden_layers=1)" in result.stdout
    assert f"serve: {newest}" in result.stdout
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("rank"))) + 1:][:4]
    assert [line.split()[1] for line in table] == [row["trial"] for row in rows]

    with Image.open(tmp_path / "out" / "tiny-results.png") as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200
        assert len(png.convert("L").getcolors(maxcolors=1 << 16) or range(2)) > 2  # a plot, not a blank page


@pytest.mark.slow
def test_make_sweep_results_reads_a_cluster_sweep_from_tensorboard_as_the_event_files_say(local_sweep, tmp_path):
    """TensorBoard over the volume's runs (as kube/tensorboard.yaml runs it) answers the same ranking: no exec."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                               str(local_sweep["volume"] / "runs"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wanted = {f"tiny/{local_sweep['run']}/{t}/{r}" for t in ("t01", "t02") for r in ("eval", "test")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None
            try:
                with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=5) as response:
                    if wanted <= set(json.load(response)):
                        break
            except OSError:
                pass
            time.sleep(1)
        result = make("sweep-results", f"SWEEP_VALUES={local_sweep['values']}", f"SWEEP_TENSORBOARD={url}",
                      f"SWEEP_ROOT={tmp_path}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "tiny-results.csv") as f:
        rows = list(csv.DictReader(f))
    local = run_sweep("--values", local_sweep["values"], "--results", "--root", local_sweep["root"],
                      "--output_dir", tmp_path / "local")
    with open(tmp_path / "local" / "tiny-results.csv") as f:
        local_rows = list(csv.DictReader(f))
    same = ("rank", "trial", "learning_rate", "status", "step", "validation_accuracy", "test_accuracy")
    assert [[r[k] for k in same] for r in rows] == [[r[k] for k in same] for r in local_rows]
    assert [r["status"] for r in rows] == ["finished", "finished"]
    best = rows[0]["trial"]
    assert rows[0]["export"] == f"/mnt/nfs/exports/tiny/{local_sweep['run']}/{best}"
    assert f"TensorFlow Serving --model_base_path=/mnt/nfs/exports/tiny/{local_sweep['run']}/{best}" in result.stdout
    assert local.returncode == 0


def test_results_from_a_tensorboard_that_is_not_there_are_one_line(tmp_path):
    port = free_port()
    result = run_sweep("--results", "--tensorboard", f"http://127.0.0.1:{port}", "--output_dir", tmp_path)
    assert_one_line_error(result, f"cannot reach TensorBoard at http://127.0.0.1:{port}", "make tensorboard")


# ---------------------------------------------------------------- sweeps side by side, and stopped

ONE_TRIAL = TINY.replace("[0.05, 0.0001]", "[0.05]")


def test_a_local_run_claims_an_id_no_other_run_has(tmp_path, monkeypatch):
    """Runs started in the same second: the first gets <time>, the next <time>-2, ... (mkdir is atomic), and the
    ids sort as the runs started."""
    monkeypatch.setattr(trials, "new_run_id", lambda: "20250102-030405")
    claimed = [trials.claim_run(tmp_path) for _ in range(11)]
    assert claimed[:3] == ["20250102-030405", "20250102-030405-2", "20250102-030405-3"]
    assert len(set(claimed)) == 11 and all(trials.RUN_ID.fullmatch(run) for run in claimed)
    assert sorted(sorted(claimed), key=trials.run_order) == claimed  # -10 and -11 after -9, not after -1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(claimed)
    with pytest.raises(UserError, match="run 20250102-030405 already exists"):
        trials.claim_run(tmp_path, "20250102-030405")


@pytest.mark.slow
def test_two_local_sweeps_at_once_each_get_their_own_run_and_results(tmp_path):
    values, root = write_values(tmp_path, ONE_TRIAL), tmp_path / "root"
    command = [str(RUN), "--values", str(values), "--local", "--root", str(root), *map(str, SHORT_TRAINING)]
    env = {**child_env(), "VENV": sys.prefix}
    sweeps = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [s.communicate(timeout=600)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    runs = [re.search(r"all 1 trials of run (\S+) succeeded", out)[1] for out in outputs]
    assert runs[0] != runs[1] and all(trials.RUN_ID.fullmatch(r) for r in runs), runs
    for run in runs:
        log = (root / "logs" / run / "tiny-t01.log").read_text()
        assert f"/runs/tiny/{run}/t01" in log and log.count("[tfjob] started chief-0") == 1, log
        assert f"run: {run}" in (root / "manifests" / run / "tiny-t01.yaml").read_text()
        result = run_sweep("--values", values, "--results", "--run_id", run, "--root", root,
                           "--output_dir", tmp_path / run)
        assert result.returncode == 0, result.stderr
        assert f"sweep tiny, run {run}" in result.stdout and f"/exports/tiny/{run}/t01" in result.stdout


def family(pid):
    """`pid` and every process descended from it (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in found]
        found.update(children)
        frontier = children
    return found


def alive(pids):
    left = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(pid)
        except OSError:
            pass
    return left


def marked(marker):
    """Live processes whose command line holds `marker`."""
    return alive([int(e) for e in os.listdir("/proc") if e.isdigit() and marker in read_cmdline(e)])


def read_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.slow
def test_a_local_sweep_interrupted_says_what_finished_where_it_stays_and_that_the_same_command_starts_anew(
        tmp_path):
    """Ctrl-C: the terminal sends SIGINT to the whole foreground group (the sweep, its runners, the trainers).
    t01 trains 20 steps and finishes; t02 is interrupted. The last line counts t01, names where the run's files
    stay and how to rank them, and says what the same command does: a new run (a run is never resumed)."""
    values = write_values(tmp_path, """\
        name: tiny
        workers: 0
        grid:
          steps: [20, 5000]
        flags:
          dataset: mini
          eval_every: 10
          checkpoint_every: 10
        """)
    root = tmp_path / "root"
    sweep = subprocess.Popen([str(RUN), "--values", str(values), "--local", "--root", str(root)], cwd=REPO,
                             env={**child_env(), "VENV": sys.prefix}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        wait_for(lambda: [p for p in marked(f"{root}/nfs/runs/tiny/") if "/t02" in read_cmdline(p)],
                 "the second trial's trainer", timeout=300)
        members = family(sweep.pid)
        os.killpg(sweep.pid, signal.SIGINT)
        _, err = sweep.communicate(timeout=120)
        wait_for(lambda: not alive(members) and not marked(str(root)), "every process of the sweep to end",
                 timeout=30)
    finally:
        for pid in marked(str(root)) + alive(family(sweep.pid)):
            os.kill(pid, signal.SIGKILL)
    assert sweep.returncode == 130, err
    last = err.strip().splitlines()[-1]
    run = re.search(r"trials of run (\S+) had finished", last)[1]
    assert (root / "logs" / run).is_dir() and trials.RUN_ID.fullmatch(run), last
    volume = root / "nfs"
    assert last == (f"error: interrupted: 1 of 2 trials of run {run} had finished, their files stay in "
                    f"{volume}/{{runs,exports}}/tiny/{run} (rank them: templated/run.sh --results --values {values} "
                    f"--root {root} --run_id {run}); the same command starts a new run, every trial from the start")
    assert (volume / "exports" / "tiny" / run / "t01").is_dir() and (volume / "runs" / "tiny" / run / "t01").is_dir()
    # t02 exported nothing: its directory, if the trainer got as far as checking it could write there, is empty.
    assert not list((volume / "exports" / "tiny" / run / "t02").glob("*"))
    ranked = run_sweep("--values", values, "--results", "--root", root, "--run_id", run)
    assert ranked.returncode == 0, ranked.stderr
    assert f"sweep tiny, run {run}" in ranked.stdout and "1 of 2 trials finished" in ranked.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_local_sweep_killed_or_terminated_leaves_no_process(tmp_path, signum):
    values, root = write_values(tmp_path, ONE_TRIAL), tmp_path / "root"
    sweep = subprocess.Popen([str(RUN), "--values", str(values), "--local", "--root", str(root), "--", "--steps",
                              "5000"], cwd=REPO, env={**child_env(), "VENV": sys.prefix}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    trainer = f"{root}/nfs/runs/tiny"  # in the trainer's --model_dir
    try:
        wait_for(lambda: marked(trainer), "the trial's trainer", timeout=120)
        members = family(sweep.pid)  # the sweep, the trial's runner, its watchdog, the trainer
        assert len(members) >= 4, [read_cmdline(p) for p in members]
        sweep.send_signal(signum)
        sweep.wait(timeout=60)
        wait_for(lambda: not alive(members) and not marked(str(root)), "every process of the sweep to end",
                 timeout=30)
    finally:
        for pid in marked(str(root)) + alive(family(sweep.pid)):
            os.kill(pid, signal.SIGKILL)
