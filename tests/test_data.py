"""MNIST files: real bytes, real checksums, and the real download code against a local HTTP server."""
import hashlib
import http.server
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from support import REPO, SRC, assert_one_line_error, run_script
from tfk8s import mnist, versions
from tfk8s.cli import child_env
from tfk8s.ports import free_port

NAME = "t10k-labels-idx1-ubyte.gz"  # a canonical file we ship, so the server can serve its real bytes
GOOD = (REPO / "data" / NAME).read_bytes()


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves GOOD under /good/, and broken variants under /truncated/, /wrong/ and /missing/."""

    hits = {}

    def do_GET(self):
        kind = self.path.strip("/").split("/")[0]
        MirrorHandler.hits[kind] = MirrorHandler.hits.get(kind, 0) + 1
        if kind == "missing":
            self.send_error(404)
            return
        body = bytes(reversed(GOOD)) if kind == "wrong" else GOOD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated transfer: the header promises every byte, the connection closes halfway.
        self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror():
    MirrorHandler.hits = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def closed_port_url():
    return f"http://127.0.0.1:{free_port()}/"


def leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def test_download_writes_a_verified_file_and_no_partial(tmp_path, mirror):
    path = mnist.download(NAME, tmp_path, mirrors=[f"{mirror}/good/"], backoff=0)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == mnist.SHA256[NAME]
    assert leftovers(tmp_path) == []


def test_truncated_download_is_retried_then_the_next_mirror_is_used(tmp_path, mirror):
    path = mnist.download(NAME, tmp_path, mirrors=[f"{mirror}/truncated/", f"{mirror}/good/"],
                               retries=2, backoff=0)
    assert path.read_bytes() == GOOD
    assert MirrorHandler.hits == {"truncated": 2, "good": 1}
    assert leftovers(tmp_path) == []


def test_wrong_checksum_never_lands_and_names_the_url(tmp_path, mirror):
    with pytest.raises(mnist.DataError) as err:
        mnist.download(NAME, tmp_path, mirrors=[f"{mirror}/wrong/", f"{mirror}/missing/"], backoff=0)
    message = str(err.value)
    assert f"{mirror}/wrong/{NAME} (sha256 mismatch" in message
    assert f"{mirror}/missing/{NAME} (HTTP 404)" in message
    assert MirrorHandler.hits == {"wrong": 2, "missing": 1}  # a 404 is not retried
    assert list(tmp_path.iterdir()) == []


def test_first_mirror_down_falls_back_to_the_second(tmp_path, mirror):
    path = mnist.download(NAME, tmp_path, mirrors=[closed_port_url(), f"{mirror}/good/"], backoff=0)
    assert path.read_bytes() == GOOD


def test_offline_download_is_one_line_naming_every_url(tmp_path):
    first, second = closed_port_url(), closed_port_url()
    result = run_script("mnist_data.py", "--download", "full", "--data_dir", tmp_path,
                        "--mirror", first, "--mirror", second)
    last = assert_one_line_error(result, "could not download train-images-idx3-ubyte.gz")
    assert first + "train-images-idx3-ubyte.gz" in last and second + "train-images-idx3-ubyte.gz" in last
    assert leftovers(tmp_path) == []


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory\n")
    result = run_script("mnist_data.py", "--download", "full", "--data_dir", tmp_path / "file" / "mnist",
                        "--mirror", closed_port_url())
    assert_one_line_error(result, f"cannot create the data directory {tmp_path / 'file' / 'mnist'}: "
                                  "Not a directory; choose another --data_dir")


def test_a_disk_that_cannot_take_the_download_is_one_line_and_no_mirror_is_tried_again(tmp_path, mirror):
    # A real failed write: the child may not write files past 1000 bytes (RLIMIT_FSIZE), so a write fails
    # with EFBIG as one fails with ENOSPC on a full disk; Python ignores SIGXFSZ, so the error reaches the code.
    result = subprocess.run(
        [sys.executable, str(SRC / "mnist_data.py"), "--download", "full", "--data_dir", tmp_path,
         "--mirror", f"{mirror}/good/", "--mirror", f"{mirror}/good/"], capture_output=True, text=True,
        env=child_env(), timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)))
    assert_one_line_error(result, f"cannot write train-images-idx3-ubyte.gz into {tmp_path}: File too large; "
                                  "free space there or choose another --data_dir")
    assert MirrorHandler.hits == {"good": 1}
    assert leftovers(tmp_path) == []


def test_a_cached_corrupt_download_is_fetched_again(tmp_path, mirror):
    (tmp_path / NAME).write_bytes(b"not the file")
    path = mnist.ensure_file(NAME, tmp_path, mirrors=[f"{mirror}/good/"])
    assert path.read_bytes() == GOOD


def test_shipped_mini_data_is_real_mnist():
    data = mnist.load("mini", validation_fraction=0.1)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = data["train"], data["validation"], data["test"]
    assert (len(train_x), len(val_x), len(test_x)) == (4500, 500, 10000)
    assert train_x.dtype == np.uint8 and train_x.shape[1:] == (28, 28) and train_x.max() == 255
    assert sorted(np.bincount(np.concatenate([train_y, val_y]))) == [500] * 10
    assert np.bincount(test_y).sum() == 10000 and set(test_y) == set(range(10))


def test_validation_split_is_stable_and_disjoint_from_training():
    a, b = mnist.load("mini"), mnist.load("mini")
    assert np.array_equal(a["validation"][0], b["validation"][0])
    train_rows = {x.tobytes() for x in a["train"][0]}
    assert not any(x.tobytes() in train_rows for x in a["validation"][0])


@pytest.mark.slow  # the trainer loads TensorFlow before it reads the data
def test_corrupt_shipped_file_fails_in_one_line_and_keeps_existing_checkpoints(tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(REPO / "data", data_dir, ignore=shutil.ignore_patterns("*.png"))
    corrupt = data_dir / "train-5k-images-idx3-ubyte.gz"
    corrupt.chmod(0o644)
    raw = bytearray(corrupt.read_bytes())
    raw[1000] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "checkpoint").write_text("kept")
    result = run_script("main.py", "--data_dir", data_dir, "--model_dir", model_dir,
                        "--export_dir", tmp_path / "export", "--steps", 10)
    assert_one_line_error(result, "train-5k-images-idx3-ubyte.gz is corrupt")
    assert (model_dir / "checkpoint").read_text() == "kept"
    assert [p.name for p in model_dir.iterdir()] == ["checkpoint"]  # the trainer's lock released
    assert versions.versions(tmp_path / "export") == []


def test_truncated_idx_file_is_reported_not_crashed_on(tmp_path):
    import gzip
    bad = tmp_path / "bad.gz"
    header = b"\0\0\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    bad.write_bytes(gzip.compress(header + b"\0" * 100))
    with pytest.raises(mnist.DataError, match="header says"):
        mnist.read_idx(bad)
