"""`make serve-best` and `make clean-local`: what they refuse, in one line, and what they do."""
import csv
import json
import os
import subprocess
import sys

import yaml

from support import REPO, assert_one_line_error, make, make_error
from tfk8s.trainer import lock

HEADER = ["rank", "trial", "job", "learning_rate", "status", "step", "validation_accuracy", "test_accuracy",
          "model_dir", "export"]


def workshop(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tfk8s.workshop", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def ranking(path, rows):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(rows)
    return path


def test_best_export_is_the_rank_one_trials_export_directory(tmp_path):
    version = tmp_path / "exports" / "t02" / "1700000000"
    version.mkdir(parents=True)
    path = ranking(tmp_path / "r.csv", [["2", "t01", "s-t01", "0.1", "finished", "20", "0.9", "0.9", "m1", "x"],
                                        ["1", "t02", "s-t02", "0.01", "finished", "20", "0.95", "0.9", "m2", version]])
    result = workshop("best-export", path, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == str(version.parent), result.stderr


def test_best_export_refuses_no_ranking_no_finished_trial_and_a_missing_export(tmp_path):
    assert_one_line_error(workshop("best-export", tmp_path / "none.csv", cwd=tmp_path),
                          "no ranking", "run the sweep first (make sweep-local)")
    path = ranking(tmp_path / "r.csv", [["", "t01", "s-t01", "0.1", "running", "", "", "", "m1", ""]])
    assert_one_line_error(workshop("best-export", path, cwd=tmp_path), "no trial is ranked")
    ranking(path, [["1", "t01", "s-t01", "0.1", "finished", "20", "0.9", "0.9", "m1", tmp_path / "gone" / "1"]])
    assert_one_line_error(workshop("best-export", path, cwd=tmp_path), "the winner t01 has no export to serve")
    path.write_bytes(b"\xff\xfe\x00binary")
    assert_one_line_error(workshop("best-export", path, cwd=tmp_path), "not a ranking written by make sweep-results")


def test_serve_best_before_any_sweep_says_to_run_it(tmp_path):
    result = make("serve-best", f"SWEEP_ROOT={tmp_path}")
    assert result.returncode != 0
    make_error(result, "no run of sweep mnist-small", "run the sweep first")


def test_clean_local_refuses_while_a_trainer_writes_and_deletes_runs_after(tmp_path):
    model_dir = tmp_path / "runs" / "local" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "ckpt-1.index").write_bytes(b"x")
    holder = lock.identity()  # this test's process: alive, on this machine, not the cleaner
    (model_dir / lock.LOCK_NAME).write_text(json.dumps(holder))
    busy = workshop("clean", "runs", cwd=tmp_path)
    assert_one_line_error(busy, f"{os.path.join('runs', 'local', 'model')} is being written by a trainer, "
                                f"pid {holder['pid']}", "stop it")
    assert (model_dir / "ckpt-1.index").exists()

    (model_dir / lock.LOCK_NAME).write_text(json.dumps({**holder, "pid": 2 ** 22 + 1}))  # a trainer that is gone
    done = workshop("clean", "runs", cwd=tmp_path)
    assert done.returncode == 0 and "deleted runs" in done.stdout, done.stderr
    assert not (tmp_path / "runs").exists()
    again = workshop("clean", "runs", cwd=tmp_path)
    assert again.returncode == 0 and "nothing to clean" in again.stdout


def test_clean_local_deletes_nothing_outside_the_checkout(tmp_path):
    (tmp_path / "keep").mkdir()
    for where in ("..", ".", str(tmp_path / "keep")):
        refused = workshop("clean", where, cwd=tmp_path / "keep")
        assert_one_line_error(refused, "is not a directory inside this checkout")
    assert (tmp_path / "keep").exists()
    make_error(make("clean-local", "RUNS=/tmp"), "/tmp is not a directory inside this checkout")


def test_the_workshop_sized_sweep_is_four_trials_of_the_chief_alone_and_katib_accepts_it(tmp_path):
    values = "templated/values-workshop.yaml"
    result = subprocess.run(["templated/run.sh", "--values", values, "--dry_run", "--output_dir", tmp_path / "tfjobs"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "VENV": ".venv"})
    assert result.returncode == 0, result.stderr
    tfjobs = sorted(p.name for p in (tmp_path / "tfjobs").glob("*.yaml"))
    assert tfjobs == [f"mnist-small-t0{n}.yaml" for n in range(1, 5)], tfjobs
    for path in (tmp_path / "tfjobs").glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())["spec"]["tfReplicaSpecs"]) == {"Chief"}
    katib = subprocess.run(["templated/run.sh", "--values", values, "--katib", "--dry_run", "--output_dir",
                            tmp_path / "katib"], cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "VENV": ".venv"})
    assert katib.returncode == 0, katib.stderr
    assert (tmp_path / "katib" / "mnist-small-experiment.yaml").exists()
