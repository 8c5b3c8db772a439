"""The model server's rules without TensorFlow: version policies, labels, availability, the REST status map and
the REST and gRPC mappings, run in the test process on the real servers' code (real gRPC and HTTP on loopback).

A loader that returns fixed outputs stands for TensorFlow's SavedModel loader (signatures.LoadedVersion's
`options.loader`): every version's serving_default answers y = x + version, so an answer says which version
gave it. What TensorFlow itself computes is tested against real exports in test_serving.py,
test_serving_limits.py and test_conformance.py (slow).
"""
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from tfk8s.cli import child_env
from tfk8s.ports import free_port
from tfk8s.serving import flags, model_config, protocol
from tfk8s.serving.config_file import ModelConfigFile
from tfk8s.serving.grpc_api import start_grpc
from tfk8s.serving.models import ModelServer, ServedModel
from tfk8s.serving.protocol import Code, ServingError, State
from tfk8s.serving.rest_api import Api, start_rest
from tfk8s.serving.server import options_from, wait_for_first_versions
from tfk8s.serving.tensors import DT, apis, to_ndarray, to_tensor_proto

SIGNATURES = """
signature_def { key: "serving_default" value {
  inputs { key: "x" value { name: "x:0" dtype: DT_FLOAT tensor_shape { dim { size: -1 } } } }
  outputs { key: "y" value { name: "y:0" dtype: DT_FLOAT tensor_shape { dim { size: -1 } } } }
  method_name: "tensorflow/serving/predict" } }
"""


class FixedLoader:
    """The loader's interface (load(path) -> (SignatureDefMap, {name: function})) with fixed answers. A version
    directory holding a file `broken` does not load; `raises` makes every run raise that ServingError."""

    def __init__(self):
        self.loads, self.during_load, self.raises, self.run_hook = [], None, None, None

    def load(self, path):
        self.loads.append(path.name)
        if self.during_load:
            self.during_load(path)
        if (path / "broken").exists():
            raise ValueError("not a SavedModel")
        signature_defs = apis.get_model_metadata_pb2.SignatureDefMap()
        text_format.Parse(SIGNATURES, signature_defs)
        version = np.float32(int(path.name))

        def run(inputs):
            if self.run_hook:
                self.run_hook(inputs)
            if self.raises:
                raise self.raises
            return {"y": inputs["x"] + version}

        return signature_defs, {"serving_default": run}


def put(base, *versions, broken=False):
    """Version directories as an export leaves them (the loader above reads only their names)."""
    for version in versions:
        directory = base / str(version)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "saved_model.pb").write_bytes(b"")
        if broken:
            (directory / "broken").write_bytes(b"")


def options(base, *args):
    """What serve.py's parts get from these flags, with the fixed loader."""
    made = options_from(flags.parse_args(["--model_base_path", str(base), "--load_retry_interval_micros", "0",
                                          *map(str, args)]))
    made.loader = FixedLoader()
    return made


def one_model(tmp_path, *versions, policy=("latest", 1), args=()):
    base = tmp_path / "m"
    put(base, *versions)
    model = ServedModel("m", base, options(base, *args), policy)
    server = ModelServer([model])
    server.poll()
    return server, model


def states(model):
    return {version: (State.Name(s.state), s.code.name) for version, s in model.status()}


def y(server, x=1.0, version=None, label=None):
    """What the server answers for x (y = x + version), as ModelServer.resolve picks the version."""
    spec = apis.model_pb2.ModelSpec(name="m")
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    loaded = server.resolve(spec)
    return float(loaded.signatures["serving_default"].run({"x": np.array([x], np.float32)}, ["y"])["y"][0])


def refusal(call, *args):
    with pytest.raises(ServingError) as caught:
        call(*args)
    return caught.value.code, caught.value.message


def test_the_servers_modules_load_no_tensorflow():
    """Only saved_model.py (the real loader) loads TensorFlow, at the first load."""
    code = ("import sys; import tfk8s.serving.models, tfk8s.serving.rest_api, tfk8s.serving.grpc_api, "
            "tfk8s.serving.config_file, tfk8s.serving.server; print('tensorflow.python' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env())
    assert result.stdout.split() == ["False"], result.stderr


# ---------------------------------------------------------------- version policies

def config_text(base, policy="", labels=None, name="m"):
    labelled = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
    chosen = f" model_version_policy {{ {policy} }}" if policy else ""
    return (f'model_config_list {{ config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"'
            f"{chosen}{labelled} }} }}")


@pytest.mark.parametrize("policy, served", [
    ("", [3]),  # none given: the newest
    ("latest { num_versions: 2 }", [3, 2]),
    ("specific { versions: 1 versions: 3 }", [3, 1]),
    ("all { }", [3, 2, 1]),
])
def test_the_version_policy_picks_the_versions_served(tmp_path, policy, served):
    base = tmp_path / "m"
    put(base, 1, 2, 3)
    server = ModelServer()
    ModelConfigFile(tmp_path / "models.config", server, options(base)).apply(
        model_config.parse_text(config_text(base, policy)))
    server.poll()
    model = server.models["m"]
    assert sorted(model.loaded, reverse=True) == served, f"policy {policy!r} served {sorted(model.loaded)}"
    assert states(model) == dict.fromkeys(served, ("AVAILABLE", "OK"))  # a version never asked for has no status
    assert y(server) == 1.0 + served[0]  # no version named: the newest served
    for version in served:
        assert y(server, version=version) == 1.0 + version
    for version in set(range(1, 4)) - set(served):
        assert refusal(y, server, 1.0, version) == (
            Code.NOT_FOUND, f"Servable not found for request: Specific(m, {version})")


# ---------------------------------------------------------------- availability

def test_a_version_is_loading_while_it_loads_then_available_and_unknown_versions_are_not_found(tmp_path):
    base = tmp_path / "m"
    put(base, 1)
    model = ServedModel("m", base, options(base))
    seen = []
    model.options.loader.during_load = lambda path: seen.append(states(model))
    ModelServer([model]).poll()
    assert seen == [{1: ("LOADING", "OK")}] and states(model) == {1: ("AVAILABLE", "OK")}
    assert refusal(model.status, 9) == (Code.NOT_FOUND, "Could not find version 9 of model m")
    empty = ServedModel("e", tmp_path / "e", options(base))
    assert refusal(empty.status) == (Code.NOT_FOUND, "Could not find any versions of model e")
    assert refusal(empty.resolve) == (Code.NOT_FOUND, "Servable not found for request: Latest(e)")


def started(server):
    """wait_for_first_versions(server) in a thread: None once it returned, its error, or "still waiting" after 10 s."""
    outcome = ["still waiting"]

    def wait():
        try:
            wait_for_first_versions(server)
            outcome[0] = None
        except Exception as err:  # noqa: BLE001 - the outcome is what the test looks at
            outcome[0] = err

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(10)
    return outcome[0]


def test_start_up_waits_for_one_version_of_each_model_not_for_every_version_the_policy_asks_for(tmp_path):
    # ServerCore waits for ServableRequest::Latest: the first version of the stream AVAILABLE (or END). A broken
    # newest version, retried once a minute, does not hold the ports closed while an older one answers.
    base = tmp_path / "m"
    put(base, 1)
    put(base, 2, broken=True)
    model = ServedModel("m", base, options(base, "--load_retry_interval_micros", 60_000_000), ("latest", 2))
    server = ModelServer([model])
    assert started(server) is None
    assert states(model) == {2: ("LOADING", "OK"), 1: ("AVAILABLE", "OK")} and y(server) == 2.0


def test_start_up_fails_when_a_model_has_no_version_that_loads(tmp_path):
    base = tmp_path / "m"
    put(base, 1, broken=True)
    model = ServedModel("m", base, options(base, "--max_num_load_retries", 0), ("latest", 1))
    error = started(ModelServer([model]))
    assert str(error) == ("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
                          "{{name: m version: 1} due to error: UNKNOWN: not a SavedModel}, ")


def test_a_version_that_fails_is_retried_then_end_and_the_served_one_answers_until_another_is_available(tmp_path):
    server, model = one_model(tmp_path, 1, args=["--max_num_load_retries", 1])
    base = model.base_path
    put(base, 2, broken=True)
    server.poll()  # first try fails; one retry left
    assert states(model) == {2: ("LOADING", "OK"), 1: ("AVAILABLE", "OK")} and y(server) == 2.0
    server.poll()  # the retry fails: given up
    assert states(model) == {2: ("END", "UNKNOWN"), 1: ("AVAILABLE", "OK")} and y(server) == 2.0
    assert model.states[2].message == "not a SavedModel"
    assert model.options.loader.loads == ["1", "2", "2"]
    server.poll()  # not tried again while its directory is there
    assert model.options.loader.loads == ["1", "2", "2"]
    # 1's directory deleted: 1 still answers, as nothing else the policy asks for is AVAILABLE.
    (base / "1" / "saved_model.pb").unlink()
    (base / "1").rmdir()
    server.poll()
    assert states(model)[1] == ("AVAILABLE", "OK") and y(server) == 2.0
    # 2 repaired (taken away, put back whole): loaded afresh, then 1 unloaded.
    for name in ("broken", "saved_model.pb"):
        (base / "2" / name).unlink()
    (base / "2").rmdir()
    server.poll()
    put(base, 2)
    server.poll()
    assert states(model) == {2: ("AVAILABLE", "OK"), 1: ("END", "OK")} and y(server) == 3.0
    assert refusal(y, server, 1.0, 1) == (Code.NOT_FOUND, "Servable not found for request: Specific(m, 1)")


def test_a_narrower_policy_keeps_the_newest_served_version_until_a_version_it_asks_for_is_available(tmp_path):
    server, model = one_model(tmp_path, 1, 2, policy=("all", None), args=["--max_num_load_retries", 0])
    put(model.base_path, 3, broken=True)
    model.policy = ("latest", 1)  # asks for 3 alone, which does not load
    server.poll()
    assert states(model) == {3: ("END", "UNKNOWN"), 2: ("AVAILABLE", "OK"), 1: ("END", "OK")} and y(server) == 3.0


def test_a_missing_base_path_changes_nothing(tmp_path, capsys):
    server, model = one_model(tmp_path, 1, 2, policy=("all", None))
    model.base_path.rename(tmp_path / "away")
    server.poll()
    assert states(model) == {2: ("AVAILABLE", "OK"), 1: ("AVAILABLE", "OK")} and y(server, version=1) == 2.0
    assert f"Could not find base path {model.base_path} for servable m" in capsys.readouterr().out


def test_with_debug_on_each_poll_says_what_it_found_once_it_decided(tmp_path, capsys, monkeypatch):
    """The evidence the slow tests wait for before asserting that a poll changed nothing."""
    monkeypatch.setattr(protocol, "DEBUG", True)
    server, model = one_model(tmp_path, 1, args=["--max_num_load_retries", 0])
    put(model.base_path, 2, broken=True)
    server.poll()
    model.base_path.rename(tmp_path / "away")
    server.poll()
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("debug: ")] == [
        "debug: poll 1: m: on disk [1], loaded [1]", "debug: poll 2: m: on disk [1, 2], loaded [1]",
        f"debug: poll 3: no base path {model.base_path} for m: nothing changed"]


# ---------------------------------------------------------------- labels

def test_a_label_goes_only_on_an_available_version_and_a_refused_config_changes_nothing(tmp_path):
    base = tmp_path / "m"
    put(base, 1, 2)
    server = ModelServer()
    config = ModelConfigFile(tmp_path / "models.config", server, options(base))
    config.apply(model_config.parse_text(config_text(base, "specific { versions: 1 versions: 2 }")))
    server.poll()
    config.apply(model_config.parse_text(config_text(base, "specific { versions: 1 versions: 2 }",
                                                     {"stable": 1, "canary": 2})))
    assert (y(server, label="stable"), y(server, label="canary")) == (2.0, 3.0)
    assert refusal(y, server, 1.0, None, "beta") == (Code.INVALID_ARGUMENT, "Unrecognized servable version label: beta")
    # A label set to "" is still a label (the version_choice oneof), not the latest version: unknown, as upstream.
    assert refusal(y, server, 1.0, None, "") == (Code.INVALID_ARGUMENT, "Unrecognized servable version label: ")
    # A label on a version not loaded: the whole config is refused, its policy (drop 1) and labels too.
    put(base, 3)
    refused = model_config.parse_text(config_text(base, "specific { versions: 2 versions: 3 }", {"stable": 3}))
    assert refusal(config.apply, refused) == (Code.FAILED_PRECONDITION, "Request to assign label to version 3 of "
                                              "model m, which is not currently available for inference")
    server.poll()
    assert sorted(server.models["m"].loaded) == [1, 2] and y(server, label="stable") == 2.0


def test_with_unavailable_labels_allowed_a_new_label_may_wait_for_its_version_but_one_is_not_moved_onto_it(tmp_path):
    base = tmp_path / "m"
    put(base, 1)
    server = ModelServer()
    config = ModelConfigFile(tmp_path / "models.config", server, options(base), allow_unavailable_labels=True)
    config.apply(model_config.parse_text(config_text(base, "all { }", {"stable": 1, "canary": 2})))
    server.poll()
    assert y(server, label="stable") == 2.0
    assert refusal(y, server, 1.0, None, "canary") == (Code.NOT_FOUND, "Servable not found for request: "
                                                                       "Specific(m, 2)")
    put(base, 2)
    server.poll()
    assert y(server, label="canary") == 3.0
    moved = model_config.parse_text(config_text(base, "all { }", {"stable": 3, "canary": 2}))
    assert refusal(config.apply, moved) == (Code.FAILED_PRECONDITION, "Request to assign label to version 3 of "
                                            "model m, which is not currently available for inference")
    assert y(server, label="stable") == 2.0


# ---------------------------------------------------------------- REST: paths, JSON, status codes

# http_server.cc ToHTTPStatusCode (TensorFlow Serving 2.x): the HTTP status of each gRPC code.
HTTP_BY_CODE = {
    Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400, Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409, Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500, Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}


@pytest.mark.parametrize("code", HTTP_BY_CODE, ids=lambda code: code.name)
def test_a_refusal_is_answered_with_tensorflow_servings_http_status(tmp_path, code):
    server, model = one_model(tmp_path, 1)
    model.options.loader.raises = ServingError(code, "the model says no")
    status, text = Api(server, 0).handle("POST", "/v1/models/m:predict", b'{"instances": [1.0]}')
    assert (status, json.loads(text)) == (HTTP_BY_CODE[code], {"error": "the model says no"})


def test_rest_paths_and_documents_map_to_the_versions_and_answers(tmp_path):
    server, model = one_model(tmp_path, 1, 2, policy=("all", None))
    model.labels = {"stable": 1}
    api = Api(server, 30000)

    def post(path, doc):
        status, text = api.handle("POST", path, json.dumps(doc).encode())
        return status, json.loads(text)

    assert post("/v1/models/m:predict", {"instances": [1.0, 2.5]}) == (200, {"predictions": [3.0, 4.5]})
    assert post("/v1/models/m/versions/1:predict", {"instances": [1.0]}) == (200, {"predictions": [2.0]})
    assert post("/V1/MODELS/m/labels/stable:predict", {"inputs": {"x": [1.0]}}) == (200, {"outputs": [2.0]})
    assert post("/v1/models/m/versions/7:predict", {"instances": [1.0]}) == (
        404, {"error": "Servable not found for request: Specific(m, 7)"})
    assert post("/v1/models/m:PREDICT", {"instances": [1.0]}) == (
        400, {"error": "Malformed request: POST /v1/models/m:PREDICT"})
    assert post("/v1/models/m:predict", {"instances": ["one"]})[0] == 400
    status, text = api.handle("GET", "/v1/models/m", b"")
    assert (status, json.loads(text)) == (200, {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in (2, 1)]})


def test_rest_refuses_a_tensor_over_the_message_limit_before_building_it_and_a_body_over_it_unread(tmp_path):
    server, model = one_model(tmp_path, 1, args=["--grpc_channel_arguments", "grpc.max_receive_message_length=64"])
    assert model.options.max_tensor_bytes == 64
    # 16 floats are 64 bytes: taken; 17 are 68: refused from the shape.
    assert Api(server, 0, model.options.max_tensor_bytes).handle(
        "POST", "/v1/models/m:predict", json.dumps({"instances": [0.0] * 16}).encode())[0] == 200
    status, text = Api(server, 0, model.options.max_tensor_bytes).handle(
        "POST", "/v1/models/m:predict", b'{"instances": [' + b",".join([b"0"] * 17) + b"]}")
    assert (status, json.loads(text)) == (429, {"error": "input x of shape [17] takes 68 bytes, more than the 64 "
                                                         "this server takes in a message "
                                                         "(grpc.max_receive_message_length)"})
    port = free_port()
    rest = start_rest(server, model.options, "127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/m:predict"
        with urllib.request.urlopen(url, b'{"instances": [1]}', timeout=30) as response:
            assert json.load(response) == {"predictions": [2.0]}
        body = b'{"instances": [' + b" " * 64 + b"1]}"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, body, timeout=30)
        assert caught.value.code == 400 and json.load(caught.value) == {
            "error": f"Malformed request: a body of {len(body)} bytes (Content-Length or a chunk size); this server "
                     "takes bodies of up to 64 bytes (grpc.max_receive_message_length)"}
    finally:
        rest.stop(0)


def test_with_enable_batching_concurrent_requests_are_merged_into_one_model_call(tmp_path):
    """A batch that runs once it holds 8 rows (its timeout is a minute): 8 requests of one row, one call."""
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 60000000 }")
    server, model = one_model(tmp_path, 1, args=["--enable_batching", "--batching_parameters_file", parameters])
    rows = []
    model.options.loader.run_hook = lambda inputs: rows.append(len(inputs["x"]))
    api, answers = Api(server, 0), {}

    def ask(i):
        answers[i] = api.handle("POST", "/v1/models/m:predict", json.dumps({"instances": [float(i)]}).encode())

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert {i: (status, json.loads(text)) for i, (status, text) in answers.items()} == {
        i: (200, {"predictions": [i + 1.0]}) for i in range(8)}
    assert rows == [8], f"model calls of {rows} row(s): not merged into one batch"


# ---------------------------------------------------------------- gRPC: typed fields, versions, limits

@pytest.fixture
def grpc_server(tmp_path):
    """Start the gRPC API on loopback for a model in `tmp_path` with these flags; (stubs, model) per call."""
    started = []

    def start(*versions, args=(), policy=("latest", 1)):
        server, model = one_model(tmp_path, *versions, policy=policy, args=args)
        port = free_port()
        started.append(start_grpc(server, None, model.options, "127.0.0.1", port))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        return (apis.prediction_service_pb2_grpc.PredictionServiceStub(channel),
                apis.model_service_pb2_grpc.ModelServiceStub(channel), model)

    yield start
    for running in started:
        running.stop(0)


def predict_request(values, version=None, label=None):
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(to_tensor_proto(np.asarray(values, np.float32), content=False))
    return request


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value.code(), caught.value.details()


def test_grpc_predict_answers_in_the_typed_fields_with_the_version_that_answered(grpc_server):
    predict, models, model = grpc_server(1, 2, policy=("all", None))
    model.labels = {"stable": 1}
    response = predict.Predict(predict_request([1.0, 2.5]), timeout=30)
    y = response.outputs["y"]
    assert (y.dtype, list(y.float_val), y.tensor_content, [d.size for d in y.tensor_shape.dim]) == (
        DT.DT_FLOAT, [3.0, 4.5], b"", [2])
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("m", 2, "serving_default")
    labelled = predict.Predict(predict_request([1.0], label="stable"), timeout=30)
    assert (list(labelled.outputs["y"].float_val), labelled.model_spec.version.value,
            labelled.model_spec.version_label) == ([2.0], 1, "")
    assert rpc_error(predict.Predict, predict_request([1.0], version=7)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(m, 7)")
    request = apis.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    assert [(s.version, State.Name(s.state), s.status.error_code)
            for s in models.GetModelStatus(request, timeout=30).model_version_status] == [
        (2, "AVAILABLE", 0), (1, "AVAILABLE", 0)]


def test_grpc_predict_answers_in_tensor_content_when_asked(grpc_server):
    predict, _, _ = grpc_server(1, args=["--enable_serialization_as_tensor_content"])
    y = predict.Predict(predict_request([1.0, 2.5]), timeout=30).outputs["y"]
    assert not y.float_val and np.frombuffer(y.tensor_content, np.float32).tolist() == [2.0, 3.5]
    assert to_ndarray(y).tolist() == [2.0, 3.5]


def test_grpc_refuses_a_message_or_a_tensor_over_the_limit(grpc_server):
    predict, _, _ = grpc_server(1, args=["--grpc_channel_arguments", "grpc.max_receive_message_length=200"])
    code, details = rpc_error(predict.Predict, predict_request(np.zeros(100)))  # a 400-byte message
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "Received message larger than max" in details
    huge = predict_request([1.0])  # one value stands for 10**8 (TensorFlow's leniency): refused from the shape
    huge.inputs["x"].tensor_shape.dim[0].size = 10**8
    assert rpc_error(predict.Predict, huge) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "input x of shape [100000000] takes 400000000 bytes, more than the 200 "
                                            "this server takes in a message (grpc.max_receive_message_length)")
    assert list(predict.Predict(predict_request([1.0]), timeout=30).outputs["y"].float_val) == [2.0]
