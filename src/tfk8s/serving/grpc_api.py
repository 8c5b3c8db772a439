"""TensorFlow Serving's gRPC services: PredictionService (Predict, Classify, Regress, MultiInference,
GetModelMetadata) and ModelService (GetModelStatus, HandleReloadConfigRequest).

Outputs travel in the typed fields (float_val, int64_val, ...) as TensorFlow
Serving sends them, or as tensor_content bytes with
--enable_serialization_as_tensor_content. Messages up to int32 max are taken
(TensorFlow Serving's limit) unless --grpc_channel_arguments lowers it. A
call whose client has gone (cancelled, deadline passed) is not computed.
"""
import functools
import traceback
from concurrent import futures

import grpc

from tfk8s.cli import UserError
from tfk8s.serving import inference
from tfk8s.serving.protocol import ERROR_CODE, Code, ServingError, grpc_details, invalid
from tfk8s.serving.tensors import GRPC_OPTIONS, apis, to_tensor_proto


def make_spec(name, version, signature_name):
    """util.cc MakeModelSpec: the response's model_spec (the version that answered, never a label)."""
    spec = apis.model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


def _method(method):
    """A ServingError becomes its status; any other exception INTERNAL (logged). The server stays up."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, grpc_details(err.message))
        except Exception as err:  # a bug must not take the server down
            traceback.print_exc()
            context.abort(Code.INTERNAL, grpc_details(f"{type(err).__name__}: {err}"))

    return wrapper


def _cancelled(context):
    return lambda: not context.is_active()


def _spec(request):
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


class PredictionService(apis.prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server, options):
        self.server, self.options = server, options

    @_method
    def Predict(self, request, context):
        spec = _spec(request)
        loaded = self.server.resolve(spec)
        signature = loaded.predict_signature(spec.signature_name)
        outputs = signature.predict_protos(request.inputs, list(request.output_filter), _cancelled(context),
                                           self.options.max_tensor_bytes, self.options.memory_budget)
        response = apis.predict_pb2.PredictResponse(model_spec=make_spec(spec.name, loaded.version, signature.name))
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value, self.options.tensor_content))
        return response

    def _examples(self, request, context, response, infer):
        spec = _spec(request)
        loaded = self.server.resolve(spec)
        name = infer(loaded, spec.signature_name, request.input, response.result, _cancelled(context))
        response.model_spec.CopyFrom(make_spec(spec.name, loaded.version, name))
        return response

    @_method
    def Classify(self, request, context):
        return self._examples(request, context, apis.classification_pb2.ClassificationResponse(), inference.classify)

    @_method
    def Regress(self, request, context):
        return self._examples(request, context, apis.regression_pb2.RegressionResponse(), inference.regress)

    @_method
    def MultiInference(self, request, context):
        response = apis.inference_pb2.MultiInferenceResponse()
        inference.multi_inference(self.server, request, response, make_spec, _cancelled(context))
        return response

    @_method
    def GetModelMetadata(self, request, context):
        spec = _spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        loaded = self.server.resolve(spec)
        response = apis.get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=make_spec(spec.name, loaded.version, ""))
        response.metadata["signature_def"].Pack(loaded.signature_defs)
        return response


def status_response(server, name, version):
    """GetModelStatusResponse: every version ever seen, newest first (a label is not resolved)."""
    response = apis.get_model_status_pb2.GetModelStatusResponse()
    for number, state in server.status(name, version):
        status = apis.status_pb2.StatusProto(error_code=ERROR_CODE[state.code])
        if state.code != Code.OK:
            status.error_message = state.message
        response.model_version_status.add(version=number, state=state.state, status=status)
    return response


class ModelService(apis.model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server, config_file):
        self.server, self.config_file = server, config_file

    @_method
    def GetModelStatus(self, request, context):
        spec = _spec(request)
        return status_response(self.server, spec.name, spec.version.value if spec.HasField("version") else None)

    @_method
    def HandleReloadConfigRequest(self, request, context):
        response = apis.model_management_pb2.ReloadConfigResponse()
        if request.config.WhichOneof("config") != "model_config_list":
            raise invalid("ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
                          "is currently supported")
        if self.config_file is None:
            raise ServingError(Code.FAILED_PRECONDITION, "this server serves --model_base_path, not a model config; "
                                                         "start it with --model_config_file to reload one")
        # A config refused fails the call with its code, as TensorFlow Serving's does (model_service_impl.cc
        # returns ToGRPCStatus(status)); the config in force stays.
        self.config_file.apply(request.config)
        self.server.poll()
        return response


def start_grpc(server, config_file, options, address, port):
    """gRPC on address:port; another process on the port is a one-line error (no SO_REUSEPORT sharing)."""
    settings = dict(GRPC_OPTIONS)
    settings.update(options.grpc_channel_arguments)
    settings["grpc.so_reuseport"] = 0
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=options.grpc_max_threads),
                              options=list(settings.items()))
    apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(server, options), grpc_server)
    apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(server, config_file), grpc_server)
    try:
        bound = grpc_server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"cannot listen for gRPC on {address}:{port}: the port is in use (another serve.py or "
                        "model server?) or the address is not this machine's")
    grpc_server.start()
    return grpc_server
