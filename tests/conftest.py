"""Shared fixtures: the repository's paths, a runner for src/ scripts, and one small trained model."""
import subprocess
import sys

import pytest

from tfk8s.cli import child_env
from tfk8s.paths import REPO, SRC


def run_script(script, *args, env=None, timeout=600, cwd=REPO):
    """Run `python src/<script> args...` as a user would; return the CompletedProcess (text)."""
    full_env = {**child_env(), **(env or {})}
    return subprocess.run([sys.executable, str(SRC / script), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    """A failed command: non-zero exit, no traceback, its last stderr line starts with 'error:'."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """Train the real CNN for a few hundred steps on the shipped mini data, once per session.

    Returns a dict with model_dir, export_dir, version (the export's path) and the trainer's stdout.
    """
    root = tmp_path_factory.mktemp("trained")
    model_dir, export_dir = root / "model", root / "export"
    result = run_script("main.py", "--steps", 300, "--eval_every", 150, "--checkpoint_every", 150,
                        "--hidden_layers", 2, "--model_dir", model_dir, "--export_dir", export_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    versions = sorted(p for p in export_dir.iterdir() if p.name.isdigit())
    assert len(versions) == 1
    return {"model_dir": model_dir, "export_dir": export_dir, "version": versions[0], "stdout": result.stdout}
