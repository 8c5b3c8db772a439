"""TensorFlow's SavedModel loader: the one part of the model server that loads TensorFlow.

signatures.LoadedVersion imports it at its first load (its `loader` when
none is given). load(path) reads the SignatureDefs from saved_model.pb and
the functions from tf.saved_model.load; each function takes and returns
{alias: ndarray}, TensorFlow's errors turned into TensorFlow Serving's
statuses.
"""
import tensorflow as tf

from tfk8s.serving.protocol import Code, ServingError, invalid
from tfk8s.serving.signatures import one_line
from tfk8s.serving.tensors import apis


def _function(concrete, owner):
    """A signature's concrete function over ndarrays; `owner` (the loaded object, whose variables the function
    reads) lives as long as the function does."""

    def call(inputs):
        try:
            outputs = concrete(**{alias: tf.constant(value) for alias, value in inputs.items()})
            return {alias: tensor.numpy() for alias, tensor in outputs.items()}
        except tf.errors.InvalidArgumentError as err:
            raise invalid(one_line(err.message.split("\n\t")[0], 2000)) from None
        except tf.errors.ResourceExhaustedError as err:
            raise ServingError(Code.RESOURCE_EXHAUSTED, one_line(err.message, 2000)) from None
        except tf.errors.OpError as err:
            raise ServingError(Code.INTERNAL, one_line(err.message, 2000)) from None

    call.owner = owner
    return call


class SavedModelLoader:
    def load(self, path):
        """(SignatureDefMap, {signature name: function}) of the SavedModel in `path`."""
        saved_model = apis.saved_model_pb2.SavedModel()
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
        loaded = tf.saved_model.load(str(path))
        signature_defs = apis.get_model_metadata_pb2.SignatureDefMap()
        for name, definition in saved_model.meta_graphs[0].signature_def.items():
            signature_defs.signature_def[name].CopyFrom(definition)
        return signature_defs, {name: _function(function, loaded) for name, function in loaded.signatures.items()}


LOADER = SavedModelLoader()
