"""Export a trained model as a SavedModel that TensorFlow Serving loads.

TensorFlow Serving watches `export_dir` and serves the highest version
sub-directory (tfk8s/versions.py: an int64 name). A version is written to a
hidden temporary directory (.tmp-export-*) and renamed into place, so a
server polling the directory never sees half a model, and no earlier
version is ever overwritten. A temporary directory that a killed exporter
left behind, untouched since before this process started, is removed at the
next export.
"""
import os
import shutil
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from tfk8s.cli import UserError
from tfk8s.trainer.storage import STARTED
from tfk8s.versions import INT64_MAX, versions

STAGING_PREFIX = ".tmp-export-"

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


def newest_change(path):
    """The latest modification time of `path` or anything under it."""
    times = [path.lstat().st_mtime]
    for root, dirs, files in os.walk(path):
        times += [os.lstat(os.path.join(root, name)).st_mtime for name in dirs + files]
    return max(times)


def remove_abandoned(export_dir, say=print, started=STARTED):
    """Remove the temporary export directories that no exporter has touched since before `started`.

    An exporter that was killed leaves its .tmp-export-* behind; one still at
    work (another trainer exporting to the same directory) keeps changing its
    files, so it is left alone.
    """
    for staging in Path(export_dir).glob(STAGING_PREFIX + "*"):
        try:
            if staging.is_dir() and newest_change(staging) < started:
                shutil.rmtree(staging)
                say(f"removed {staging}, an export left unfinished by a process that ended")
        except FileNotFoundError:
            pass  # its exporter finished (or removed it) meanwhile


def export_saved_model(model, export_dir, say=print):
    """Write `model` to export_dir/<version>/ and return that path.

    The version is the Unix time, or one more than the newest existing
    version if that is larger, as TensorFlow Estimators did.
    """
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(export_dir, say)
    module = ServingModule(model)
    function = module.predict.get_concrete_function()
    staging = tempfile.mkdtemp(dir=export_dir, prefix=STAGING_PREFIX)
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the version from a server running as another user
        tf.saved_model.save(module, staging, signatures=dict.fromkeys(SIGNATURES, function))
        version = max([int(time.time())] + [v + 1 for v in versions(export_dir)])
        while True:
            if version > INT64_MAX:
                raise UserError(f"--export_dir {export_dir} holds version {INT64_MAX}, the highest that TensorFlow "
                                "Serving reads: no newer version can be exported there; move it away")
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
