"""MNIST as numpy arrays: checksummed IDX files, shipped or downloaded.

`mini` is shipped in data/ (5,000 training images and the official 10,000
test images) so that everything works offline. `full` is the canonical
60,000/10,000 set, downloaded once into the data directory from the first
mirror that answers, and verified before it is used.
"""
import errno
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from tfk8s.cli import ArgumentParser, UserError, entry_point
from tfk8s.paths import DATA

DATA_DIR = DATA

# Widely used mirrors of the canonical files; yann.lecun.com refuses
# downloads, so it is not among them. Each is tried in turn.
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)

SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-5k-images-idx3-ubyte.gz": "1ee5692bef8edf4c5573bcb310d746a8e89b4b83763d318d80cf82580d2dae75",
    "train-5k-labels-idx1-ubyte.gz": "6eca3fa02bfd3845f051cadc97a58397d6d5ba7c3e4130c97b4ffc1ad1a1afe2",
}

# (training images, training labels, test images, test labels)
DATASETS = {
    "mini": ("train-5k-images-idx3-ubyte.gz", "train-5k-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    "full": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Errors of the local disk while a file is downloaded into it (read-only, no permission, full).
LOCAL_WRITE_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DOWNLOADABLE = set(DATASETS["full"])  # served by the mirrors; the 5k subset ships only in data/


class DataError(UserError):
    """A data file is missing, corrupt or cannot be downloaded."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path):
    """Read a gzipped IDX file (images: uint8 [n, 28, 28]; labels: uint8 [n])."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable gzip file ({err})") from None
    if len(raw) < 8 or raw[0:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path} holds {len(raw) - header} bytes of data, its header says {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _progress(name, done, total, last_shown):
    """Print download progress every 10% (a live bar when stderr is a terminal)."""
    percent = int(100 * done / total) if total else 0
    if sys.stderr.isatty():
        print(f"\r  {name}: {percent:3d}% of {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
        return percent
    if percent >= last_shown + 10 or done == total:
        print(f"  {name}: {percent}% of {total / 1e6:.1f} MB", file=sys.stderr, flush=True)
        return percent
    return last_shown


def _fetch(url, target, expected_sha256, timeout):
    """Stream `url` into a temporary file beside `target`; rename it into place once verified."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest, done, shown = hashlib.sha256(), 0, -10
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            while block := response.read(1 << 16):
                out.write(block)
                digest.update(block)
                done += len(block)
                shown = _progress(target.name, done, total, shown)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        if total and done != total:
            raise OSError(f"truncated: {done} of {total} bytes")
        if digest.hexdigest() != expected_sha256:
            raise OSError(f"sha256 mismatch ({done} bytes)")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def download(name, data_dir, mirrors=MIRRORS, retries=2, timeout=30, backoff=1.0):
    """Download `name` into `data_dir` from the first mirror that serves the right bytes."""
    target = Path(data_dir) / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data directory {target.parent}: {err.strerror}; "
                        "choose another --data_dir") from None
    tried = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        for attempt in range(1, retries + 1):
            try:
                print(f"downloading {url}", file=sys.stderr, flush=True)
                _fetch(url, target, SHA256[name], timeout)
                return target
            except urllib.error.HTTPError as err:
                reason = f"HTTP {err.code}"
                if 400 <= err.code < 500:
                    break  # this mirror does not have it: no point retrying
            except (OSError, ValueError, http.client.HTTPException) as err:
                if getattr(err, "errno", None) in LOCAL_WRITE_ERRORS:  # this disk, not the mirror: no retry helps
                    raise DataError(f"cannot write {name} into {target.parent}: {err.strerror}; "
                                    "free space there or choose another --data_dir") from None
                reason = str(getattr(err, "reason", err)) or type(err).__name__
            if attempt < retries:
                time.sleep(backoff * attempt)
        tried.append(f"{url} ({reason})")
    raise DataError(f"could not download {name}; tried " + ", ".join(tried))


def ensure_file(name, data_dir, mirrors=MIRRORS):
    """Return the path of a verified copy of `name`, downloading it if it is not shipped."""
    path = Path(data_dir) / name
    if path.exists():
        actual = sha256_of(path)
        if actual == SHA256[name]:
            return path
        if name not in DOWNLOADABLE:
            raise DataError(f"{path} is corrupt: sha256 {actual[:12]}..., expected {SHA256[name][:12]}...; "
                            f"restore it (it ships with the project in data/)")
        print(f"{path} is corrupt (sha256 mismatch); downloading it again", file=sys.stderr)
    elif name not in DOWNLOADABLE:
        raise DataError(f"{path} is missing; it ships with the project in data/")
    return download(name, data_dir, mirrors)


def load(dataset="mini", data_dir=DATA_DIR, validation_fraction=0.1, mirrors=MIRRORS, seed=0):
    """Return {"train", "validation", "test"}: (images uint8 [n,28,28], labels int64 [n]).

    The validation split is carved from the training files with a fixed seed, so
    every replica and every restart sees the same split; the test set is kept
    for the final evaluation only.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    arrays = [read_idx(ensure_file(name, data_dir, mirrors)) for name in DATASETS[dataset]]
    train_x, train_y, test_x, test_y = arrays
    for images, labels, what in ((train_x, train_y, "training"), (test_x, test_y, "test")):
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise DataError(f"{what} images {images.shape} and labels {labels.shape} do not match")
    order = np.random.default_rng(seed).permutation(len(train_x))
    n_val = int(round(len(train_x) * validation_fraction))
    val, train = order[:n_val], order[n_val:]
    as_pair = lambda x, y, idx=slice(None): (x[idx], y[idx].astype(np.int64))
    return {
        "train": as_pair(train_x, train_y, train),
        "validation": as_pair(train_x, train_y, val),
        "test": as_pair(test_x, test_y),
    }


@entry_point
def main(argv=None):
    """`python src/mnist_data.py --download full`: fetch and verify a dataset's files ahead of time."""
    parser = ArgumentParser(description="Download and verify MNIST files (the container build runs this).")
    parser.add_argument("--download", choices=sorted(DATASETS), default="full", help="which dataset's files")
    parser.add_argument("--data_dir", default=str(DATA_DIR), help="where the files go")
    parser.add_argument("--mirror", action="append", dest="mirrors", metavar="URL",
                        help="a base URL serving the files (repeatable; replaces the default mirrors)")
    args = parser.parse_args(argv)
    for name in DATASETS[args.download]:
        path = ensure_file(name, args.data_dir, tuple(args.mirrors or MIRRORS))
        print(f"{path}: sha256 ok")

