"""What each replica trains on and the weights it holds, written down: TFK8S_TRACE_DIR=<dir> (tests, debugging).

Set in the trainer's environment (tfjob_local.py passes its environment on
to every replica), it makes each replica write two files into <dir>:

- <replica>.examples: a line per global step, `STEP [i j ...]`, the indices
  (in the training split) of the examples this replica trained on that step;
- <replica>.weights: a line per evaluation, `STEP SHA256`, a digest of all
  the model's weights (batch-norm statistics included) as the replica reads them.

They show what a distributed run must do, and a wrong one does not: each
step, the replicas train on disjoint shares of the global batch (together,
the very batch one process trains on with the same seed), and after every
all-reduce they hold identical weights. Unset (the default), nothing is
written and the training graph has no trace in it.
"""
import hashlib
import os
from pathlib import Path

ENV = "TFK8S_TRACE_DIR"


class Trace:
    def __init__(self, replica, directory=None):
        directory = directory or os.environ.get(ENV)
        self.enabled = bool(directory)
        if self.enabled:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.examples = Path(directory).resolve() / f"{replica}.examples"
            self.weights = Path(directory) / f"{replica}.weights"

    def record_examples(self, step, index):
        """Inside the replica's step function: append the step and the indices of its examples."""
        import tensorflow as tf
        tf.print(step, tf.sort(index), summarize=-1, output_stream=f"file://{self.examples}")

    def record_weights(self, step, weights):
        """Append the step and a digest of `weights` (a list of numpy arrays)."""
        digest = hashlib.sha256()
        for array in weights:
            digest.update(array.tobytes())
        with open(self.weights, "a") as f:
            f.write(f"{step} {digest.hexdigest()}\n")


def read_examples(path):
    """{step: [example indices]} from a .examples file."""
    steps = {}
    for line in Path(path).read_text().splitlines():
        step, _, indices = line.partition(" ")
        steps[int(step)] = [int(i) for i in indices.strip("[]").split()]
    return steps


def read_weights(path):
    """{step: digest} from a .weights file."""
    return {int(step): digest for step, digest in (line.split() for line in Path(path).read_text().splitlines())}
