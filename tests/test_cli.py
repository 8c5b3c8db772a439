"""What every command-line tool shares (src/tfk8s/cli.py), in real processes: help, one-line errors, quiet pipes."""
import signal
import subprocess
import sys

import pytest

from support import REPO, SRC
from tfk8s.cli import child_env, signals_held

TOOL = """
from tfk8s.cli import entry_point

@entry_point
def main(argv=None):
    for i in range(10**6):
        print("line", i)

main()
"""


def test_a_reader_that_goes_away_stops_a_tool_quietly_with_sigpipes_code():
    """`tool | head -1`: the reader leaves after one line; the tool stops without a traceback."""
    process = subprocess.Popen([sys.executable, "-c", TOOL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert first == b"line 0\n" and stderr == ""


# Every command of the project: each src/*.py is one (the package lives in src/tfk8s/), and the sweep's run.sh.
COMMANDS = sorted(path.name for path in SRC.glob("*.py"))


def run_command(name, *args):
    command = [str(REPO / "templated" / "run.sh")] if name == "run.sh" else [sys.executable, "-X", "importtime",
                                                                             str(SRC / name)]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=child_env())


def test_the_command_list_is_what_the_docs_name():
    assert {"main.py", "serve.py", "client.py", "tfjob_local.py", "sweep.py"} <= set(COMMANDS)


@pytest.mark.parametrize("name", [*COMMANDS, "run.sh"])
def test_every_command_explains_itself_with_help(name):
    result = run_command(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stdout.strip().splitlines()) >= 3, result.stdout


@pytest.mark.parametrize("name", [*COMMANDS, "run.sh"])
def test_every_command_refuses_an_unknown_flag_in_one_line_before_loading_tensorflow(name):
    result = run_command(name, "--no_such_flag")
    imported = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(said) == 1 and said[0].startswith("error: "), said
    assert "--help" in said[0]
    # -X importtime lists every module imported: a flag check must not pay for TensorFlow (seconds).
    assert not [line for line in imported if line.rstrip().endswith(("| tensorflow", "| tf_keras"))], name


# The commands that read Kubernetes YAML files a user names (tfk8s/yamlfile.py), with the arguments they need.
MANIFEST_READERS = {
    "tfjob_check.py": [], "katib_check.py": [], "pod_security.py": [], "tfjob_local.py": [],
    "quota_check.py": ["--namespace", "alice"],
    "render_manifests.py": ["--image", "registry.example.com/me/mnist", "--tag", "v1", "--namespace", "alice"],
}


@pytest.mark.parametrize("name", sorted(MANIFEST_READERS))
@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read"),
    (bytes(range(256)), "is not a text file (byte 128 is not UTF-8)"),
    (b"kind: [unclosed", "is not valid YAML"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
])
def test_a_manifest_missing_binary_malformed_or_too_deep_is_one_line(tmp_path, name, content, fragment):
    path = tmp_path / "manifest.yaml"
    if content is not None:
        path.write_bytes(content)
    result = run_command(name, *MANIFEST_READERS[name], path)
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and len(said) == 1, said[-20:]
    assert said[0].startswith(f"error: {path}" if content is not None else f"error: cannot read {path}"), said
    assert fragment in said[0], said


# ---------------------------------------------------------------- one rule per kind of input

# Every time flag of every command (tfk8s.cli.duration): a finite number in range, or one line and exit 2.
TIME_FLAGS = [
    ("run.sh", ["--results", "--root", "/nonexistent"], "--poll"),  # refused before any work
    ("instructor.py", ["status"], "--interval"),
    ("serve.py", ["--model_base_path", "."], "--rest_api_read_timeout_seconds"),
    ("serve.py", ["--model_base_path", "."], "--file_system_poll_wait_seconds"),
    ("serve.py", ["--model_base_path", "."], "--model_config_file_poll_wait_seconds"),
    ("serve.py", ["--model_base_path", "."], "--load_retry_interval_micros"),
    ("serve.py", ["--model_base_path", "."], "--rest_api_timeout_in_ms"),
    ("model_config.py", ["wait", "--config", "kube/model-config.yaml", "--server", "http://127.0.0.1:9"],
     "--timeout"),
    ("client.py", [], "--timeout"),
    ("tfjob_local.py", ["kube/tfjob.yaml"], "--restart_delay"),
    ("flow.py", ["run", "-c", "echo a", "--local"], "--poll"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e30"])
@pytest.mark.parametrize("name, args, flag", TIME_FLAGS, ids=[f"{n}{f}" for n, _, f in TIME_FLAGS])
def test_every_time_flag_refuses_nan_infinite_negative_and_huge_values_in_one_line(name, args, flag, value):
    result = run_command(name, *args, f"{flag}={value}")
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and len(said) == 1, said[-20:]
    assert said[0].startswith(f"error: argument {flag}: must be a "), said
    assert f"not {value!r}" in said[0], said


def test_no_command_parses_a_time_flag_without_the_shared_rule():
    """A new flag named like a time must use tfk8s.cli.duration (listed above, tested through its command)."""
    import re
    timed = re.compile(r'add_argument\("--\w*(timeout|poll|interval|delay|seconds|wait|grace|period|micros|_ms)\w*"'
                       r'[^)]*?type=(\w+)', re.S)
    plain = [f"{path.relative_to(SRC)}: {m[0][:60]}" for path in SRC.rglob("*.py")
             for m in timed.finditer(path.read_text()) if m[2] != "duration"]
    assert not plain, plain


# Nine anchors of nine aliases each: a few hundred bytes that expand to 387 million nodes.
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))

YAML_READERS = {**MANIFEST_READERS, "run.sh": ["--dry_run", "--output_dir", "{tmp}/out", "--values"],
                "model_config.py": ["show", "--configmap"]}


@pytest.mark.parametrize("name", sorted(YAML_READERS))
@pytest.mark.parametrize("content, fragment", [
    (BILLION_LAUGHS + "kind: TFJob\nspec: *i\n", "has aliases that expand it to"),
    ("kind: TFJob\nspec: &s {a: [*s]}\n", "has an alias inside the node it names"),
    ("a: " + "[" * 150 + "]" * 150 + "\n", "is nested too deeply (more than 100 levels)"),
], ids=["billion-laughs", "self-alias", "deep"])
def test_every_yaml_a_command_reads_refuses_alias_bombs_and_deep_nesting_in_one_line(tmp_path, name, content,
                                                                                     fragment):
    path = tmp_path / "input.yaml"
    path.write_text(content)
    args = [a.format(tmp=tmp_path) for a in YAML_READERS[name]]
    result = run_command(name, *args, path)  # a hang (or MemoryError) fails on run_command's timeout
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode in (1, 2) and len(said) == 1, said[-20:]
    assert said[0].startswith(f"error: {path}") and fragment in said[0], said


@pytest.mark.parametrize("name, holds", [("tfjob_check.py", "a TFJob"), ("katib_check.py", "a Katib Experiment"),
                                         ("pod_security.py", "Kubernetes objects"), ("quota_check.py", "a TFJob"),
                                         ("tfjob_local.py", "a TFJob")])
@pytest.mark.parametrize("content", ["", "\n# only a comment\n", "---\n---\n"], ids=["empty", "comment", "separators"])
def test_a_manifest_checker_given_an_empty_file_says_so_in_one_line(tmp_path, name, holds, content):
    path = tmp_path / "manifest.yaml"
    path.write_text(content)
    result = run_command(name, *MANIFEST_READERS[name], path)
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1 and said == [f"error: {path} is empty: it must hold {holds}"], said


@pytest.mark.parametrize("name", ["quota_check.py", "tfjob_local.py"])
def test_a_huge_replica_count_is_refused_before_any_pod_is_planned(tmp_path, name):
    path = tmp_path / "big.yaml"
    path.write_text("apiVersion: kubeflow.org/v1\nkind: TFJob\nmetadata: {name: big}\nspec:\n  tfReplicaSpecs:\n"
                    "    Worker:\n      replicas: 1000000000\n      template:\n        spec:\n          containers:\n"
                    "          - {name: tensorflow, image: 'ghcr.io/example/mnist-trainer:0.1.0', command: [python]}\n")
    result = run_command(name, *MANIFEST_READERS[name], path)  # planned pod by pod, it took minutes
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode in (1, 2) and len(said) == 1 and "1000000000 replicas" in said[0], said


# ---------------------------------------------------------------- signals_held: starting a child that must be stopped

class StopError(Exception):
    pass


def raise_stop(signum, frame):
    raise StopError(signum)


@pytest.fixture
def sigterm_raises_stop():
    previous = signal.signal(signal.SIGTERM, raise_stop)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_signal_inside_the_held_block_reaches_its_handler_as_the_block_ends_not_before(sigterm_raises_stop):
    reached = []
    with pytest.raises(StopError):
        with signals_held():
            signal.raise_signal(signal.SIGTERM)  # handled at once, were it not held
            reached.append("the rest of the block ran")
    assert reached == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGTERM) is raise_stop


def test_a_block_without_a_signal_ends_quietly_and_an_ignored_signal_stays_ignored(sigterm_raises_stop):
    with signals_held():
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with signals_held():
        signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
