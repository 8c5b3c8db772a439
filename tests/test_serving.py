"""serve.py against real gRPC and HTTP clients on loopback, and the TensorFlow Serving manifest it stands in for."""
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import yaml

from support import REPO, assert_one_line_error, copy_export, run_script
from tfk8s.serving import model_config, preprocess
from tfk8s.serving import process as serve
from tfk8s.serving.flags import parse_args
from tfk8s.serving.tensors import apis, to_ndarray, to_tensor_proto

MAX_BATCH = 64
MANIFEST = REPO / "kube" / "serving.yaml"
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("served") / "export"
    version = copy_export(trained_model["version"], export_dir)
    batching = export_dir.parent / "batching.config"
    batching.write_text(f"max_batch_size {{ value: {MAX_BATCH} }} batch_timeout_micros {{ value: 1000 }}")
    with serve.running(export_dir, "mnist", ["--enable_batching", "--batching_parameters_file", batching],
                       debug=True) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}", options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        yield {"version": version, "rest": f"http://127.0.0.1:{running.rest_port}", "log": running.log,
               "predict": apis.prediction_service_pb2_grpc.PredictionServiceStub(channel),
               "models": apis.model_service_pb2_grpc.ModelServiceStub(channel)}
        channel.close()


def predict_request(images, model="mnist", signature="predict", version=None, label=None, name="image"):
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[name].CopyFrom(to_tensor_proto(images))
    return request


def rest(base, path, body=None):
    """(HTTP status, JSON body) of a GET, or of a POST when there is a body."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def samples():
    """data/0.png .. data/9.png, preprocessed as the client does, and their digits."""
    paths = [REPO / "data" / f"{digit}.png" for digit in range(10)]
    return preprocess.load_batch(paths), np.arange(10)


def assert_still_answers(server):
    images, digits = samples()
    response = server["predict"].Predict(predict_request(images[4:5]), timeout=30)
    assert list(to_ndarray(response.outputs["classes"])) == [4]


# ---------------------------------------------------------------- answers

@pytest.mark.slow
def test_each_sample_digit_is_predicted_and_grpc_and_rest_agree(server):
    images, digits = samples()
    response = server["predict"].Predict(predict_request(images), timeout=30)
    assert response.model_spec.version.value == server["version"] and response.model_spec.signature_name == "predict"
    grpc_probabilities = to_ndarray(response.outputs["probabilities"])
    assert list(to_ndarray(response.outputs["classes"])) == list(digits)
    assert list(np.argmax(grpc_probabilities, 1)) == list(digits)

    status, rows = rest(server["rest"], "/v1/models/mnist:predict",
                        {"signature_name": "predict", "instances": images.tolist()})
    assert status == 200 and [row["classes"] for row in rows["predictions"]] == list(digits)
    np.testing.assert_allclose([row["probabilities"] for row in rows["predictions"]], grpc_probabilities, atol=1e-6)
    status, columns = rest(server["rest"], f"/v1/models/mnist/versions/{server['version']}:predict",
                           {"inputs": {"image": images.tolist()}})  # columnar, serving_default
    assert status == 200 and columns["outputs"]["classes"] == list(digits)
    np.testing.assert_allclose(columns["outputs"]["probabilities"], grpc_probabilities, atol=1e-6)


@pytest.mark.slow
def test_metadata_and_status_describe_the_served_version_over_grpc_and_rest(server):
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    response = server["predict"].GetModelMetadata(request, timeout=30)
    signatures = apis.get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    predict = signatures.signature_def["predict"]
    assert {"predict", "serving_default"} <= set(signatures.signature_def)
    assert [d.size for d in predict.inputs["image"].tensor_shape.dim] == [-1, 28, 28, 1]
    assert set(predict.outputs) == {"classes", "probabilities"}
    assert response.model_spec.version.value == server["version"]

    status, metadata = rest(server["rest"], "/v1/models/mnist/metadata")
    rest_predict = metadata["metadata"]["signature_def"]["signature_def"]["predict"]
    assert status == 200 and metadata["model_spec"]["version"] == str(server["version"])
    assert rest_predict["inputs"]["image"]["dtype"] == "DT_FLOAT"

    status_request = apis.get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "mnist"
    (version_status,) = server["models"].GetModelStatus(status_request, timeout=30).model_version_status
    assert (version_status.version, version_status.state) == (server["version"], serve.State.AVAILABLE)
    assert rest(server["rest"], "/v1/models/mnist") == (200, {"model_version_status": [
        {"version": str(server["version"]), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]})


@pytest.mark.slow
def test_concurrent_requests_merged_into_batches_each_get_their_own_answer(server):
    images, digits = samples()
    alone = [to_ndarray(server["predict"].Predict(predict_request(images[i:i + 1]), timeout=30)
                        .outputs["probabilities"])[0] for i in range(10)]
    since = len(server["log"]())
    futures = [(i % 10, server["predict"].Predict.future(predict_request(images[i % 10:i % 10 + 1]), timeout=60))
               for i in range(200)]
    for i, future in futures:
        np.testing.assert_allclose(to_ndarray(future.result().outputs["probabilities"])[0], alone[i], atol=1e-5)
    # The server's debug line of each batch it ran: the 200 requests went through the batch queue, in fewer
    # model calls than requests.
    batches = [int(n) for n in re.findall(r"batch-predict: ran a batch of (\d+) task", server["log"]()[since:])]
    assert sum(batches) == 200 and max(batches) > 1, f"batches of {batches} task(s): not merged"


# ---------------------------------------------------------------- mistakes: TensorFlow Serving's status codes

def bad_dtype(images):
    return predict_request(images.astype(np.int32))


GRPC_MISTAKES = {
    "unknown model": (lambda x: predict_request(x, model="nope"), Code.NOT_FOUND, "Latest(nope)"),
    "unknown version": (lambda x: predict_request(x, version=7), Code.NOT_FOUND, "Specific(mnist, 7)"),
    "unknown label": (lambda x: predict_request(x, label="stable"), Code.INVALID_ARGUMENT, "label: stable"),
    # TensorFlow Serving's Predict says FAILED_PRECONDITION here, not NOT_FOUND (predict_util.cc).
    "unknown signature": (lambda x: predict_request(x, signature="nope"), Code.FAILED_PRECONDITION, '"nope"'),
    "wrong input name": (lambda x: predict_request(x, name="pixels"), Code.INVALID_ARGUMENT, "pixels"),
    "wrong dtype": (bad_dtype, Code.INVALID_ARGUMENT, "int32"),
    "wrong shape": (lambda x: predict_request(x[..., 0]), Code.INVALID_ARGUMENT, "[-1,28,28,1]"),
    "batch over the limit": (lambda x: predict_request(np.repeat(x, 7, axis=0)), Code.INVALID_ARGUMENT,
                             f"larger than maximum input batch size {MAX_BATCH}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("mistake", GRPC_MISTAKES)
def test_a_malformed_predict_gets_tensorflow_servings_status_and_the_server_keeps_answering(server, mistake):
    make, code, fragment = GRPC_MISTAKES[mistake]
    images, _ = samples()  # 10 images: 70 of them is over the limit
    with pytest.raises(grpc.RpcError) as caught:
        server["predict"].Predict(make(images), timeout=30)
    assert caught.value.code() == code and fragment in caught.value.details(), caught.value.details()
    assert_still_answers(server)


@pytest.mark.slow
def test_status_and_metadata_of_unknown_models_and_versions_are_not_found(server):
    for version in (None, 7):
        request = apis.get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist" if version else "nope"
        if version:
            request.model_spec.version.value = version
        with pytest.raises(grpc.RpcError) as caught:
            server["models"].GetModelStatus(request, timeout=30)
        assert caught.value.code() == Code.NOT_FOUND
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest()  # no metadata_field
    request.model_spec.name = "mnist"
    with pytest.raises(grpc.RpcError) as caught:
        server["predict"].GetModelMetadata(request, timeout=30)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert_still_answers(server)


@pytest.mark.slow
@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/models/nope", None, 404, "any versions of model nope"),
    ("/v1/models/mnist/versions/7", None, 404, "version 7 of model mnist"),
    ("/v1/models/nope:predict", {"instances": [[0]]}, 404, "Latest(nope)"),
    ("/v1/models/mnist/versions/7:predict", {"instances": [[0]]}, 404, "Specific(mnist, 7)"),
    ("/v1/models/mnist:predict", b"{not json", 400, "JSON"),
    ("/v1/models/mnist:predict", {"signature_name": "nope", "instances": [[0]]}, 400, '"nope"'),
    ("/v1/models/mnist:predict", {"instances": [[0, 1]]}, 400, "[-1,28,28,1]"),
    ("/v1/models/mnist:predict", {"inputs": {"pixels": [[0]]}}, 400, "Missing named input: image in 'inputs' object."),
    ("/v1/models/mnist:predict", {"instances": [[["a"] * 28] * 28]}, 400, "is not of expected type: float"),
    ("/v1/models/mnist:predict", {"instances": np.zeros((MAX_BATCH + 1, 28, 28, 1)).tolist()}, 400,
     "larger than maximum input batch size"),
    ("/v2/anything", None, 404, "Not Found"),
    ("/v1/anything", None, 400, "Malformed request: GET /v1/anything"),
])
def test_a_malformed_rest_request_gets_an_error_object_and_the_server_keeps_answering(server, path, body, status,
                                                                                        fragment):
    answer = rest(server["rest"], path, body)
    assert answer[0] == status and list(answer[1]) == ["error"] and fragment in answer[1]["error"], answer
    assert_still_answers(server)


# ---------------------------------------------------------------- new versions, and the probes that watch them

def readiness_probe(rest_port):
    """The manifest's readiness command, pointed at a port of this machine."""
    deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["readinessProbe"]["exec"]["command"]
    assert "127.0.0.1/8501" in command[-1]
    return [*command[:-1], command[-1].replace("127.0.0.1/8501", f"127.0.0.1/{rest_port}")]


def wait_for(condition, what, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.25)


@pytest.mark.slow
def test_a_version_dropped_in_is_served_without_a_restart_and_readiness_follows_availability(trained_model,
                                                                                            tmp_path):
    export_dir = tmp_path / "export"
    first = copy_export(trained_model["version"], export_dir)
    images, _ = samples()
    with serve.running(export_dir, "mnist", ["--file_system_poll_wait_seconds", 1]) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
        stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        base = f"http://127.0.0.1:{running.rest_port}"
        probe = readiness_probe(running.rest_port)

        def answering_version():
            return stub.Predict(predict_request(images[:1]), timeout=30).model_spec.version.value

        assert answering_version() == first
        assert subprocess.run(probe, timeout=10).returncode == 0

        second = copy_export(trained_model["version"], export_dir, first + 1)
        wait_for(lambda: answering_version() == second, f"version {second} answering")
        with pytest.raises(grpc.RpcError) as caught:  # the latest policy unloaded the old version
            stub.Predict(predict_request(images[:1], version=first), timeout=30)
        assert caught.value.code() == Code.NOT_FOUND
        assert subprocess.run(probe, timeout=10).returncode == 0

        for version in (first, second):  # every export gone: nothing is AVAILABLE any more
            shutil.rmtree(export_dir / str(version))
        wait_for(lambda: "AVAILABLE" not in json.dumps(rest(base, "/v1/models/mnist")[1]), "unloading")
        # The liveness path still answers 200, which is why readiness needs the exec probe.
        status, body = rest(base, "/v1/models/mnist")
        assert status == 200 and {s["state"] for s in body["model_version_status"]} == {"END"}
        assert subprocess.run(probe, timeout=10).returncode != 0
        channel.close()
        assert f"Successfully loaded servable version {{name: mnist version: {second}}}" in running.log()


@pytest.mark.slow
def test_serve_refuses_an_export_directory_that_does_not_exist(tmp_path):
    result = run_script("serve.py", "--model_name", "mnist", "--model_base_path", tmp_path / "nope", timeout=120)
    assert_one_line_error(result, "--model_base_path", "is not a directory")


# ---------------------------------------------------------------- the manifest

def test_manifest_serves_the_shared_exports_read_only_with_tensorflow_servings_own_flags(tmp_path):
    deployment, service = (next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == kind)
                           for kind in ("Deployment", "Service"))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image, tag = container["image"].rsplit(":", 1)
    assert image == "tensorflow/serving" and tag[0].isdigit() and "gpu" not in tag
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    # The model, its versions and labels: the model config of the ConfigMap, mounted whole (no subPath:
    # a subPath mount never sees an edit) and read again while serving.
    assert "model_base_path" not in args and "model_name" not in args
    config_dir, config_file = args["model_config_file"].rsplit("/", 1)
    assert int(args["model_config_file_poll_wait_seconds"]) > 0
    configmap = next(d for d in yaml.safe_load_all((REPO / "kube" / "model-config.yaml").read_text()))
    (served,) = model_config.parse(configmap["data"][config_file]).model_config_list.config
    assert (served.name, served.base_path) == ("mnist", "/mnt/nfs/exports/mnist")
    assert (args["port"], args["rest_api_port"]) == ("8500", "8501") and int(args["file_system_poll_wait_seconds"]) > 0
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == \
        {"grpc": (8500, "grpc"), "http": (8501, "http")}
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (mounts["nfs"]["mountPath"], mounts["nfs"]["readOnly"]) == ("/mnt/nfs", True)
    assert volumes["nfs"]["persistentVolumeClaim"] == {"claimName": "mnist-nfs", "readOnly": True}
    assert mounts["model-config"] == {"name": "model-config", "mountPath": config_dir, "readOnly": True}
    assert volumes["model-config"]["configMap"] == {"name": configmap["metadata"]["name"]}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 1000 and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"] and security["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    # serve.py takes the same flags, so the local step is the cluster step.
    (tmp_path / config_file).write_text(configmap["data"][config_file])
    local = {"model_config_file": tmp_path / config_file}
    parse_args([f"--{k}={local.get(k, v)}" for k, v in args.items()])


def pod_labels(deployment):
    return deployment["spec"]["template"]["metadata"]["labels"]
