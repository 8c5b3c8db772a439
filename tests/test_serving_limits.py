"""serve.py under hostile or careless clients and files: it stays up, answers the next good request, keeps its
memory, and says what it refused in one line.

Every case was a crash, a traceback or a blow-up before (issue #12); each test ends by asking for a good
prediction. Memory is the server's VmRSS from /proc/<pid>/status.
"""
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from support import SRC, assert_one_line_error, run_script
from tfk8s.cli import child_env
from tfk8s.ports import free_port
from tfk8s.serving import process
from tfk8s.serving.tensors import DT, apis, to_ndarray, to_tensor_proto

Code = grpc.StatusCode
# Measured: the server's VmRSS grew by 0 to 3 MB over the oversized-shape requests below (baseline about
# 560 MB with the test model), where allocating first took 3.1 GB. 64 MB leaves room for allocator noise.
RSS_GROWTH_LIMIT_KB = 64 * 1024


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def threads(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads for {pid}")


@pytest.fixture(scope="module")
def exports(half_plus_two_exports):
    """export_dir/1 (y = 0.5x + 1), export_dir/2 (y = 0.5x + 2): copied by each test, which changes its copy."""
    return half_plus_two_exports


def copy_versions(exports, target, *versions):
    target.mkdir(parents=True, exist_ok=True)
    for version in versions:
        shutil.copytree(exports / str(version), target / str(version))
    return target


def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    return (apis.prediction_service_pb2_grpc.PredictionServiceStub(channel),
            apis.model_service_pb2_grpc.ModelServiceStub(channel))


def answer(server, x=1.0, version=None, label=None):
    """y for x from the server (raises grpc.RpcError), and the version that answered."""
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(to_tensor_proto(np.array([x], np.float32)))
    response = stubs(server)[0].Predict(request, timeout=30)
    return float(to_ndarray(response.outputs["y"])[0]), response.model_spec.version.value


def images_request(shape, values=(1.0,)):
    """A Predict of the `images` signature ([n, 28, 28, 1]) with `values` standing for `shape`."""
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "m", "images"
    tensor = request.inputs["image"]
    tensor.dtype = DT.DT_FLOAT
    tensor.float_val.extend(values)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return request


def wait_for(condition, what, server, timeout=60):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} within {timeout} s; server log:\n{server.log()}"
        time.sleep(0.25)


def polled_since(server, marker, count=1):
    """Wait until the server has looked at its base paths `count` times since `marker` first appeared in its log
    (the debug line of each poll): a "nothing changed" that follows had its chance to change."""
    def polls():
        log = server.log()
        return log[log.index(marker):].count("debug: poll ") if marker in log else 0
    wait_for(lambda: polls() >= count, f"{count} poll(s) after {marker!r}", server)


def raises(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), caught.value.details()


# ---------------------------------------------------------------- requests

@pytest.mark.slow
def test_huge_shapes_tiny_messages_and_empty_batches_cost_nothing(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 2)
    with process.running(base, "m", ["--grpc_channel_arguments", "grpc.max_receive_message_length=4194304"]) as server:
        predict = stubs(server)[0].Predict
        assert answer(server) == (2.5, 2)
        before = rss_kb(server.process.pid)
        # 48 bytes asking for [1, 28, 28, 10**6]: refused on its shape, before anything is allocated.
        request = images_request([1, 28, 28, 10**6])
        assert request.ByteSize() < 64
        code, details = raises(predict, request, timeout=30)
        assert code == Code.INVALID_ARGUMENT and "[1,28,28,1000000]" in details and "[-1,28,28,1]" in details
        # A shape the signature takes but no message could carry: refused on its size (it was a MemoryError).
        code, details = raises(predict, images_request([2**31, 28, 28, 1]), timeout=30)
        assert code == Code.RESOURCE_EXHAUSTED and "grpc.max_receive_message_length" in details
        assert rss_kb(server.process.pid) - before < RSS_GROWTH_LIMIT_KB
        # A message over --grpc_channel_arguments' limit is refused by gRPC itself.
        big = apis.predict_pb2.PredictRequest()
        big.model_spec.name, big.model_spec.signature_name = "m", "images"
        big.inputs["image"].CopyFrom(to_tensor_proto(np.zeros((2000, 28, 28, 1), np.float32)))  # 6.3 MB
        assert raises(predict, big, timeout=30)[0] == Code.RESOURCE_EXHAUSTED
        # An empty batch is an empty answer, not a graph error.
        empty = predict(images_request([0, 28, 28, 1], ()), timeout=30)
        assert [d.size for d in empty.outputs["scores"].tensor_shape.dim] == [0, 10]
        assert answer(server) == (2.5, 2)
        assert "Traceback" not in server.log()


@pytest.mark.slow
def test_hostile_http_clients_get_json_errors_and_cannot_hold_the_workers(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 2)
    flags = ["--rest_api_num_threads", 2, "--rest_api_read_timeout_seconds", 0.5]
    with process.running(base, "m", flags) as server:
        pid = server.process.pid
        baseline = threads(pid)

        def raw(data):
            """Send bytes, read the whole answer (the server closes, or Content-Length says it is all there)."""
            with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as s:
                s.sendall(data)
                reply = b""
                while True:
                    chunk = s.recv(65536)
                    reply += chunk
                    head, _, body = reply.partition(b"\r\n\r\n")
                    length = re.search(rb"Content-Length: (\d+)", head)
                    if not chunk or (length and len(body) >= int(length[1])):
                        return reply.decode()

        for request, status, fragment in [
            (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", "400", "not a number"),
            (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", "400",
             "a body of 99999999999 bytes"),
            (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\n{\"ins\r\nf\r\ntances\": [1.0]}\r\n0\r\n\r\n", "200", '"predictions": [2.5'),
            (b"TRACE /v1/models/m HTTP/1.1\r\nHost: a\r\n\r\n", "501", '"error"'),
            (b"GARBAGE\r\n\r\n", "400", '"error"'),
            (b"GET /v1/models/m HTTP/1.1\r\n\r\n", "400", "Missing 'Host' header"),  # RFC 9112 3.2 (libevent: 200)
        ]:
            reply = raw(request)
            assert reply.split(" ")[1] == status and fragment in reply, reply
            assert "application/json" in reply
        # 12 clients that never finish their request, six per worker: each is freed after the read timeout.
        slow = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) for _ in range(12)]
        for s in slow:
            s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{")
        body = json.dumps({"instances": [1.0]}).encode()
        reply = raw(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert '"predictions": [2.5' in reply
        assert threads(pid) <= baseline + 2  # the pool's two workers, not a thread per connection
        for s in slow:
            assert s.recv(1024) is not None  # closed by the server (b"") or answered: not held forever
            s.close()
        nested = b'{"instances": [1.0], "x": ' + b"[" * 200000 + b"]" * 200000 + b"}"
        reply = raw(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(nested)
                    + nested)
        assert '"predictions": [2.5' in reply
        assert answer(server) == (2.5, 2) and "Traceback" not in server.log()


@pytest.mark.slow
def test_cancelled_requests_are_not_computed(trained_model, tmp_path):
    base = tmp_path / "mnist"
    shutil.copytree(trained_model["version"], base / "1")
    with process.running(base, "mnist", ["--rest_api_timeout_in_ms", 50]) as server:
        predict = stubs(server)[0].Predict
        request = apis.predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "mnist", "predict"
        request.inputs["image"].CopyFrom(to_tensor_proto(np.zeros((10000, 28, 28, 1), np.float32)))
        futures = [predict.future(request, timeout=0.2) for _ in range(6)]  # each needs about a second
        for future in futures:
            with pytest.raises(grpc.RpcError):
                future.result()
        wait_for(lambda: "not computed: " in server.log(), "a skipped request", server)
        one = apis.predict_pb2.PredictRequest()
        one.CopyFrom(request)
        one.inputs["image"].CopyFrom(to_tensor_proto(np.zeros((1, 28, 28, 1), np.float32)))
        assert to_ndarray(predict(one, timeout=60).outputs["probabilities"]).shape == (1, 10)
        # REST: --rest_api_timeout_in_ms bounds the run (2,048 images take well over 50 ms here): 504.
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/mnist:predict"
        body = json.dumps({"signature_name": "predict", "instances": np.zeros((2048, 28, 28, 1)).tolist()}).encode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60)
        assert (caught.value.code, json.load(caught.value)) == (504, {"error": "Timed out waiting for notification"})
        small = json.dumps({"signature_name": "predict", "instances": np.zeros((1, 28, 28, 1)).tolist()}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=small), timeout=60) as response:
            assert len(json.load(response)["predictions"]) == 1


# ---------------------------------------------------------------- files and ports

@pytest.mark.slow
def test_version_directories_are_read_as_tensorflow_serving_reads_them(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 1)
    for name in ("²", "٣", "99999999999999999999", "latest", ".tmp-export-1"):
        shutil.copytree(exports / "2", base / name)  # none of these is a version: 1 is the newest
    with process.running(base, "m", ["--file_system_poll_wait_seconds", 1]) as server:
        assert answer(server) == (1.5, 1)
        ignoring = [line for line in server.log().splitlines() if "ignoring" in line]
        assert len(ignoring) == 1 and "'²'" in ignoring[0] and "'99999999999999999999'" in ignoring[0]
        shutil.copytree(exports / "2", base / "0007")  # leading zeros: version 7
        wait_for(lambda: answer(server)[1] == 7, "version 7 (from 0007) served", server)
        assert answer(server) == (2.5, 7) and "Traceback" not in server.log()


@pytest.mark.slow
def test_a_slow_copy_is_loaded_once_complete_and_a_broken_newest_never_leaves_the_model_without_answers(
        exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 1, 2)
    flags = ["--file_system_poll_wait_seconds", 1, "--load_retry_interval_micros", 500000, "--max_num_load_retries", 4]
    with process.running(base, "m", flags, debug=True) as server:
        assert answer(server) == (2.5, 2)
        # Version 3 arrives in pieces: no saved_model.pb yet. It is retried, then loaded once the copy is done.
        (base / "3" / "variables").mkdir(parents=True)
        wait_for(lambda: "Loading servable: {name: m version: 3} failed: NOT_FOUND" in server.log(), "a failed try",
                 server)
        assert answer(server) == (2.5, 2)  # 2 answers meanwhile
        shutil.rmtree(base / "3")
        shutil.copytree(exports / "1", base / "3")
        wait_for(lambda: answer(server)[1] == 3, "version 3 served", server)
        # Version 4 is broken for good: its retries run out, 3 keeps answering; then 3's directory is deleted
        # and 3 still answers (TensorFlow Serving keeps a served version until another one is AVAILABLE).
        (base / "4").mkdir()
        (base / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: "exhausted max_num_retries: 4" in server.log(), "version 4 given up", server)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/m", timeout=30) as response:
            status = json.load(response)["model_version_status"]
        assert status[0]["version"] == "4" and status[0]["state"] == "END"
        assert status[0]["status"]["error_code"] != "OK" and status[0]["status"]["error_message"]
        shutil.rmtree(base / "3")
        # The debug line a poll prints once it decided: it saw 3's directory gone, and kept 3.
        wait_for(lambda: "m: on disk [1, 2, 4], loaded [3]" in server.log(), "a poll without 3 on disk", server)
        assert answer(server) == (1.5, 3) and "Traceback" not in server.log()


def config_text(base_path, versions, labels):
    labelled = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    specific = " ".join(f"versions: {v}" for v in versions)
    return (f'model_config_list {{ config {{ name: "m" base_path: "{base_path}" model_platform: "tensorflow" '
            f"model_version_policy {{ specific {{ {specific} }} }}{labelled} }} }}")


@pytest.mark.slow
def test_a_refused_model_config_changes_nothing(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 1, 2)
    path = tmp_path / "models.config"
    path.write_text(config_text(base, [1, 2], {"stable": 1, "canary": 2}))
    flags = ["--model_config_file_poll_wait_seconds", 1, "--allow_version_labels_for_unavailable_models"]
    with process.running(model_config_file=path, model_name="m", args=flags, debug=True) as server:
        wait_for(lambda: answer(server, label="stable")[1] == 1, "stable -> 1", server)
        # A label on a version that is not there: the whole config is refused, its policy (drop 1) too.
        path.write_text(config_text(base, [2, 3], {"stable": 3}))
        wait_for(lambda: "Request to assign label to version 3" in server.log(), "the refusal", server)
        polled_since(server, "Request to assign label to version 3")  # the policy in force had its poll
        assert answer(server, label="stable") == (1.5, 1) and answer(server, version=1) == (1.5, 1)
        # The same over gRPC (HandleReloadConfigRequest): the call fails with the refusal's code and words,
        # as TensorFlow Serving's does (model_service_impl.cc: ToGRPCStatus), and nothing changes.
        request = apis.model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text(base, [2], {"stable": 7}), request.config)
        with pytest.raises(grpc.RpcError) as refused:
            stubs(server)[1].HandleReloadConfigRequest(request, timeout=30)
        assert (refused.value.code(), refused.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "Request to assign label to version 7 of model m, which is not currently available for inference")
        assert answer(server, version=1) == (1.5, 1)
        # A byte that is not UTF-8: refused, logged once, nothing changes.
        path.write_bytes(config_text(base, [1, 2], {"stable": 1}).encode() + b"\xff")
        wait_for(lambda: "is not UTF-8" in server.log(), "the refusal", server)
        assert answer(server, label="canary") == (2.5, 2)
        # A base_path that does not exist: the versions loaded keep answering, and the log says why.
        path.write_text(config_text(tmp_path / "gone", [1, 2], {"stable": 1, "canary": 2}))
        wait_for(lambda: f"Could not find base path {tmp_path / 'gone'}" in server.log(), "the warning", server)
        polled_since(server, f"Could not find base path {tmp_path / 'gone'}", 2)
        assert answer(server, label="stable") == (1.5, 1) and answer(server) == (2.5, 2)
        # A model the config no longer lists is unloaded; its status stays, every version END.
        path.write_text(config_text(base, [2], {}).replace('name: "m"', 'name: "other"'))
        wait_for(lambda: "the model config no longer lists it" in server.log(), "m unloaded", server)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/m", timeout=30) as response:
            assert {s["state"] for s in json.load(response)["model_version_status"]} == {"END"}
        assert server.process.poll() is None and "Traceback" not in server.log()


@pytest.mark.slow
def test_a_second_server_on_a_port_in_use_is_a_one_line_error(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 2)
    with process.running(base, "m") as server:
        for port, rest_port, what in ((server.grpc_port, free_port(), "gRPC"),
                                      (free_port(), server.rest_port, "REST")):
            result = run_script("serve.py", "--model_name", "m", "--model_base_path", base, "--port", port,
                                "--rest_api_port", rest_port, timeout=120)
            assert_one_line_error(result, f"cannot listen for {what}", "in use")
        assert answer(server) == (2.5, 2)


@pytest.mark.slow
def test_tensor_content_method_name_check_and_cors_on_request(exports, tmp_path):
    base = copy_versions(exports, tmp_path / "m", 2)
    flags = ["--enable_serialization_as_tensor_content", "--enable_signature_method_name_check",
             "--rest_api_enable_cors_support"]
    with process.running(base, "m", flags) as server:
        predict = stubs(server)[0]
        request = apis.predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(to_tensor_proto(np.array([1.0, 3.0], np.float32), content=False))
        y = predict.Predict(request, timeout=30).outputs["y"]
        assert not y.float_val and np.frombuffer(y.tensor_content, np.float32).tolist() == [2.5, 3.5]
        regress = apis.regression_pb2.RegressionRequest()
        regress.model_spec.name, regress.model_spec.signature_name = "m", "classify_x_to_y"
        regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
        assert raises(predict.Regress, regress, timeout=30) == (
            Code.INVALID_ARGUMENT, "Expected regression signature method_name to be tensorflow/serving/regress. "
                                   "Was: tensorflow/serving/classify")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/v1/models/m", timeout=30) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_flags_are_parsed_before_tensorflow():
    code = ("import sys; import tfk8s.serving.flags as f; f.parse_args(['--model_config_file', 'x']); "
            "print('tensorflow' in sys.modules, 'tensorflow.python' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env())
    assert result.stdout.split() == ["False", "False"], result.stderr
    bad = subprocess.run([sys.executable, str(SRC / "serve.py"), "--port", "x"], capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert_one_line_error(bad, "--port", "invalid int value")


@pytest.mark.slow  # the server's modules load TensorFlow
def test_the_server_never_imports_the_client():
    code = "import sys; import tfk8s.serving.server; print('tfk8s.serving.client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=child_env())
    assert result.stdout.split()[-1] == "False", result.stderr


def test_a_rest_body_is_checked_against_the_signature_and_the_budget_before_its_tensor_is_built(monkeypatch):
    """The shapes come from the nesting of lists; the check sees them before any tensor is built (a 627 MB
    tensor was built, then refused). No TensorFlow: json_tensor works on the signature's TensorInfo only."""
    from tfk8s.serving import json_tensor
    from tfk8s.serving.protocol import ServingError, too_large

    info = apis.meta_graph_pb2.TensorInfo(dtype=DT.DT_FLOAT)
    for size in (-1, 28, 28, 1):
        info.tensor_shape.dim.add(size=size)
    signature = type("Signature", (), {"inputs": {"image": info}})()
    image = [[[0.0]] * 28] * 28  # one image; the rows below share it, so the document itself is small
    seen = []

    def check(dims):
        seen.append(dims)
        refusal = too_large("image", dims["image"], 4 * int(np.prod(dims["image"])), None, 100 * 2**20)
        if refusal:
            raise refusal

    def built(*args, **kwargs):
        raise AssertionError("a tensor was built before the check refused it")

    monkeypatch.setattr(json_tensor, "to_tensor", built)
    monkeypatch.setattr(json_tensor, "_fast", built)
    for doc in ({"instances": [image] * 200_000}, {"instances": [{"image": image}] * 200_000},
                {"inputs": [image] * 200_000}, {"inputs": {"image": [image] * 200_000}}):
        with pytest.raises(ServingError) as caught:
            json_tensor.predict_inputs(doc, signature, False, check)
        assert caught.value.code == Code.RESOURCE_EXHAUSTED and "memory budget" in caught.value.message
        assert seen[-1] == {"image": [200_000, 28, 28, 1]}
