"""Write data/0.png .. data/9.png: one real MNIST test digit of each class, to try the client on.

Each is the first test image of its class that a person reads without
hesitation, saved as MNIST stores it: 28x28 grayscale, white digit on black.

    python src/make_samples.py            # rewrites data/0.png .. data/9.png
"""
import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tfk8s import mnist
from tfk8s.cli import ArgumentParser, entry_point

# The first test image of each class, except two that are hard to read and
# that a briefly trained model gets wrong as often as right: the first 5
# (index 8, its loop blotted like a 6's or a 0's) and the first 3 (index 18,
# its upper bowl squashed like an 8's). The next of each is used instead.
SKIP = {8, 18}


def sample_indices(labels):
    """{digit: index of the first readable test image of that digit}."""
    return {digit: int(next(i for i in np.flatnonzero(labels == digit) if i not in SKIP)) for digit in range(10)}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=str(mnist.DATA_DIR), help="where the MNIST test files are")
    p.add_argument("--output_dir", default=str(mnist.DATA_DIR), help="where to write 0.png .. 9.png")
    return p.parse_args(argv)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    images_file, labels_file = mnist.DATASETS["mini"][2:]
    images = mnist.read_idx(mnist.ensure_file(images_file, args.data_dir))
    labels = mnist.read_idx(mnist.ensure_file(labels_file, args.data_dir))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for digit, index in sample_indices(labels).items():
        path = out / f"{digit}.png"
        Image.fromarray(images[index]).save(path, optimize=True)
        print(f"{os.path.relpath(path)}: test image {index}, label {digit}")
