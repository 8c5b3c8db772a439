"""TensorFlow Serving's REST API (http_rest_api_handler.cc): model status, metadata, predict, classify, regress.

Paths are matched as TensorFlow Serving matches them, query string included
and case-insensitively (`/V1/MODELS/m:predict` works; the verb after `:` is
case-sensitive): anything under /v1/ that is not one of its patterns is 400
"Malformed request: <METHOD> <path>", whatever the method. Every answer is
JSON, errors included ({"error": message}).

The HTTP side is bounded: --rest_api_num_threads workers, each connection
dropped after --rest_api_read_timeout_seconds without a complete request (a
slow or idle client cannot hold a worker), chunked and gzip bodies read as
libevent reads them. --rest_api_timeout_in_ms bounds the model run, as in
TensorFlow Serving (504 "Timed out waiting for notification").
"""
import http.server
import json
import re
import threading
import time
import traceback
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor

from google.protobuf import json_format

from tfk8s import versions
from tfk8s.cli import UserError
from tfk8s.serving import inference, json_examples, json_io, json_tensor
from tfk8s.serving.grpc_api import status_response
from tfk8s.serving.protocol import Code, ServingError, http_status, invalid, log
from tfk8s.serving.tensors import apis

API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:"
                             r"(classify|regress|predict)", re.IGNORECASE | re.DOTALL)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                         re.IGNORECASE | re.DOTALL)
MAX_GUNZIPPED_BYTES = 100 * 1024 * 1024  # libevent request handler's ZLib::kMaxUncompressedBytes


def _spec(name, version, label):
    """The ModelSpec a path names (a label is percent-decoded; the version went through SimpleAtoi)."""
    spec = apis.model_pb2.ModelSpec(name=name)
    if version is not None:
        spec.version.value = version
    if label:
        spec.version_label = label
    return spec


def parse_path(method, path):
    """(kind, name, version, label) of an API path; kind None when it is malformed."""
    match = PREDICTION_PATH.fullmatch(path) if method == "POST" else \
        STATUS_PATH.fullmatch(path) if method == "GET" else None
    if match is None:
        return None, None, None, None
    name, version, label, kind = match.groups()
    name = urllib.parse.unquote_to_bytes(name).decode("utf-8", "surrogateescape") if name else ""
    label = urllib.parse.unquote_to_bytes(label).decode("utf-8", "surrogateescape") if label else None
    if version:
        parsed = versions.parse(version)
        if parsed is None:
            raise invalid(f"Failed to convert version: {version} to numeric.")
        version = parsed
    else:
        version = None
    if method == "POST" and kind not in ("classify", "regress", "predict"):
        kind = None  # the verb is compared case-sensitively
    elif method == "GET":
        kind = "metadata" if kind == "metadata" else "status"
    return kind, name, version, label


def metadata_json(name, loaded):
    """GetModelMetadata as the REST handler prints it: two protobuf-JSON documents glued together."""
    spec = apis.model_pb2.ModelSpec(name=name)
    spec.version.value = loaded.version
    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    spec_json = json.dumps(json_format.MessageToDict(spec, **options), indent=1) + "\n"
    signatures = json.dumps(json_format.MessageToDict(loaded.signature_defs, **options), indent=1) + "\n"
    return "{\n" + '"model_spec":' + spec_json + ",\n" + '"metadata": {' + '"signature_def": ' + signatures + "}\n}\n"


class Api:
    """The handler's logic, apart from HTTP: (method, path, body) -> (HTTP status, JSON text)."""

    def __init__(self, server, timeout_ms):
        self.server, self.timeout_ms = server, timeout_ms

    def handle(self, method, path, body):
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as err:
            return http_status(err.code), json_io.error_body(err.message)

    def _dispatch(self, method, path, body):
        kind, name, version, label = parse_path(method, path)
        if kind is None:
            raise invalid(f"Malformed request: {method} {path}")
        if kind == "status":
            if not name:
                raise invalid("Missing model name in request.")
            return json.dumps(json_format.MessageToDict(status_response(self.server, name, version),
                                                        preserving_proto_field_name=True,
                                                        always_print_fields_with_no_presence=True), indent=1) + "\n"
        if kind == "metadata":
            return metadata_json(name, self.server.resolve(_spec(name, version, label)))
        doc = json_io.parse(body)
        signature_name = json_tensor.check_document(doc)
        if kind == "predict":
            loaded = self.server.resolve(_spec(name, version, label))
            signature = loaded.rest_signature(signature_name)
            booleans = b"true" in body or b"false" in body
            arrays, layout = json_tensor.predict_inputs(doc, signature, booleans)
            outputs = self._timed(lambda cancelled: signature.predict_arrays(arrays, cancelled))
            return json_tensor.predict_response(outputs, layout)
        input_message = json_examples.examples_input(doc)
        loaded = self.server.resolve(_spec(name, version, label))
        if kind == "classify":
            result = apis.classification_pb2.ClassificationResult()
            self._timed(lambda cancelled: inference.classify(loaded, signature_name, input_message, result, cancelled))
            return json_examples.classify_response(result)
        result = apis.regression_pb2.RegressionResult()
        self._timed(lambda cancelled: inference.regress(loaded, signature_name, input_message, result, cancelled))
        return json_examples.regress_response(result)

    def _timed(self, run):
        """Run the model under --rest_api_timeout_in_ms (it bounds the run only, as RunOptions.timeout_in_ms)."""
        if self.timeout_ms <= 0:
            return run(None)
        deadline = time.monotonic() + self.timeout_ms / 1000
        expired = lambda: time.monotonic() > deadline
        try:
            answer = run(expired)
        except ServingError as err:
            if err.code == Code.CANCELLED:  # stopped between chunks, or dropped from the batch queue
                raise ServingError(Code.DEADLINE_EXCEEDED, "Timed out waiting for notification") from None
            raise
        if expired():
            raise ServingError(Code.DEADLINE_EXCEEDED, "Timed out waiting for notification")
        return answer


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "serve.py"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # a garbled request line still gets a status line and headers

    def log_message(self, format, *args):
        pass

    def setup(self):
        self.timeout = self.server.read_timeout  # each read: a slow or idle client is dropped, its worker freed
        super().setup()

    def _reply(self, status, text, method):
        data = text.encode("utf-8", "surrogateescape")
        self.send_response(status)
        if method != "OPTIONS":
            self.send_header("Content-Type", "application/json")
        if self.server.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST, GET")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method, ...): JSON too, then close."""
        self.close_connection = True
        try:
            self._reply(code, json_io.error_body(message or http.HTTPStatus(code).phrase), self.command or "GET")
        except (OSError, ValueError):
            pass

    def _body(self):
        """The request body; ValueError for a length that is not a number, or more than the server takes."""
        limit, total = self.server.max_body, 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(1024).split(b";")[0].strip()
                size = int(size_line, 16)
                total += size
                if size < 0 or total > limit:
                    raise ValueError(f"a body of more than {limit} bytes")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            data = b"".join(parts)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > limit:
                raise ValueError(f"a body of {length} bytes")
            data = self.rfile.read(length)
        if "gzip" in self.headers.get("Content-Encoding", "").lower():
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = decompressor.decompress(data, MAX_GUNZIPPED_BYTES)
            except zlib.error:
                data = b""  # as TensorFlow Serving: the body is then empty
        return data

    def _handle(self):
        method = self.command
        try:
            try:
                body = self._body()
            except ValueError as err:
                self.close_connection = True
                reason = str(err) if str(err).startswith("a body") else "a length that is not a number"
                self._reply(400, json_io.error_body(
                    f"Malformed request: {reason} (Content-Length or a chunk size); this server takes bodies of up "
                    f"to {self.server.max_body} bytes (grpc.max_receive_message_length)"), method)
                return
            if not API_PATH.fullmatch(self.path):
                self._reply(404, json_io.error_body("Not Found"), method)
                return
            if method == "OPTIONS":
                origin = self.headers.get("Origin", "")
                self._reply(200 if re.match(r"https?://", origin) else 400, "", method)
                return
            status, text = self.server.api.handle(method, self.path, body)
            self._reply(status, text, method)
        except (OSError, TimeoutError):
            self.close_connection = True
        except Exception as err:
            traceback.print_exc()
            self.close_connection = True
            self._reply(500, json_io.error_body(f"{type(err).__name__}: {err}"), method)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class RestServer(http.server.HTTPServer):
    """An HTTP server with a fixed pool of workers (ThreadingHTTPServer's thread per connection is unbounded)."""

    allow_reuse_address = True  # SO_REUSEADDR (not SO_REUSEPORT): a port in use is still refused
    request_queue_size = 128

    def __init__(self, address, api, workers, read_timeout, cors=False, max_body=2**31 - 1):
        super().__init__(address, Handler)
        self.api, self.read_timeout, self.cors, self.max_body = api, read_timeout, cors, max_body
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self.pending = threading.BoundedSemaphore(workers * 64)

    def process_request(self, request, client_address):
        if not self.pending.acquire(blocking=False):  # far more connections waiting than workers: refuse
            self.shutdown_request(request)
            return
        self.pool.submit(self._work, request, client_address)

    def _work(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.pending.release()

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-request is not the server's problem


def start_rest(server, options, address, port):
    api = Api(server, options.rest_api_timeout_in_ms)
    try:
        httpd = RestServer((address, port), api, options.rest_api_num_threads, options.rest_api_read_timeout,
                           options.cors, options.max_tensor_bytes)
    except OSError as err:
        raise UserError(f"cannot listen for REST on {address}:{port}: {err.strerror} (another serve.py or model "
                        "server?)") from None
    threading.Thread(target=httpd.serve_forever, name="rest", daemon=True).start()
    log(f"Exporting HTTP/REST API at:{address}:{port} ...")
    return httpd

