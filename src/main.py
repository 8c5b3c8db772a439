"""Train the workshop's MNIST model, evaluate it as it learns, and export it for TensorFlow Serving.

The same command runs on a laptop, in a Kubernetes Job and on every replica of
a TFJob (the cluster comes from TF_CONFIG):

    python src/main.py                                          # the shipped mini data, defaults
    python src/main.py --steps 500 --model_dir /tmp/run1 --export_dir /tmp/export
    python src/main.py --help                                   # every flag

The training itself reads top to bottom in src/tfk8s/trainer/train.py.
"""
from tfk8s.cli import entry_point
from tfk8s.trainer.flags import parse_args


@entry_point
def main(argv=None):
    args = parse_args(argv)  # before TensorFlow loads: a bad flag answers at once
    from tfk8s.trainer import train
    train.run(args)


if __name__ == "__main__":
    main()
