"""Ctrl-C while the trainer's steps run is taken between runs of steps, never inside TensorFlow's runtime (where
a KeyboardInterrupt can corrupt its heap and abort the process); a second Ctrl-C is taken at once."""
import os
import signal

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
