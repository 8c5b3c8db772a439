"""`flow.py run --local`: the pipeline's steps as real processes here, in stage order, side by side within a
stage, stopped at a failing step with its name, and nothing left running (no TensorFlow: tiny python steps)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from support import assert_one_line_error, reaped, wait_for
from tfk8s.cli import child_env
from tfk8s.paths import SRC

# One step: `python step.py NAME [ACTION ...]`, in the run's directory. It records its pid and that it started,
# then acts: wait=FILE (until FILE exists, 60 s at most, else exit 9), need=FILE (exit 5 unless FILE exists now),
# child (starts `sleep 300` in its group, records its pid), exit=N, hang (sleeps 300 s), outlive=NAME (until the
# step NAME has ended); then records it is done.
STEP = textwrap.dedent("""\
    import os, pathlib, subprocess, sys, time
    name, *actions = sys.argv[1:]
    pathlib.Path(f"{name}.pid").write_text(str(os.getpid()))
    pathlib.Path(f"{name}.started").touch()
    print(f"{name} started", flush=True)
    for action in actions:
        kind, _, value = action.partition("=")
        if kind == "wait":
            deadline = time.monotonic() + 60
            while not pathlib.Path(value).exists():
                if time.monotonic() > deadline:
                    print(f"{name}: {value} never came", flush=True)
                    sys.exit(9)
                time.sleep(0.02)
        elif kind == "need" and not pathlib.Path(value).exists():
            print(f"{name}: {value} is missing", flush=True)
            sys.exit(5)
        elif kind == "child":
            pathlib.Path(f"{name}.child").write_text(str(subprocess.Popen(["sleep", "300"]).pid))
        elif kind == "exit":
            print(f"{name} exits with {value}", flush=True)
            sys.exit(int(value))
        elif kind == "hang":
            time.sleep(300)
        elif kind == "outlive":  # until the step named `value` has ended (and been reaped)
            pid, deadline = int(pathlib.Path(f"{value}.pid").read_text()), time.monotonic() + 60
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.02)
    pathlib.Path(f"{name}.done").touch()
    print(f"{name} done", flush=True)
    """)


def flow(tmp_path, text, *extra, popen=False):
    (tmp_path / "step.py").write_text(STEP)
    command = [sys.executable, str(SRC / "flow.py"), "run", "-c", text, *extra]
    if popen:
        return subprocess.Popen(command, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=180)


def alive(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pids(tmp_path):
    """Every process a step started (its own and its child's), by the files they wrote."""
    return {p.name: int(p.read_text()) for p in [*tmp_path.glob("*.pid"), *tmp_path.glob("*.child")]}


def test_stages_in_order_pair_side_by_side(tmp_path):
    """Each step of the pair waits for the other to have started (only side by side can both finish); the third
    needs both done when it starts."""
    result = flow(tmp_path, "python step.py a wait=b.started & python step.py b wait=a.started"
                            " >> python step.py c need=a.done need=b.done", "--local")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[s1-step] a done" in lines and "[s1-step-2] b done" in lines and "[s2-step] c done" in lines, lines
    third = next(i for i, line in enumerate(lines) if line.startswith("[s2-step] Running"))
    assert lines.index("[s1-step] Succeeded") < third and lines.index("[s1-step-2] Succeeded") < third
    assert lines[-1].startswith("[pipeline] pipeline succeeded: 3 step(s) in 2 stage(s)")
    assert result.stderr == ""


def test_a_failing_step_stops_the_pipeline_and_its_sibling_finishes(tmp_path):
    """The sibling is still running when the failed step has ended (it waits for that), and it finishes."""
    result = flow(tmp_path, "python step.py bad child wait=sibling.started exit=3 & python step.py sibling "
                            "wait=bad.pid outlive=bad >> python step.py never", "--local")
    last = assert_one_line_error(result, "step s1-step failed: exit code 3", "not run: s2-step")
    assert result.returncode == 1, last
    lines = result.stdout.splitlines()
    assert "[s1-step] Failed: exit code 3" in lines
    assert "[pipeline] s1-step failed: s1-step-2 may finish; no further stage starts" in lines
    assert "[s1-step-2] sibling done" in lines and "[s1-step-2] Succeeded" in lines, lines  # it finished
    assert not (tmp_path / "never.started").exists()
    assert {"bad.pid", "bad.child", "sibling.pid"} <= set(pids(tmp_path))
    assert [name for name, pid in pids(tmp_path).items() if alive(pid)] == []  # its `sleep 300` too


def test_ctrl_c_stops_every_step_and_what_it_started(tmp_path):
    with reaped(flow(tmp_path, "python step.py one child hang & python step.py two hang >> python step.py never",
                     "--local", popen=True)) as process:
        wait_for(lambda: {"one.child", "two.pid"} <= set(pids(tmp_path)), "both steps started")
        os.kill(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            left = [name for name, pid in pids(tmp_path).items() if alive(pid)]
            pytest.fail(f"flow.py still runs 60 s after SIGINT; steps' processes left: {left}")
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted (SIGINT): stopped s1-step, s1-step-2"], err
    assert [name for name, pid in pids(tmp_path).items() if alive(pid)] == []
    assert not (tmp_path / "never.started").exists()
    assert "Traceback" not in err


def test_bad_input_is_one_line_and_nothing_runs(tmp_path):
    for text, fragment in [
        ("python step.py a >> >> python step.py b", "an empty step after '>>', before '>>'"),
        ("python step.py a &", "an empty step after '&', at the end"),
        (">> python step.py a", "an empty step at the start"),
        ("python step.py 'a", "unbalanced ' quote"),
        ("python step.py a >> no-such-command-xyz", "step s2-no-such-command-xyz: command not found"),
        ("python step.py a >> python missing.py", "step s2-missing: python missing.py: no such file in"),
        ("", "the pipeline is empty"),
        ("./step.py", "command not found: ./step.py (nothing executable in"),  # not executable
    ]:
        result = flow(tmp_path, text, "--local")
        assert result.returncode == 2, (text, result.stderr)
        assert_one_line_error(result, fragment)
        assert result.stdout == ""
        assert not (tmp_path / "a.started").exists(), text


def test_flags_that_do_not_go_together(tmp_path):
    assert_one_line_error(flow(tmp_path, "echo a", "--local", "--dry_run"), "not allowed with argument")
    assert_one_line_error(flow(tmp_path, "echo a", "--local", "--name", "x"), "--name names the Workflow")
    assert_one_line_error(flow(tmp_path, "echo a", "--pod", "p.json"), "--pod is for --dry_run")
