"""Resuming a model_dir whose newest checkpoint is damaged: named in one line, resumed from the newest intact one,
the older ones untouched; none intact, or a model of another shape: one line, nothing changed."""
import os
import re
import shutil

import pytest

from support import assert_one_line_error, run_script, tree_digest
from tfk8s import versions

# The trained_model fixture's flags: 300 steps, checkpoints at 150 and 300.
FLAGS = ["--steps", 300, "--eval_every", 150, "--checkpoint_every", 150, "--hidden_layers", 2]
DATA = "ckpt-{}.data-00000-of-00001"


def copy(trained_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model["model_dir"], model_dir)
    assert (model_dir / "ckpt-150.index").exists() and (model_dir / "ckpt-300.index").exists()
    return model_dir


def files_of(model_dir, step):
    return {p.name: p.read_bytes() for p in model_dir.glob(f"ckpt-{step}.*")}


def index_missing(model_dir):
    (model_dir / "ckpt-300.index").unlink()
    return "ckpt-300: its index is missing"


def state_names_a_missing_checkpoint(model_dir):
    for p in model_dir.glob("ckpt-300.*"):
        p.unlink()
    assert 'model_checkpoint_path: "ckpt-300"' in (model_dir / "checkpoint").read_text()
    return "ckpt-300: its index is missing"


def truncated_data(model_dir):
    data = model_dir / DATA.format(300)
    os.truncate(data, data.stat().st_size // 2)
    return "ckpt-300: its data does not read back"


def garbage_index(model_dir):
    index = model_dir / "ckpt-300.index"
    index.write_bytes(os.urandom(index.stat().st_size))
    return "ckpt-300: its index is unreadable"


@pytest.mark.slow
@pytest.mark.parametrize("damage", [index_missing, state_names_a_missing_checkpoint, truncated_data, garbage_index])
def test_a_damaged_newest_checkpoint_is_named_and_training_resumes_from_the_intact_one(damage, trained_model,
                                                                                      tmp_path):
    model_dir = copy(trained_model, tmp_path)
    reason = damage(model_dir)
    older, damaged = files_of(model_dir, 150), files_of(model_dir, 300)
    result = run_script("main.py", *FLAGS, "--model_dir", model_dir, "--export_dir", tmp_path / "export")
    assert result.returncode == 0, result.stdout + result.stderr
    named = [line for line in result.stdout.splitlines() if line.startswith("damaged checkpoint")]
    assert len(named) == 1 and reason in named[0] and "resuming from ckpt-150" in named[0], result.stdout
    assert re.search(r"resuming from .*ckpt-150 at step 150\n", result.stdout), result.stdout
    steps = [int(s) for s in re.findall(r"^step +(\d+)/300", result.stdout, re.M)]
    # Trained again from 150, not from 0: the progress lines (every 100 steps) start past 150 and end at 300.
    assert steps and steps[0] > 150 and steps[-1] == 300, result.stdout
    assert len(versions.versions(tmp_path / "export")) == 1
    assert files_of(model_dir, 150) == older  # byte-identical
    assert (model_dir / "ckpt-300.index").exists()  # the new checkpoint of step 300...
    moved = {p.name: p.read_bytes() for p in (model_dir / "damaged").glob("*/ckpt-300.*")}
    assert moved == damaged  # ...beside the damaged one, kept as it was


@pytest.mark.slow
def test_an_unreadable_state_file_is_named_and_the_newest_intact_checkpoint_resumed(trained_model, tmp_path):
    model_dir = copy(trained_model, tmp_path)
    (model_dir / "checkpoint").write_bytes(b"model_checkpoint_path: \x00\xff garbage {{{\n")
    checkpoints = {**files_of(model_dir, 150), **files_of(model_dir, 300)}
    result = run_script("main.py", *FLAGS, "--model_dir", model_dir, "--export_dir", tmp_path / "export")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the state file checkpoint does not parse" in result.stdout
    assert re.search(r"resuming from .*ckpt-300 at step 300\n", result.stdout), result.stdout
    assert {**files_of(model_dir, 150), **files_of(model_dir, 300)} == checkpoints
    assert 'model_checkpoint_path: "ckpt-300"' in (model_dir / "checkpoint").read_text()


@pytest.mark.slow
def test_no_intact_checkpoint_stops_in_one_line_and_changes_nothing(trained_model, tmp_path):
    model_dir = copy(trained_model, tmp_path)
    (model_dir / "ckpt-150.index").unlink()
    truncated_data(model_dir)
    before = tree_digest(model_dir)
    result = run_script("main.py", *FLAGS, "--model_dir", model_dir, "--export_dir", tmp_path / "export")
    assert_one_line_error(result, "holds no intact checkpoint", "ckpt-300: its data does not read back",
                          "ckpt-150: its index is missing")
    assert result.returncode == 1
    assert tree_digest(model_dir) == before


@pytest.mark.slow
def test_resuming_with_another_hidden_layers_names_the_shape_mismatch(trained_model, tmp_path):
    model_dir = copy(trained_model, tmp_path)
    before = tree_digest(model_dir)
    result = run_script("main.py", *FLAGS[:-1], 3, "--model_dir", model_dir, "--export_dir", tmp_path / "export")
    assert_one_line_error(result, "holds a model of another shape",
                          "it was trained with --hidden_layers 2, this run has 3")
    assert result.returncode == 1
    assert tree_digest(model_dir) == before
