"""Train the workshop's MNIST model, evaluate it as it learns, and export it for serving.

The same code runs on a laptop, in a Kubernetes Job and on every replica of a
TFJob: the cluster, if any, comes from TF_CONFIG (cluster.py). Read it top to
bottom, in the order a run takes:

1. the data (mnist.py: checksummed files, a seeded validation split);
2. the model and its optimizer, built under the tf.distribute strategy;
3. the checkpoint to resume from, if --model_dir holds one;
4. the step runner: one training step on every replica, gradients combined;
5. the loop: steps, then a progress line, summaries and a checkpoint at each boundary;
6. the final test and the export (export.py), by the chief alone.

Before it, main.py has checked the directories the chief writes and taken
its lock on --model_dir (storage.py, lock.py): one writer per model_dir. A
write that fails later (a full disk) ends the run in one line, the
checkpoints saved before it intact.

What it keeps of the Estimator's contract: checkpoints in --model_dir, shared
by every replica; a restarted process resumes from the last one (global step
and optimizer state); evaluation every --eval_every steps with TensorBoard
summaries under --model_dir; one export per run under --export_dir.
"""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorboard.plugins.hparams import api as hp

from tfk8s import mnist
from tfk8s.cli import RetryableError, UserError
from tfk8s.trainer import cluster, restore, storage
from tfk8s.trainer.export import export_saved_model
from tfk8s.trainer.model import augment, build_model, make_optimizer
from tfk8s.trainer.trace import Trace

# Errors that mean "a peer replica went away": exit so that the operator restarts us.
PEER_LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
             tf.errors.CancelledError, tf.errors.AbortedError)
# Errors that a failed write raises (a full disk: OSError from Python, ResourceExhaustedError from TensorFlow).
WRITE_FAILED = (OSError, tf.errors.OpError)
EVAL_BATCH = 1000
# A progress line every this many steps between evaluations: about 10 s at 1,000 images/s (batch 100), so that
# a slow laptop is never a minute without news. Every replica stops at the same steps (next_boundary).
PROGRESS_EVERY = 100


# ---------------------------------------------------------------- 1. data

def training_dataset(images, labels, batch_size, augmented, seed, with_index=False):
    """An endless, shuffled, batched (and optionally augmented) stream of raw-pixel images and their labels
    (and, with_index, each image's index in `images`, for trace.py)."""
    columns = (images[..., None].astype(np.float32), labels) + ((np.arange(len(labels)),) if with_index else ())
    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    if augmented:
        ds = ds.map(lambda x, *rest: (augment(x), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Every worker shuffles with the same seed and keeps every N-th batch: no two see the same images.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def evaluate(model, images, labels, batch_size=EVAL_BATCH):
    """Loss and accuracy of `model` (a plain, single-device copy) on a whole split."""
    ds = tf.data.Dataset.from_tensor_slices((images[..., None].astype(np.float32), labels)).batch(batch_size)
    loss_sum, correct = 0.0, 0
    for x, y in ds:
        logits = model(x, training=False)
        loss_sum += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.int32)))
    return loss_sum / len(labels), correct / len(labels)


# ---------------------------------------------------------------- 2. model, optimizer, metrics

class Learner:
    """The model, its optimizer and the running training metrics, created under `strategy`'s scope."""

    def __init__(self, strategy, hidden_layers, learning_rate, steps, trace=None):
        self.trace = trace
        with strategy.scope():
            self.model = build_model(hidden_layers)
            self.optimizer, self.schedule = make_optimizer(learning_rate, steps)
            self.loss = keras.metrics.Mean("loss")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")

    @property
    def step(self):
        """The global step: saved with the optimizer, shared by every replica."""
        return int(self.optimizer.iterations.numpy())

    def replica_step(self, global_batch_size, images, labels, index=None):
        """One step on one replica's share of the global batch; apply_gradients all-reduces across replicas."""
        if index is not None:
            self.trace.record_examples(self.optimizer.iterations, index)
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss.update_state(per_example)
        self.accuracy.update_state(labels, logits)

    def take_metrics(self):
        """The training loss and accuracy since the last call."""
        values = float(self.loss.result()), float(self.accuracy.result())
        self.loss.reset_state()
        self.accuracy.reset_state()
        return values


# ---------------------------------------------------------------- 3. checkpoints

class Checkpoints:
    """Checkpoints of the model and optimizer: the chief writes to model_dir, resumes from it.

    Under MultiWorkerMirroredStrategy every worker must take part in saving, so
    the others write to a private scratch directory, deleted at the end. A
    save that fails (a full disk) leaves the checkpoints before it as they
    were, removes what it had begun, and ends the run in one line.
    """

    def __init__(self, learner, model_dir, role, keep, writer=None, say=print):
        self.model_dir = model_dir
        self.writer = writer
        self.checkpoint = tf.train.Checkpoint(model=learner.model, optimizer=learner.optimizer)
        private = not role.is_chief and role.mode == "multi_worker"
        self.scratch = tempfile.mkdtemp(prefix=f"ckpt-{role.name}-") if private else None
        # Before the manager reads the state file: the chief moves damaged checkpoints aside (restore.py).
        self.latest = restore.newest_intact(model_dir, repair=role.is_chief, say=say)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.scratch or model_dir, max_to_keep=keep)

    def restore(self, hidden_layers):
        """Resume from the newest intact checkpoint in model_dir; its path, or None for a fresh start."""
        self.status = restore.load(self.checkpoint, self.latest, hidden_layers) if self.latest else None
        return self.latest

    def save(self, step):
        if self.writer:
            self.writer.check()  # still the one writer of model_dir
        last_good = self.manager.latest_checkpoint
        try:
            self.manager.save(checkpoint_number=step)
        except PEER_LOST:
            raise
        except WRITE_FAILED as err:
            directory = Path(self.manager.directory)
            for partial in directory.glob(f"ckpt-{step}[._]*"):  # ckpt-N_temp/, a half-merged ckpt-N.index
                shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
            kept = (f"the last good checkpoint {os.path.basename(last_good)} is intact: run the same command "
                    "again to resume from it" if last_good else "no checkpoint was saved before")
            where = ("--model_dir", self.model_dir) if not self.scratch else ("the scratch directory", directory)
            raise storage.failure(f"save the checkpoint of step {step}", *where, err, kept) from None

    def close(self):
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


# ---------------------------------------------------------------- 4. the step runner

def step_runner(strategy, role, learner, make_dataset, batch_size):
    """A function run_steps(n) that trains n global steps, and a function that says how workers shared them.

    MultiWorkerMirroredStrategy (and one process): every replica takes its
    shard of each global batch, inside one tf.function loop. ParameterServerStrategy:
    the chief schedules steps on whichever worker is free, each worker reading
    its own seeded stream.
    """
    if role.mode != "parameter_server":
        # No per-device prefetch buffer (CPU replicas gain nothing from it): with one, TensorFlow 2.21
        # takes up to a minute to free the iterator at the end of a multi-worker run.
        no_device_buffer = tf.distribute.InputOptions(experimental_per_replica_buffer_size=0)
        iterator = iter(strategy.experimental_distribute_dataset(make_dataset(0), no_device_buffer))

        @tf.function
        def n_steps(it, n):
            for _ in tf.range(n):
                strategy.run(learner.replica_step, args=(batch_size, *next(it)))

        return (lambda n: n_steps(iterator, tf.constant(n, tf.int64))), (lambda: None)

    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    num_workers = len(role.cluster["worker"])

    def worker_dataset():
        # Each worker reads the whole training set: seeded alike, all would train on the same batches.
        return make_dataset(tf.cast(tf.distribute.coordinator.experimental_get_current_worker_index(), tf.int64))

    iterator = iter(coordinator.create_per_worker_dataset(worker_dataset))
    with strategy.scope():
        steps_by_worker = tf.Variable(tf.zeros([num_workers], tf.int64), trainable=False)  # not checkpointed

    @tf.function
    def one_step(it):
        strategy.run(learner.replica_step, args=(batch_size, *next(it)))
        worker = tf.distribute.coordinator.experimental_get_current_worker_index()
        steps_by_worker.assign_add(tf.one_hot(worker, num_workers, dtype=tf.int64))

    def run_steps(n):
        for _ in range(n):
            coordinator.schedule(one_step, args=(iterator,))
        coordinator.join()

    def shares():
        return "steps run by each worker: " + ", ".join(
            f"worker-{i} {n}" for i, n in enumerate(steps_by_worker.numpy()))

    return run_steps, shares


# ---------------------------------------------------------------- 5. the loop

class Summaries:
    """TensorBoard event files under model_dir/{train,eval,test}; the chief writes, others write nothing.

    With metrics_dir, the eval and test summaries go there too, for a metrics collector that reads a
    directory of its own (Katib's): event files under metrics_dir/{eval,test}, and one JSON line per
    write in metrics_dir/metrics.json ({"timestamp": ..., "eval/accuracy": "0.97", ...}).
    """

    def __init__(self, model_dir, enabled, hparams, metrics_dir=""):
        self.model_dir, self.metrics_dir = model_dir, metrics_dir
        self.writers, self.copies, self.metrics_file = {}, {}, None
        if enabled:
            self.writers = {run: tf.summary.create_file_writer(os.path.join(model_dir, run))
                            for run in ("train", "eval", "test")}
            with tf.summary.create_file_writer(model_dir).as_default():
                hp.hparams(hparams, trial_id=session_name(model_dir))
            if metrics_dir:
                self.copies = {run: tf.summary.create_file_writer(os.path.join(metrics_dir, run))
                               for run in ("eval", "test")}
                self.metrics_file = os.path.join(metrics_dir, "metrics.json")

    def write(self, run, step, **scalars):
        if run not in self.writers:
            return
        try:
            self._write(self.writers[run], step, scalars)
        except WRITE_FAILED as err:
            raise storage.failure("write TensorBoard summaries", "--model_dir", self.model_dir, err,
                                  "the checkpoints saved so far are intact: run the same command again "
                                  "to resume from the last one") from None
        if run in self.copies:
            try:
                self._write(self.copies[run], step, scalars)
                line = {f"{run}/{name}": repr(float(value)) for name, value in scalars.items()}
                with open(self.metrics_file, "a") as f:
                    f.write(json.dumps({"timestamp": datetime.now(UTC).isoformat(), **line}) + "\n")
            except WRITE_FAILED as err:
                raise storage.failure("write the metrics for the collector", "--metrics_dir", self.metrics_dir,
                                      err, "the checkpoints saved so far are intact: run the same command again "
                                      "to resume from the last one") from None

    @staticmethod
    def _write(writer, step, scalars):
        with writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        writer.flush()  # TensorBoard on a shared volume sees it now, not at exit


def session_name(model_dir):
    """The HParams session (TensorBoard's trial id) of a run: one per --model_dir, e.g. `local/model 3f2a9c`.

    TensorBoard's HParams tab averages the sessions that share a trial id into one row
    (tensorboard 2.21, plugins/hparams/list_session_groups.py: the group is `group_name or session.name`),
    so the basename would merge runs/demo/model, runs/local/model and every sweep's t01 into one row `model`
    (or `t01`) with figures no run reached. The last two parts of the path keep the row readable; a digest of
    the whole absolute path keeps it apart from any other run. Resuming the same model_dir stays the same session.
    """
    path = os.path.abspath(os.path.normpath(model_dir))
    tail = "/".join(part for part in Path(path).parts[-2:] if part != os.sep)
    return f"{tail} {hashlib.sha256(path.encode()).hexdigest()[:6]}"


def next_boundary(step, steps, eval_every, checkpoint_every, progress_every=PROGRESS_EVERY):
    """The next step at which the loop stops to report, evaluate or save."""
    return min(steps, *((step // every + 1) * every for every in (eval_every, checkpoint_every, progress_every)))


def duration(seconds):
    """`45s`, `3m05s`: what a progress line says is left."""
    seconds = round(seconds)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


@contextlib.contextmanager
def ctrl_c_at_step_boundaries():
    """Within the block, Ctrl-C (SIGINT) is taken at the next check(): between runs of steps, not inside one, nor
    inside a checkpoint's save. A KeyboardInterrupt raised while TensorFlow's runtime is at work can leave its
    heap corrupt: the process then aborts (`free(): invalid next size`, SIGABRT) instead of saying in one line
    that the same command resumes (tensorflow/tensorflow#6968). A second Ctrl-C is taken at once.
    Where SIGINT is ignored (a background job) or handled by someone else, nothing changes."""
    pending = []

    def check():
        if pending:
            pending.clear()  # taken
            raise KeyboardInterrupt

    def on_sigint(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    ours = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not ours:
        yield lambda: None
        return
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    check()  # a Ctrl-C after the last check, still to be taken


def loop(args, learner, run_steps, checkpoints, summaries, snapshot, validate, say):
    """Train from the current global step to args.steps; return the images/s of each window."""
    with ctrl_c_at_step_boundaries() as check:
        return train_loop(args, learner, run_steps, checkpoints, summaries, snapshot, validate, say, check)


def train_loop(args, learner, run_steps, checkpoints, summaries, snapshot, validate, say, check):
    speeds = []
    window_start, window_step = time.time(), learner.step
    run_start, run_step = window_start, window_step
    while learner.step < args.steps:
        check()
        run_steps(next_boundary(learner.step, args.steps, args.eval_every, args.checkpoint_every) - learner.step)
        check()
        current = learner.step
        images_per_second = (current - window_step) * args.batch_size / max(time.time() - window_start, 1e-9)
        speeds.append(images_per_second)
        lr = float(learner.schedule(current))
        loss, accuracy = learner.take_metrics()
        summaries.write("train", current, loss=loss, accuracy=accuracy, learning_rate=lr,
                        images_per_second=images_per_second)
        if current % args.checkpoint_every == 0 or current == args.steps:
            checkpoints.save(current)
        if current % args.eval_every == 0 or current == args.steps:
            snapshot()
            if validate:
                val_loss, val_accuracy = validate()
                summaries.write("eval", current, loss=val_loss, accuracy=val_accuracy)
                say(f"step {current:>6}/{args.steps}  train loss {loss:.4f} acc {accuracy:.2%}  "
                    f"validation loss {val_loss:.4f} acc {val_accuracy:.2%}  "
                    f"lr {lr:.5f}  {images_per_second:,.0f} images/s")
        elif current < args.steps:
            left = (args.steps - current) * (time.time() - run_start) / max(current - run_step, 1)
            say(f"step {current:>6}/{args.steps}  train loss {loss:.4f} acc {accuracy:.2%}  "
                f"{images_per_second:,.0f} images/s, about {duration(left)} to go")
        window_start, window_step = time.time(), current
    return speeds


# ---------------------------------------------------------------- putting it together

def variable_bytes(variables):
    """What the values of `variables` take on disk, about: one checkpoint holds the model's weights and a momentum
    for each trainable one; an export, the weights."""
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)


def train(args, role, strategy, writer=None):
    """Train to args.steps (resuming from --model_dir), then (the chief) test and export.

    `writer` is the chief's lock on model_dir (storage.prepare), checked before
    each write. Returns the chief's figures (test accuracy, steady images/s,
    training time, export path); None on the other replicas.
    """
    chief = role.is_chief

    def say(line):
        if chief:
            print(line, flush=True)

    data = mnist.load(args.dataset, args.data_dir, args.validation_fraction,
                      tuple(args.mirrors or mnist.MIRRORS), seed=args.seed)
    train_x, train_y = data["train"]
    say(f"{role.name}: {role.mode} training on {len(train_x)} images ({args.dataset}), "
        f"{len(data['validation'][1])} for validation, {len(data['test'][1])} for the final test; "
        f"num_replicas_in_sync={strategy.num_replicas_in_sync}")

    trace = Trace(role.name)  # off unless TFK8S_TRACE_DIR is set
    learner = Learner(strategy, args.hidden_layers, args.learning_rate, args.steps, trace)
    if chief:
        weights = variable_bytes(learner.model.variables)
        storage.check_space(args.model_dir, weights + variable_bytes(learner.model.trainable_variables),
                            args.export_dir, weights)
    checkpoints = Checkpoints(learner, args.model_dir, role, args.keep_checkpoints, writer, say)
    latest = checkpoints.restore(args.hidden_layers)
    if latest:
        say(f"resuming from {latest} at step {learner.step}")

    def make_dataset(seed_offset):
        return training_dataset(train_x, train_y, args.batch_size, args.augment, args.seed + seed_offset,
                                with_index=trace.enabled)

    run_steps, worker_shares = step_runner(strategy, role, learner, make_dataset, args.batch_size)
    summaries = Summaries(args.model_dir, chief, hparams(args), args.metrics_dir)
    eval_model = build_model(args.hidden_layers)  # a plain copy outside the strategy: evaluation and export

    def snapshot():
        # Under MultiWorkerMirroredStrategy reading batch-norm statistics is a collective: every replica calls this.
        eval_model.set_weights(learner.model.get_weights())
        if trace.enabled:
            trace.record_weights(learner.step, eval_model.get_weights())

    start_step = learner.step
    if start_step >= args.steps:
        say(f"already trained to step {start_step} of {args.steps}: evaluating and exporting")
        if checkpoints.status:
            # No step runs, so the optimizer's slots are never built: without this, TensorFlow warns about each
            # of them ("... being deleted with unrestored values") when the run ends.
            checkpoints.status.expect_partial()
    train_start = time.time()
    validate = (lambda: evaluate(eval_model, *data["validation"])) if chief else None
    speeds = loop(args, learner, run_steps, checkpoints, summaries, snapshot, validate, say)
    train_seconds = time.time() - train_start
    shares = worker_shares()
    if shares:
        say(shares)
    if start_step >= args.steps:
        snapshot()
    checkpoints.close()
    if not chief:
        return None

    test_loss, test_accuracy = evaluate(eval_model, *data["test"])
    summaries.write("test", learner.step, loss=test_loss, accuracy=test_accuracy)
    if writer:
        writer.check()
    try:
        path = export_saved_model(eval_model, args.export_dir, say)
    except WRITE_FAILED as err:
        raise storage.failure("export the model", "--export_dir", args.export_dir, err,
                              f"nothing half-written is left, and the checkpoint of step {learner.step} is intact: "
                              "run the same command again to export it without training") from None
    print(f"test accuracy {test_accuracy:.2%} (loss {test_loss:.4f}) on {len(data['test'][1])} images", flush=True)
    print(f"exported {path}", flush=True)
    # The first window includes tracing the step function: the steady speed is the median of the rest.
    steady = float(np.median(speeds[1:] or speeds)) if speeds else 0.0
    return {"test_accuracy": test_accuracy, "images_per_second": steady, "train_seconds": train_seconds,
            "export": path}


def hparams(args):
    """What TensorBoard's HParams tab compares across runs."""
    return {"learning_rate": args.learning_rate, "hidden_layers": args.hidden_layers,
            "batch_size": args.batch_size, "steps": args.steps, "dataset": args.dataset,
            "augment": args.augment}


def run(args, role, writer=None):
    """Train in this process's place in the cluster (`role`, from TF_CONFIG), and wait for the other replicas."""
    strategy = cluster.make_strategy(role)  # parameter servers and their workers never return from here
    try:
        result = train(args, role, strategy, writer)
        cluster.wait_for_every_replica(strategy, role)
    except PEER_LOST as err:
        raise RetryableError(f"{role.name} lost a peer replica ({type(err).__name__}); "
                             "exiting to be restarted and resume from the last checkpoint") from None
    except KeyboardInterrupt:
        raise TrainingInterruptedError("interrupted: the checkpoints saved so far are intact; run the same command "
                                       "again to resume from the last one") from None
    return result


class TrainingInterruptedError(UserError):
    """Ctrl-C: exit 130, as a shell reports SIGINT, saying how to go on."""

    exit_code = 130
