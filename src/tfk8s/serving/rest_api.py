"""TensorFlow Serving's REST API: status, metadata and predict in JSON."""
import http.server
import json
import re
import threading
import traceback

import numpy as np
from google.protobuf import json_format

from tfk8s.cli import UserError
from tfk8s.serving.protocol import DEFAULT_SIGNATURE, HTTP_STATUS, Code, ServingError, State
from tfk8s.serving.tensors import DTYPES

REST_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                       r"(?:/(?P<resource>metadata)|:(?P<method>predict|classify|regress))?/?")


def _json_inputs(value, signature):
    """A JSON value for the signature's inputs -> {alias: ndarray} in each input's dtype."""
    if not isinstance(value, dict):
        if len(signature.inputs) != 1:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"name the inputs: the signature takes {sorted(signature.inputs)}")
        value = {next(iter(signature.inputs)): value}
    inputs = {}
    for alias, data in value.items():
        info = signature.inputs.get(alias)
        try:
            array = np.asarray(data)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"values of type {array.dtype.kind!r}")
            inputs[alias] = array.astype(DTYPES[info.dtype][0]) if info is not None and info.dtype in DTYPES else array
        except (ValueError, TypeError) as err:
            raise ServingError(Code.INVALID_ARGUMENT, f"input {alias!r} is not a numeric tensor "
                               f"of one shape ({' '.join(str(err).split())[:200]})") from None
    return inputs


def rest_predict(loaded, body):
    """POST :predict. Row format: {"instances": [...]} -> {"predictions": [...]};
    columnar: {"inputs": ...} -> {"outputs": ...}, as TensorFlow Serving answers them."""
    if not isinstance(body, dict):
        raise ServingError(Code.INVALID_ARGUMENT, "the request body must be a JSON object")
    name = body.get("signature_name") or DEFAULT_SIGNATURE
    if name not in loaded.signatures:
        raise ServingError(Code.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def')
    signature = loaded.signatures[name]
    if ("instances" in body) == ("inputs" in body):
        raise ServingError(Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key" if "inputs" not in body
                           else "Both 'inputs' and 'instances' keys are present; use one")
    if "inputs" in body:
        outputs = signature.run(_json_inputs(body["inputs"], signature))
        listed = {alias: value.tolist() for alias, value in outputs.items()}
        return {"outputs": listed if len(listed) > 1 else next(iter(listed.values()))}
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ServingError(Code.INVALID_ARGUMENT, "'instances' must be a non-empty list")
    if all(isinstance(row, dict) for row in instances):
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise ServingError(Code.INVALID_ARGUMENT, "every instance must name the same inputs")
        columns = {k: [row[k] for row in instances] for k in keys}
    else:
        columns = instances
    outputs = signature.run(_json_inputs(columns, signature))
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    listed = {alias: value.tolist() for alias, value in outputs.items()}
    return {"predictions": [{alias: listed[alias][i] for alias in listed} for i in range(rows)]}


class RestHandler(http.server.BaseHTTPRequestHandler):
    server_version = "serve.py"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method):
        server = self.server.model_server
        try:
            path = self.path.split("?", 1)[0]
            match = REST_PATH.fullmatch(path)
            if not match:
                raise ServingError(Code.NOT_FOUND, f"Malformed request: {method} {path}")
            name, label, resource, verb = match["name"], match["label"], match["resource"], match["method"]
            version = int(match["version"]) if match["version"] else None
            if method == "GET" and verb is None and resource is None:
                payload = {"model_version_status": [
                    {"version": str(v), "state": State.Name(state),
                     "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
                    for v, state, error in server.status(name, version, label)]}
            elif method == "GET" and resource == "metadata":
                loaded = server.resolve(name, version, label)
                payload = {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
                           "metadata": {"signature_def": json_format.MessageToDict(
                               loaded.signature_defs, preserving_proto_field_name=True)}}
            elif method == "POST" and verb == "predict":
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError as err:
                    raise ServingError(Code.INVALID_ARGUMENT, f"JSON Parse error: {err}") from None
                payload = rest_predict(server.resolve(name, version, label), body)
            elif method == "POST" and verb in ("classify", "regress"):
                raise ServingError(Code.UNIMPLEMENTED, f"{verb} is not implemented by this development server")
            else:
                raise ServingError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
            self._reply(200, payload)
        except ServingError as err:
            self._reply(HTTP_STATUS.get(err.code, 500), {"error": err.message})
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            traceback.print_exc()
            self._reply(500, {"error": f"{type(err).__name__}: {err}"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


def start_rest(server, address, port):
    try:
        httpd = http.server.ThreadingHTTPServer((address, port), RestHandler)
    except OSError as err:
        raise UserError(f"cannot listen for REST on {address}:{port}: {err.strerror}") from None
    httpd.daemon_threads = True
    httpd.model_server = server
    threading.Thread(target=httpd.serve_forever, name="rest", daemon=True).start()
    return httpd


