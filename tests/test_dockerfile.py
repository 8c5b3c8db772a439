"""The trainer image's recipe: lint-clean, pinned, cache-friendly, non-root, and fed the files it needs.

No Docker engine runs here (nor in CI), so the image is checked through its
parts: hadolint on the Dockerfile, the build context computed with Docker's
own .dockerignore rules (docker-py), and the build's data step against the
trainer's data module.
"""
import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from support import REPO

DOCKERFILE = REPO / "src" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
FULL_TRAINING = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}


def instructions():
    """(INSTRUCTION, arguments) in order, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def index(instruction, containing=""):
    return next(i for i, (name, args) in enumerate(instructions()) if name == instruction and containing in args)


def build_context():
    """The files `docker build -f src/Dockerfile .` sends, by .dockerignore's rules."""
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return {path.replace("\\", "/") for path in exclude_paths(str(REPO), patterns, dockerfile="src/Dockerfile")
            if (REPO / path).is_file()}


def test_hadolint_finds_nothing_at_warning_level():
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_an_unpinned_base_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace(instructions()[0][1], "python:latest", 1))
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "warning", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_base_image_is_python_3_11_slim_pinned_by_version_and_digest():
    (name, base), = [i for i in instructions() if i[0] == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base


def test_dependencies_are_installed_in_their_own_layer_before_the_code():
    steps = instructions()
    copy_requirements = index("COPY", "requirements.lock")
    install = index("RUN", "pip install")
    copy_code = index("COPY", "src/ src/")
    assert steps[copy_requirements][1] == "requirements.lock ."
    assert copy_requirements < install < copy_code
    command = steps[install][1]
    assert "--no-cache-dir" in command and "--require-hashes -r requirements.lock" in command
    assert copy_code == max(i for i, (name, _) in enumerate(steps) if name in ("COPY", "ADD", "RUN"))


def test_full_mnist_is_downloaded_and_verified_at_build_time_by_the_trainers_own_module():
    steps = instructions()
    download = index("RUN", "mnist_data.py")
    # Before the download: the shipped data (the test set is verified, not downloaded) and only the data modules.
    copied = [args for name, args in steps[:download] if name == "COPY"]
    assert "data/*.gz data/" in copied and "src/mnist_data.py src/" in copied
    assert any("src/tfk8s/cli.py" in args and "src/tfk8s/mnist.py" in args for args in copied)
    assert download < index("COPY", "src/ src/")
    command = steps[download][1]
    assert "python src/mnist_data.py --download full --data_dir data" in command
    # The download writes 0600 files as root: the step must leave them readable by uid 1000.
    assert command.endswith("&& chmod 0644 data/*.gz")


class Garbage(http.server.BaseHTTPRequestHandler):
    """A mirror that answers every file with the wrong bytes."""

    def do_GET(self):
        body = b"not mnist" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_build_step_fails_when_the_downloaded_data_does_not_verify(tmp_path):
    """Run the data step as the build would (in /app's layout), against a mirror serving the wrong bytes."""
    steps = instructions()
    app = tmp_path / "app"
    for name, args in steps[:index("RUN", "mnist_data.py")]:
        if name == "COPY" and args != "requirements.lock .":
            *sources, destination = shlex.split(args)
            (app / destination).mkdir(parents=True, exist_ok=True)
            for source in sources:
                for path in REPO.glob(source):
                    if path.name not in FULL_TRAINING:  # as in a fresh clone: a local full download stays out
                        shutil.copy(path, app / destination / path.name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/"
        command = steps[index("RUN", "mnist_data.py")][1].replace("python ", f"{sys.executable} ", 1) \
            .replace("--data_dir data", f"--data_dir data --mirror {mirror}")
        result = subprocess.run(["sh", "-c", command], cwd=app, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert result.returncode != 0
    assert "error: could not download train-images-idx3-ubyte.gz" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing half-downloaded or unverified is left behind: only the shipped files.
    assert sorted(p.name for p in (app / "data").iterdir()) == sorted(
        p.name for p in REPO.glob("data/*.gz") if p.name not in FULL_TRAINING)


def test_image_runs_the_trainer_as_uid_1000_with_unbuffered_output():
    steps = instructions()
    user = [args for name, args in steps if name == "USER"]
    assert user and user[-1].split(":")[0] == "1000"
    assert index("USER") > index("RUN", "pip install")
    (entrypoint,) = [args for name, args in steps if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "/app/src/main.py"]
    env = " ".join(args for name, args in steps if name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "TF_CPP_MIN_LOG_LEVEL=" in env
    assert ("WORKDIR", "/app") in steps
    assert "--uid 1000" in steps[index("RUN", "useradd")][1]


def test_build_context_holds_what_the_image_copies_and_nothing_else():
    context = build_context()
    for name, args in instructions():
        if name == "COPY":
            for source in shlex.split(args)[:-1]:
                source = source.rstrip("/")
                matched = [p for p in context if fnmatch.fnmatch(p, source) or p.startswith(source + "/")]
                assert matched, f"COPY {source}: not in the build context"
    expected = {"requirements.lock", "src/main.py", "src/batch_predict.py", "src/mnist_data.py", "src/tfk8s/cli.py",
                "src/tfk8s/mnist.py", "src/tfk8s/trainer/train.py", "src/tfk8s/trainer/cluster.py",
                "src/tfk8s/trainer/export.py", "src/tfk8s/trainer/model.py", "src/tfk8s/serving/batch.py",
                "data/train-5k-images-idx3-ubyte.gz", "data/t10k-images-idx3-ubyte.gz"}
    assert expected <= context
    for path in context - {".dockerignore", "src/Dockerfile"}:  # Docker always sends these two
        assert path.split("/")[0] in ("requirements.lock", "src", "data"), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
    assert not {p for p in context if p.startswith(("tests/", "kube/", ".venv/", ".git/", "runs/"))}


@pytest.mark.slow  # the trainer's modules load TensorFlow
def test_the_image_holds_every_module_its_commands_import(tmp_path):
    """The trainer and batch scoring, imported from a copy of the build context alone (as in /app)."""
    app = tmp_path / "app"
    for path in build_context():
        (app / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, app / path)
    code = ("import tfk8s, tfk8s.trainer.train, tfk8s.serving.batch, tfk8s.trainer.flags; "
            "print(tfk8s.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=app, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(app / "src")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(app / "src" / "tfk8s" / "__init__.py")
    # And nothing the pods never run: no local server, client, sweep, benchmarks or the 576 KB TFJob schema.
    assert not {p for p in build_context() if p.startswith(("src/tfk8s/kube", "src/tfk8s/sweep", "src/tfk8s/bench",
                                                           "src/serve.py", "src/tfk8s/serving/server"))}


@pytest.mark.parametrize("junk", ["src/__pycache__/x.cpython-311.pyc", "data/.train-images-idx3-ubyte.gz.abc.part"])
def test_build_context_leaves_out_bytecode_and_partial_downloads(junk):
    path = REPO / junk
    existed = path.exists()
    path.parent.mkdir(exist_ok=True)
    try:
        path.touch()
        assert junk not in build_context()
    finally:
        if not existed:
            path.unlink()


def test_build_context_is_small():
    sizes = sum((REPO / p).stat().st_size for p in build_context()
                if not p.startswith(("data/train-images", "data/train-labels")))  # a local full download may be there
    assert sizes < 20 * 2**20, f"{sizes / 2**20:.1f} MiB"
