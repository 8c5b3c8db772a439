"""Status codes and errors as TensorFlow Serving reports them, over gRPC and over HTTP.

A refused request is a ServingError: a status code (gRPC's, which are
TensorFlow's) and TensorFlow Serving's message for it. gRPC clients get both
as they are (messages over 1024 characters cut, as grpc_status_util.cc cuts
them); REST clients get {"error": message} with the HTTP status
http_server.cc maps the code to.
"""
import os
import time

import grpc

from tfk8s.serving.tensors import apis

DEFAULT_SIGNATURE = "serving_default"
State = apis.get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode

# How TensorFlow Serving's REST API turns a status code into an HTTP status (http_server.cc ToHTTPStatusCode).
HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409, Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
# tensorflow.error.Code numbers (StatusProto.error_code) are gRPC's.
ERROR_CODE = {code: code.value[0] for code in Code}
CODE_BY_NUMBER = {number: code for code, number in ERROR_CODE.items()}
GRPC_MESSAGE_LIMIT = 1024  # grpc_status_util.cc kErrorMessageLimit


class ServingError(Exception):
    """A request the server refuses: a gRPC status code and TensorFlow Serving's message for it."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self):
        """absl::Status::ToString(): how one status is quoted inside another's message."""
        return f"{self.code.name}: {self.message}"


def invalid(message):
    return ServingError(Code.INVALID_ARGUMENT, message)


def grpc_details(message):
    """The message as a gRPC client sees it: at most 1024 characters, then ...TRUNCATED."""
    return message if len(message) <= GRPC_MESSAGE_LIMIT else message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"


def http_status(code):
    return HTTP_STATUS.get(code, 500)


def log(message):
    print(message, flush=True)


DEBUG = os.environ.get("TFK8S_SERVE_DEBUG") == "1"


def debug(message):
    """A line only with TFK8S_SERVE_DEBUG=1 in serve.py's environment: what each poll of the base paths found
    and what each request queued for a batch, the evidence a test waits for (a line a second per model, and
    one per request, are too many for a server's log otherwise)."""
    if DEBUG:
        log(f"debug: {message}")


class _Skipped:
    """Requests not computed because their caller had gone: counted, and logged at most every 10 s."""

    def __init__(self):
        self.count, self.logged_at = 0, float("-inf")

    def __call__(self, what="request"):
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= 10:
            log(f"not computed: {self.count} {what}(s) so far whose caller had gone (cancelled, or past its deadline)")
            self.logged_at = now


skipped = _Skipped()


def too_large(alias, dims, size, max_bytes, budget):
    """RESOURCE_EXHAUSTED when an input of `size` bytes passes the message limit or the memory budget, else
    None: checked from the shape alone, before any value is read or any memory allocated."""
    shape = "[" + ",".join(map(str, dims)) + "]"
    if max_bytes is not None and size > max_bytes:
        return ServingError(Code.RESOURCE_EXHAUSTED, f"input {alias} of shape {shape} takes {size} bytes, more than "
                            f"the {max_bytes} this server takes in a message (grpc.max_receive_message_length)")
    if budget is not None and size > budget:
        return ServingError(Code.RESOURCE_EXHAUSTED, f"input {alias} of shape {shape} takes {size} bytes, more than "
                            f"this server's memory budget for one input ({budget} bytes: a quarter of the memory "
                            "it had available at start-up)")
    return None
