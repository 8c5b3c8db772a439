"""The trainer image's recipe: lint-clean, pinned, cache-friendly, non-root, and fed the files it needs.

Checked through its parts, without an engine: hadolint on the Dockerfile, its
stages, the build context computed with Docker's own .dockerignore rules
(docker-py), and the build's data step against the trainer's data module. The
image itself is built and run in tests/test_image.py.
"""
import ast
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


def stages():
    """{stage name: (FROM argument, [(INSTRUCTION, arguments), ...])} in order."""
    found, current = {}, None
    for name, args in instructions():
        if name == "FROM":
            image, _, current = args.partition(" AS ")
            found[current.strip()] = (image.strip(), [])
        elif current is not None:
            found[current][1].append((name, args))
    return found


def test_every_stage_starts_from_the_base_argument_whose_default_is_pinned_by_version_and_digest():
    args = dict(a.split("=", 1) for name, a in instructions() if name == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["BASE"]), args["BASE"]
    # hadolint cannot see through an argument: a tag alone (or :latest) must fail here instead.
    assert {image for image, _ in stages().values()} == {"${BASE}", "${RUNTIME}", "image"}
    assert args["RUNTIME"] == "runtime"
    assert list(stages()) == ["deps", "data", "runtime", "image", "notebook", "trainer"]


def test_a_build_without_target_makes_the_attendees_image_unchanged():
    """make build and Cloud Build give no --target: the last stage is built, and it is the `image` stage as is."""
    assert list(stages())[-1] == "trainer" and stages()["trainer"] == ("image", [])


def test_the_attendees_stage_adds_the_code_alone_on_the_runtime_stage():
    image, steps = stages()["image"]
    assert image == "${RUNTIME}"
    assert [name for name, _ in steps] == ["WORKDIR", "COPY", "USER", "ENTRYPOINT"]
    assert ("COPY", "src/ src/") in steps
    _, runtime = stages()["runtime"]
    copies = [args for name, args in runtime if name == "COPY"]
    assert copies == ["--from=deps /opt/venv /opt/venv", "--from=data /app/data /app/data"]
    assert [name for name, _ in runtime].count("RUN") == 1  # the user: one small layer besides the two copies


def test_dependencies_are_installed_from_the_hashed_lock_with_no_cache_left_in_a_layer():
    _, steps = stages()["deps"]
    assert ("COPY", "requirements.lock /tmp/requirements.lock") in steps
    (command,) = [args for name, args in steps if name == "RUN"]
    assert "--require-hashes -r /tmp/requirements.lock" in command
    assert "--mount=type=cache,target=/root/.cache/pip" in command  # pip's downloads stay out of the layer
    assert "--mount=type=secret,id=ca" in command and "PIP_CERT=/run/secrets/ca" in command
    assert "pip uninstall --yes libclang setuptools wheel pip" in command and "-name tests -exec rm -rf" in command


def test_full_mnist_is_downloaded_and_verified_at_build_time_by_the_trainers_own_module():
    _, steps = stages()["data"]
    download = next(i for i, (name, args) in enumerate(steps) if name == "RUN")
    # Before the download: the shipped data (the test set is verified, not downloaded) and only the data modules.
    copied = [args for name, args in steps[:download] if name == "COPY"]
    assert "data/*.gz data/" in copied and "src/mnist_data.py src/" in copied
    assert any("src/tfk8s/cli.py" in args and "src/tfk8s/mnist.py" in args for args in copied)
    assert ("ARG", "DATASET=full") in steps[:download]
    command = steps[download][1]
    assert 'if [ "$DATASET" = full ]; then python src/mnist_data.py --download full --data_dir data; fi' in command
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
    _, steps = stages()["data"]
    download = next(i for i, (name, args) in enumerate(steps) if name == "RUN")
    app = tmp_path / "app"
    for name, args in steps[:download]:
        if name == "COPY":
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
        command = steps[download][1].removeprefix("--mount=type=secret,id=ca ").replace(
            "python ", f"{sys.executable} ", 1).replace("--data_dir data", f"--data_dir data --mirror {mirror}")
        result = subprocess.run(["sh", "-c", command], cwd=app, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "DATASET": "full"})
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
    user = [args for name, args in stages()["image"][1] if name == "USER"]
    assert user and user[-1].split(":")[0] == "1000"
    assert index("USER") > index("RUN", "pip install")
    (entrypoint,) = [args for name, args in stages()["image"][1] if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "/app/src/main.py"]
    env = " ".join(args for name, args in steps if name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "TF_CPP_MIN_LOG_LEVEL=" in env
    assert ("WORKDIR", "/app") in steps
    assert "--uid 1000" in steps[index("RUN", "useradd")][1]


def test_build_context_holds_what_the_image_copies_and_nothing_else():
    context = build_context()
    for name, args in instructions():
        if name == "COPY" and not args.startswith("--from="):
            for source in [word for word in shlex.split(args)[:-1] if not word.startswith("--")]:
                source = source.rstrip("/")
                matched = [p for p in context if fnmatch.fnmatch(p, source) or p.startswith(source + "/")]
                assert matched, f"COPY {source}: not in the build context"
    expected = {"requirements.lock", "src/main.py", "src/batch_predict.py", "src/mnist_data.py", "src/tfk8s/cli.py",
                "src/tfk8s/mnist.py", "src/tfk8s/trainer/train.py", "src/tfk8s/trainer/cluster.py",
                "src/tfk8s/trainer/export.py", "src/tfk8s/trainer/model.py", "src/tfk8s/serving/batch.py",
                "data/train-5k-images-idx3-ubyte.gz", "data/t10k-images-idx3-ubyte.gz"}
    assert expected <= context
    for path in context - {".dockerignore", "src/Dockerfile"} - {"notebooks/pipeline.ipynb", "kube/model-config.yaml"}:
        assert path.split("/")[0] in ("requirements.lock", "requirements-notebook.lock", "src", "data"), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
    # The notebook image's workspace seed: its notebook and the model config its model_config.py starts from.
    assert {p for p in context if p.startswith(("notebooks/", "kube/"))} == {"notebooks/pipeline.ipynb",
                                                                            "kube/model-config.yaml"}
    assert not {p for p in context if p.startswith(("tests/", ".venv/", ".git/", "runs/"))}


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
    # And nothing the pods never run: no local server, client, sweep, benchmarks or the 576 KB TFJob schema. Of
    # tfk8s.kube, only the process handling the pipeline command's --local shares with the local TFJob runner.
    assert not {p for p in build_context() if p.startswith(("src/tfk8s/sweep", "src/tfk8s/bench", "src/serve.py",
                                                           "src/tfk8s/serving/server", "src/tfk8s/kube/schemas"))}
    assert {p for p in build_context() if p.startswith("src/tfk8s/kube/")} == {
        f"src/tfk8s/kube/{name}.py" for name in ("__init__", "reaper", "tfjob_check", "tfjob_local")}


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


# ---------------------------------------------------------------- the notebook image (--target notebook)

def test_the_notebook_stage_adds_jupyterlab_from_its_hashed_lock_with_no_cache_or_lock_in_a_layer():
    image, steps = stages()["notebook"]
    assert image == "image"  # the trainer's image: its /opt/venv is the kernel's Python
    (command,) = [args for name, args in steps if name == "RUN" and "pip" in args]
    assert "--mount=type=bind,source=requirements-notebook.lock,target=/tmp/requirements-notebook.lock" in command
    assert "--require-hashes -r /tmp/requirements-notebook.lock" in command
    assert "--python /opt/venv/bin/python" in command
    assert "--mount=type=cache,target=/root/.cache/pip" in command
    assert "--mount=type=secret,id=ca" in command and "PIP_CERT=/run/secrets/ca" in command
    # Only this stage installs the notebook's lock: the trainer's image is as it was.
    assert [name for name, args in instructions() if "requirements-notebook.lock" in args] == ["RUN"]


def test_the_notebook_stage_runs_as_uid_1000_with_its_home_and_the_workspace_seed():
    _, steps = stages()["notebook"]
    users = [args for name, args in steps if name == "USER"]
    assert users == ["0:0", "1000:1000"]  # root only to install; then the user every pod runs as
    assert steps.index(("USER", "1000:1000")) > max(i for i, (name, _) in enumerate(steps) if name in ("RUN", "COPY"))
    env = " ".join(args for name, args in steps if name == "ENV")
    assert "HOME=/home/app" in env and "SHELL=/bin/bash" in env
    assert ("WORKDIR", "/app/workspace") in steps
    copies = [args for name, args in steps if name == "COPY"]
    assert copies == ["--chown=1000:1000 src/ src/", "--chown=1000:1000 notebooks/pipeline.ipynb notebooks/",
                      "--chown=1000:1000 kube/model-config.yaml kube/", "--chown=1000:1000 data/*.png data/"]
    assert any(name == "RUN" and args.startswith("cp -r /app/data/. data/") for name, args in steps)
    command = json.loads(next(args for name, args in steps if name == "CMD"))
    assert command[:2] == ["jupyter", "lab"] and "--ip=127.0.0.1" in command


SEED_COMMANDS = ("src/main.py", "src/batch_predict.py", "src/model_config.py", "src/flow.py")


def imported_modules(path):
    """The tfk8s modules a Python file imports (every `import` and `from ... import` in it, at any depth)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(REPO / "src").parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def module_file(name):
    path = REPO / "src" / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return str(candidate.relative_to(REPO))
    return None


def test_the_workspace_seed_holds_every_module_the_pipeline_commands_import():
    """Read, not run: each command of the workspace and every tfk8s module it imports, transitively, is in the
    build context (the seed's src/ is the context's). A module the context lacks is an ImportError in a step."""
    context = build_context()
    todo = [c for c in SEED_COMMANDS if (REPO / c).is_file()]
    assert len(todo) >= 3, todo  # src/flow.py: once the pipeline command is there
    seen = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(REPO / path):
            parts = name.split(".")
            if parts[0] != "tfk8s":
                continue
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found:
                    todo.append(found)
    assert "src/tfk8s/serving/model_config.py" in seen and "src/tfk8s/trainer/train.py" in seen
    assert sorted(seen - context) == []
