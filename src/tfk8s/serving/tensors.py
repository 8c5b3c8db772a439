"""TensorFlow Serving's tensors and messages, for the server and the client alike.

Both ends of the API need the same few things: TensorFlow Serving's protobuf
messages, the mapping between a TensorProto's dtype and numpy's, and the
conversions between them. They live here, once: the server never imports the
client, nor the client the server.

A TensorProto carries its values either as raw bytes (`tensor_content`) or in
the repeated field of its dtype (`float_val`, `int64_val`, ...). TensorFlow
Serving answers in the typed fields unless started with
--enable_serialization_as_tensor_content, and reads both, with TensorFlow's
leniency (tensor.cc FromProtoField): fewer values than the shape needs are
padded with the last one, none means zeros, extra values are dropped.
"""
import importlib.util
import sys
import types
from pathlib import Path

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
        from tensorflow.core.example import example_pb2, feature_pb2
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            inference_pb2,
            input_pb2,
            model_management_pb2,
            model_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
            regression_pb2,
            status_pb2,
        )
        from tensorflow_serving.config import model_server_config_pb2
    finally:
        if stub is not None and sys.modules.get("tensorflow") is stub:
            del sys.modules["tensorflow"]
    return types.SimpleNamespace(
        example_pb2=example_pb2, feature_pb2=feature_pb2, tensor_pb2=tensor_pb2, tensor_shape_pb2=tensor_shape_pb2,
        types_pb2=types_pb2, meta_graph_pb2=meta_graph_pb2, saved_model_pb2=saved_model_pb2,
        classification_pb2=classification_pb2, get_model_metadata_pb2=get_model_metadata_pb2,
        get_model_status_pb2=get_model_status_pb2, inference_pb2=inference_pb2, input_pb2=input_pb2,
        model_management_pb2=model_management_pb2, model_pb2=model_pb2, model_service_pb2_grpc=model_service_pb2_grpc,
        predict_pb2=predict_pb2, prediction_service_pb2_grpc=prediction_service_pb2_grpc,
        regression_pb2=regression_pb2, status_pb2=status_pb2, model_server_config_pb2=model_server_config_pb2)


apis = _import_serving_protos()


DT = apis.types_pb2
# TensorProto dtype <-> numpy dtype, and the repeated field that holds values when tensor_content is empty
# (TensorFlow's ProtoHelper). Strings are numpy object arrays of bytes; half travels as its bit pattern.
DTYPES = {
    DT.DT_FLOAT: (np.float32, "float_val"), DT.DT_DOUBLE: (np.float64, "double_val"),
    DT.DT_INT32: (np.int32, "int_val"), DT.DT_INT64: (np.int64, "int64_val"),
    DT.DT_UINT8: (np.uint8, "int_val"), DT.DT_INT8: (np.int8, "int_val"),
    DT.DT_INT16: (np.int16, "int_val"), DT.DT_UINT16: (np.uint16, "int_val"),
    DT.DT_UINT32: (np.uint32, "uint32_val"), DT.DT_UINT64: (np.uint64, "uint64_val"),
    DT.DT_BOOL: (np.bool_, "bool_val"), DT.DT_HALF: (np.float16, "half_val"),
    DT.DT_STRING: (np.object_, "string_val"),
}
NUMERIC = {dt for dt in DTYPES if dt != DT.DT_STRING}
NUMPY_TO_DT = {np.dtype(np_type): dt for dt, (np_type, _) in DTYPES.items() if dt != DT.DT_STRING}
# TensorFlow Serving's server takes messages up to int32 max (server.cc SetMaxMessageSize); so does the client.
MAX_MESSAGE_BYTES = 2**31 - 1
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def memory_budget():
    """The bytes one request's input tensors may take: a quarter of the memory this process may still use
    (the cgroup's memory.max less memory.current when there is a limit, else /proc/meminfo's MemAvailable),
    read once at start-up. A quarter: an input is held as numpy, then as a TensorFlow tensor, and its
    outputs come on top. None when neither can be read (no budget but the message limit)."""
    available = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            available = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        pass
    if available is None:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return max(available // 4, 1) if available is not None else None


class TensorError(ValueError):
    """A TensorProto that does not describe a tensor (TensorFlow Serving: `tensor parsing error`)."""


def dtype_name(dt):
    """DT_FLOAT -> float, as TensorFlow's DataTypeString prints it."""
    return DT.DataType.Name(dt)[3:].lower() if dt in DT.DataType.values() else f"unknown dtype {dt}"


def shape_of(proto):
    """The dims of a TensorProto, refused when negative (TensorShape::IsValid); no value is read."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims) or len(dims) > 254:
        raise TensorError(f"invalid shape {dims}")
    return dims


def num_elements(dims):
    size = 1
    for d in dims:
        size *= d
    return size


def nbytes(dtype, dims):
    """The bytes a tensor of this dtype and shape takes (8 per string: its reference, at least)."""
    return num_elements(dims) * (8 if dtype == DT.DT_STRING else np.dtype(DTYPES[dtype][0]).itemsize)


def check_proto(proto, max_bytes=MAX_MESSAGE_BYTES):
    """Everything Tensor::FromProto checks, without allocating: (numpy dtype, dims). max_bytes (None: no
    limit) bounds the tensor the values expand to: a few float_val may stand for a huge shape."""
    if proto.dtype not in DTYPES:
        raise TensorError(f"unsupported dtype {dtype_name(proto.dtype)}")
    np_type, _ = DTYPES[proto.dtype]
    dims = shape_of(proto)
    size = num_elements(dims)
    if max_bytes is not None and nbytes(proto.dtype, dims) > max_bytes:
        raise TensorError(f"shape {dims} needs {nbytes(proto.dtype, dims)} bytes, more than the limit of {max_bytes}")
    if proto.tensor_content and proto.dtype != DT.DT_STRING and \
            len(proto.tensor_content) != size * np.dtype(np_type).itemsize:
        raise TensorError(f"{len(proto.tensor_content)} bytes of content for shape {dims}")
    return np_type, dims


def to_ndarray(proto, max_bytes=MAX_MESSAGE_BYTES):
    """TensorProto -> numpy, from tensor_content or the typed field, with TensorFlow's leniency."""
    np_type, dims = check_proto(proto, max_bytes)
    size = num_elements(dims)
    if proto.tensor_content and proto.dtype != DT.DT_STRING:  # TensorFlow runs on little-endian machines only
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(dims)
    field = DTYPES[proto.dtype][1]
    values = getattr(proto, field)
    if proto.dtype == DT.DT_STRING:
        values = np.array(list(values[:size]) or [b""], dtype=object)
    elif proto.dtype == DT.DT_HALF:
        values = np.asarray(values[:size], dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(values[:size], dtype=np_type)
    if values.size == size:
        return values.reshape(dims)
    out = np.empty(dims, dtype=np_type)
    flat = out.reshape(-1)
    flat[:values.size] = values
    flat[values.size:] = values[-1] if values.size else (b"" if proto.dtype == DT.DT_STRING else 0)
    return out


def _shape_proto(shape):
    return apis.tensor_shape_pb2.TensorShapeProto(dim=[apis.tensor_shape_pb2.TensorShapeProto.Dim(size=s)
                                                       for s in shape])


def to_tensor_proto(array, content=True):
    """numpy -> TensorProto: raw bytes in tensor_content (`content`), else the typed field, as
    TensorFlow Serving answers by default. Strings (numpy object or bytes arrays) always go in string_val."""
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
        return apis.tensor_pb2.TensorProto(dtype=DT.DT_STRING, tensor_shape=_shape_proto(array.shape),
                                           string_val=values)
    array = np.asarray(array, order="C")  # (np.ascontiguousarray would make a scalar 1-D)
    if array.dtype not in NUMPY_TO_DT:
        raise ValueError(f"cannot send a {array.dtype} array")
    dt = NUMPY_TO_DT[array.dtype]
    proto = apis.tensor_pb2.TensorProto(dtype=dt, tensor_shape=_shape_proto(array.shape))
    if content:
        proto.tensor_content = array.tobytes()
    elif dt == DT.DT_HALF:
        proto.half_val.extend(array.view(np.uint16).reshape(-1).tolist())
    else:
        getattr(proto, DTYPES[dt][1]).extend(array.reshape(-1).tolist())
    return proto
