"""`make prerequisites` (make/prerequisites.sh): each tool of the day against its minimum version, with stand-ins
for the tools on an otherwise bare PATH; what is missing or too old is one line saying what to install."""
import shutil
import subprocess

import pytest

from support import REPO, make

SCRIPT = REPO / "make" / "prerequisites.sh"
# `kubectl version --client --output json`, as kubectl prints it (indented, one field a line).
KUBECTL_JSON = ('{{\n  "clientVersion": {{\n    "major": "1",\n    "gitVersion": "v{}",\n'
                '    "platform": "linux/amd64"\n  }}\n}}')


def tools(tmp_path, python=None, kubectl=None, docker=None, gcloud=None, git="2.43.0", python311=None):
    """A PATH holding only the shell utilities the script uses and stand-ins answering with these versions
    (None: not installed; docker "down": installed, its daemon not answering). Returns (PATH, the fake python)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "sed", "head", "cat"):  # cat: for the stand-ins
        (bin_dir / name).symlink_to(shutil.which(name))

    answers = {
        "python3": python and f"echo {python}",
        "python3.11": python311 and f"echo {python311}",
        "kubectl": kubectl and f"cat <<'EOF'\n{KUBECTL_JSON.format(kubectl)}\nEOF",
        "docker": docker and ('echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1'
                              if docker == "down" else f"echo {docker}"),
        "gcloud": gcloud and f'echo "Google Cloud SDK {gcloud}"; echo "bq 2.1.4"',
        "git": git and f'echo "git version {git}"',
    }
    for name, body in answers.items():
        if body:
            (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
            (bin_dir / name).chmod(0o755)
    return str(bin_dir), tmp_path / "no-venv"


def check(tmp_path, make_version="4.3", image="ghcr.io/alice/mnist", **versions):
    path, venv = tools(tmp_path, **versions)
    result = subprocess.run([str(SCRIPT), "python3", str(venv), make_version, image], env={"PATH": path},
                            capture_output=True, text=True, timeout=60)
    lines = {line[10:].split()[0].rstrip(":"): line for line in result.stdout.splitlines()
             if not line.startswith("every ")}  # by tool: a status in 9 columns, a space, the tool
    return result, lines


def test_every_tool_at_its_minimum_or_newer_passes(tmp_path):
    path, venv = tools(tmp_path, python="3.11.9", kubectl="1.30.0", docker="23.0.0")
    result = make("prerequisites", "PYTHON_BIN=python3", f"VENV={venv}", "IMAGE=ghcr.io/alice/mnist", path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "ok        python 3.11.9 (python3: 3.11 needed)"
    assert out[1].startswith("ok        make ") and out[2] == "ok        git 2.43.0 (any version)"
    assert out[3:] == ["ok        kubectl 1.30.0 (Part 2: 1.30 or newer needed)",
                       "ok        docker 23.0.0 (Part 2: Docker Engine 23 or newer, for BuildKit)",
                       "-         gcloud: not needed (docker builds the image; IMAGE ghcr.io/alice/mnist is not on "
                       "Artifact Registry)",
                       "every prerequisite found (Part 1 and Part 2)"]


def test_each_missing_or_old_tool_is_one_line_saying_what_to_install_and_the_check_fails(tmp_path):
    result, lines = check(tmp_path, python="3.12.1", kubectl="1.9.0", git=None, make_version="3.81",
                          image="europe-docker.pkg.dev/p/workshop-alice/mnist")
    assert result.returncode == 1
    assert result.stderr == ("error: 6 prerequisite(s) missing or too old (above): install them, then make "
                             "prerequisites again\n")
    assert set(lines) == {"python", "make", "git", "kubectl", "docker", "gcloud"}, result.stdout
    assert lines["python"].startswith("too old   python: python3 is Python 3.12.1, the lock needs exactly 3.11: "
                                      "uv python install 3.11")
    assert lines["make"].startswith("too old   make 3.81: GNU make 3.82 or newer is needed")
    assert lines["git"].startswith("missing   git: install it")
    assert lines["kubectl"].startswith("too old   kubectl 1.9.0: Part 2 needs kubectl 1.30 or newer")  # 9 < 30
    assert lines["docker"].startswith("missing   docker: Part 2 builds the image with Docker 23 or newer")
    assert lines["gcloud"].startswith("missing   gcloud: IMAGE europe-docker.pkg.dev/p/workshop-alice/mnist is on "
                                      "Artifact Registry")


@pytest.mark.parametrize("gcloud", [None, "456.0.0"], ids=["no gcloud", "gcloud"])
def test_docker_without_a_daemon_or_too_old_fails_unless_gcloud_builds_in_the_cloud(tmp_path, gcloud):
    for docker in ("down", "20.10.21"):
        (tmp_path / docker).mkdir()
        result, lines = check(tmp_path / docker, python="3.11.9", kubectl="1.32.4", docker=docker, gcloud=gcloud)
        assert result.returncode == (0 if gcloud else 1), result.stdout + result.stderr
        assert "make build-remote" in lines["docker"]
        assert lines["docker"].startswith("-  " if gcloud else ("no daemon" if docker == "down" else "too old"))
        if gcloud:
            assert lines["gcloud"] == "ok        gcloud 456.0.0 (any version)"


def test_python_3_11_beside_another_default_passes_naming_the_flag_the_first_make_venv_needs(tmp_path):
    result, lines = check(tmp_path, python="3.13.0", python311="3.11.14", kubectl="1.31.0", docker="27.1.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines["python"] == ("ok        python 3.11.14 (python3.11; python3 is not 3.11: the first make venv needs "
                               "PYTHON_BIN=python3.11)")
    (tmp_path / "none").mkdir()
    result, lines = check(tmp_path / "none", python=None, kubectl="1.31.0", docker="27.1.1")
    assert result.returncode == 1 and lines["python"].startswith("missing   python: no Python 3.11 (python3 not "
                                                                 "found): uv python install 3.11")
