"""Loaded at start-up by every Python process the tests start: conftest.py puts this folder first on PYTHONPATH.

While a test that is not marked slow runs, TFK8S_TEST_GUARD names a file. A process that then loads
TensorFlow's runtime (the package `tensorflow.python`, which the trainer, the model server and TensorBoard
load, and a flag check or a client never does) writes its command line into that file, and conftest.py fails
the test: what loads TensorFlow in a child trains or serves, or at least pays seconds of import, so it is slow.

Where TFK8S_TEST_CPU_LOG names a file (docs/development.md: where a run's CPU goes), every such process that
ends by returning or exiting (not one killed by a signal) appends a line to it: its CPU seconds, whether it
loaded TensorFlow, the test that was running, its command. tests/cpu_report.py sums them.
"""
import os
import sys

_RECORD = os.environ.get("TFK8S_TEST_GUARD")
_CPU_LOG = os.environ.get("TFK8S_TEST_CPU_LOG")


def _command():
    """This process's command line, its arguments joined by spaces."""
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


class _TensorFlowRuntimeWatch:
    """A meta path finder that finds nothing: it only notes the first import of tensorflow.python."""

    noted = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow.python" and not cls.noted:
            cls.noted = True
            with open(_RECORD, "a") as f:
                f.write(f"{_command()}\n")
        return None


if _RECORD:
    sys.meta_path.insert(0, _TensorFlowRuntimeWatch)


def _note_cpu():
    try:
        import json
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = json.dumps({"cpu": round(usage.ru_utime + usage.ru_stime, 3), "tensorflow": "tensorflow" in sys.modules,
                           "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0],
                           "command": _command()[:500]})
        with open(_CPU_LOG, "a") as f:  # one short write in append mode: lines of processes at once stay whole
            f.write(line + "\n")
    except OSError:
        pass  # what the test under way limits (a file size cap, a full disk) must not show in its output


if _CPU_LOG:
    import atexit

    atexit.register(_note_cpu)
