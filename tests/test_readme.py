"""The README's local steps, run from README.md and its laptop labs in the order the README gives them.

Blocks marked `<!-- step: run -->` must exit 0; `<!-- step: background PORT -->`
blocks are started, must answer on PORT, and are stopped at the end. Training is
shortened through the Makefile's own variables (TRAIN_FLAGS, TFJOB_LOCAL_FLAGS, ...),
so what runs is the README's commands, not a copy of them.

This takes several minutes, so `make test` leaves it out; CI runs it with
`make readme-steps` (pytest -m readme).
"""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import REPO

STEP = re.compile(r"<!-- step: (run|background (\d+)) -->\s*```bash\n(.*?)```", re.S)
LAB = re.compile(r"\]\((docs/laptop/[\w-]+\.md)\)")
QUICK = "--dataset mini --steps 20 --eval_every 10 --checkpoint_every 10"


def step_pages():
    """README.md, then every laptop lab it links to, in its order."""
    readme = (REPO / "README.md").read_text()
    labs = list(dict.fromkeys(LAB.findall(readme)))
    assert labs, "README.md links no laptop lab"
    return [REPO / "README.md", *(REPO / lab for lab in labs)]


def readme_steps():
    return [(kind.split()[0], int(port) if port else None, body)
            for page in step_pages() for kind, port, body in STEP.findall(page.read_text())]


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_readme_marks_its_local_steps():
    commands = "\n".join(body for _, _, body in readme_steps())
    for command in ("make venv", "make train", "make serve-local", "src/client.py", "make tfjob-local",
                    "make sweep-local", "make sweep-results"):
        assert command in commands


@pytest.mark.readme
def test_readme_local_steps_run_as_written(tmp_path):
    sweep_values = tmp_path / "values.yaml"
    sweep_values.write_text("name: readme-sweep\nworkers: 0\n"
                            "grid:\n  learning_rate: [0.05, 0.01]\n  hidden_layers: [1]\nflags: {}\n")
    env = dict(os.environ, RUNS=str(tmp_path / "runs"),
               TRAIN_FLAGS="--steps 200 --eval_every 100 --checkpoint_every 100",
               TFJOB_LOCAL_FLAGS=QUICK, SWEEP_LOCAL_FLAGS=QUICK, SWEEP_VALUES=str(sweep_values),
               SWEEP_ROOT=str(tmp_path / "sweep"), BATCH_INPUT=str(tmp_path / "batch"),
               BATCH_OUTPUT=str(tmp_path / "batch.csv"))
    env.pop("TF_CONFIG", None)
    background = []
    try:
        for kind, port, body in readme_steps():
            if kind == "background":
                assert not port_open(port), f"port {port} is taken before `{body.strip()}`"
                process = subprocess.Popen(["bash", "-c", body], cwd=REPO, env=env, start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                background.append(process)
                deadline = time.time() + 180
                while not port_open(port):
                    assert process.poll() is None, f"`{body.strip()}` exited with {process.returncode}"
                    assert time.time() < deadline, f"`{body.strip()}` never answered on port {port}"
                    time.sleep(0.5)
                continue
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, \
                f"README step failed:\n{body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
