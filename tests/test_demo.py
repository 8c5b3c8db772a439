"""src/demo.py (`make demo`): train, export, serve and predict the ten sample digits in one command.

The real trainer, model server and client run as processes; the demo must
always stop the server it started, and a second run must reuse the export.
"""
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from support import REPO, SRC, assert_one_line_error, run_script, server_processes
from tfk8s import demo
from tfk8s.serving import process as serve

STEPS = 300  # shorter runs vary a lot: one 100-step run reached 35% test accuracy, 150-step runs 93-96%
ROW = re.compile(r"^data/(\d)\.png\s+(\d)\s+(\d+\.\d+)%", re.M)


def served_ports(stdout):
    """The gRPC and REST ports of the `python src/serve.py ...` line the demo printed."""
    line = next(line for line in stdout.splitlines() if line.startswith("python src/serve.py"))
    return int(re.search(r"--port (\d+)", line).group(1)), int(re.search(r"--rest_api_port (\d+)", line).group(1))


def assert_nothing_listens(port):
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"


def versions(workdir):
    return sorted(p.name for p in (workdir / "export").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One demo from nothing: a short training into a fresh workdir, then serving and predicting."""
    workdir = tmp_path_factory.mktemp("demo")
    result = run_script("demo.py", "--steps", STEPS, "--workdir", workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result


@pytest.mark.slow
def test_demo_trains_then_predicts_every_sample_digit_with_the_served_model(first_run):
    workdir, result = first_run
    out = result.stdout
    assert f"step    {STEPS}/{STEPS}" in out and "exported " in out  # the trainer's own progress
    assert re.search(r"^model mnist AVAILABLE after \d+\.\ds: gRPC 127.0.0.1:\d+", out, re.M)
    rows = ROW.findall(out)
    assert sorted(int(file) for file, _, _ in rows) == list(range(10)), out
    assert all(0 < float(probability) <= 100 for _, _, probability in rows)
    correct = sum(file == predicted for file, predicted, _ in rows)
    # The printed figure, exactly the rows' count of right answers, out of the number of images shown.
    printed, judged = map(int, re.search(r"^(\d+)/(\d+) correct$", out, re.M).groups())
    assert (printed, judged) == (correct, len(rows)), out
    assert 9 <= printed <= judged, out  # real, clearly written test digits; 300 steps reach ~97% test accuracy
    assert len(versions(workdir)) == 1


@pytest.mark.slow
def test_demo_stops_the_model_server_when_it_is_done(first_run):
    workdir, result = first_run
    assert "model server stopped" in result.stdout
    assert not server_processes(workdir)
    for port in served_ports(result.stdout):
        assert_nothing_listens(port)


@pytest.mark.slow
def test_a_second_demo_reuses_the_export_instead_of_training(first_run):
    workdir, first = first_run
    before = versions(workdir)
    result = run_script("demo.py", "--steps", STEPS, "--workdir", workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reusing the export" in result.stdout
    assert "src/main.py" not in result.stdout and not re.search(r"^step\s+\d+/", result.stdout, re.M)
    assert versions(workdir) == before
    assert len(ROW.findall(result.stdout)) == 10
    assert not server_processes(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_demo_still_stops_the_model_server(first_run, sig, code):
    """Ctrl-C (SIGINT) or `kill` (SIGTERM) while the server starts: the demo stops it before exiting."""
    workdir, _ = first_run
    demo = subprocess.Popen([sys.executable, str(SRC / "demo.py"), "--workdir", str(workdir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in demo.stdout:
            if line.startswith("starting the model server"):
                break
        started = time.monotonic()
        while not server_processes(workdir) and time.monotonic() - started < 30:
            time.sleep(0.1)
        assert server_processes(workdir), "the demo did not start a model server"
        demo.send_signal(sig)
        _, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: "), err
    assert not server_processes(workdir)


@pytest.mark.slow
def test_an_export_the_server_cannot_load_is_a_one_line_error_and_no_server_is_left(tmp_path):
    (tmp_path / "export" / "1").mkdir(parents=True)
    (tmp_path / "export" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = run_script("demo.py", "--workdir", tmp_path, timeout=300)
    assert_one_line_error(result, "the model server did not start", "--retrain")
    assert not server_processes(tmp_path)


def test_demo_rejects_a_non_positive_step_count():
    assert_one_line_error(run_script("demo.py", "--steps", 0), "--steps must be positive")


@pytest.mark.slow  # the children are the real trainer and model server, stopped as they start
@pytest.mark.parametrize("child", ["model server", "trainer"])
def test_a_kill_that_arrives_while_a_child_starts_still_stops_the_child(tmp_path, monkeypatch, child):
    """SIGTERM taken inside subprocess.Popen, the child already running but its Popen object not yet returned:
    the demo must stop that child all the same (under load, an interrupted demo once exited and left its model
    server running). The signal is raised at that very point, so the window is hit every time."""
    started, real_popen = [], subprocess.Popen

    def popen_then_signalled(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        signal.raise_signal(signal.SIGTERM)  # the demo's handler raises here, unless the signal is held
        return started[-1]

    previous = signal.signal(signal.SIGTERM, demo.terminated)
    monkeypatch.setattr(subprocess, "Popen", popen_then_signalled)
    try:
        with pytest.raises(demo.TerminatedError):
            if child == "model server":
                with serve.running(tmp_path / "export", "mnist", timeout=60):
                    pass
            else:
                demo.relay("main.py", ["--steps", 1, "--model_dir", tmp_path / "model", "--export_dir", tmp_path / "e"])
        assert len(started) == 1
        assert started[0].poll() is not None, f"the {child} (pid {started[0].pid}) was left running"
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in started:
            process.kill()
            process.wait()
