"""Small SavedModels for the serving tests, built in a second: TensorFlow Serving's half_plus_two and friends.

`half_plus_two(export_dir, version)` writes export_dir/<version>/ with the
signatures TensorFlow Serving's own tests use (y = 0.5 * x + 2), plus the
shapes of signature its JSON rules are about:

    serving_default   x: float, any shape            -> y: float
    classify_x_to_y   inputs: serialised tf.Examples -> scores [n, 1]   (method classify)
    regress_x_to_y    inputs: serialised tf.Examples -> outputs [n, 1]  (method regress)
    two_inputs        a, b: float [n]                -> y = a + b
    strings           s: string [n]                  -> s_bytes (s itself), length: int64 [n]
    halves            h: half [n]                    -> y: float [n]
    sum_all           x: float [n]                   -> y: float scalar
    images            image: float [n, 28, 28, 1]    -> scores: float [n, 10]

`offset` changes the 2 (a second version that answers differently).
"""
from pathlib import Path

import tensorflow as tf

from tfk8s.serving.tensors import apis

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


class HalfPlusTwo(tf.Module):
    def __init__(self, offset):
        super().__init__()
        self.offset = tf.Variable(float(offset))

    def _parsed_x(self, inputs):
        features = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        return 0.5 * features["x"] + self.offset

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def serving_default(self, x):
        return {"y": 0.5 * x + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self._parsed_x(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self._parsed_x(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.float32, name="b")])
    def two_inputs(self, a, b):
        return {"y": a + b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    def strings(self, s):
        return {"s_bytes": tf.identity(s), "length": tf.cast(tf.strings.length(s), tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="h")])
    def halves(self, h):
        return {"y": tf.cast(h, tf.float32) * 0.5 + self.offset}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def sum_all(self, x):
        return {"y": tf.reduce_sum(x)}

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
    def images(self, image):
        return {"scores": tf.tile(tf.reduce_mean(image, axis=[1, 2]), [1, 10]) * 0.5 + self.offset}


def half_plus_two(export_dir, version, offset=2.0):
    """Write export_dir/<version>/ (through a temporary name, as the trainer does); return its path."""
    module = HalfPlusTwo(offset)
    signatures = {"serving_default": module.serving_default, "classify_x_to_y": module.classify,
                  "regress_x_to_y": module.regress, "two_inputs": module.two_inputs, "strings": module.strings,
                  "halves": module.halves, "sum_all": module.sum_all, "images": module.images}
    export_dir = Path(export_dir)
    staging = export_dir / f".tmp-{version}"
    tf.saved_model.save(module, str(staging), signatures={k: f.get_concrete_function() for k, f in signatures.items()})
    saved_model = apis.saved_model_pb2.SavedModel()
    path = staging / "saved_model.pb"
    saved_model.ParseFromString(path.read_bytes())
    defs = saved_model.meta_graphs[0].signature_def
    defs["classify_x_to_y"].method_name = CLASSIFY
    defs["regress_x_to_y"].method_name = REGRESS
    path.write_bytes(saved_model.SerializeToString())
    target = export_dir / str(version)
    staging.rename(target)
    return target
