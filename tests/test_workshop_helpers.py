"""`make serve-best` (here, and on the cluster) and `make clean-local`: what they refuse, in one line, and what
they do."""
import csv
import json
import os
import subprocess
import sys
import urllib.parse

import pytest
import yaml

from support import REPO, TINY_VALUES, FakeRest, assert_one_line_error, make, make_error, write_values
from tfk8s.serving import model_config
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


def cluster_side(scalars):
    """What the port-forwards reach, on loopback: TensorBoard's scalars API over the trials' event files (run ->
    tag -> [(step, value)]), and TensorFlow Serving's REST model status (one version AVAILABLE)."""
    def answer(path):
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/data/plugin/scalars/tags":
            return {run: {tag: {"displayName": tag, "description": ""} for tag in tags}
                    for run, tags in scalars.items()}
        if url.path == "/data/plugin/scalars/scalars" and query.get("tag") in scalars.get(query.get("run"), {}):
            return [[1700000000.0 + step, step, value] for step, value in scalars[query["run"]][query["tag"]]]
        if url.path == "/v1/models/mnist":
            return {"model_version_status": [{"version": "1767225600", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
        return None
    return FakeRest(answer)


RUN_ID = "20260114-101500"


def cluster_sweep(tmp_path, fake_kubectl, scalars):
    """make serve-best SWEEP_TENSORBOARD=... against the stand-in kubectl, whose port-forward reaches ClusterSide."""
    path, calls = fake_kubectl
    values = write_values(tmp_path, TINY_VALUES)
    side = cluster_side(scalars)
    try:
        result = make("serve-best", f"SWEEP_VALUES={values}", f"SWEEP_TENSORBOARD={side.url}",
                      f"SWEEP_ROOT={tmp_path / 'ranking'}", f"SERVE_BEST_CONFIG={tmp_path / 'applied.yaml'}",
                      "NAMESPACE=alice", env={"FAKE_CONTEXT_NAMESPACE": "alice", "FAKE_FORWARD_TO": str(side.port)},
                      path=path)
    finally:
        side.close()
    return result, [c for c in calls() if c["args"][0] != "config"]


def trial_scalars(trial, validation, test=None):
    run = f"tiny/{RUN_ID}/{trial}"
    found = {f"{run}/eval": {"accuracy": [(30, validation)]}}
    if test is not None:
        found[f"{run}/test"] = {"accuracy": [(30, test)]}
    return found


def test_serve_best_on_the_cluster_points_tensorflow_serving_at_the_winners_export(tmp_path, fake_kubectl):
    """The winner on validation (t02, though t01 tests better) is the base path of the ConfigMap applied;
    serving then restarts on it and the wait reads the version it serves over the forwarded REST port."""
    result, calls = cluster_sweep(tmp_path, fake_kubectl, {**trial_scalars("t01", 0.80, 0.99),
                                                          **trial_scalars("t02", 0.90, 0.85)})
    assert result.returncode == 0, result.stdout + result.stderr
    winner = f"/mnt/nfs/exports/tiny/{RUN_ID}/t02"
    applied = [c for c in calls if c["args"][2:4] == ["apply", "-f"]]
    configmaps = [d for c in applied for d in yaml.safe_load_all(c["stdin"]) if d and d["kind"] == "ConfigMap"]
    assert len(configmaps) == 1 and configmaps[0]["metadata"] == {
        "name": "mnist-model-config", "namespace": "alice",
        "labels": {"app": "mnist-serving", "app.kubernetes.io/part-of": "mnist-workshop"}}
    _, config = model_config.read_configmap(yaml.safe_dump(configmaps[0]))
    served = model_config.model(config)
    assert served.base_path == winner and not served.version_labels
    assert model_config.version_policy(served) == ("latest", 2)  # kube/model-config.yaml's: the newest there
    deployments = [d for c in applied for d in yaml.safe_load_all(c["stdin"]) if d and d["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["mnist-serving"]
    mounted = next(v for v in deployments[0]["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert mounted["configMap"]["name"] == configmaps[0]["metadata"]["name"]
    verbs = [c["args"][2:] for c in calls]
    order = [verbs.index(["apply", "-f", "-"]), verbs.index(["rollout", "restart", "deployment/mnist-serving"]),
             verbs.index(["rollout", "status", "deployment/mnist-serving", "--timeout=10m"]),
             verbs.index(["port-forward", "service/mnist-serving", ":8501"])]
    assert order == sorted(order), verbs
    assert "serves mnist: versions 1767225600" in result.stdout
    assert f"serving the sweep's winner, {winner}" in result.stdout and "make predict" in result.stdout


def test_serve_best_on_the_cluster_with_no_finished_trial_is_one_line_and_applies_nothing(tmp_path, fake_kubectl):
    result, calls = cluster_sweep(tmp_path, fake_kubectl, trial_scalars("t01", 0.80))  # evaluated, not tested
    make_error(result, "no trial is ranked (none has finished)")
    assert [c for c in calls if "apply" in c["args"] or "rollout" in c["args"]] == []


@pytest.mark.parametrize("export", ["", "runs/exports/t01", "/elsewhere/t01"])
def test_best_export_of_a_cluster_sweep_is_on_the_shared_volume(tmp_path, export):
    path = ranking(tmp_path / "r.csv", [["1", "t01", "s-t01", "0.1", "finished", "20", "0.9", "0.9", "m1", export]])
    assert_one_line_error(workshop("best-export", "--cluster", path, cwd=tmp_path), "is not on the shared volume")
    ranking(path, [["1", "t01", "s-t01", "0.1", "finished", "20", "0.9", "0.9", "m1", "/mnt/nfs/exports/s/r/t01"]])
    result = workshop("best-export", "--cluster", path, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "/mnt/nfs/exports/s/r/t01\n", result.stderr


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
