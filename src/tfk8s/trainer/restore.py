"""Which checkpoint a trainer resumes from: the newest intact one in --model_dir, never a damaged one.

tf.train.CheckpointManager keeps several checkpoints (`ckpt-<step>.index` and
`ckpt-<step>.data-*`) and names them in the state file `checkpoint`. Left to
itself, TensorFlow 2.21 treats a damaged newest checkpoint badly:
tf.train.latest_checkpoint returns None when the state file names a checkpoint
whose index is missing (or the state file does not parse), so the trainer
starts again from step 0 and its first saves write over the good checkpoints;
a truncated data file or a garbage index ends in a traceback.

Here every checkpoint on disk (whatever the state file says) is a candidate,
newest step first, and the first one whose index opens and whose every tensor
reads back (the bundle reader checks each tensor's length and CRC32C) is the
one resumed from. The chief moves what it could not read (and a state file
that does not parse) into `<model_dir>/damaged/<time>/`, so that no later save
writes over it, and rewrites the state file to name the intact checkpoints;
the older checkpoints are not touched. If checkpoints are there and none is
intact, the run stops in one line: starting again from step 0 would overwrite
them.
"""
import os
import re
import shutil
import time
from pathlib import Path

import tensorflow as tf

from tfk8s.cli import UserError

PREFIX = "ckpt"          # tf.train.CheckpointManager's default checkpoint_name
STATE = "checkpoint"     # the state file CheckpointManager reads and writes
DAMAGED = "damaged"      # where the chief moves what it could not read
CHECKPOINT_FILE = re.compile(rf"^{PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$")


def one_line(err):
    return " ".join(str(err).split())[:200]


def on_disk(model_dir):
    """The steps of the checkpoints in model_dir, from their files and from the state file, newest first."""
    steps = set()
    for entry in os.listdir(model_dir):
        match = CHECKPOINT_FILE.match(entry)
        if match:
            steps.add(int(match.group(1)))
    names, _ = state(model_dir)
    for name in names:
        match = re.fullmatch(rf"{PREFIX}-(\d+)", os.path.basename(name))
        if match:
            steps.add(int(match.group(1)))
    return sorted(steps, reverse=True)


def state(model_dir):
    """The checkpoint names the state file lists, and why it cannot be read (None if it can, or is absent)."""
    path = os.path.join(model_dir, STATE)
    if not os.path.exists(path):
        return [], None
    from google.protobuf import text_format
    from tensorflow.python.checkpoint import checkpoint_management  # the CheckpointState message
    try:
        text = Path(path).read_text(encoding="utf-8")
        parsed = text_format.Parse(text, checkpoint_management.CheckpointState())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as err:
        return [], f"the state file {STATE} does not parse ({one_line(err)})"
    names = list(parsed.all_model_checkpoint_paths)
    if parsed.model_checkpoint_path:
        names.append(parsed.model_checkpoint_path)
    return names, None


def damage(prefix):
    """Why the checkpoint `prefix` cannot be resumed from, or None if every tensor in it reads back."""
    if not os.path.exists(prefix + ".index"):
        return "its index is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError, IndexError) as err:
        return f"its index is unreadable ({one_line(err)})"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as err:
        # A truncated data file: "Read less bytes than requested"; a flipped byte: a checksum mismatch.
        return f"its data does not read back ({one_line(err) or type(err).__name__})"
    return None


def newest_intact(model_dir, repair, say):
    """The path of the newest intact checkpoint in model_dir, or None if it holds none at all.

    Damaged newer ones are named (`say`); with `repair` (the chief) they are moved aside and the
    state file rewritten. Checkpoints present but none intact: UserError.
    """
    if not os.path.isdir(model_dir):
        return None
    _, state_problem = state(model_dir)
    damaged, found = [], None
    for step in on_disk(model_dir):
        prefix = os.path.join(model_dir, f"{PREFIX}-{step}")
        problem = damage(prefix)
        if problem is None:
            found = prefix
            break
        damaged.append((step, problem))
    if not damaged and not state_problem:
        return found
    named = "; ".join([f"{PREFIX}-{step}: {problem}" for step, problem in damaged]
                      + ([state_problem] if state_problem else []))
    if found is None and damaged:
        raise UserError(f"--model_dir {model_dir} holds no intact checkpoint ({named}): nothing was changed; "
                        "move the damaged files away (or give another --model_dir) to start again from step 0")
    if repair:
        quarantine(model_dir, [step for step, _ in damaged], bool(state_problem))
    kept = f"resuming from {os.path.basename(found)}" if found else "starting from step 0"
    moved = f" (moved into {os.path.join(model_dir, DAMAGED)})" if repair else ""
    say(f"damaged checkpoint in --model_dir {model_dir}: {named}{moved}; {kept}")
    return found


def quarantine(model_dir, steps, state_file):
    """Move the damaged checkpoints' files (and an unreadable state file) aside; name the intact ones in the state."""
    target = Path(model_dir, DAMAGED, time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}")
    target.mkdir(parents=True, exist_ok=True)
    for entry in os.listdir(model_dir):
        match = CHECKPOINT_FILE.match(entry)
        if match and int(match.group(1)) in steps:
            shutil.move(os.path.join(model_dir, entry), target / entry)
    if state_file:
        shutil.move(os.path.join(model_dir, STATE), target / STATE)
    else:
        Path(model_dir, STATE).unlink(missing_ok=True)
    write_state(model_dir, [f"{PREFIX}-{step}" for step in sorted(on_disk(model_dir))])


def write_state(model_dir, names):
    """The state file CheckpointManager reads, naming `names` (oldest first), written atomically.

    With each checkpoint's time (its index's mtime) and a last_preserved_timestamp before them, as
    CheckpointManager writes it (tensorflow/python/checkpoint/checkpoint_management.py, v2.21.0): the
    manager then keeps rotating them out by --keep_checkpoints, as before the repair.
    """
    if not names:
        return
    times = [os.path.getmtime(os.path.join(model_dir, name + ".index")) for name in names]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines.append(f"last_preserved_timestamp: {min(times) - 1!r}")
    temporary = os.path.join(model_dir, f".{STATE}.tmp-{os.getpid()}")
    Path(temporary).write_text("\n".join(lines) + "\n")
    os.replace(temporary, os.path.join(model_dir, STATE))


def trained_hidden_layers(prefix):
    """How many convolution blocks the model saved in `prefix` has (its 4-D kernels), or None if unknown."""
    try:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return None
    return sum(1 for name, shape in shapes.items()
               if name.startswith("model/") and name.endswith("/kernel/.ATTRIBUTES/VARIABLE_VALUE") and len(shape) == 4)


def load(checkpoint, prefix, hidden_layers):
    """Restore `checkpoint` from `prefix` and return the restore's status; a model of another shape is one line
    naming the mismatch.

    The number of convolution blocks is read from the checkpoint first: restoring into another model would
    fail on the first variable of another shape, and leave TensorFlow's warnings about the rest at exit.
    """
    model_dir, name = os.path.dirname(prefix), os.path.basename(prefix)
    trained = trained_hidden_layers(prefix)
    if trained is not None and trained != hidden_layers:
        raise UserError(f"--model_dir {model_dir} holds a model of another shape ({name} has {trained} convolution "
                        f"blocks): it was trained with --hidden_layers {trained}, this run has {hidden_layers}; give "
                        "the same flags to resume it, or another --model_dir to train this model")
    try:
        status = checkpoint.restore(prefix)
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError) as err:
        raise UserError(f"--model_dir {model_dir} holds a model of another shape ({name}: {one_line(err)}): "
                        "it was trained with other model flags; give the same flags to resume it, or another "
                        "--model_dir to train this model") from None
    return status
