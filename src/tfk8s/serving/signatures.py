"""A loaded SavedModel version: its SignatureDefs and their functions, run as TensorFlow Serving runs them."""
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfk8s.serving.batching import Batcher
from tfk8s.serving.protocol import DEFAULT_SIGNATURE, Code, ServingError
from tfk8s.serving.tensors import DTYPES, apis, dtype_name


class Signature:
    """One signature of a loaded version: its SignatureDef and its concrete function, called as is."""

    def __init__(self, name, definition, function, max_batch_size, batching):
        self.name, self.definition, self.function = name, definition, function
        self.max_batch_size = max_batch_size
        self.inputs = dict(definition.inputs.items())
        self.outputs = sorted(definition.outputs)
        batched = all(info.tensor_shape.dim and info.tensor_shape.dim[0].size == -1 for info in self.inputs.values())
        self.batcher = Batcher(self._call, max_batch_size) if batching and batched else None

    def _call(self, inputs):
        outputs = self.function(**{alias: tf.constant(value) for alias, value in inputs.items()})
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}

    def check(self, inputs):
        """TensorFlow Serving's checks on a request's inputs; returns the batch size."""
        if set(inputs) != set(self.inputs):
            extra, missing = sorted(set(inputs) - set(self.inputs)), sorted(set(self.inputs) - set(inputs))
            if extra:
                raise ServingError(Code.INVALID_ARGUMENT, f"input tensor alias not found in signature: {extra[0]}. "
                                   f"Inputs expected to be in the set {{{','.join(sorted(self.inputs))}}}.")
            raise ServingError(Code.INVALID_ARGUMENT, f"input size does not match signature: missing {missing}")
        sizes = set()
        for alias, value in inputs.items():
            info = self.inputs[alias]
            expected = DTYPES[info.dtype][0] if info.dtype in DTYPES else None
            if value.dtype != expected:
                raise ServingError(Code.INVALID_ARGUMENT, f"Expects input {alias!r} to be {dtype_name(info.dtype)} "
                                   f"but {np.dtype(value.dtype).name} is provided")
            dims = [d.size for d in info.tensor_shape.dim]
            if not info.tensor_shape.unknown_rank and (
                    len(dims) != value.ndim or any(d not in (-1, s) for d, s in zip(dims, value.shape))):
                raise ServingError(Code.INVALID_ARGUMENT, f"input {alias!r} has shape {list(value.shape)} but the "
                                   f"signature expects {dims} (-1: any size)")
            sizes.add(value.shape[0] if value.ndim else 1)
        if len(sizes) > 1:
            raise ServingError(Code.INVALID_ARGUMENT, f"inputs disagree on the batch size: {sorted(sizes)}")
        rows = sizes.pop() if sizes else 1
        if rows > self.max_batch_size:
            raise ServingError(Code.INVALID_ARGUMENT, f"Task size {rows} is larger than maximum input batch size "
                               f"{self.max_batch_size} (--max_batch_size)")
        return rows

    def run(self, inputs, output_filter=()):
        """inputs: {alias: ndarray} -> {alias: ndarray}, only the outputs asked for (all if none)."""
        for alias in output_filter:
            if alias not in self.outputs:
                raise ServingError(Code.INVALID_ARGUMENT, f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{','.join(self.outputs)}}}.")
        rows = self.check(inputs)
        try:
            outputs = self.batcher(inputs, rows) if self.batcher else self._call(inputs)
        except tf.errors.InvalidArgumentError as err:
            raise ServingError(Code.INVALID_ARGUMENT, err.message) from None
        except tf.errors.OpError as err:
            raise ServingError(Code.INTERNAL, err.message) from None
        return {alias: outputs[alias] for alias in (output_filter or self.outputs)}


class LoadedVersion:
    """One version directory, loaded: its SignatureDefs (for metadata) and their functions (for Predict)."""

    def __init__(self, version, path, max_batch_size, batching):
        self.version, self.path = version, Path(path)
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = apis.get_model_metadata_pb2.SignatureDefMap()
        for name, definition in saved_model.meta_graphs[0].signature_def.items():
            self.signature_defs.signature_def[name].CopyFrom(definition)
        loaded = tf.saved_model.load(str(self.path))
        self._keep_alive = loaded  # the functions' variables live as long as this object
        self.signatures = {name: Signature(name, self.signature_defs.signature_def[name], function,
                                           max_batch_size, batching)
                           for name, function in loaded.signatures.items()}
        for signature in self.signatures.values():  # warm up: the first call optimises the graph
            zeros = {alias: np.zeros([1 if d.size == -1 else d.size for d in info.tensor_shape.dim],
                                     DTYPES[info.dtype][0]) for alias, info in signature.inputs.items()}
            signature.run(zeros)

    def signature(self, name):
        """The signature a Predict names (none: serving_default); TensorFlow Serving's code when it is missing."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return self.signatures[name]


