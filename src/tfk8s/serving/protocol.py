"""Status codes and errors as TensorFlow Serving reports them, over gRPC and over HTTP."""
import grpc

from tfk8s.serving.tensors import apis

DEFAULT_SIGNATURE = "serving_default"
MAX_LOAD_RETRIES = 5   # as tensorflow_model_server's --max_num_load_retries
State = apis.get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode
# How TensorFlow Serving's REST API turns a status code into an HTTP status (http_server.cc).
HTTP_STATUS = {Code.INVALID_ARGUMENT: 400, Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400,
               Code.NOT_FOUND: 404, Code.UNIMPLEMENTED: 501, Code.UNAVAILABLE: 503,
               Code.DEADLINE_EXCEEDED: 504, Code.RESOURCE_EXHAUSTED: 429}
# tensorflow.error.Code numbers for StatusProto.error_code
ERROR_CODE = {code: code.value[0] for code in Code}


class ServingError(Exception):
    """A request the server refuses: a gRPC status code and TensorFlow Serving's message for it."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def log(message):
    print(message, flush=True)


