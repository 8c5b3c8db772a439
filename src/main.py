"""Train the workshop's MNIST model, evaluate it as it learns, and export it for serving.

The same command runs on a laptop, in a Kubernetes Job and on every replica
of a TFJob: the cluster, if any, comes from TF_CONFIG (see cluster.py).

    python src/main.py                          # mini data, defaults
    python src/main.py --steps 500 --model_dir /tmp/run1 --export_dir /tmp/export

What it keeps of the Estimator's contract: checkpoints in --model_dir, shared
by every replica; a restarted process resumes from the last one (global step
and optimizer state); evaluation every --eval_every steps with TensorBoard
summaries under --model_dir; one export per run under --export_dir.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras is tf-keras: it runs under every tf.distribute strategy
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import cluster  # noqa: E402
import mnist_data  # noqa: E402
from cli import RetryableError, entry_point  # noqa: E402
from export import export_saved_model  # noqa: E402
from flags import parse_args  # noqa: E402
from model import augment, build_model, make_optimizer  # noqa: E402

# Errors that mean "a peer replica went away": exit so that the operator restarts us.
PEER_LOST = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
             tf.errors.CancelledError, tf.errors.AbortedError)


def training_dataset(images, labels, batch_size, augmented, seed):
    """An endless, shuffled, batched (and optionally augmented) stream of raw-pixel images."""
    ds = tf.data.Dataset.from_tensor_slices((images[..., None].astype(np.float32), labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    if augmented:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Every worker shuffles with the same seed and keeps every N-th batch: no two see the same images.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def evaluate(model, images, labels, batch_size=1000):
    """Loss and accuracy of `model` (a plain, single-device copy) on a whole split."""
    ds = tf.data.Dataset.from_tensor_slices((images[..., None].astype(np.float32), labels)).batch(batch_size)
    loss_sum, correct = 0.0, 0
    for x, y in ds:
        logits = model(x, training=False)
        loss_sum += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == y, tf.int32)))
    return loss_sum / len(labels), correct / len(labels)


class Summaries:
    """TensorBoard event files under model_dir/{train,eval,test}; the chief writes, others write nothing."""

    def __init__(self, model_dir, enabled, hparams):
        self.writers = {}
        if enabled:
            self.writers = {run: tf.summary.create_file_writer(os.path.join(model_dir, run))
                            for run in ("train", "eval", "test")}
            from tensorboard.plugins.hparams import api as hp
            with tf.summary.create_file_writer(model_dir).as_default():
                hp.hparams(hparams, trial_id=os.path.basename(os.path.normpath(model_dir)))

    def write(self, run, step, **scalars):
        if run in self.writers:
            with self.writers[run].as_default(step=step):
                for name, value in scalars.items():
                    tf.summary.scalar(name, value)
            self.writers[run].flush()  # TensorBoard on a shared volume sees it now, not at exit


def train(args, role, strategy):
    data = mnist_data.load(args.dataset, args.data_dir, args.validation_fraction,
                           tuple(args.mirrors or mnist_data.MIRRORS), seed=args.seed)
    train_x, train_y = data["train"]
    chief = role.is_chief
    say = print if chief else (lambda *a, **k: None)
    say(f"{role.name}: {role.mode} training on {len(train_x)} images ({args.dataset}), "
        f"{len(data['validation'][1])} for validation, {len(data['test'][1])} for the final test; "
        f"num_replicas_in_sync={strategy.num_replicas_in_sync}", flush=True)

    with strategy.scope():
        model = build_model(args.hidden_layers)
        optimizer, schedule = make_optimizer(args.learning_rate, args.steps)
        train_loss = keras.metrics.Mean("loss")
        train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    step = optimizer.iterations  # the global step: saved with the optimizer, shared by every replica

    # Checkpoints: the chief writes to model_dir; under MultiWorkerMirroredStrategy every worker
    # must take part in saving, so the others write to a private scratch directory.
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    scratch = None if chief or role.mode != "multi_worker" else tempfile.mkdtemp(prefix=f"ckpt-{role.name}-")
    manager = tf.train.CheckpointManager(checkpoint, scratch or args.model_dir, max_to_keep=args.keep_checkpoints)
    latest = tf.train.latest_checkpoint(args.model_dir)
    if latest:
        checkpoint.restore(latest)
        say(f"resuming from {latest} at step {int(step.numpy())}", flush=True)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=args.batch_size)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        train_loss.update_state(per_example)
        train_accuracy.update_state(labels, logits)

    dataset_fn = lambda _=None: training_dataset(train_x, train_y, args.batch_size, args.augment, args.seed)  # noqa: E731
    if role.mode == "parameter_server":
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        num_workers = len(role.cluster["worker"])

        def worker_dataset_fn():
            # Each worker reads the whole training set: seeded alike, all would train on the same batches.
            worker = tf.distribute.coordinator.experimental_get_current_worker_index()
            return training_dataset(train_x, train_y, args.batch_size, args.augment,
                                    args.seed + tf.cast(worker, tf.int64))

        iterator = iter(coordinator.create_per_worker_dataset(worker_dataset_fn))
        with strategy.scope():
            steps_by_worker = tf.Variable(tf.zeros([num_workers], tf.int64), trainable=False)  # not checkpointed

        @tf.function
        def one_step(it):
            images, labels = next(it)
            strategy.run(replica_step, args=(images, labels))
            worker = tf.distribute.coordinator.experimental_get_current_worker_index()
            steps_by_worker.assign_add(tf.one_hot(worker, num_workers, dtype=tf.int64))

        def run_steps(n):
            for _ in range(n):
                coordinator.schedule(one_step, args=(iterator,))
            coordinator.join()
    else:
        # No per-device prefetch buffer (CPU replicas gain nothing from it): with one, TensorFlow 2.21
        # takes up to a minute to free the iterator at the end of a multi-worker run.
        no_device_buffer = tf.distribute.InputOptions(experimental_per_replica_buffer_size=0)
        iterator = iter(strategy.experimental_distribute_dataset(dataset_fn(), no_device_buffer))

        @tf.function
        def n_steps(it, n):
            for _ in tf.range(n):
                images, labels = next(it)
                strategy.run(replica_step, args=(images, labels))

        def run_steps(n):
            n_steps(iterator, tf.constant(n, tf.int64))

    hparams = {"learning_rate": args.learning_rate, "hidden_layers": args.hidden_layers,
               "batch_size": args.batch_size, "steps": args.steps, "dataset": args.dataset,
               "augment": args.augment}
    summaries = Summaries(args.model_dir, chief, hparams)
    eval_model = build_model(args.hidden_layers)  # a plain copy outside the strategy: evaluation and export

    def snapshot():
        # Under MultiWorkerMirroredStrategy reading batch-norm statistics is a collective: every replica calls this.
        eval_model.set_weights(model.get_weights())

    val_x, val_y = data["validation"]
    start_step = int(step.numpy())
    if start_step >= args.steps:
        say(f"already trained to step {start_step} of {args.steps}: evaluating and exporting", flush=True)
    speeds = []  # images/s of each window between evaluations, for the benchmark
    train_start = window_start = time.time()
    window_step = start_step
    while int(step.numpy()) < args.steps:
        current = int(step.numpy())
        boundary = min(args.steps, (current // args.eval_every + 1) * args.eval_every,
                       (current // args.checkpoint_every + 1) * args.checkpoint_every)
        run_steps(boundary - current)
        current = int(step.numpy())
        elapsed = time.time() - window_start
        images_per_second = (current - window_step) * args.batch_size / max(elapsed, 1e-9)
        speeds.append(images_per_second)
        lr = float(schedule(current))
        loss, accuracy = float(train_loss.result()), float(train_accuracy.result())
        train_loss.reset_state()
        train_accuracy.reset_state()
        summaries.write("train", current, loss=loss, accuracy=accuracy, learning_rate=lr,
                        images_per_second=images_per_second)
        if current % args.checkpoint_every == 0 or current == args.steps:
            manager.save(checkpoint_number=current)
        if current % args.eval_every == 0 or current == args.steps:
            snapshot()
            if chief:
                val_loss, val_accuracy = evaluate(eval_model, val_x, val_y)
                summaries.write("eval", current, loss=val_loss, accuracy=val_accuracy)
                say(f"step {current:>6}/{args.steps}  train loss {loss:.4f} acc {accuracy:.2%}  "
                    f"validation loss {val_loss:.4f} acc {val_accuracy:.2%}  "
                    f"lr {lr:.5f}  {images_per_second:,.0f} images/s", flush=True)
        window_start, window_step = time.time(), current

    train_seconds = time.time() - train_start
    if role.mode == "parameter_server":
        say("steps run by each worker: " + ", ".join(
            f"worker-{i} {n}" for i, n in enumerate(steps_by_worker.numpy())), flush=True)
    if start_step >= args.steps:
        snapshot()
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if not chief:
        return None
    test_loss, test_accuracy = evaluate(eval_model, *data["test"])
    summaries.write("test", int(step.numpy()), loss=test_loss, accuracy=test_accuracy)
    path = export_saved_model(eval_model, args.export_dir)
    print(f"test accuracy {test_accuracy:.2%} (loss {test_loss:.4f}) on {len(data['test'][1])} images", flush=True)
    print(f"exported {path}", flush=True)
    # The first window includes tracing the step function: the steady speed is the median of the rest.
    steady = float(np.median(speeds[1:] or speeds)) if speeds else 0.0
    return {"test_accuracy": test_accuracy, "images_per_second": steady, "train_seconds": train_seconds,
            "export": path}


@entry_point
def main(argv=None):
    args = parse_args(argv)
    role = cluster.read_role()
    strategy = cluster.make_strategy(role)  # parameter servers and their workers never return from here
    try:
        train(args, role, strategy)
        cluster.wait_for_every_replica(strategy, role)
    except PEER_LOST as err:
        raise RetryableError(f"{role.name} lost a peer replica ({type(err).__name__}); "
                             "exiting to be restarted and resume from the last checkpoint") from None


if __name__ == "__main__":
    main()
