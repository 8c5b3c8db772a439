"""The pins: requirements*.txt name the direct dependencies, requirements*.lock pin every package with hashes.

`make lock` writes the locks from the .txt files; `make venv` and the image install the locks with
--require-hashes. These checks run offline: they read the files, and the installed .venv.
"""
import importlib.util
import re
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    return {normal(name): version for name, version in PIN.findall(path.read_text())}


def entries(path):
    """Each lock entry: its requirement line and its --hash lines, as one block."""
    return [block for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()) if PIN.match(block)]


@pytest.mark.parametrize("source, lock", [("requirements.txt", "requirements.lock"),
                                          ("requirements-dev.txt", "requirements-dev.lock"),
                                          ("requirements-notebook.txt", "requirements-notebook.lock")])
def test_every_direct_pin_is_in_its_lock_at_the_same_version(source, lock):
    direct, locked = pins(REPO / source), pins(REPO / lock)
    if source == "requirements-dev.txt":
        direct |= pins(REPO / "requirements.txt")  # -r requirements.txt
    assert direct, source
    assert {name: locked.get(name) for name in direct} == direct


def test_the_image_lock_and_the_development_lock_agree_on_every_shared_package():
    image, dev = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    assert image.keys() <= dev.keys()
    assert {name: dev[name] for name in image} == image


def test_the_notebook_lock_keeps_every_version_the_image_and_the_tests_run_on():
    """The notebook image installs requirements-notebook.lock over the trainer's /opt/venv: a package both hold
    must not change version there (nor differ from the one the notebook tests ran on)."""
    notebook, dev = pins(REPO / "requirements-notebook.lock"), pins(REPO / "requirements-dev.lock")
    shared = notebook.keys() & dev.keys()
    assert {"ipykernel", "jinja2", "pyyaml", "nbformat"} <= shared
    assert {name: notebook[name] for name in shared} == {name: dev[name] for name in shared}


def test_make_lab_installs_the_jupyterlab_the_notebook_image_runs():
    """`make lab` (the laptop) and the cluster's JupyterLab (the notebook image) are one version."""
    lab = re.search(r"^JUPYTERLAB \?= jupyterlab==(\S+)$", (REPO / "make" / "local.mk").read_text(), re.M)
    assert lab and pins(REPO / "requirements-notebook.txt") == {"jupyterlab": lab[1]}


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock", "requirements-notebook.lock"])
def test_every_locked_package_carries_sha256_hashes(lock):
    blocks = entries(REPO / lock)
    assert len(blocks) > 20
    for block in blocks:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]


def test_the_virtualenv_holds_exactly_the_locked_versions_for_this_platform():
    locked = {}
    for block in entries(REPO / "requirements-dev.lock"):
        requirement = Requirement(block.splitlines()[0].rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate():
            locked[normal(requirement.name)] = str(requirement.specifier).removeprefix("==")
    installed = {normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert {name: installed.get(name) for name in locked} == locked


def test_the_virtualenv_is_compiled_so_no_process_compiles_tensorflow_again():
    """make/venv.sh compiles every module at install. A Python run with PYTHONDONTWRITEBYTECODE=1 (set on many
    machines) writes no .pyc of its own, so without them every trainer, server and replica would compile
    TensorFlow's modules again as it imports them (measured: 11 s of CPU per `import tensorflow`, 4 s with
    them)."""
    site = Path(sysconfig.get_path("purelib"))
    sources = [p for package in ("tensorflow", "tf_keras", "numpy", "grpc") for p in (site / package).rglob("*.py")]
    missing = [str(p.relative_to(site)) for p in sources if not Path(importlib.util.cache_from_source(p)).exists()]
    assert len(sources) > 1000 and not missing, f"{len(missing)} of {len(sources)} modules not compiled: {missing[:5]}"
