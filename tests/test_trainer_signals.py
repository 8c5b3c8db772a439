"""Ctrl-C while the trainer's steps run is taken between runs of steps, never inside TensorFlow's runtime (where
a KeyboardInterrupt can corrupt its heap and abort the process); a second Ctrl-C is taken at once."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfk8s.trainer import train


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler as soon as this call returns


def first_ctrl_c():
    try:
        ctrl_c()
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C was taken at once, inside the steps, not at the next check")


def test_ctrl_c_while_steps_run_is_taken_at_the_next_check():
    with train.ctrl_c_at_step_boundaries() as check:
        first_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_is_taken_at_once():
    with pytest.raises(KeyboardInterrupt), train.ctrl_c_at_step_boundaries():
        first_ctrl_c()
        ctrl_c()
        pytest.fail("the second Ctrl-C did not stop the block")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_after_the_last_check_is_taken_when_the_steps_end():
    with pytest.raises(KeyboardInterrupt), train.ctrl_c_at_step_boundaries() as check:
        check()
        first_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_where_ctrl_c_is_ignored_it_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with train.ctrl_c_at_step_boundaries() as check:
            first_ctrl_c()
            check()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_suite_sees_ctrl_c_even_when_it_is_started_with_ctrl_c_ignored(tmp_path):
    """`make test > log &` in a script starts pytest with SIGINT ignored: the suite (conftest.py) takes Ctrl-C
    back, for its tests and for the processes they start, or every test of Ctrl-C fails on how it was started."""
    (tmp_path / "test_sigint.py").write_text(textwrap.dedent("""\
        import signal, subprocess, sys

        def test_ctrl_c_is_seen_here_and_in_a_child():
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            child = subprocess.run([sys.executable, "-c", "import signal; "
                                    "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                                   capture_output=True, text=True, check=True)
            assert child.stdout == "True\\n", child.stdout
        """))
    # the suite's conftest.py as a plugin, on a test of its own (the real ones load TensorFlow)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             "-p", "conftest", "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "tmp"),
                             str(tmp_path / "test_sigint.py")],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                                              os.environ.get("PYTHONPATH", "")])},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout, result.stdout
