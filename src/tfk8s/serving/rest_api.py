"""TensorFlow Serving's REST API (http_rest_api_handler.cc): model status, metadata, predict, classify, regress.

Paths are matched as TensorFlow Serving matches them, query string included
and case-insensitively (`/V1/MODELS/m:predict` works; the verb after `:` is
case-sensitive): anything under /v1/ that is not one of its patterns is 400
"Malformed request: <METHOD> <path>", whatever the method. Every answer is
JSON, errors included ({"error": message}).

The HTTP side is event-driven (aiohttp's server on one event loop thread), as
TensorFlow Serving's libevent server is: an idle or slow connection costs a
socket and a few kilobytes, never a worker. Only the model work goes to the
--rest_api_num_threads workers. Each request must arrive whole (headers and
body) within --rest_api_read_timeout_seconds of the connection opening or of
the previous answer: a deadline per request, not per read, so a client that
drips a byte at a time is dropped too. A body larger than the server takes is
refused from its Content-Length before it is read; chunked and gzip bodies are
read as libevent reads them. --rest_api_timeout_in_ms bounds the model run, as
in TensorFlow Serving (504 "Timed out waiting for notification").

stop(grace) closes the port, closes idle and half-received connections at
once, lets the requests in flight finish and answer (with Connection: close)
for up to `grace` seconds, then closes everything.
"""
import asyncio
import concurrent.futures
import json
import re
import threading
import time
import traceback
import types
import urllib.parse
import zlib

from aiohttp import web, web_protocol
from google.protobuf import json_format

from tfk8s import versions
from tfk8s.cli import UserError
from tfk8s.serving import inference, json_examples, json_io, json_tensor, tensors
from tfk8s.serving.grpc_api import status_response
from tfk8s.serving.protocol import Code, ServingError, http_status, invalid, log, too_large
from tfk8s.serving.tensors import apis

API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
PREDICTION_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:"
                             r"(classify|regress|predict)", re.IGNORECASE | re.DOTALL)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                         re.IGNORECASE | re.DOTALL)
MAX_GUNZIPPED_BYTES = 100 * 1024 * 1024  # libevent request handler's ZLib::kMaxUncompressedBytes


class PathSpec:
    """The ModelSpec a path names, as ModelServer.resolve reads one (a label is percent-decoded; the version went
    through SimpleAtoi). Not a protobuf: a name or label that is not UTF-8 (TensorFlow Serving's are bytes)
    is simply not found, where a protobuf string field would refuse it."""

    def __init__(self, name, version, label):
        self.name, self.version_label = name, label or ""
        self.version = types.SimpleNamespace(value=version)

    def HasField(self, field):  # the protobuf methods ModelServer.resolve calls
        return field == "version" and self.version.value is not None

    def WhichOneof(self, group):
        if group != "version_choice":
            return None
        return "version_label" if self.version_label else "version" if self.version.value is not None else None


def utf8(text):
    """A str from a request as the bytes TensorFlow Serving would echo: surrogateescape gives back the bytes
    that were not UTF-8; a lone surrogate from a JSON escape is written as its own three bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


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
        try:
            parsed = versions.parse(version)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits): not an int64 either
            parsed = None
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

    def __init__(self, server, timeout_ms, max_bytes=None, budget=None):
        self.server, self.timeout_ms, self.max_bytes, self.budget = server, timeout_ms, max_bytes, budget

    def handle(self, method, path, body):
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as err:
            return http_status(err.code), json_io.error_body(err.message)
        except UnicodeEncodeError as err:  # a name or string that is not UTF-8 where a protobuf needs UTF-8
            text = err.object[max(0, err.start - 20):err.end + 20]
            return 400, json_io.error_body(f"Invalid argument: a string that is not valid UTF-8 ({err.reason}) "
                                           f"near {text!r}")

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
            return metadata_json(name, self.server.resolve(PathSpec(name, version, label)))
        doc = json_io.parse(body)
        signature_name = json_tensor.check_document(doc)
        if kind == "predict":
            loaded = self.server.resolve(PathSpec(name, version, label))
            signature = loaded.rest_signature(signature_name)
            booleans = b"true" in body or b"false" in body
            arrays, layout = json_tensor.predict_inputs(doc, signature, booleans,
                                                        lambda dims: self._check(signature, dims))
            outputs = self._timed(lambda cancelled: signature.predict_arrays(arrays, cancelled))
            return json_tensor.predict_response(outputs, layout)
        input_message = json_examples.examples_input(doc)
        loaded = self.server.resolve(PathSpec(name, version, label))
        if kind == "classify":
            result = apis.classification_pb2.ClassificationResult()
            self._timed(lambda cancelled: inference.classify(loaded, signature_name, input_message, result, cancelled))
            return json_examples.classify_response(result)
        result = apis.regression_pb2.RegressionResult()
        self._timed(lambda cancelled: inference.regress(loaded, signature_name, input_message, result, cancelled))
        return json_examples.regress_response(result)

    def _check(self, signature, dims):
        """The sizes a body's tensors will have, checked against the limits before they are built (a body of a
        few hundred MB used to become a tensor first, then be refused). The signature's shapes are checked once
        the values are read, as TensorFlow Serving does: a value of the wrong type is named first."""
        dtypes = {alias: signature.inputs[alias].dtype for alias in dims}
        for alias, shape in dims.items():
            refusal = too_large(alias, shape, tensors.nbytes(dtypes[alias], shape), self.max_bytes, self.budget)
            if refusal:
                raise refusal

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


METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")  # others: 501, as before


class BodyError(Exception):
    """The body cannot be taken: too large, or not a number where its size should be."""


class Connection(web_protocol.RequestHandler):
    """One client connection. Each request must arrive whole within `read_timeout` seconds of the connection
    opening or of the previous answer; past that the connection is closed (a deadline per request, not per
    read: a client that sends a byte every second is dropped as surely as one that sends nothing)."""

    def __init__(self, manager, *, read_timeout, **kwargs):
        super().__init__(manager, **kwargs)
        self.read_timeout, self.deadline, self.timer = read_timeout, None, None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.arm()

    def connection_lost(self, exc):
        self.disarm()
        super().connection_lost(exc)

    def arm(self):
        """Start the clock for the next request."""
        self.disarm()
        self.deadline = self._loop.time() + self.read_timeout
        self.timer = self._loop.call_at(self.deadline, self.expire)

    def disarm(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self):
        self.timer = None
        if self.transport is not None:
            self.force_close()

    def handle_error(self, request, status=500, exc=None, message=None):
        """A request the HTTP parser refused (a garbled line, a bad header): a JSON error, then close."""
        reason = str(message or getattr(exc, "message", "") or status).split("\n")[0].rstrip(":")
        if "content-length" in reason.lower():
            reason = f"a length that is not a number (Content-Length): {reason}"
        response = web.Response(status=status, body=utf8(json_io.error_body(f"Malformed request: {reason}")),
                                headers={"Content-Type": "application/json", "Server": "serve.py"})
        response.force_close()
        return response


class HttpServer(web.Server):
    """aiohttp's low-level server with our Connection and JSON for what its parser refuses."""

    def __init__(self, handler, read_timeout, **kwargs):
        super().__init__(handler, **kwargs)
        self.read_timeout = read_timeout

    def __call__(self):
        return Connection(self, loop=self._loop, read_timeout=self.read_timeout, **self._kwargs)


class RestServer:
    """The REST API on an event loop of its own (a thread), the model work on a pool of `workers` threads."""

    def __init__(self, api, workers, read_timeout, cors=False, max_body=2**31 - 1):
        self.api, self.read_timeout, self.cors, self.max_body = api, read_timeout, cors, max_body
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self.loop = asyncio.new_event_loop()
        self.listener = self.http = None

    def start(self, address, port):
        """Listen (OSError when the port is taken), then serve on a thread of its own."""
        async def listen():
            # auto_decompress off: gzip is read below, bounded as libevent bounds it.
            self.http = HttpServer(self.handle, self.read_timeout, loop=self.loop, access_log=None,
                                   auto_decompress=False, keepalive_timeout=self.read_timeout)
            return await self.loop.create_server(self.http, address, port, reuse_address=True, backlog=128)

        self.listener = self.loop.run_until_complete(listen())
        threading.Thread(target=self.loop.run_forever, name="rest", daemon=True).start()

    def stop(self, grace):
        """Stop accepting, close idle connections, let requests in flight answer for up to `grace` s.

        Returns True when every request in flight answered. Call from another thread than the loop's.
        """
        try:
            return asyncio.run_coroutine_threadsafe(self._stop(grace), self.loop).result(grace + 5)
        except (TimeoutError, concurrent.futures.TimeoutError):  # the loop itself is stuck: exit regardless
            return False

    async def _stop(self, grace):
        self.listener.close()
        connections = self.http.connections
        for connection in connections:
            connection.disarm()
            # aiohttp 3.14.5 web_protocol.py: _request_in_progress is True from a request's headers to its
            # answer. Any other connection is idle, or still sending a request: closed now, unanswered.
            if not connection._request_in_progress:
                connection.force_close()
        self.http.pre_shutdown()  # the others answer, then close (no keep-alive)
        try:
            async with asyncio.timeout(grace):
                await self.http.shutdown(grace)
            drained = True
        except TimeoutError:
            drained = False
        for connection in connections:
            connection.force_close()
        return drained

    def reply(self, status, text, method):
        headers = {"Server": "serve.py"}
        if method != "OPTIONS":
            headers["Content-Type"] = "application/json"
        if self.cors:
            headers.update({"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                            "Access-Control-Allow-Headers": "Content-Type"})
        return web.Response(status=status, body=utf8(text), headers=headers)

    async def body(self, request):
        """The request body, bounded by max_body before anything is read; BodyError when it cannot be taken."""
        limit = self.max_body
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if not chunked:
            length = request.headers.get("Content-Length") or "0"
            if not length.isdigit():
                raise BodyError("a length that is not a number")
            if int(length) > limit:
                raise BodyError(f"a body of {length} bytes")
        parts, total = [], 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise BodyError(f"a body of more than {limit} bytes")
            parts.append(chunk)
        data = b"".join(parts)
        if "gzip" in request.headers.get("Content-Encoding", "").lower():
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = decompressor.decompress(data, MAX_GUNZIPPED_BYTES)
            except zlib.error:
                data = b""  # as TensorFlow Serving: the body is then empty
        return data

    async def handle(self, request):
        connection = request.protocol
        deadline = connection.deadline
        connection.disarm()
        method, path = request.method, request.raw_path
        try:
            if method not in METHODS:
                response = self.reply(501, json_io.error_body(f"Unsupported method ({method!r})"), method)
                response.force_close()
                return response
            try:
                async with asyncio.timeout_at(deadline):
                    body = await self.body(request)
            except BodyError as err:
                response = self.reply(400, json_io.error_body(
                    f"Malformed request: {err} (Content-Length or a chunk size); this server takes bodies of up "
                    f"to {self.max_body} bytes (grpc.max_receive_message_length)"), method)
                response.force_close()  # the rest of the body is not read: the connection cannot go on
                return response
            except TimeoutError:
                connection.force_close()
                raise
            if not API_PATH.fullmatch(path):
                return self.reply(404, json_io.error_body("Not Found"), method)
            if method == "OPTIONS":
                origin = request.headers.get("Origin", "")
                return self.reply(200 if re.match(r"https?://", origin) else 400, "", method)
            status, text = await self.loop.run_in_executor(self.pool, self.api.handle, method, path, body)
            return self.reply(status, text, method)
        except (asyncio.CancelledError, TimeoutError, ConnectionError):
            raise
        except Exception as err:
            traceback.print_exc()
            response = self.reply(500, json_io.error_body(f"{type(err).__name__}: {err}"), method)
            response.force_close()
            return response
        finally:
            if connection.transport is not None:
                connection.arm()


def start_rest(server, options, address, port):
    api = Api(server, options.rest_api_timeout_in_ms, options.max_tensor_bytes, options.memory_budget)
    rest = RestServer(api, options.rest_api_num_threads, options.rest_api_read_timeout, options.cors,
                      options.max_tensor_bytes)
    try:
        rest.start(address, port)
    except OSError as err:
        raise UserError(f"cannot listen for REST on {address}:{port}: {err.strerror} (another serve.py or model "
                        "server?)") from None
    log(f"Exporting HTTP/REST API at:{address}:{port} ...")
    return rest
