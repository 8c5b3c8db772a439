"""TensorFlow Serving's gRPC services: PredictionService and ModelService."""
import functools
import traceback
from concurrent import futures

import grpc
from tensorflow_serving.apis import status_pb2

from tfk8s.cli import UserError
from tfk8s.serving.protocol import ERROR_CODE, Code, ServingError
from tfk8s.serving.tensors import GRPC_OPTIONS, apis, to_ndarray, to_tensor_proto


def _spec(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, model_spec.version_label or None


def _grpc_method(method):
    """Turn a ServingError into its status code; any other exception into INTERNAL. The server stays up."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            traceback.print_exc()
            context.abort(Code.INTERNAL, f"{type(err).__name__}: {err}")

    return wrapper


class PredictionService(apis.prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, server):
        self.server = server

    @_grpc_method
    def Predict(self, request, context):
        name, version, label = _spec(request.model_spec)
        loaded = self.server.resolve(name, version, label)
        signature = loaded.signature(request.model_spec.signature_name)
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = to_ndarray(proto)
            except ValueError as err:
                raise ServingError(Code.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({err})") from None
        outputs = signature.run(inputs, list(request.output_filter))
        response = apis.predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = name, signature.name
        response.model_spec.version.value = loaded.version
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value))
        return response

    @_grpc_method
    def GetModelMetadata(self, request, context):
        if not request.metadata_field:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        name, version, label = _spec(request.model_spec)
        loaded = self.server.resolve(name, version, label)
        response = apis.get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(loaded.signature_defs)
        return response


class ModelService(apis.model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def __init__(self, server):
        self.server = server

    @_grpc_method
    def GetModelStatus(self, request, context):
        response = apis.get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in self.server.status(*_spec(request.model_spec)):
            response.model_version_status.add(
                version=version, state=state,
                status=status_pb2.StatusProto(error_code=ERROR_CODE[Code.UNKNOWN if error else Code.OK],
                                              error_message=error))
        return response


def start_grpc(server, address, port, max_threads):
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads), options=GRPC_OPTIONS)
    apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(server), grpc_server)
    apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(server), grpc_server)
    try:
        bound = grpc_server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"cannot listen for gRPC on {address}:{port}: is the port in use?")
    grpc_server.start()
    return grpc_server


