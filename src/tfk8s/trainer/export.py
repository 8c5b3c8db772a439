"""Export a trained model as a SavedModel that TensorFlow Serving loads.

TensorFlow Serving watches `export_dir` and serves the highest integer
sub-directory. A version is written to a hidden temporary directory and
renamed into place, so a server polling the directory never sees half a
model, and no earlier version is ever overwritten.
"""
import os
import shutil
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from tfk8s.versions import versions

SIGNATURES = ("predict", "serving_default")
INPUT_SPEC = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")


class ServingModule(tf.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[INPUT_SPEC])
    def predict(self, image):
        """image: raw pixels 0..255, white on black -> classes int64 [n], probabilities float32 [n, 10]."""
        probabilities = tf.nn.softmax(self.model(image, training=False), axis=-1)
        return {"classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64),
                "probabilities": probabilities}


def export_saved_model(model, export_dir):
    """Write `model` to export_dir/<version>/ and return that path.

    The version is the Unix time, or one more than the newest existing
    version if that is larger, as TensorFlow Estimators did.
    """
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    module = ServingModule(model)
    function = module.predict.get_concrete_function()
    staging = tempfile.mkdtemp(dir=export_dir, prefix=".tmp-export-")
    try:
        tf.saved_model.save(module, staging, signatures=dict.fromkeys(SIGNATURES, function))
        version = max([int(time.time())] + [v + 1 for v in versions(export_dir)])
        while True:
            target = export_dir / str(version)
            try:
                os.rename(staging, target)  # atomic; fails if another exporter took this version
                return target
            except OSError:
                if not target.exists():
                    raise
                version += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
