"""Where the trainer writes, when that goes wrong: one line, a non-zero exit, nothing already saved lost.

Real conditions, not mocks: a read-only volume and small disks are real
mounts (a read-only bind mount, tmpfs) made in a user and mount namespace of
the test's own (`unshare`, no root needed); the trainer runs inside it
(`nsenter`) and the test reads its files through /proc/PID/root. A second
trainer, a kill -9 during the export and a disk that fills up are real
processes and signals. Checkpoints are compared byte for byte.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import SRC, Namespace, assert_one_line_error, run_script, wait_for
from tfk8s import versions
from tfk8s.cli import child_env
from tfk8s.trainer.lock import LOCK_NAME

SHORT = ("--hidden_layers", 2, "--eval_every", 10, "--checkpoint_every", 10)


def trainer(*args):
    return [sys.executable, str(SRC / "main.py"), *map(str, args)]


@pytest.fixture
def namespace():
    ns = Namespace()
    yield ns
    ns.close()


def contents(directory):
    """{relative path: bytes} of every file under `directory`: what 'nothing lost' is checked against."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def checkpoint_files(directory):
    return {name: data for name, data in contents(directory).items() if name.startswith(("ckpt-", "checkpoint"))}


# ---------------------------------------------------------------- checked before training (no TensorFlow)

@pytest.mark.parametrize("flag", ["--model_dir", "--export_dir"])
def test_a_directory_flag_naming_a_file_is_a_usage_error(tmp_path, flag):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    other = "--export_dir" if flag == "--model_dir" else "--model_dir"
    result = run_script("main.py", flag, target, other, tmp_path / "other")
    assert_one_line_error(result, f"{flag} {target} is a file, not a directory")
    assert result.returncode == 2 and target.read_text() == "keep me\n"
    result = run_script("main.py", flag, target / "sub", other, tmp_path / "other")
    assert_one_line_error(result, f"{flag} {target / 'sub'}: a part of the path is a file, not a directory")


@pytest.mark.parametrize("flag", ["--model_dir", "--export_dir"])
def test_a_read_only_directory_is_refused_before_training_and_its_files_stay(tmp_path, namespace, flag):
    volume = tmp_path / "volume"
    (volume / "existing").mkdir(parents=True)
    (volume / "existing" / "ckpt-10.index").write_bytes(b"saved before")
    namespace.read_only(volume)
    other = "--export_dir" if flag == "--model_dir" else "--model_dir"
    result = namespace.run(trainer(flag, volume / "existing", other, tmp_path / "other"))
    assert_one_line_error(result, f"cannot write in {flag} {volume / 'existing'}: Read-only file system; "
                                  "the volume is mounted read-only: mount it read-write or choose another directory")
    assert result.returncode == 1
    assert contents(volume) == {"existing/ckpt-10.index": b"saved before"}
    result = namespace.run(trainer(flag, volume / "new", other, tmp_path / "other"))
    assert_one_line_error(result, f"cannot create {flag} {volume / 'new'}: Read-only file system")


# ---------------------------------------------------------------- disks too small or filling up (training)

@pytest.mark.slow
def test_a_disk_too_small_for_one_checkpoint_is_refused_before_training(tmp_path, namespace):
    model_dir = tmp_path / "small"
    namespace.tmpfs(model_dir, "2m")
    result = namespace.run(trainer("--steps", 20, *SHORT, "--model_dir", model_dir, "--export_dir", tmp_path / "e"))
    assert_one_line_error(result, f"--model_dir {model_dir}: ", " MB free, less than this model needs there (",
                          " MB for one checkpoint): free space on it or choose another directory")
    assert result.returncode == 1 and "step " not in result.stdout
    assert contents(namespace.inside(model_dir)) == {}  # nothing written, the lock released


@pytest.mark.slow
def test_a_disk_that_fills_up_while_training_ends_in_one_line_with_the_checkpoints_intact(tmp_path, namespace):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    namespace.tmpfs(model_dir, "30m")  # room for two checkpoints of this model (13 MB each), not three
    seen = namespace.inside(model_dir)

    first = namespace.run(trainer("--steps", 10, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir))
    assert first.returncode == 0, first.stderr
    saved = checkpoint_files(seen)
    assert 10e6 < len(saved["ckpt-10.data-00000-of-00001"]) < 15e6  # the sizes this test's disk is made for

    second = namespace.run(trainer("--steps", 30, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir))
    assert_one_line_error(second, f"cannot save the checkpoint of step 30 in --model_dir {model_dir}: "
                                  "No space left on device; the last good checkpoint ckpt-20 is intact: "
                                  "run the same command again to resume from it; the disk is full")
    assert second.returncode == 1
    after = checkpoint_files(seen)
    assert {name: after[name] for name in saved if name != "checkpoint"} == \
        {name: data for name, data in saved.items() if name != "checkpoint"}  # ckpt-10, byte for byte
    assert b'model_checkpoint_path: "ckpt-20"' in after["checkpoint"]
    assert not [name for name in os.listdir(seen) if name.startswith("ckpt-30")]  # nothing half-written
    assert not (seen / LOCK_NAME).exists()

    namespace.sh(f"mount -o remount,size=60m {model_dir}")  # space freed: the same command resumes
    third = namespace.run(trainer("--steps", 30, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir))
    assert third.returncode == 0, third.stderr
    assert re.search(r"resuming from \S+ckpt-20 at step 20", third.stdout)
    assert len(versions.versions(export_dir)) == 2


@pytest.mark.slow
def test_an_export_dir_that_fills_up_while_training_loses_nothing_and_the_rerun_exports(tmp_path, namespace):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    namespace.tmpfs(export_dir, "10m")  # room for one export (6.6 MB) when training starts
    run = namespace.popen(trainer("--steps", 20, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir))
    output = []
    for line in run.stdout:
        output.append(line)
        if line.startswith("step     10/20"):
            break
    with open(namespace.inside(export_dir) / "filler", "wb") as filler:  # another program fills the disk
        try:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
        except OSError:
            pass
    output += run.stdout.readlines()
    run.wait(timeout=300)
    errors = [line for line in output if line.startswith("error: ")]
    assert run.returncode == 1 and "Traceback" not in "".join(output), "".join(output)
    assert errors == [output[-1]] and output[-1].startswith(
        f"error: cannot export the model in --export_dir {export_dir}: No space left on device; nothing "
        "half-written is left, and the checkpoint of step 20 is intact: run the same command again to export "
        "it without training; the disk is full"), output[-1]
    assert os.listdir(namespace.inside(export_dir)) == ["filler"]  # no half export, no .tmp-export-*
    assert (model_dir / "ckpt-20.index").exists()

    (namespace.inside(export_dir) / "filler").unlink()
    again = namespace.run(trainer("--steps", 20, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir))
    assert again.returncode == 0, again.stderr
    assert "already trained to step 20 of 20: evaluating and exporting" in again.stdout
    assert len(versions.versions(namespace.inside(export_dir))) == 1


# ---------------------------------------------------------------- a second trainer; a kill during the export

def all_stopped(pid):
    """Every thread of the process is stopped (state T in /proc/<pid>/task/*/stat)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass  # a thread that ended while we looked
    return bool(states) and all(state == "T" for state in states)


@pytest.mark.slow
def test_a_second_trainer_on_the_same_model_dir_is_refused_and_the_first_loses_nothing(tmp_path):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    first = subprocess.Popen(trainer("--steps", 60, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env())
    try:
        deadline = time.monotonic() + 300
        while not (model_dir / "ckpt-10.index").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.1)
        first.send_signal(signal.SIGSTOP)  # hold it still, so that its files can be compared
        # A write under way finishes before the stop takes hold: wait until every thread is stopped.
        wait_for(lambda: all_stopped(first.pid), "the first trainer stopped by SIGSTOP", timeout=60)
        before = contents(model_dir)
        second = run_script("main.py", "--steps", 60, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir)
        assert_one_line_error(second, f"--model_dir {model_dir} is in use by another trainer, pid {first.pid} on "
                                      "host ", "wait for it to finish, stop it, or choose another --model_dir")
        assert second.returncode == 1
        assert contents(model_dir) == before  # byte for byte: the second wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert len(versions.versions(export_dir)) == 1 and not (model_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_an_export_killed_midway_leaves_nothing_the_next_export_keeps(tmp_path):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    args = trainer("--steps", 10, *SHORT, "--model_dir", model_dir, "--export_dir", export_dir)
    run = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    deadline = time.monotonic() + 300
    while not list(export_dir.glob(".tmp-export-*")):
        assert run.poll() is None and time.monotonic() < deadline, "the export never started"
        time.sleep(0.001)
    run.kill()  # kill -9 while the SavedModel is being written
    run.wait()
    (abandoned,) = export_dir.glob(".tmp-export-*")
    assert versions.versions(export_dir) == []
    # Names TensorFlow Serving does not take for versions: the export must neither crash on them nor count them.
    for name in ("²", "99999999999999999999", "latest"):
        (export_dir / name).mkdir()

    again = subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"taking over the lock {model_dir / LOCK_NAME} of pid {run.pid}" in again.stdout
    assert f"removed {abandoned}, an export left unfinished by a process that ended" in again.stdout
    (version,) = versions.versions(export_dir)
    assert abs(version - time.time()) < 600  # the Unix time: the names above were not taken for versions
    assert sorted(os.listdir(export_dir)) == sorted([str(version), "²", "99999999999999999999", "latest"])


def test_an_unfinished_export_of_a_process_still_at_work_is_kept(tmp_path):
    from tfk8s.trainer.export import remove_abandoned
    old, busy = tmp_path / ".tmp-export-old", tmp_path / ".tmp-export-busy"
    for staging in (old, busy):
        (staging / "variables").mkdir(parents=True)
        (staging / "variables" / "variables.index").write_bytes(b"x")
    for path in (old, old / "variables", old / "variables" / "variables.index"):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    os.utime(busy, (time.time() - 3600, time.time() - 3600))  # but a file in it was written just now
    said = []
    remove_abandoned(tmp_path, said.append, started=time.time() - 60)
    assert sorted(os.listdir(tmp_path)) == [".tmp-export-busy"]
    assert said == [f"removed {old}, an export left unfinished by a process that ended"]


def test_no_version_past_int64_is_exported(tmp_path):
    import tf_keras as keras

    from tfk8s.cli import UserError
    from tfk8s.trainer.export import export_saved_model
    (tmp_path / str(2**63 - 1)).mkdir()
    with pytest.raises(UserError, match=f"holds version {2**63 - 1}, the highest that TensorFlow Serving reads"):
        export_saved_model(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                             keras.layers.Dense(10)]), tmp_path)
    assert os.listdir(tmp_path) == [str(2**63 - 1)]
