"""Train the workshop's MNIST model, evaluate it as it learns, and export it for TensorFlow Serving.

The same command runs on a laptop, in a Kubernetes Job and on every replica of
a TFJob (the cluster comes from TF_CONFIG):

    python src/main.py                                          # the shipped mini data, defaults
    python src/main.py --steps 500 --model_dir /tmp/run1 --export_dir /tmp/export
    python src/main.py --help                                   # every flag

The training itself reads top to bottom in src/tfk8s/trainer/train.py.
"""
from tfk8s.cli import entry_point
from tfk8s.trainer import cluster, storage
from tfk8s.trainer.flags import parse_args


@entry_point
def main(argv=None):
    # Before TensorFlow loads, so that each answers at once: the flags, TF_CONFIG, the directories the
    # chief writes (and its lock on --model_dir, so that no second trainer writes there).
    args = parse_args(argv)
    role = cluster.read_role()
    writer = storage.prepare(args, role)
    try:
        from tfk8s.trainer import train
        train.run(args, role, writer)
    finally:
        if writer:
            writer.release()


if __name__ == "__main__":
    main()
