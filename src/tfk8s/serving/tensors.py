"""TensorFlow Serving's tensors and messages, for the server and the client alike.

Both ends of the API need the same few things: TensorFlow Serving's protobuf
messages, the mapping between a TensorProto's dtype and numpy's, and the
conversions between them. They live here, once: the server never imports the
client, nor the client the server.
"""
import importlib.util
import sys
import types

import numpy as np


def _import_serving_protos():
    """Import TensorFlow Serving's messages without loading the TensorFlow runtime.

    The generated modules import TensorFlow's .proto messages
    (tensorflow/core/framework/*_pb2.py); importing those the usual way runs
    tensorflow/__init__.py, which loads the whole runtime: 4 s before the
    first request. A client needs the messages only, so the package is made
    importable without running its __init__, then forgotten so that a later
    `import tensorflow` in the same process gets the real thing.
    """
    stub = None
    if "tensorflow" not in sys.modules:
        spec = importlib.util.find_spec("tensorflow")
        stub = types.ModuleType("tensorflow")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = stub
    try:
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )
    finally:
        if stub is not None and sys.modules.get("tensorflow") is stub:
            del sys.modules["tensorflow"]
    return types.SimpleNamespace(
        tensor_pb2=tensor_pb2, tensor_shape_pb2=tensor_shape_pb2, types_pb2=types_pb2,
        get_model_metadata_pb2=get_model_metadata_pb2, get_model_status_pb2=get_model_status_pb2,
        model_pb2=model_pb2, model_service_pb2_grpc=model_service_pb2_grpc, predict_pb2=predict_pb2,
        prediction_service_pb2_grpc=prediction_service_pb2_grpc)


apis = _import_serving_protos()


DT = apis.types_pb2
# TensorProto dtype <-> numpy dtype, and the repeated field that holds values when tensor_content is empty.
DTYPES = {
    DT.DT_FLOAT: (np.float32, "float_val"), DT.DT_DOUBLE: (np.float64, "double_val"),
    DT.DT_INT32: (np.int32, "int_val"), DT.DT_INT64: (np.int64, "int64_val"),
    DT.DT_UINT8: (np.uint8, "int_val"), DT.DT_INT8: (np.int8, "int_val"),
    DT.DT_INT16: (np.int16, "int_val"), DT.DT_UINT16: (np.uint16, "int_val"),
    DT.DT_BOOL: (np.bool_, "bool_val"),
}
NUMPY_TO_DT = {np.dtype(np_type): dt for dt, (np_type, _) in DTYPES.items()}
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def dtype_name(dt):
    return DT.DataType.Name(dt)


def to_tensor_proto(array):
    """numpy -> TensorProto, as raw little-endian bytes (tensor_content): no per-value copies."""
    array = np.ascontiguousarray(array)
    if array.dtype not in NUMPY_TO_DT:
        raise ValueError(f"cannot send a {array.dtype} array")
    return apis.tensor_pb2.TensorProto(
        dtype=NUMPY_TO_DT[array.dtype], tensor_content=array.tobytes(),
        tensor_shape=apis.tensor_shape_pb2.TensorShapeProto(
            dim=[apis.tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]))


def to_ndarray(proto):
    """TensorProto -> numpy, from tensor_content or from the typed repeated field (TensorFlow Serving's default)."""
    if proto.dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype_name(proto.dtype)}")
    np_type, field = DTYPES[proto.dtype]
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:  # TensorFlow runs on little-endian machines only: the bytes are native
        if len(proto.tensor_content) != size * np.dtype(np_type).itemsize:
            raise ValueError(f"{len(proto.tensor_content)} bytes of content for shape {list(shape)}")
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape)
    values = np.asarray(getattr(proto, field), dtype=np_type)
    if values.size == size:
        return values.reshape(shape)
    if values.size <= 1:  # TensorFlow's shorthand: one value (or none: zero) fills the whole tensor
        return np.full(shape, values[0] if values.size else 0, dtype=np_type)
    raise ValueError(f"{values.size} values for shape {list(shape)}")
