"""Score a folder of digit images with the newest exported model: no server, one CSV row per image.

For a batch (a day's scanned forms, a folder on the shared volume) a model
server adds only a network hop. This loads the SavedModel directly, turns
every image into an MNIST digit with the client's own preprocessing
(preprocess.py: one code path for both), runs the export's `predict`
signature on batches of them, and writes one row per image: path, digit,
probability, error. A file that cannot be read or holds no digit gets a row
with its error, and the run goes on.

    python src/batch_predict.py --model_base_path runs/local/export --input photos/ --output predictions.csv

In the cluster, kube/batch-predict.yaml runs it as a Job over
/mnt/nfs/batch/in and writes /mnt/nfs/batch/out/predictions.csv.
"""
import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tfk8s import mnist
from tfk8s.cli import ArgumentParser, UsageError, UserError, entry_point
from tfk8s.serving import preprocess
from tfk8s.versions import versions

SIGNATURE = "predict"
COLUMNS = ("path", "digit", "probability", "error")
PROGRESS_EVERY = 10.0  # seconds between progress lines


def parse_args(argv=None):
    p = ArgumentParser(description="Classify every PNG/JPEG of a folder with an exported model, "
                                   "without a server; write one CSV row per image.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_base_path", required=True,
                   help="the export directory (<dir>/<version>/saved_model.pb), as given to the model server")
    p.add_argument("--model_version", type=int, help="use this version instead of the newest")
    p.add_argument("--input", required=True, help="a folder of .png/.jpg images (or one image)")
    p.add_argument("--output", required=True, help="the CSV file to write (its folder is created)")
    p.add_argument("--batch_size", type=int, default=256, help="images per call of the model")
    p.add_argument("--sample_input", action="store_true",
                   help="if --input holds no image, first write the 10,000 MNIST test digits there as "
                        "<index>-<label>.png: a batch to try this on")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be at least 1, not {args.batch_size}")
    return args


def write_test_images(folder, data_dir=mnist.DATA_DIR):
    """The official 10,000 MNIST test digits as PNG files, <index>-<label>.png: the label is in the name."""
    images_file, labels_file = mnist.DATASETS["mini"][2:]
    images, labels = (mnist.read_idx(mnist.ensure_file(name, data_dir)) for name in (images_file, labels_file))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / f"{i:05d}-{label}.png")
    return len(images)


def has_images(folder):
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix.lower() in preprocess.IMAGE_SUFFIXES for p in folder.iterdir())


def find_version(base_path, version=None):
    """The SavedModel directory of `version`, or of the newest version under `base_path`."""
    base_path = Path(base_path)
    found = versions(base_path)
    if not found:
        raise UserError(f"{base_path} holds no exported model (no <version>/ directory)"
                        if base_path.is_dir() else f"{base_path}: no such directory")
    if version is None:
        version = found[-1]
    elif version not in found:
        raise UserError(f"{base_path} has no version {version}; it has {', '.join(map(str, found))}")
    return base_path / str(version)


def load_signature(path):
    """The export's `predict` function and the name of its one input."""
    import tensorflow as tf  # only now: the flags and the input folder are checked before TensorFlow loads (seconds)

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as err:
        raise UserError(f"cannot load the SavedModel {path}: {' '.join(str(err).split())[:300]}") from None
    if SIGNATURE not in loaded.signatures:
        raise UserError(f"{path} has no {SIGNATURE!r} signature; it has {', '.join(loaded.signatures) or 'none'}")
    signature = loaded.signatures[SIGNATURE]
    check_signature(path, signature)
    (input_name,) = signature.structured_input_signature[1]
    return loaded, signature, input_name


def check_signature(path, signature):
    """The export's `predict` must be this workshop's: one float image input [n, 28, 28, 1] (or of unknown size),
    and a `probabilities` output; another model's export is one line naming what it has."""
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    spec = next(iter(inputs.values())) if len(inputs) == 1 else None
    shape = spec.shape.as_list() if spec is not None and spec.shape.rank is not None else None
    fits = (spec is not None and spec.dtype.is_floating and shape is not None and len(shape) == 4
            and all(want is None or got in (None, want) for got, want in zip(shape, [None, 28, 28, 1])))
    if not fits or not isinstance(outputs, dict) or "probabilities" not in outputs:
        has = ", ".join(f"{name} {s.dtype.name}{s.shape}" for name, s in inputs.items()) or "no input"
        out = ", ".join(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise UserError(f"{path}: its {SIGNATURE!r} signature is not an MNIST classifier's (one float image input "
                        f"[n, 28, 28, 1] and a 'probabilities' output): it takes {has} and returns {out}")


def shown(path):
    """`path` as the CSV shows it: a file name that is not UTF-8 keeps its bytes as \\x escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_images(paths):
    """Preprocess each file: (indices of the good ones, their float32 [n, 28, 28, 1] pixels, {index: error})."""
    good, pixels, errors = [], [], {}
    for i, path in enumerate(paths):
        if shown(path) != str(path):
            errors[i] = f"{shown(path)}: the file name is not UTF-8: rename the file"
            continue
        try:
            pixels.append(preprocess.to_mnist(path))
            good.append(i)
        except preprocess.ImageError as err:
            errors[i] = str(err)
        except Exception as err:  # noqa: BLE001 - one odd file (a decompression bomb, ...) must not end the batch
            errors[i] = f"{path}: {type(err).__name__}: {' '.join(str(err).split())}"
    batch = np.stack(pixels) if pixels else np.zeros((0, preprocess.SIZE, preprocess.SIZE, 1), np.float32)
    return good, batch, errors


def open_output(path):
    """A temporary file beside `path`, renamed onto it at the end: nobody reads a half-written CSV."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    return os.fdopen(fd, "w", newline=""), Path(staging)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    if args.sample_input and not has_images(args.input):
        try:
            count = write_test_images(args.input)
        except OSError as err:
            raise UserError(f"cannot write the sample images into {args.input}: {err.strerror}") from None
        print(f"{args.input} held no image: wrote the {count} MNIST test digits there (<index>-<label>.png)",
              flush=True)
    paths = preprocess.image_paths(args.input)
    model_path = find_version(args.model_base_path, args.model_version)
    f, staging = open_output(args.output)  # an unwritable output fails now, not after the work
    errors = 0
    try:
        with f:
            _, predict, input_name = load_signature(model_path)
            print(f"scoring {len(paths)} image{'s' * (len(paths) != 1)} of {args.input} with {model_path} "
                  f"(signature {SIGNATURE}), {args.batch_size} at a time", flush=True)
            began = last_note = time.perf_counter()
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for start in range(0, len(paths), args.batch_size):
                chunk = paths[start:start + args.batch_size]
                good, batch, failed = read_images(chunk)
                probabilities = predict(**{input_name: batch})["probabilities"].numpy() if good else []
                scores = dict(zip(good, probabilities))
                for i, path in enumerate(chunk):
                    if i in scores:
                        digit = int(np.argmax(scores[i]))
                        writer.writerow((shown(path), digit, f"{scores[i][digit]:.6f}", ""))
                    else:
                        writer.writerow((shown(path), "", "", failed[i]))
                errors += len(failed)
                done, now = start + len(chunk), time.perf_counter()
                if now - last_note >= PROGRESS_EVERY or done == len(paths):
                    print(f"{done:>8}/{len(paths)} images  {errors} error{'s' * (errors != 1)}  "
                          f"{done / (now - began):,.0f} images/s", flush=True)
                    last_note = now
        os.replace(staging, args.output)
    except OSError as err:
        raise UserError(f"cannot write {args.output}: {err.strerror}") from None
    finally:
        staging.unlink(missing_ok=True)
    seconds = time.perf_counter() - began
    print(f"wrote {args.output}: {len(paths)} rows ({len(paths) - errors} scored, {errors} with an error) "
          f"in {seconds:.1f}s, {len(paths) / seconds:,.0f} images/s", flush=True)
