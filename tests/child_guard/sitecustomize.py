"""Loaded at start-up by every Python process the tests start: conftest.py puts this folder first on PYTHONPATH.

While a test that is not marked slow runs, TFK8S_TEST_GUARD names a file. A process that then loads
TensorFlow's runtime (the package `tensorflow.python`, which the trainer, the model server and TensorBoard
load, and a flag check or a client never does) writes its command line into that file, and conftest.py fails
the test: what loads TensorFlow in a child trains or serves, or at least pays seconds of import, so it is slow.
"""
import os
import sys

_RECORD = os.environ.get("TFK8S_TEST_GUARD")


class _TensorFlowRuntimeWatch:
    """A meta path finder that finds nothing: it only notes the first import of tensorflow.python."""

    noted = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow.python" and not cls.noted:
            cls.noted = True
            with open("/proc/self/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(_RECORD, "a") as f:
                f.write(f"{command}\n")
        return None


if _RECORD:
    sys.meta_path.insert(0, _TensorFlowRuntimeWatch)
