"""The suite's CPU log (TFK8S_TEST_CPU_LOG, docs/development.md): each Python process the tests start notes its CPU
at exit, and tests/cpu_report.py sums the notes by test file and by what ran."""
import json
import resource
import subprocess
import sys
from pathlib import Path

from support import assert_one_line_error, child_env

REPORT = Path(__file__).parent / "cpu_report.py"
BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def child(log, code, **kwargs):
    env = {**child_env(), "TFK8S_TEST_CPU_LOG": str(log), "PYTEST_CURRENT_TEST": "tests/test_x.py::test_y (call)"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          **kwargs)


def test_a_process_the_tests_start_notes_its_cpu_its_test_and_its_command(tmp_path):
    log = tmp_path / "cpu.jsonl"
    assert child(log, BUSY).returncode == 0
    assert child(log, "pass").returncode == 0
    stub = tmp_path / "stub"  # a module named tensorflow, found first (`-c` puts the working directory first)
    (stub / "tensorflow").mkdir(parents=True)
    (stub / "tensorflow" / "__init__.py").write_text("")
    assert child(log, "import tensorflow", cwd=stub).returncode == 0
    first, second, third = (json.loads(line) for line in log.read_text().splitlines())
    assert (second["tensorflow"], third["tensorflow"]) == (False, True)
    assert 0.3 <= first["cpu"] < 5, first
    assert second["cpu"] < first["cpu"], (first, second)
    assert first["tensorflow"] is False
    assert first["test"] == "tests/test_x.py::test_y"
    assert first["command"] == f"{sys.executable} -c {BUSY}".strip()


def test_a_note_that_cannot_be_written_changes_nothing_the_process_prints(tmp_path):
    log = tmp_path / "cpu.jsonl"
    log.write_text("x" * 100)  # past the child's file size cap below: its append fails with EFBIG
    result = child(log, "print('done')", preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")
    assert log.read_text() == "x" * 100


def report(*args):
    return subprocess.run([sys.executable, REPORT, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env=child_env())


def note(cpu, tensorflow, test, command):
    return json.dumps({"cpu": cpu, "tensorflow": tensorflow, "test": test, "command": command})


def test_the_report_sums_by_test_file_and_by_what_ran(tmp_path):
    log = tmp_path / "cpu.jsonl"
    log.write_text("\n".join([
        note(6.5, True, "tests/test_a.py::test_one", "/v/bin/python src/main.py --steps 20"),
        note(3.5, True, "tests/test_a.py::test_two", "/v/bin/python /r/src/main.py --steps 5"),
        note(0.25, False, "tests/test_b.py::test_three", "/v/bin/python -m tfk8s.workshop status"),
        note(0.75, False, "tests/test_b.py::test_three", "/v/bin/python /tmp/t/bin/kubectl get pods"),
        note(2.0, False, "", "/v/bin/python -c import sys;exec(eval(sys.stdin.readline()))"),
    ]) + "\n")
    result = report(log)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "13.0 s of CPU in 5 processes that ended on their own (2 loaded TensorFlow: 10.0 s)",
        "by test file (the test that started them):",
        "       10.0 s      2 processes (2 with TensorFlow)  test_a.py",
        "        2.0 s      1 processes (0 with TensorFlow)  (between tests)",
        "        1.0 s      2 processes (0 with TensorFlow)  test_b.py",
        "by what ran:",
        "       10.0 s      2 processes (2 with TensorFlow)  main.py",
        "        2.0 s      1 processes (0 with TensorFlow)  python -c",
        "        0.8 s      1 processes (0 with TensorFlow)  kubectl",
        "        0.2 s      1 processes (0 with TensorFlow)  -m tfk8s.workshop",
    ]


def test_a_line_that_is_not_a_note_is_one_line_naming_it(tmp_path):
    log = tmp_path / "cpu.jsonl"
    log.write_text(note(1.0, False, "", "python x.py") + "\n[1, 2]\n")
    result = report(log)
    assert_one_line_error(result, f"{log} line 2 is not a line of TFK8S_TEST_CPU_LOG: '[1, 2]'")
    missing = report(tmp_path / "none")
    assert_one_line_error(missing, f"cannot read {tmp_path / 'none'}: No such file or directory")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    assert_one_line_error(report(tmp_path / "binary"),
                          f"{tmp_path / 'binary'} is not a text file (byte 0 is not UTF-8)")
    no_rows = report(log, "--top", 0)
    assert_one_line_error(no_rows, "--top must be at least 1, not 0")
    assert no_rows.returncode == 2
