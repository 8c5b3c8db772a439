"""serve.py against TensorFlow Serving's own test cases: codes and messages as upstream's tests assert them.

The cases come from tensorflow/serving's http_rest_api_handler_test.cc (UnsupportedApiCalls, Predict,
PredictRequestErrors, Regress, Classify, GetStatus, GetModelMetadata), json_tensor_test.cc,
predict_impl_test.cc, get_model_metadata_impl_test.cc and multi_inference_test.cc, and, where no test pins
a case, from the code that decides it. The model is their
half_plus_two (y = 0.5 * x + 2), versions 1 and 2, served as `m` by one serve.py for the whole module.

Why one module of some 490 lines: one server for all the cases, and the cases follow the upstream tests
file by file, so that each can be compared with its source.
"""
import http.client
import json
import re
import socket

import grpc
import numpy as np
import pytest
import requests

from tfk8s.serving import process, protocol
from tfk8s.serving.tensors import DT, apis, to_ndarray, to_tensor_proto

Code = grpc.StatusCode
pytestmark = pytest.mark.slow  # one model server for the module


# TensorFlow Serving's REST status for each status code: ToHTTPStatusCode in
# tensorflow_serving/model_servers/http_server.cc, the numbers of the names it returns in
# tensorflow_serving/util/net_http/server/public/response_code_enum.h (tensorflow/serving, 2.x).
UPSTREAM_HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


def test_every_status_code_gets_tensorflow_servings_http_status():
    assert {code.name: protocol.http_status(code) for code in grpc.StatusCode} == UPSTREAM_HTTP_STATUS
    assert protocol.http_status(None) == 500  # anything else: upstream's default, an internal error


@pytest.fixture(scope="module")
def server(half_plus_two_exports):
    with process.running(half_plus_two_exports, "m") as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
        yield {"rest": running.rest_port, "grpc": running.grpc_port, "log": running.log,
               "predict": apis.prediction_service_pb2_grpc.PredictionServiceStub(channel),
               "models": apis.model_service_pb2_grpc.ModelServiceStub(channel)}
        channel.close()


def call(server, method, path, body=None, headers=None):
    """(status, headers, body text) of one raw HTTP request: any method, any path, any bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", server["rest"], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


STATUS_2 = {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}

# (method, path, body, HTTP status, "exact"/"sub", message): UnsupportedApiCalls first, then the rest.
REST_ERRORS = [
    ("GET", "/v1/foo", None, 400, "exact", "Malformed request: GET /v1/foo"),
    ("POST", "/v1/foo", None, 400, "exact", "Malformed request: POST /v1/foo"),
    ("GET", "/v1/models", None, 400, "exact", "Missing model name in request."),
    ("GET", "/v1/models/debug/model_name", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models", None, 400, "sub", "Malformed request"),
    ("GET", "/v1/models/m:predict", None, 400, "exact", "Malformed request: GET /v1/models/m:predict"),
    ("GET", "/v1/models/m/version/50:predict", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/version/50:regress", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/versions/HELLO:regress", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/versions/18446744073709551615:regress", None, 400, "exact",
     "Failed to convert version: 18446744073709551615 to numeric."),
    ("POST", "/v1/models/m/metadata", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/label/x:regress", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/versions/50/labels/x:regress", None, 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m/versions/some_label:regress", None, 400, "sub", "Malformed request"),
    ("GET", "/v1/models/", None, 400, "exact", "Malformed request: GET /v1/models/"),
    ("GET", "/v1/models/m/", None, 400, "exact", "Malformed request: GET /v1/models/m/"),
    ("GET", "/v1/models/m/versions/-1", None, 400, "exact", "Malformed request: GET /v1/models/m/versions/-1"),
    ("GET", "/v1/models/m/versions/99999999999999999999", None, 400, "exact",
     "Failed to convert version: 99999999999999999999 to numeric."),
    ("PUT", "/v1/models/m", None, 400, "exact", "Malformed request: PUT /v1/models/m"),
    ("DELETE", "/v1/models/m", None, 400, "exact", "Malformed request: DELETE /v1/models/m"),
    ("PATCH", "/v1/models/m", None, 400, "exact", "Malformed request: PATCH /v1/models/m"),
    ("POST", "/v1/models/m:PREDICT", b"{}", 400, "exact", "Malformed request: POST /v1/models/m:PREDICT"),
    ("POST", "/v1/models/m:explain", b"{}", 400, "sub", "Malformed request"),
    ("POST", "/v1/models/m:predict?x=1", b"{}", 400, "exact", "Malformed request: POST /v1/models/m:predict?x=1"),
    ("POST", "/v1/models/m:predict/", b"{}", 400, "exact", "Malformed request: POST /v1/models/m:predict/"),
    ("GET", "/v1/models/m/versions/7", None, 404, "exact", "Could not find version 7 of model m"),
    ("GET", "/v1/models/nope", None, 404, "exact", "Could not find any versions of model nope"),
    ("GET", "/v1/models/metadata", None, 404, "exact", "Could not find any versions of model metadata"),
    ("GET", "/v1/models/versions/1", None, 400, "exact", "Missing model name in request."),
    ("GET", "/v1/models/m?x=1", None, 404, "exact", "Could not find any versions of model m?x=1"),
    ("GET", "/v1/models/m/versions/1/metadata", None, 404, "exact", "Servable not found for request: Specific(m, 1)"),
    ("GET", "/v1/models/nope/metadata", None, 404, "exact", "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models/m/labels/zzz/metadata", None, 400, "exact", "Unrecognized servable version label: zzz"),
    ("POST", "/v1/models/nope:predict", b'{"instances": [1]}', 404, "exact",
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/nope/versions/50:predict", b'{"instances": [1]}', 404, "exact",
     "Servable not found for request: Specific(nope, 50)"),
    ("POST", "/v1/models/nope:predict", b"", 400, "exact", "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/m:predict", b"instances = [1, 2]", 400, "exact",
     "JSON Parse error: Invalid value. at offset: 0"),
    ("POST", "/v1/models/m:predict", b"   ", 400, "exact", "JSON Parse error: The document is empty. at offset: 3"),
    ("POST", "/v1/models/m:predict", b"[1,2]", 400, "exact", "JSON Value: [1, 2] Is not object"),
    ("POST", "/v1/models/m:predict", b'{"instances": ["x","y"]}', 400, "exact",
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"x\" Type: String is "
     "not of expected type: float"),
    ("POST", "/v1/models/m:predict", b'{"instances": [true]}', 400, "sub",
     "JSON Value: true Type: True is not of expected type: float"),
    ("POST", "/v1/models/m:predict", b'{"instances": [null]}', 400, "sub", "Type: Null is not of expected type: float"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": 100}', 400, "exact",
     "JSON Value: {\n    \"signature_name\": 100\n} not formatted correctly. 'signature_name' key must be a string "
     "value."),
    ("POST", "/v1/models/m:predict", b'{"signature_name": null, "instances": [1.0]}', 400, "sub",
     "'signature_name' key must be a string value."),
    ("POST", "/v1/models/m:classify", b'{"signature_name": ["a"], "examples": [{}]}', 400, "sub",
     "'signature_name' key must be a string"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "nope", "instances": [1.0]}', 400, "exact",
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/m:predict", b"{}", 400, "exact", "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/m:predict", b'{"instances": [1.0], "inputs": [1.0]}', 400, "sub",
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "),
    ("POST", "/v1/models/m:predict", b'{"instances": 1.0}', 400, "sub", "Expecting 'instances' to be an list/array"),
    ("POST", "/v1/models/m:predict", b'{"instances": []}', 400, "exact",
     "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
    ("POST", "/v1/models/m:predict", b'{"instances": [[1.0, 2.0], [3.0]]}', 400, "exact",
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"),
    ("POST", "/v1/models/m:predict", b'{"instances": [1.0, [1.0]]}', 400, "sub", "Expecting shape [] but got: [1]"),
    ("POST", "/v1/models/m:predict", b'{"instances": [[[1.0, 2.0], [3.0]]]}', 400, "sub",
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ("POST", "/v1/models/m:predict", b'{"instances": [{"x": 1.0}, [1.0]]}', 400, "exact",
     "Expecting object but got list at item 1 of input list"),
    ("POST", "/v1/models/m:predict", b'{"instances": [[1.0], {"x": [1.0]}]}', 400, "exact",
     "Expecting value/list but got object at item 1 of input list"),
    ("POST", "/v1/models/m:predict", b'{"instances": [{"z": 1.0}]}', 400, "exact",
     "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have "
     "named input: z"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "two_inputs", "instances": [{"a": 1.0}]}', 400, "exact",
     "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1.0\n} keys must be equal to: a,b"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "two_inputs", "instances": [1.0]}', 400, "exact",
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "two_inputs", "inputs": [1.0]}', 400, "exact",
     "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
     "tensorinfo_map"),
    ("POST", "/v1/models/m:predict", b'{"inputs": {"q": [1.0]}}', 400, "exact",
     "Missing named input: x in 'inputs' object."),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "sum_all", "instances": [1.0]}', 400, "exact",
     "Tensor name: y has no shape information "),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "strings", "instances": [{"b64": "***"}]}', 400, "sub",
     "Unable to base64 decode"),
    ("POST", "/v1/models/m:predict", b'{"instances": [{"b64": "AA=="}]}', 400, "sub",
     "Type: Object is not of expected type: float"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "halves", "inputs": [1.0]}', 501, "exact",
     "Conversion of JSON Value: 1.0 to type: half"),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "halves", "instances": [1.0]}', 400, "exact",
     "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 to type: "
     "half"),
    ("POST", "/v1/models/m/labels/Version_Nonexistent:predict", b'{"instances": [1.0]}', 400, "exact",
     "Unrecognized servable version label: Version_Nonexistent"),
    ("POST", "/v1/models/m:regress", b'{"signature_name": "regress_x_to_y"}', 400, "sub",
     "When method is classify, key 'examples' is expected and was not found"),
    ("POST", "/v1/models/m:classify", b'{"examples": []}', 400, "sub", "'examples' value is an empty array"),
    ("POST", "/v1/models/m:classify", b'{"examples": {"a": 1}}', 400, "sub",
     "Expecting 'examples' value to be an list/array"),
    ("POST", "/v1/models/m:classify", b'{"context": [1], "examples": [{}]}', 400, "exact",
     "Example must be JSON object but got JSON Array"),
    ("POST", "/v1/models/m:classify", b'{"examples": [{"names": [10, null]}]}', 400, "exact",
     "Feature: names has element with unexpected JSON type: Null"),
    ("POST", "/v1/models/m:classify", b'{"examples": [{"names": [10, 10.0]}]}', 400, "exact",
     "Unexpected element type in feature: names expecting type: int64"),
    ("POST", "/v1/models/m:classify", b'{"examples": [{"n": [20, 18446744073709551603]}]}', 400, "exact",
     "Feature: n has uint64_t element. Only int64_t is supported."),
    ("POST", "/v1/models/m:classify", b'{"signature_name": "nope", "examples": [{}]}', 400, "exact",
     "No signature was found with the name: nope"),
    ("POST", "/v1/models/m:classify", b'{"examples": [{"x": 1.0}]}', 400, "sub",
     "No classification inputs found in SignatureDef: "),
    ("POST", "/v1/models/m:regress", b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}', 400, "sub",
     "No regression outputs found in SignatureDef: "),
]


@pytest.mark.parametrize("method, path, body, status, how, message", REST_ERRORS,
                         ids=[f"{c[0]} {c[1]} {(c[2] or b'')[:40]!r}" for c in REST_ERRORS])
def test_rest_errors_are_tensorflow_servings(server, method, path, body, status, how, message):
    code, headers, text = call(server, method, path, body)
    assert code == status, text
    assert headers["Content-Type"] == "application/json"
    error = json.loads(text)["error"]
    assert error == message if how == "exact" else message in error, error


REST_ANSWERS = [
    ("GET", "/v1/models/m", None, {"model_version_status": [STATUS_2]}),
    ("GET", "/v1/models/m/versions/2", None, {"model_version_status": [STATUS_2]}),
    ("GET", "/v1/models/m/labels/anything", None, {"model_version_status": [STATUS_2]}),  # the label is not resolved
    ("GET", "/v1/models/m/METADATA", None, {"model_version_status": [STATUS_2]}),  # status, not metadata
    ("GET", "/V1/MODELS/m/VERSIONS/2", None, {"model_version_status": [STATUS_2]}),
    ("POST", "/v1/models/m:predict", b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
     {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "serving_default", "inputs": [3.0, 4.0]}',
     {"outputs": [3.5, 4.0]}),
    ("POST", "/V1/Models/m/Versions/2:predict", b'{"instances": [1.0]}', {"predictions": [2.5]}),
    ("POST", "/v1/models/m/versions/1:predict", b'{"instances": [1.0]}', None),  # 1 is not loaded: see below
    ("POST", "/v1/models/m:predict", b'{"inputs": {"x": [1.0], "extra": 5}}', {"outputs": [2.5]}),
    ("POST", "/v1/models/m:predict", b'{"instances": [1, 2.0]}\nX', {"predictions": [2.5, 3.0]}),
    ("POST", "/v1/models/m:predict", b'\xef\xbb\xbf{"instances": [2]}', {"predictions": [3.0]}),
    ("POST", "/v1/models/m:predict", b'{"instances": [1], "nested": ' + b"[" * 50000 + b"]" * 50000 + b"}",
     {"predictions": [2.5]}),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "", "instances": [0.0]}', {"predictions": [2.0]}),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "strings", "instances": [{"b64": "aGVsbG8="}, "hi"]}',
     {"predictions": [{"length": 5, "s_bytes": {"b64": "aGVsbG8="}}, {"length": 2, "s_bytes": {"b64": "aGk="}}]}),
    ("POST", "/v1/models/m:predict", b'{"signature_name": "two_inputs", "inputs": {"a": [1.0], "b": [2.0]}}',
     {"outputs": [3.0]}),
    ("POST", "/v1/models/m:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}',
     {"results": [42.0]}),
    ("POST", "/v1/models/m:classify", b'{"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}',
     {"results": [[["", 12.0]]]}),
    ("POST", "/v1/models/m:regress", b'{"signature_name": "regress_x_to_y", "context": {"x": 2.0}, '
     b'"examples": [{}, {"x": 4.0}]}', {"results": [3.0, 4.0]}),
]


@pytest.mark.parametrize("method, path, body, expected", [c for c in REST_ANSWERS if c[3] is not None],
                         ids=[f"{c[0]} {c[1]} {(c[2] or b'')[:40]!r}" for c in REST_ANSWERS if c[3] is not None])
def test_rest_answers_are_tensorflow_servings(server, method, path, body, expected):
    code, headers, text = call(server, method, path, body)
    assert (code, headers["Content-Type"]) == (200, "application/json"), text
    assert json.loads(text) == expected


@pytest.mark.parametrize("body, text", [
    (b'{"instances": [1.0, 2.0]}', '{\n    "predictions": [2.5, 3.0\n    ]\n}'),
    (b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}', '{\n    "predictions": [[2.5, 3.0], [3.5, 4.0]\n    ]\n}'),
    (b'{"inputs": [3.0, 4.0]}', '{\n    "outputs": [\n        3.5,\n        4.0\n    ]\n}'),
    (b'{"instances": [17999996.0, 1999994.0, -3.0, 0.3333333333]}',  # %g if it reads back as the float, else 9 digits
     '{\n    "predictions": [9e+06, 999999.0, 0.5, 2.16666675\n    ]\n}'),
    (b'{"instances": [NaN, -Infinity, Infinity]}', '{\n    "predictions": [NaN, -Infinity, Infinity\n    ]\n}'),
])
def test_predict_bytes_are_rapidjsons_pretty_writer(server, body, text):
    assert call(server, "POST", "/v1/models/m:predict", body)[2] == text


def test_classify_regress_and_error_bytes(server):
    body = b'{"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}'
    assert call(server, "POST", "/v1/models/m:classify", body)[2] == '{\n    "results": [[["", 12.0]]\n    ]\n}'
    body = b'{"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}'
    assert call(server, "POST", "/v1/models/m:regress", body)[2] == '{\n    "results": [42.0]\n}'
    assert call(server, "GET", "/v1/foo")[2] == '{\n    "error": "Malformed request: GET /v1/foo"\n}'


def test_status_and_metadata_print_every_field_as_tensorflow_serving(server):
    code, _, text = call(server, "GET", "/v1/models/m")
    assert text == ('{\n "model_version_status": [\n  {\n   "version": "2",\n   "state": "AVAILABLE",\n   "status": '
                    '{\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}\n')
    code, _, text = call(server, "GET", "/v1/models/m/metadata")
    assert code == 200 and text.startswith(
        '{\n"model_spec":{\n "name": "m",\n "version": "2",\n "signature_name": ""\n}'
        '\n,\n"metadata": {"signature_def": {\n "signature_def": {')
    assert text.endswith("}\n}\n}\n")
    metadata = json.loads(text)
    assert metadata["model_spec"] == {"name": "m", "version": "2", "signature_name": ""}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict" and default["defaults"] == {}
    assert default["inputs"]["x"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    image = signatures["images"]["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT" and image["tensor_shape"] == {
        "dim": [{"size": size, "name": ""} for size in ("-1", "28", "28", "1")], "unknown_rank": False}
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    init = signatures["__saved_model_init_op"]  # TF2 exports list their init op, whole
    assert init["inputs"] == {} and init["method_name"] == "" and init["defaults"] == {}
    assert set(init["outputs"]["__saved_model_init_op"]) == {"name", "dtype", "tensor_shape"}


def test_non_api_paths_options_and_head(server):
    assert call(server, "GET", "/")[0] == 404 and call(server, "GET", "/healthz")[0] == 404
    assert json.loads(call(server, "GET", "/")[2]) == {"error": "Not Found"}
    assert call(server, "OPTIONS", "/v1/models/m")[0] == 400
    assert call(server, "OPTIONS", "/v1/models/m", headers={"Origin": "http://a"})[0] == 200
    code, headers, text = call(server, "HEAD", "/v1/models/m")
    assert (code, text) == (400, "")


def raw_call(server, request):
    """(status, body bytes) of one request sent as raw bytes (bodies that are not UTF-8 stay bytes)."""
    with socket.create_connection(("127.0.0.1", server["rest"]), timeout=30) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)Content-Length: (\d+)", head)
            if length and len(body) >= int(length[1]):
                break
    assert b"application/json" in head, reply
    return int(head.split(b" ")[1]), body


def post(path, body):
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (path, len(body), body)


LONG_VERSION = b"9" * 5000  # more digits than Python's int() takes by default (sys.get_int_max_str_digits)
NOT_UTF8 = [  # (request, HTTP status, bytes the error holds): TensorFlow Serving's names and strings are bytes
    (b"GET /v1/models/%FF HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 404,
     b"Could not find any versions of model \xff"),
    (b"GET /v1/models/%ED%A0%80/metadata HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 404,
     b"Servable not found for request: Latest("),
    (post(b"/v1/models/%FF:predict", b'{"instances": [1]}'), 404, b"Servable not found for request: Latest(\xff)"),
    (post(b"/v1/models/m/labels/%FF:predict", b'{"instances": [1]}'), 400,
     b"Unrecognized servable version label: \xff"),
    (post(b"/v1/models/m:predict", b'{"signature_name": "\\ud800", "instances": [1]}'), 400,
     b"JSON Parse error: The surrogate pair in string is invalid. at offset: 20"),
    (post(b"/v1/models/m:predict", b'{"instances": [1], "x": "\\uDBFF\\u0041"}'), 400,
     b"The surrogate pair in string is invalid. at offset: 25"),
    (post(b"/v1/models/m:predict", b'{"signature_name": "\xff", "instances": [1]}'), 400,
     b'Serving signature name: \\"\xff\\" not found in signature def'),  # quotes escaped in the JSON body
    (post(b"/v1/models/m:classify", b'{"signature_name": "classify_x_to_y", "examples": [{"\xff": 1.0}]}'), 400,
     b"not valid UTF-8"),
    (b"GET /v1/models/m/versions/" + LONG_VERSION + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 400,
     b"Failed to convert version: " + LONG_VERSION + b" to numeric."),
    (post(b"/v1/models/m/versions/" + LONG_VERSION + b":predict", b'{"instances": [1]}'), 400,
     b"Failed to convert version: 9999"),
]


@pytest.mark.parametrize("request_, status, fragment", NOT_UTF8, ids=[c[0][:60].decode("latin-1") for c in NOT_UTF8])
def test_names_strings_and_versions_python_cannot_take_are_400_or_404_as_tensorflow_servings(
        server, request_, status, fragment):
    code, body = raw_call(server, request_)
    assert code == status and fragment in body, body[:300]
    assert "Traceback" not in server["log"]()


def test_strings_that_are_not_utf8_are_taken_as_bytes(server):
    """A raw byte that is not UTF-8 in a string input is that byte, as rapidjson (no encoding check) reads it."""
    code, body = raw_call(server, post(b"/v1/models/m:predict",
                                       b'{"signature_name": "strings", "instances": ["\xff"]}'))
    assert (code, json.loads(body)) == (200, {"predictions": [{"length": 1, "s_bytes": {"b64": "/w=="}}]})
    # A raw byte in the request line: an HTTP error in JSON, never a 500.
    code, body = raw_call(server, b"GET /v1/models/\xff HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert code in (400, 404) and b'"error"' in body


# ---------------------------------------------------------------- gRPC

def predict(x=None, **spec):
    request = apis.predict_pb2.PredictRequest()
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for alias, proto in (x or {}).items():
        request.inputs[alias].CopyFrom(proto)
    return request


def floats(*values, shape=None):
    proto = apis.tensor_pb2.TensorProto(dtype=DT.DT_FLOAT, float_val=values)
    for size in shape or []:
        proto.tensor_shape.dim.add(size=size)
    return proto


def with_filter(request, *aliases):
    request.output_filter.extend(aliases)
    return request


GRPC_ERRORS = [
    (apis.predict_pb2.PredictRequest(), Code.INVALID_ARGUMENT, "exact", "Missing ModelSpec"),
    (predict(name=""), Code.INVALID_ARGUMENT, "exact", "ModelSpec has no name specified."),
    (predict(name="nope"), Code.NOT_FOUND, "exact", "Servable not found for request: Latest(nope)"),
    (predict(name="m", version=7), Code.NOT_FOUND, "exact", "Servable not found for request: Specific(m, 7)"),
    (predict(name="m", version_label="zzz"), Code.INVALID_ARGUMENT, "exact",
     "Unrecognized servable version label: zzz"),
    (predict(name="nope", version_label="zzz"), Code.INVALID_ARGUMENT, "exact",
     "Unrecognized servable version label: zzz"),
    (predict(name="m", signature_name="nope"), Code.FAILED_PRECONDITION, "exact",
     'Serving signature key "nope" not found.'),
    (predict(name="m"), Code.INVALID_ARGUMENT, "exact",
     "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}."),
    (predict({"unknown_key1": floats(1), "unknown_key2": floats(1)}, name="m"), Code.INVALID_ARGUMENT, "sub",
     "Sent extra: {unknown_key1,unknown_key2}. Missing but required: {x}."),
    (predict({"z": floats(1)}, name="m"), Code.INVALID_ARGUMENT, "exact",
     "Signature input alias: x(feed name: serving_default_x:0) not found in request and no default value provided. "
     "Inputs expected to be in the request {z}, or default input alias set: "),
    (predict({"x": apis.tensor_pb2.TensorProto(dtype=DT.DT_STRING, string_val=[b"a"])}, name="m"),
     Code.INVALID_ARGUMENT, "exact", "Expects arg[0] to be float but string is provided"),
    (predict({"x": apis.tensor_pb2.TensorProto(dtype=DT.DT_BOOL, bool_val=[True])}, name="m"),
     Code.INVALID_ARGUMENT, "exact", "Expects arg[0] to be float but bool is provided"),
    (with_filter(predict({"x": floats(1)}, name="m"), "nope"), Code.INVALID_ARGUMENT, "exact",
     "output tensor alias not found in signature: nope Outputs expected to be in the set {y}."),
    (with_filter(predict({"x": floats(1)}, name="m"), "y", "y"), Code.INVALID_ARGUMENT, "exact",
     "duplicate output tensor alias: y"),
    (predict({"x": apis.tensor_pb2.TensorProto(dtype=DT.DT_FLOAT, tensor_content=b"abc",
                                               tensor_shape={"dim": [{"size": 1}]})}, name="m"),
     Code.INVALID_ARGUMENT, "exact", "tensor parsing error: x"),
    (predict({"x": floats(1, shape=[-1])}, name="m"), Code.INVALID_ARGUMENT, "exact", "tensor parsing error: x"),
]


@pytest.mark.parametrize("request_, code, how, message", GRPC_ERRORS, ids=[c[3][:60] for c in GRPC_ERRORS])
def test_grpc_predict_errors_are_tensorflow_servings(server, request_, code, how, message):
    with pytest.raises(grpc.RpcError) as caught:
        server["predict"].Predict(request_, timeout=30)
    assert caught.value.code() == code
    assert caught.value.details() == message if how == "exact" else message in caught.value.details()


def test_grpc_predict_answers_in_typed_fields_with_the_version_that_answered(server):
    """predict_impl_test PredictionSuccess: float_val in, float_val out, model_spec rebuilt."""
    response = server["predict"].Predict(with_filter(predict({"x": floats(2.0)}, name="m"), "y"), timeout=30)
    y = response.outputs["y"]
    assert y.dtype == DT.DT_FLOAT and list(y.float_val) == [3.0] and not y.tensor_content
    assert len(y.tensor_shape.dim) == 0 and y.HasField("tensor_shape")
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == \
        ("m", 2, "serving_default")
    # Fewer values than the shape needs: TensorFlow pads with the last one.
    padded = server["predict"].Predict(predict({"x": floats(1.0, 2.0, shape=[4])}, name="m"), timeout=30)
    assert list(padded.outputs["y"].float_val) == [2.5, 3.0, 3.0, 3.0]
    strings = server["predict"].Predict(predict({"s": apis.tensor_pb2.TensorProto(
        dtype=DT.DT_STRING, string_val=[b"\xff\x00ab"], tensor_shape={"dim": [{"size": 1}]})},
        name="m", signature_name="strings"), timeout=30)
    assert list(strings.outputs["s_bytes"].string_val) == [b"\xff\x00ab"]
    assert list(strings.outputs["length"].int64_val) == [4]


def test_mnist_client_and_resnet_client_work_unchanged(server):
    """What tensorflow_serving/example/mnist_client.py and resnet_client*.py do, against serve.py."""
    import tensorflow as tf  # the example clients build their requests with it
    image = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32) * 255
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "m", "images"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image, shape=list(image.shape)))  # tensor_content
    result = server["predict"].Predict.future(request, 5.0).result()
    scores = np.array(result.outputs["scores"].float_val)  # mnist_client reads the typed field
    np.testing.assert_allclose(scores, np.full(10, image.mean() * 0.5 + 2), rtol=1e-5)
    # resnet_client.py: a JSON string posted as is (no Content-Type), raise_for_status, response.json().
    response = requests.post(f"http://127.0.0.1:{server['rest']}/v1/models/m:predict",
                             data=json.dumps({"signature_name": "images", "instances": image.tolist()}), timeout=30)
    response.raise_for_status()
    np.testing.assert_allclose(response.json()["predictions"][0], scores, rtol=1e-6)


def test_our_client_reads_typed_fields(server):
    from tfk8s.serving.client import GrpcModel, RestModel
    images = np.stack([np.full((28, 28, 1), v, np.float32) for v in (0.0, 10.0)])
    for model_class, port in ((GrpcModel, server["grpc"]), (RestModel, server["rest"])):
        model = model_class("127.0.0.1", port, "m", "images")
        assert model.connect().scores_name == "scores"
        scores, version = model.predict(images)
        np.testing.assert_allclose(scores, [[2.0] * 10, [7.0] * 10])
        assert version == 2


def test_metadata_and_status_over_grpc(server):
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    for fields, message in (([], "GetModelMetadataRequest must specify at least one metadata_field"),
                            (["foo"], "Metadata field foo is not supported")):
        request.ClearField("metadata_field")
        request.metadata_field.extend(fields)
        with pytest.raises(grpc.RpcError) as caught:
            server["predict"].GetModelMetadata(request, timeout=30)
        assert (caught.value.code(), caught.value.details()) == (Code.INVALID_ARGUMENT, message)
    request.ClearField("metadata_field")
    request.metadata_field.append("signature_def")
    response = server["predict"].GetModelMetadata(request, timeout=30)
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (2, "")
    assert response.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    status = apis.get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name, status.model_spec.version_label = "m", "unknown"
    (version,) = server["models"].GetModelStatus(status, timeout=30).model_version_status
    assert version.version == 2


def examples(*xs, context=None):
    message = apis.input_pb2.Input()
    target = message.example_list_with_context if context is not None else message.example_list
    if context is not None:
        target.context.features.feature["x"].float_list.value.append(context)
    for x in xs:
        target.examples.add().features.feature["x"].float_list.value.append(x)
    return message


def test_classify_regress_and_multi_inference_over_grpc(server):
    stub = server["predict"]
    request = apis.classification_pb2.ClassificationRequest(input=examples(20.0, 4.0))
    request.model_spec.name, request.model_spec.signature_name = "m", "classify_x_to_y"
    response = stub.Classify(request, timeout=30)
    assert [[(c.label, c.score) for c in cs.classes] for cs in response.result.classifications] == \
        [[("", 12.0)], [("", 4.0)]]
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (2, "classify_x_to_y")
    request = apis.regression_pb2.RegressionRequest(input=examples(80.0))
    request.model_spec.name, request.model_spec.signature_name = "m", "regress_x_to_y"
    assert [r.value for r in stub.Regress(request, timeout=30).result.regressions] == [42.0]

    def multi(*signatures, names=("m", "m")):
        message = apis.inference_pb2.MultiInferenceRequest(input=examples(2.0))
        for name, signature in zip(names, signatures):
            task = message.tasks.add()
            task.model_spec.name, task.model_spec.signature_name = name, signature
        return message

    response = stub.MultiInference(multi("classify_x_to_y", "regress_x_to_y"), timeout=30)
    assert response.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[1].regression_result.regressions[0].value == 3.0
    assert response.results[1].model_spec.signature_name == "regress_x_to_y"
    for request, code, message in [
        (multi("classify_x_to_y", "regress_x_to_y", names=("m", "other")), Code.INVALID_ARGUMENT,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (multi("classify_x_to_y", "classify_x_to_y"), Code.INVALID_ARGUMENT,
         "Duplicate evaluation of signature: classify_x_to_y"),
        (multi("serving_default"), Code.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
        (multi("nope"), Code.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
        (apis.inference_pb2.MultiInferenceRequest(), Code.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.MultiInference(request, timeout=30)
        assert (caught.value.code(), caught.value.details()) == (code, message)
    empty = apis.classification_pb2.ClassificationRequest()
    empty.model_spec.name, empty.model_spec.signature_name = "m", "classify_x_to_y"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(empty, timeout=30)
    assert (caught.value.code(), caught.value.details()) == (Code.INVALID_ARGUMENT, "Input is empty.")
    default = apis.classification_pb2.ClassificationRequest(input=examples(1.0))
    default.model_spec.name = "m"  # serving_default has input x, not inputs
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(default, timeout=30)
    assert caught.value.details().startswith("No classification inputs found in SignatureDef: ")


@pytest.mark.parametrize("text, decoded", [
    ("aGVsbG8=", b"hello"), ("aGVsbG8", b"hello"), ("aGVs bG8=\n", b"hello"), ("aGVsbG8.", b"hello"), ("", b""),
    ("aGVsbG8==", None), ("aGVsbG8=x", None), ("a", None), ("***", None), ("aGVsbG8-", None),
])
def test_b64_is_decoded_as_absl_base64unescape_decodes_it(text, decoded):
    from tfk8s.serving.json_tensor import base64_unescape
    assert base64_unescape(text) == decoded


@pytest.mark.parametrize("name, version", [
    ("1", 1), ("00000123", 123), ("20170111173521", 20170111173521), ("+1", 1), ("-5", -5), (" 7\n", 7),
    ("9223372036854775807", 2**63 - 1), ("9223372036854775808", None), ("99999999999999999999", None),
    ("²", None), ("٣", None), ("1.0", None), ("0x10", None), ("1_000", None), ("2.denied", None),
    ("non_numerical_child", None), ("", None), ("+", None), ("latest", None),
])
def test_version_directory_names_are_read_as_simple_atoi_reads_them(name, version):
    """file_system_storage_path_source.cc ParseVersionNumber: absl::SimpleAtoi into int64."""
    from tfk8s import versions
    assert versions.parse(name) == version


def test_tensor_helpers_round_trip_typed_fields_and_content():
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False]), np.arange(3, dtype=np.int64),
                  np.array([1.5, -2], np.float16), np.array([b"a", b"\xff"], dtype=object)):
        for content in (True, False):
            proto = to_tensor_proto(array, content)
            assert bool(proto.tensor_content) == (content and array.dtype != object)
            np.testing.assert_array_equal(to_ndarray(proto), array)
