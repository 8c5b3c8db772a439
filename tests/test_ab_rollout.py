"""A/B rollout: two versions served under the labels stable and canary, moved by editing TensorFlow Serving's model config.

First the config file itself (src/model_config.py, on TensorFlow Serving's
own proto classes), then src/serve.py reading it as tensorflow_model_server
does: both labels answer, an edit moves `stable` without a restart, an
unknown label is refused with TensorFlow Serving's code and message.
"""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

import model_config
from conftest import REPO, SRC, assert_one_line_error, run_script
from test_makefile import make

A, B, C = 1767225600, 1767312000, 1767398400  # three export versions (Unix times, as src/export.py names them)

LATEST_TWO = """
model_config_list {
  config {
    name: "mnist"
    base_path: "/mnt/nfs/exports/mnist"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""


def config_file(tmp_path, text=LATEST_TWO, name="models.config"):
    path = tmp_path / name
    path.write_text(text)
    return path


def labels(path):
    return dict(model_config.model(model_config.read(path)).version_labels)


def versions(path):
    return model_config.served_versions(model_config.model(model_config.read(path)))


# ---------------------------------------------------------------- the config file, offline

def test_the_config_round_trips_through_tensorflow_servings_own_message():
    config = model_config.parse(LATEST_TWO)
    again = model_config.parse(model_config.dumps(config))
    assert again == config and again.model_config_list.config[0].model_version_policy.latest.num_versions == 2


def test_canary_then_promote_on_a_local_file(tmp_path):
    path = config_file(tmp_path)
    result = run_script("model_config.py", "canary", "--config", path, "--stable", A, "--canary", B)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: stable -> {A}, canary -> {B}\n"
    assert versions(path) == [A, B] and labels(path) == {"stable": A, "canary": B}
    assert "specific {" in path.read_text()

    result = run_script("model_config.py", "promote", "--config", path)
    assert result.stdout == f"{path}: promoted: stable {A} -> {B}\n", result.stderr
    assert labels(path) == {"stable": B, "canary": B} and versions(path) == [A, B]  # A stays: a rollback is a label move

    shown = run_script("model_config.py", "show", "--config", path)
    assert shown.stdout == f"model mnist (/mnt/nfs/exports/mnist): serves versions {A}, {B}; " \
                           f"labels: canary -> {B}, stable -> {B}\n"


def test_a_new_version_is_loaded_first_and_labelled_after(tmp_path):
    """TensorFlow Serving refuses a label on a version it has not loaded: the tool will not write one."""
    path = config_file(tmp_path)
    run_script("model_config.py", "canary", "--config", path, "--stable", A, "--canary", B)
    refused = run_script("model_config.py", "canary", "--config", path, "--canary", C)
    assert_one_line_error(refused, f"version {C} is not loaded", f"load --version {C}")
    assert labels(path) == {"stable": A, "canary": B}  # unchanged

    loaded = run_script("model_config.py", "load", "--config", path, "--version", C)
    assert loaded.returncode == 0, loaded.stderr
    assert versions(path) == [A, B, C] and labels(path) == {"stable": A, "canary": B}
    moved = run_script("model_config.py", "canary", "--config", path, "--canary", C)
    assert moved.stdout == f"{path}: stable -> {A}, canary -> {C}\n", moved.stderr
    assert versions(path) == [A, C]  # B, labelled no more, is unloaded


def test_loading_a_version_into_a_config_that_lets_the_server_choose_needs_the_server(tmp_path):
    path = config_file(tmp_path)
    assert_one_line_error(run_script("model_config.py", "load", "--config", path, "--version", C), "--server")
    assert path.read_text() == LATEST_TWO


@pytest.mark.parametrize("text,fragment", [
    ("model_config_list { config { name: 'mnist' base_pth: '/x' } }", 'no field named "base_pth"'),
    ("model_config_list { }", "lists no model"),
    ("model_config_list { config { name: 'mnist' base_path: 'exports' model_platform: 'tensorflow' } }",
     "needs an absolute base_path"),
    ("model_config_list { config { name: 'mnist' base_path: '/x' } }", "model_platform"),
    ("model_config_list { config { name: 'mnist' base_path: '/x' model_platform: 'tensorflow' "
     "model_version_policy { specific { versions: 1 } } version_labels { key: 'stable' value: 2 } } }",
     "label 'stable' points at version 2"),
])
def test_a_config_tensorflow_serving_would_refuse_is_a_one_line_error(tmp_path, text, fragment):
    path = config_file(tmp_path, text)
    assert_one_line_error(run_script("model_config.py", "show", "--config", path), fragment)


def test_promote_without_a_canary_and_bad_versions_are_one_line_errors(tmp_path):
    path = config_file(tmp_path)
    assert_one_line_error(run_script("model_config.py", "promote", "--config", path), "no 'canary' label")
    assert_one_line_error(run_script("model_config.py", "canary", "--config", path, "--canary", B),
                          "--stable VERSION")
    assert_one_line_error(run_script("model_config.py", "canary", "--config", path, "--stable", 0, "--canary", B),
                          "--stable must be a version number")
    assert_one_line_error(run_script("model_config.py", "show", "--config", tmp_path / "none"), "cannot read")
    assert path.read_text() == LATEST_TWO


def test_the_file_is_replaced_in_one_step(tmp_path):
    """A server polling the file reads the old config or the new one, never half of one."""
    path = config_file(tmp_path)
    inode = path.stat().st_ino
    run_script("model_config.py", "canary", "--config", path, "--stable", A, "--canary", B)
    assert path.stat().st_ino != inode and sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def test_promote_pipes_the_live_config_map_back_for_kubectl_apply(tmp_path):
    live = yaml.safe_load((REPO / "kube" / "model-config.yaml").read_text())
    config = model_config.split(model_config.parse(live["data"]["models.config"]), A, B)
    live["data"]["models.config"] = model_config.dumps(config)
    live["metadata"].update(namespace="alice", resourceVersion="7", uid="u", annotations={
        model_config.LAST_APPLIED: "{}", "note": "kept"})
    result = subprocess.run([sys.executable, str(SRC / "model_config.py"), "promote", "--configmap", "-"],
                            input=yaml.safe_dump(live), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = yaml.safe_load(result.stdout)
    assert out["metadata"] == {"name": "mnist-model-config", "labels": live["metadata"]["labels"],
                               "namespace": "alice", "resourceVersion": "7", "annotations": {"note": "kept"}}
    assert dict(model_config.model(model_config.parse(out["data"]["models.config"])).version_labels) == \
        {"stable": B, "canary": B}
    assert result.stderr.strip() == f"ConfigMap mnist-model-config: promoted: stable {A} -> {B}"


# ---------------------------------------------------------------- the Makefile

def test_make_promote_edits_the_live_config_map_and_waits_for_the_pod_to_serve_it():
    result = make("-n", "promote", "NAMESPACE=alice")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "kubectl config current-context" in out  # check-cluster first
    assert "kubectl --namespace alice port-forward service/mnist-serving 8501:8501" in out
    assert ("kubectl --namespace alice get configmap mnist-model-config --output yaml "
            "| .venv/bin/python src/model_config.py promote --configmap - | kubectl --namespace alice apply -f -") in out
    assert "src/model_config.py wait --configmap - --server http://localhost:8501" in out


def test_make_canary_loads_the_new_version_before_it_labels_it():
    out = make("-n", "canary", "NAMESPACE=alice", f"CANARY={C}").stdout
    load, label = out.index(f"model_config.py load --version {C}"), out.index(f"model_config.py canary --canary {C}")
    assert load < out.index("model_config.py wait", load) < label < out.index("model_config.py wait", label)
    assert "model_config.py load" not in make("-n", "canary", "NAMESPACE=alice").stdout
