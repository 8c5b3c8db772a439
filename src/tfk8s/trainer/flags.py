"""The trainer's command line: every flag, its default, and the values it refuses.

Kept apart from main.py (and from TensorFlow) so that `--help`, the sweep's
checks of its values file (through `parse`, which raises instead of exiting),
and a bad flag answer at once.
"""
import argparse
import math

from tfk8s.cli import ArgumentParser, UsageError
from tfk8s.mnist import DATA_DIR, DATASETS

MAX_HIDDEN_LAYERS = 4  # each block halves 28x28; a fifth would leave less than one pixel


class Refusing(ArgumentParser):
    """The trainer's parser for a tool that checks trainer flags (the sweep): a bad flag raises, prints nothing."""

    def error(self, message):
        raise UsageError(message)


def parse(argv):
    """The trainer's settings for `argv` (a list of strings), or UsageError saying what is wrong; never exits."""
    return parse_args(argv, Refusing)


def parse_args(argv=None, parser_class=ArgumentParser):
    p = parser_class(
        description="Train, evaluate and export the MNIST CNN (locally, in a Job, or on every TFJob replica).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=2200, help="global training steps (one step = one batch)")
    p.add_argument("--batch_size", type=int, default=100, help="global batch size, split across replicas")
    p.add_argument("--learning_rate", type=float, default=0.05,
                   help="peak learning rate of SGD with momentum "
                        "(warmed up over a tenth of the steps, then decayed to 0)")
    p.add_argument("--hidden_layers", type=int, default=2,
                   help=f"convolution blocks, 1 to {MAX_HIDDEN_LAYERS} (each halves the 28x28 image)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mini",
                   help="mini: 5k training images shipped in data/; full: 60k, downloaded once into --data_dir")
    p.add_argument("--data_dir", default=str(DATA_DIR), help="where the MNIST files are (or go)")
    p.add_argument("--mirror", action="append", dest="mirrors", metavar="URL",
                   help="a base URL serving the MNIST files (repeatable; replaces the default mirrors)")
    p.add_argument("--validation_fraction", type=float, default=0.1,
                   help="share of the training images held out for periodic evaluation")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="randomly rotate, zoom and shift training images")
    p.add_argument("--model_dir", default="/tmp/mnist/model",
                   help="checkpoints and TensorBoard summaries, shared by every replica")
    p.add_argument("--export_dir", default="/tmp/mnist/export",
                   help="SavedModel versions for TensorFlow Serving (<export_dir>/<version>/)")
    p.add_argument("--metrics_dir", default="",
                   help="also write the validation and test summaries here, for a metrics collector such as "
                        "Katib's: event files under eval/ and test/, and one JSON line each in metrics.json")
    p.add_argument("--eval_every", type=int, default=500, help="evaluate (and log a progress line) every N steps")
    p.add_argument("--checkpoint_every", type=int, default=500, help="write a checkpoint every N steps")
    p.add_argument("--keep_checkpoints", type=int, default=3, help="how many recent checkpoints to keep")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the shuffle order")
    args = p.parse_args(argv)

    checks = [
        (1 <= args.hidden_layers <= MAX_HIDDEN_LAYERS,
         f"--hidden_layers must be 1 to {MAX_HIDDEN_LAYERS} on 28x28 images, not {args.hidden_layers}"),
        (args.steps > 0, f"--steps must be positive, not {args.steps}"),
        (args.batch_size > 0, f"--batch_size must be positive, not {args.batch_size}"),
        (args.learning_rate > 0 and math.isfinite(args.learning_rate),
         f"--learning_rate must be a positive number, not {args.learning_rate}"),
        (0 < args.validation_fraction < 1,
         f"--validation_fraction must be between 0 and 1, not {args.validation_fraction}"),
        (args.eval_every > 0, f"--eval_every must be positive, not {args.eval_every}"),
        (args.checkpoint_every > 0, f"--checkpoint_every must be positive, not {args.checkpoint_every}"),
        (args.keep_checkpoints > 0, f"--keep_checkpoints must be positive, not {args.keep_checkpoints}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return args
