"""Benchmark: our trainer against a plain Keras `fit` of the same model on the same data.

    python src/bench.py train                 # our defaults (mini data), then Keras fit
    python src/bench.py train --steps 1000    # a shorter run

Both run in this one process, one after the other, on the same input
pipeline, model and optimizer; the ratio of their images/s is the figure
(our loop should cost nothing over Keras). Accuracy is measured on the
official 10k test set.
"""
import tempfile
import time

from tfk8s.cli import ArgumentParser, entry_point
from tfk8s.trainer.flags import parse_args as trainer_flags


def keras_fit(args, data):
    """The same model, optimizer and input pipeline, trained by `model.fit`: (median images/s, test accuracy)."""
    import tf_keras as keras

    from tfk8s.trainer import train as trainer
    from tfk8s.trainer.model import build_model, make_optimizer

    class Throughput(keras.callbacks.Callback):
        """Images/s of each epoch but the first (which includes tracing)."""

        def __init__(self, images_per_epoch):
            super().__init__()
            self.images = images_per_epoch
            self.speeds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            if epoch > 0:
                self.speeds.append(self.images / (time.time() - self.start))

    train_x, train_y = data["train"]
    model = build_model(args.hidden_layers)
    model.compile(optimizer=make_optimizer(args.learning_rate, args.fit_steps)[0],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    epochs = 5
    meter = Throughput(args.batch_size * (args.fit_steps // epochs))
    dataset = trainer.training_dataset(train_x, train_y, args.batch_size, args.augment, args.seed)
    model.fit(dataset, steps_per_epoch=args.fit_steps // epochs, epochs=epochs, callbacks=[meter], verbose=0)
    _, accuracy = trainer.evaluate(model, *data["test"])
    return sorted(meter.speeds)[len(meter.speeds) // 2], accuracy


@entry_point
def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="our trainer's steps (default: its own default)")
    parser.add_argument("--fit_steps", type=int, default=1000, help="steps of the Keras fit (5 epochs of steps/5)")
    bench_args, rest = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        flags = ["--model_dir", f"{tmp}/model", "--export_dir", f"{tmp}/export", *rest]
        if bench_args.steps:
            flags += ["--steps", str(bench_args.steps)]
        args = trainer_flags(flags)  # every flag checked before TensorFlow loads
        args.fit_steps = bench_args.fit_steps
        import tensorflow as tf

        from tfk8s import mnist
        from tfk8s.trainer import cluster
        from tfk8s.trainer import train as trainer
        data = mnist.load(args.dataset, args.data_dir, args.validation_fraction, seed=args.seed)
        ours = trainer.train(args, cluster.read_role(), tf.distribute.get_strategy())
        fit_speed, fit_accuracy = keras_fit(args, data)
    print()
    print(f"{'':28}{'images/s':>10}{'steps':>8}{'test accuracy':>15}{'train time':>12}")
    print(f"{'our trainer (main.py)':28}{ours['images_per_second']:>10,.0f}{args.steps:>8}"
          f"{ours['test_accuracy']:>15.2%}{ours['train_seconds']:>11.0f}s")
    print(f"{'plain Keras fit':28}{fit_speed:>10,.0f}{args.fit_steps:>8}{fit_accuracy:>15.2%}{'':>12}")
    print(f"ratio (ours / Keras fit): {ours['images_per_second'] / fit_speed:.2f}")
