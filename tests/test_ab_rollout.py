"""A/B rollout: two versions served as stable and canary, moved by editing TensorFlow Serving's model config.

First the config file itself (src/model_config.py, on TensorFlow Serving's
own proto classes), then src/serve.py reading it as tensorflow_model_server
does: both labels answer, an edit moves `stable` without a restart, an
unknown label is refused with TensorFlow Serving's code and message.
"""
import json
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import yaml

from support import REPO, SRC, assert_one_line_error, make, run_script
from tfk8s.ports import free_port, free_ports
from tfk8s.serving import model_config
from tfk8s.serving import process as serve
from tfk8s.serving.tensors import apis, to_tensor_proto

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
    # A stays: a rollback is a label move
    assert labels(path) == {"stable": B, "canary": B} and versions(path) == [A, B]

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


@pytest.mark.parametrize("action", [["show"], ["promote"], ["load", "--version", "7"]])
def test_a_config_that_is_missing_or_binary_is_one_line_and_left_as_it_was(tmp_path, action):
    missing = tmp_path / "none.config"
    assert_one_line_error(run_script("model_config.py", *action, "--config", missing),
                          f"cannot read the model config {missing}")
    binary = tmp_path / "binary.config"
    binary.write_bytes(bytes(range(256)))
    assert_one_line_error(run_script("model_config.py", *action, "--config", binary),
                          f"the model config {binary} is not a text file (byte 128 is not UTF-8")
    assert binary.read_bytes() == bytes(range(256)) and sorted(p.name for p in tmp_path.iterdir()) == ["binary.config"]


def test_loading_a_version_into_a_config_that_lets_the_server_choose_needs_the_server(tmp_path):
    path = config_file(tmp_path)
    assert_one_line_error(run_script("model_config.py", "load", "--config", path, "--version", C), "--server")
    assert path.read_text() == LATEST_TWO


@pytest.mark.parametrize("text,fragment", [
    ("model_config_list { config { name: 'mnist' base_pth: '/x' } }", 'no field named "base_pth"'),
    ("model_config_list { }", "lists no model"),
    ("model_config_list { config { name: 'mnist' base_path: 'exports' model_platform: 'tensorflow' } }",
     "Expected model mnist to have an absolute path or URI; got base_path()=exports"),
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
    assert "make/cluster.sh check-cluster alice" in out  # check-cluster first
    # While serving's REST port is forwarded: the ConfigMap through model_config.py promote, then wait for the pod.
    assert ("make/cluster.sh with-port-forward alice mnist-serving 8501 "
            "make/cluster.sh model-config alice mnist-model-config .venv/bin/python promote") in out
    script = (REPO / "make" / "cluster.sh").read_text()
    assert ('kubectl --namespace "$namespace" get configmap "$configmap" --output yaml \\\n'
            '    | "$python" src/model_config.py "$@" --configmap - | kubectl --namespace "$namespace" apply -f -') \
        in script
    assert '"$python" src/model_config.py wait --configmap - --server "$server"' in script


def test_make_canary_loads_the_new_version_before_it_labels_it():
    out = make("-n", "canary", "NAMESPACE=alice", f"CANARY={C}").stdout
    load = out.index(f"model-config alice mnist-model-config .venv/bin/python load --version {C}")
    label = out.index(f"model-config alice mnist-model-config .venv/bin/python canary --canary {C}")
    assert load < label  # each waits until the pod serves its change before the next runs
    assert " load " not in make("-n", "canary", "NAMESPACE=alice").stdout


# ---------------------------------------------------------------- src/serve.py reading the config file

def labelled_config(base_path, versions, labels):
    specific = " ".join(f"versions: {v}" for v in versions)
    labelled = "\n".join(f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    return f"""model_config_list {{
  config {{
    name: "mnist"
    base_path: "{base_path}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ {specific} }} }}
{labelled}
  }}
}}
"""


def ask(server, *flags):
    """client.py --json on data/4.png against the local server; (CompletedProcess, the answer or None)."""
    result = run_script("client.py", "--host", "127.0.0.1", "--port", server.grpc_port, "--model", "mnist",
                        "--signature_name", "predict", "--image", REPO / "data" / "4.png", "--json", *flags)
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


def grpc_code(server, label=None, version=None):
    """The status code of a raw Predict naming a label or a version (OK when it answers)."""
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "mnist", "predict"
    if label:
        request.model_spec.version_label = label
    if version:
        request.model_spec.version.value = version
    request.inputs["image"].CopyFrom(to_tensor_proto(np.zeros([1, 28, 28, 1], np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        try:
            apis.prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        except grpc.RpcError as err:
            return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def wait_until(condition, what, server, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} within {timeout} s; server log:\n{server.log()}"
        time.sleep(0.5)


@pytest.mark.slow
def test_serve_py_serves_both_labels_and_an_edited_config_moves_stable_without_a_restart(trained_model, tmp_path):
    exports = tmp_path / "exports"
    for version in (A, B):
        shutil.copytree(trained_model["version"], exports / str(version))
    path = config_file(tmp_path, labelled_config(exports, [A, B], {"stable": A, "canary": B}))

    # A config that has labels at start-up: TensorFlow Serving needs this flag (labels are checked before loading).
    with serve.running(model_config_file=path, args=["--model_config_file_poll_wait_seconds", 1,
                                                     "--allow_version_labels_for_unavailable_models"]) as server:
        pid = server.process.pid
        for flags, version in ((["--version_label", "stable"], A), (["--version_label", "canary"], B),
                               (["--version_label", "canary", "--rest", "--port", server.rest_port], B),
                               (["--model_version", A], A), ([], B)):  # no label, no version: the newest
            result, answer = ask(server, *flags)
            assert result.returncode == 0, result.stderr
            assert (answer["version"], answer["digit"]) == (version, 4), (flags, answer)

        # An unknown label: TensorFlow Serving's code and message (server_core.cc, GetModelVersionForLabel).
        assert grpc_code(server, label="nope") == (grpc.StatusCode.INVALID_ARGUMENT,
                                                   "Unrecognized servable version label: nope")
        assert_one_line_error(ask(server, "--version_label", "nope")[0], "INVALID_ARGUMENT",
                              "Unrecognized servable version label: nope")

        # `promote` edits the file; the running server moves `stable` to B at its next read.
        promoted = run_script("model_config.py", "promote", "--config", path)
        assert promoted.returncode == 0, promoted.stderr
        wait_until(lambda: ask(server, "--version_label", "stable")[1]["version"] == B, "stable -> B", server)
        assert server.process.pid == pid and server.process.poll() is None  # no restart
        assert f"labels of mnist: canary -> {B}, stable -> {B}" in server.log()

        # A label on a version that is not loaded is refused as a whole; the config in force stays.
        path.write_text(labelled_config(exports, [A, B, C], {"stable": C, "canary": A}))
        wait_until(lambda: "not currently available for inference" in server.log(), "the refusal", server)
        assert ask(server, "--version_label", "stable")[1]["version"] == B
        assert ask(server, "--version_label", "canary")[1]["version"] == B

        # Rollback by policy and labels: serve only A again; B is unloaded, asking for it is NOT_FOUND.
        path.write_text(labelled_config(exports, [A], {"stable": A}))
        wait_until(lambda: grpc_code(server, version=B)[0] == grpc.StatusCode.NOT_FOUND, "B unloaded", server)
        assert ask(server, "--version_label", "stable")[1]["version"] == A
        assert grpc_code(server, label="canary")[0] == grpc.StatusCode.INVALID_ARGUMENT  # the label is gone
        assert grpc_code(server, version=B)[1] == f"Servable not found for request: Specific(mnist, {B})"

        # A file that does not parse is logged and ignored.
        path.write_text("model_config_list { config { name: 'mnist' base_pth: '/x' } }")
        wait_until(lambda: 'no field named "base_pth"' in server.log(), "the parse error", server)
        assert ask(server, "--version_label", "stable")[1]["version"] == A
        assert server.process.poll() is None and "Traceback" not in server.log()


@pytest.mark.parametrize("flags,fragment", [
    (["--model_config_file", "{config}", "--model_base_path", "{exports}"], "not both"),
    ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
    (["--model_config_file", "{missing}"], "Failed to start server. Error: NOT_FOUND: "),
    (["--model_config_file", "{bad}"], "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: "),
    (["--model_config_file", "{bad}"], 'no field named "base_pth"'),
    (["--model_config_file", "{binary}"], "is not UTF-8"),
    (["--model_config_file", "{config}", "--model_config_file_poll_wait_seconds", "-1"],
     "--model_config_file_poll_wait_seconds: must be a whole number of seconds from 0"),
    (["--model_config_file", "{config}", "--port", "70000"], "--port must be at most 65535 (a TCP port), not 70000"),
    (["--model_config_file", "{config}", "--rest_api_port", "65536"], "--rest_api_port must be at most 65535"),
])
def test_serve_py_refuses_a_bad_config_at_start_up_in_one_line(tmp_path, flags, fragment):
    config = config_file(tmp_path, labelled_config(tmp_path, [A], {"stable": A}))
    bad = config_file(tmp_path, "model_config_list { config { name: 'mnist' base_pth: '/x' } }", "bad.config")
    binary = tmp_path / "binary.config"
    binary.write_bytes(bytes(range(256)))
    names = {"config": config, "exports": tmp_path, "missing": tmp_path / "none", "bad": bad, "binary": binary}
    # Free ports first (a flag given later wins): the refusal must not depend on 8500 being free here.
    ports = [str(p) for p in free_ports(2)]
    result = run_script("serve.py", "--port", ports[0], "--rest_api_port", ports[1],
                        *[f.format(**names) for f in flags], timeout=120)
    assert_one_line_error(result, fragment)


@pytest.mark.slow
def test_serve_py_will_not_start_from_labels_without_allow_version_labels_for_unavailable_models(trained_model,
                                                                                                   tmp_path):
    """As tensorflow_model_server: labels are checked before any version is loaded (issue #1230 upstream)."""
    shutil.copytree(trained_model["version"], tmp_path / str(A))
    path = config_file(tmp_path, labelled_config(tmp_path, [A, B], {"stable": A, "canary": B}))
    result = run_script("serve.py", "--model_config_file", path, "--port", free_port(), timeout=120)
    assert_one_line_error(result, "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to "
                                  f"version {B} of model mnist, which is not currently available for inference")


def test_init_writes_the_config_maps_config_for_a_local_export_and_never_overwrites(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    path = tmp_path / "local" / "models.config"
    result = run_script("model_config.py", "init", "--config", path, "--base_path", exports)
    assert result.stdout == f"{path}: model mnist ({exports}): serves the 2 newest versions; labels: none\n", \
        result.stderr
    configmap = yaml.safe_load((REPO / "kube" / "model-config.yaml").read_text())
    expected = model_config.parse(configmap["data"]["models.config"])
    model_config.model(expected).base_path = str(exports)
    assert model_config.read(path) == expected
    written = path.read_text()
    assert_one_line_error(run_script("model_config.py", "init", "--config", path, "--base_path", exports), "exists")
    assert path.read_text() == written


def test_make_serve_creates_the_model_config_before_the_deployment_that_mounts_it():
    out = make("-n", "serve", "NAMESPACE=alice").stdout
    assert out.index("get configmap mnist-model-config") < out.index("kube/serving.yaml")
