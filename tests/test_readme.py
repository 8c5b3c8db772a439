"""The README's local steps, run from README.md and its laptop labs in the README's order, checked against the
output the pages show.

How a page marks its steps (HTML comments: GitHub does not show them)::

    <!-- step: run -->                  the ```bash block below runs and must exit 0 within 300 s
    <!-- step: run timeout=600 -->      ... within 600 s
    <!-- step: background 8500 -->      the block is started, must answer on port 8500 within 180 s
                                        (timeout= changes that too) and runs until the last page is done
    <!-- expect -->                     the ```text block below is what the step above it prints

The expectation rule. An `expect` block belongs to the nearest step above it on the same page (prose may come
between them); every step has one. The step's output is what a terminal shows: stdout and stderr together, in
order (the steps run with PYTHONUNBUFFERED=1, so Python writes each line when it prints it, as on a
terminal). Each line of the block is a pattern for one whole line of output: `…` stands for any text within
the line (also none), a run of spaces for any run of spaces (columns move when a figure is wider), the rest is
literal. A line that is only `…` stands for any number of lines. Consecutive pattern lines match consecutive
output lines; the block may start and end anywhere in the output. TensorFlow's C++ log lines
(`I0000 00:00:… port.cc:153] …`, also behind a replica's `[chief-0] `, and absl's `WARNING: All log messages
before absl::InitializeLog() …`) are left out of the output first: they depend on the machine (its CPU, its GPU
drivers) and no page shows them. For a background step the block is matched against its log once its port
answers (waiting for the lines to come, within its timeout).

The steps run verbatim in a scratch copy of this working tree (its files as `git ls-files` lists them, beside
the same .venv), so they write to the copy's runs/ as they would to yours, and print the same relative paths
the pages show. Training is shortened through the Makefile's own variables (DEMO_STEPS, TRAIN_FLAGS,
TFJOB_LOCAL_FLAGS, SWEEP_LOCAL_FLAGS, SWEEP_LOCAL_VALUES) and the notebook's NOTEBOOK_STEPS: see SHORTENED; where
that changes a figure, the pages show it as `…`. Every step's output is kept in a log file under the test's
tmp directory; a failure names the page, the step and its line, and shows the log's last lines.

One test per page, in the README's order, sharing the copy and the background servers (module fixture): a
page's test first runs any earlier page that has not run yet, so `-k 05-predict` works alone.
The steps hold this machine's fixed ports (8500, 6006, ...) from the first page to the last, under a lock
(support.fixed_ports): two runs of the suite at once take turns on them.
`make readme-steps` runs only these tests; `make test` runs them with everything else.

Why one module of some 450 lines: the runner and its own tests (a step that fails, hangs or leaves a process)
belong together; the pages' tests are one line each.
"""
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from support import FIXED_PORTS_LOCK, fixed_ports
from tfk8s.cli import child_env

RUN_TIMEOUT = 300         # seconds a `run` step may take unless its marker says timeout=N
BACKGROUND_TIMEOUT = 180  # seconds a `background` step may take to answer on its port (and print its lines)
LOG_TAIL = 40             # lines of a failed step's log shown in the failure
PORTS_WAIT = 1800         # seconds the steps wait for another run's README steps to free the fixed ports

QUICK = "--dataset mini --steps 20 --eval_every 10 --checkpoint_every 10"
SHORTENED = {
    # `make demo`: its default, 300 steps (they classify the ten sample digits right: tests/test_demo.py), so the
    # README's demo is the attendee's.
    "DEMO_STEPS": "300",
    "TRAIN_FLAGS": "--steps 300 --eval_every 100 --checkpoint_every 100",
    "TFJOB_LOCAL_FLAGS": QUICK,
    "SWEEP_LOCAL_FLAGS": QUICK,
    # `make notebook`: the notebook's training (200 steps; tests/test_notebook.py runs those and checks the accuracy).
    "NOTEBOOK_STEPS": "50",
}
# Targets of make/local.mk that no page runs as a step, and why. Every other target must be in a marked step.
NOT_STEPS = {
    "lab": "opens JupyterLab in a browser and waits for it: it cannot run headless (`make notebook` runs the same "
           "notebook headless, and is a step)",
    "bench-train": "a benchmark of several minutes; its figures are in docs/measured.md",
    "bench-distributed": "a benchmark of about 12 minutes; its figures are in docs/measured.md",
    "bench-serve": "a benchmark of several minutes; its figures are in docs/measured.md",
    "samples": "writes data/0.png .. 9.png again: those ship with the repository, no lab needs it",
    "configure": "saves the cluster settings of Part 2 (tests/test_settings.py runs it, and a fresh shell after it)",
    "where": "shows the cluster settings of Part 2 (tests/test_settings.py)",
    "serve-best": "a server on the sweep's winner, ports 8500/8501 as serve-local's, which a page already holds "
                  "(tests/test_workshop_helpers.py covers its refusals; the sweep page names it)",
    "clean-local": "deletes runs/, which the later pages read (tests/test_workshop_helpers.py)",
    "overview": "draws the README's picture for a maintainer (tests/test_markdown.py checks it is up to date)",
}

LAB = re.compile(r"\]\((docs/laptop/[\w-]+\.md)\)")
COMMENT = re.compile(r"<!--\s*(step\b|expect\b)[^>]*-->")
MARK = re.compile(r"<!-- (?P<mark>step: [^>]*?|expect) -->\n```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
STEP = re.compile(r"step: (?:(?P<run>run)|background (?P<port>\d+))(?: timeout=(?P<timeout>\d+))?")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
MAKE_COMMAND = re.compile(r"(?:^|[;&|(]\s*)make((?:[ \t]+[^\s;&|#]+)+)", re.M)
TF_LOG = re.compile(r"(\[[\w-]+\] )?([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] "
                    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)")
LOCAL_TARGET = re.compile(r"^([a-zA-Z0-9_-]+):[^=\n]*##", re.M)
# Lines no step may print, whatever its page shows: TensorFlow's warnings about a restore left partial on purpose.
NEVER_SHOWN = re.compile(r".*being deleted with unrestored values.*")


@dataclasses.dataclass
class Step:
    page: str                 # e.g. docs/laptop/02-train.md
    number: int               # 1, 2, ... on its page
    line: int                 # where its marker is
    port: int | None          # None for a `run` step
    timeout: int
    body: str
    expect: list | None = None

    def __str__(self):
        first = self.body.strip().splitlines()[0]
        return f"{self.page}, step {self.number} (line {self.line}: `{first}`)"


def page_steps(page):
    """The marked steps of one page, each with its expected lines; a malformed mark is an AssertionError."""
    text = (REPO / page).read_text()
    marks = {m.start(): m for m in MARK.finditer(text)}
    steps = []
    for comment in COMMENT.finditer(text):
        line = text.count("\n", 0, comment.start()) + 1
        mark = marks.get(comment.start())
        assert mark, f"{page}:{line}: `{comment.group()}` must be followed directly by a fenced block"
        if mark["mark"] == "expect":
            assert mark["lang"] == "text", f"{page}:{line}: an expect block is ```text, not ```{mark['lang']}"
            assert steps and steps[-1].expect is None, f"{page}:{line}: this expect block has no step of its own above"
            steps[-1].expect = mark["body"].splitlines()
            continue
        kind = STEP.fullmatch(mark["mark"])
        assert kind, f"{page}:{line}: not a step marker: `{comment.group()}` (see tests/test_readme.py)"
        assert mark["lang"] == "bash", f"{page}:{line}: a step is a ```bash block, not ```{mark['lang']}"
        port = int(kind["port"]) if kind["port"] else None
        timeout = int(kind["timeout"] or (RUN_TIMEOUT if port is None else BACKGROUND_TIMEOUT))
        steps.append(Step(page, len(steps) + 1, line, port, timeout, mark["body"]))
    return steps


def step_pages():
    """README.md, then every laptop lab in the order the README links them."""
    labs = list(dict.fromkeys(LAB.findall((REPO / "README.md").read_text())))
    return ["README.md", *labs]


def page_id(page):
    return Path(page).stem


# ---------------------------------------------------------------- the expectation rule

def line_pattern(expected):
    """One expected line as a regex for a whole output line: `…` any text, spaces any run of spaces."""
    return re.compile("".join(".*" if part == "…" else " +" if part.startswith(" ") else re.escape(part)
                              for part in re.split(r"(…| +)", expected.rstrip()) if part))


def screen_lines(output):
    """The output's lines as a terminal leaves them (a carriage return overwrites the line), without TF's C++ log."""
    lines = (line.rstrip("\r").rsplit("\r", 1)[-1].rstrip() for line in output.split("\n"))
    return [line for line in lines if not TF_LOG.match(line)]


def unmatched(expected, output):
    """None when `output` shows the `expected` lines (the rule above); else which of them it does not show."""
    lines = screen_lines(output)
    chunks, chunk = [], []
    for line in expected:
        if line.strip() == "…":
            chunks.append(chunk)
            chunk = []
        else:
            chunk.append(line)
    chunks = [c for c in [*chunks, chunk] if c]
    start = 0
    for chunk in chunks:
        patterns = [line_pattern(line) for line in chunk]
        found = next((i for i in range(start, len(lines) - len(chunk) + 1)
                      if all(p.fullmatch(lines[i + j]) for j, p in enumerate(patterns))), None)
        if found is None:
            where = f"after the line `{lines[start - 1]}`" if start else "anywhere in the output"
            return "these expected lines, one after the other, " + where + ":\n" + "\n".join(chunk)
        start = found + len(chunk)
    return None


def test_the_expectation_rule():
    output = ("noise\n  10/100 images\r 100/100 images\nstep    100/200  loss 0.51\r\n"
              "E0000 00:00:1796005445.526511   22255 cuda_platform.cc:52] failed call to cuInit: ...\n"
              "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "step    200/200  loss 0.25\ntest accuracy 97.1%\n10/10 correct\n")
    assert unmatched(["step …/…  loss …", "test accuracy …%"], output) is None
    assert unmatched(["step …/…  loss …", "…", "10/10 correct"], output) is None
    assert unmatched(["10/10 correct"], output) is None
    assert unmatched(["noise", "…/100 images", "step …"], output) is None  # what a carriage return left shown
    assert unmatched(["step 100/200  loss 0.51"], output) is None      # spaces: any run of spaces
    assert unmatched(["step …/…  loss …", "10/10 correct"], output)     # not consecutive, and no `…` between
    assert unmatched(["10/10 correct", "…", "test accuracy …%"], output)  # out of order
    assert unmatched(["0/10 correct"], output)                         # a pattern is the whole line
    assert unmatched(["test accuracy 97.1"], output)
    assert unmatched(["step …/…  loss …", "step …/…  loss …", "step …/…  loss …"], output)


def test_the_runner_reports_a_step_that_fails_hangs_or_leaves_a_process(tmp_path):
    run = Run(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    cases = [(Step("p.md", 1, 1, None, 30, "echo hello; exit 3", ["hello"]), "exited with 3"),
             (Step("p.md", 2, 1, None, 30, "echo hello", ["hello", "world"]), "does not print these expected lines"),
             (Step("p.md", 3, 1, None, 1, "echo $$ > pid; exec sleep 60", ["…"]), "did not finish within 1s"),
             (Step("p.md", 4, 1, None, 30, "sleep 60 & echo $! > pid", ["…"]), "left processes running"),
             (Step("p.md", 5, 1, free, 30, "echo starting; exit 1", ["starting"]), "exited with 1 before answering")]
    for step, problem in cases:
        log = tmp_path / f"{step.number}.log"
        pid = run.repo / "pid"
        pid.unlink(missing_ok=True)
        found = run.run(step, log) if step.port is None else run.start(step, log)
        assert problem in (found or ""), (step.body, found, log.read_text())
        if pid.exists():  # the step's processes are stopped, not left running
            assert not Path(f"/proc/{pid.read_text().strip()}").exists()
    both = Step("p.md", 6, 1, None, 30, "echo hello; echo world", ["hello", "world"])
    assert run.run(both, tmp_path / "6.log") is None
    assert not run.stop()


def test_two_runs_take_turns_on_the_fixed_ports(tmp_path):
    lock = tmp_path / "ports.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", lock],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with fixed_ports(0, lock) as held:
            assert not held  # the other run's steps hold the ports
        holder.stdin.close()  # the other run ends
        with fixed_ports(30, lock) as held:
            assert held
            with fixed_ports(0, lock) as again:  # and it is this run's alone while held
                assert not again
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- the guard: nothing local slips out of the steps

def bash_blocks(page):
    text = (REPO / page).read_text()
    return [m for m in FENCE.finditer(text) if m["lang"] in ("bash", "sh", "shell")]


def make_targets(command_text):
    """The targets of every `make ...` command in a block of shell (variables and flags left out)."""
    return {word for m in MAKE_COMMAND.finditer(command_text) for word in m.group(1).split()
            if "=" not in word and not word.startswith("-")}


def local_targets():
    return set(LOCAL_TARGET.findall((REPO / "make" / "local.mk").read_text()))


def test_every_local_step_of_the_pages_is_marked_and_has_its_expected_output():
    pages = step_pages()
    laptop = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs" / "laptop").glob("*.md"))
    assert pages[1:] == laptop, "README.md must link every laptop lab, in the order of their numbers"
    steps = [step for page in pages for step in page_steps(page)]
    assert all(step.expect for step in steps), [str(s) for s in steps if not s.expect]
    local = local_targets()
    assert set(NOT_STEPS) <= local, set(NOT_STEPS) - local
    stepped = set().union(*(make_targets(step.body) for step in steps))
    assert stepped <= local | {"venv"}, stepped - local

    # Every `make <local target>` a page shows is a marked step, unless it cannot run headless.
    marked = {step.body for step in steps}
    for page in pages:
        for block in bash_blocks(page):
            shown = make_targets(block["body"]) & local
            if block["body"] not in marked and shown - set(NOT_STEPS):
                line = (REPO / page).read_text().count("\n", 0, block.start()) + 1
                pytest.fail(f"{page}:{line}: `make {' '.join(sorted(shown))}` is not in a marked step "
                            "(<!-- step: run --> or <!-- step: background PORT -->)")
    # Every target of make/local.mk is run by a step, or is one of NOT_STEPS, with its reason.
    assert local - stepped == set(NOT_STEPS), (
        f"make/local.mk targets no page runs as a step: {sorted(local - stepped - set(NOT_STEPS))}; "
        f"in steps, yet listed in NOT_STEPS: {sorted(stepped & set(NOT_STEPS))}")
    # README.md's own steps: the first command, and the promise that a second one reuses the export.
    readme = [step.body.strip() for step in page_steps("README.md")]
    assert readme == ["make demo", "make demo"], readme
    assert any("reusing the export" in line for line in page_steps("README.md")[1].expect)


def test_a_bad_mark_is_refused(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    for text, reason in [("<!-- step: run -->\n\n```bash\nls\n```\n", "followed directly"),
                         ("<!-- step: walk -->\n```bash\nls\n```\n", "not a step marker"),
                         ("<!-- step: run -->\n```python\nls\n```\n", "is a ```bash block"),
                         ("<!-- expect -->\n```text\nx\n```\n", "no step of its own"),
                         ("<!-- step: run -->\n```bash\nls\n```\n<!-- expect -->\n```bash\nx\n```\n", "is ```text")]:
        page.write_text(text)
        with pytest.raises(AssertionError, match=re.escape(reason)):
            page_steps("docs/page.md")
    page.write_text("<!-- step: background 8500 timeout=60 -->\n```bash\nserve\n```\nText.\n\n"
                    "<!-- expect -->\n```text\nready\n```\n")
    [step] = page_steps("docs/page.md")
    assert (step.port, step.timeout, step.body, step.expect) == (8500, 60, "serve\n", ["ready"])


# ---------------------------------------------------------------- running the steps

def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process, grace=30):
    """SIGTERM to the step's process group, then SIGKILL after `grace` s; True when SIGTERM was enough."""
    if process.poll() is None or group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while (process.poll() is None or group_alive(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None or group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        return False
    return True


def scratch_copy(destination):
    """This working tree's files (tracked, and new ones git does not ignore), mtimes kept, beside the same .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(REPO / ".venv")


class Run:
    """The README's steps, page after page, in one scratch copy; the background steps stay up until the end."""

    def __init__(self, root):
        self.root, self.repo, self.logs = root, root / "repo", root / "logs"
        self.repo.mkdir()
        self.logs.mkdir()
        scratch_copy(self.repo)
        sweep = yaml.safe_load((REPO / "templated" / "values-workshop.yaml").read_text())
        # The laptop's sweep, smaller: two trials of the Chief alone (Katib's grid: the same two).
        sweep.update(workers=0, grid={"learning_rate": [0.1, 0.01], "hidden_layers": [1]})
        sweep["katib"].update(parallelTrialCount=1, maxTrialCount=2, maxFailedTrialCount=1)
        (root / "values.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
        self.env = {**child_env(), **SHORTENED, "SWEEP_LOCAL_VALUES": str(root / "values.yaml"),
                    "PYTHONPATH": str(self.repo / "src"), "PYTHONUNBUFFERED": "1",
                    "KUBECONFIG": str(root / "no-kubeconfig")}  # never a real cluster, whatever this machine has
        for name in ("IMAGE", "TAG", "NAMESPACE", "RUNS", "VENV", "MAKEFLAGS", "MAKELEVEL"):
            self.env.pop(name, None)
        self.background = []  # (step, process)
        self.done = {}        # page -> None when its steps passed, else the failure
        self.durations = {}

    def check_ready(self):
        """Refuse to start where a step would rebuild the shared .venv from the copy, or a port is taken."""
        question = subprocess.run(["make", "--question", "venv"], cwd=self.repo, env=self.env,
                                  capture_output=True, text=True)
        assert question.returncode == 0, (".venv is older than requirements-dev.lock or pyproject.toml: run "
                                          "`make venv` first (the README steps run in a copy, which must not "
                                          f"reinstall .venv)\n{question.stdout}{question.stderr}")
        ports = {step.port for page in step_pages() for step in page_steps(page) if step.port}
        ports |= {8501, 8511}  # the REST ports of serve-local and serve-ab-local
        taken = sorted(port for port in ports if port_open(port))
        assert not taken, f"ports the README's servers use are taken: {taken}"

    def log_tail(self, log):
        lines = log.read_text(errors="replace").splitlines()
        return f"--- the last {min(LOG_TAIL, len(lines))} lines of {log}:\n" + "\n".join(lines[-LOG_TAIL:])

    def run(self, step, log):
        with open(log, "wb") as out:
            process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", step.body], cwd=self.repo, env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=step.timeout)
            except subprocess.TimeoutExpired:
                stop_group(process, grace=10)
                return f"did not finish within {step.timeout}s (timeout= in its marker)"
        deadline = time.monotonic() + 1  # what the shell waited for is gone; anything else was left behind
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(process.pid):
            stop_group(process, grace=10)
            return "exited, but left processes running (stopped now)"
        if code != 0:
            return f"exited with {code}"
        output = log.read_text(errors="replace")
        noise = [line for line in output.splitlines() if NEVER_SHOWN.fullmatch(line)]
        if noise:
            return f"prints {len(noise)} line(s) no page shows, such as:\n{noise[0]}"
        missing = unmatched(step.expect or [], output)
        return missing and "does not print " + missing

    def start(self, step, log):
        if port_open(step.port):
            return f"port {step.port} is taken before it starts"
        with open(log, "wb") as out:  # the process keeps writing to it after we close our copy
            process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", step.body], cwd=self.repo, env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.background.append((step, process))
        deadline = time.monotonic() + step.timeout
        while not port_open(step.port):
            if process.poll() is not None:
                return f"exited with {process.returncode} before answering on port {step.port}"
            if time.monotonic() > deadline:
                return f"did not answer on port {step.port} within {step.timeout}s"
            time.sleep(0.5)
        while missing := unmatched(step.expect or [], log.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                return "does not print " + missing
            time.sleep(0.5)
        return None

    def page(self, page):
        """Run one page's steps; the first failure (with its log) is remembered, and raised."""
        began = time.monotonic()
        for step in page_steps(page):
            log = self.logs / f"{page_id(page)}-{step.number}.log"
            problem = self.run(step, log) if step.port is None else self.start(step, log)
            if problem:
                self.done[page] = f"{step} {problem}\n{self.log_tail(log)}"
                pytest.fail(self.done[page], pytrace=False)
        self.done[page] = None
        self.durations[page] = time.monotonic() - began

    def through(self, page):
        """Run every page up to `page` that has not run yet, in the README's order."""
        for earlier in step_pages():
            if earlier in self.done and self.done[earlier]:
                pytest.fail(f"not run: {earlier} failed first (its own test says why)", pytrace=False)
            if earlier not in self.done:
                self.page(earlier)
            if earlier == page:
                return

    def stop(self):
        """Stop the background steps (SIGTERM to each process group); the names of those that needed SIGKILL."""
        return [str(step) for step, process in reversed(self.background) if not stop_group(process)]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    with fixed_ports(PORTS_WAIT) as held:
        if not held:
            pytest.fail(f"another run's README steps held this machine's fixed ports for {PORTS_WAIT}s "
                        f"(the lock {FIXED_PORTS_LOCK})", pytrace=False)
        run = Run(tmp_path_factory.mktemp("readme"))
        run.check_ready()
        yield run
        stubborn = run.stop()
    print("\nREADME steps, seconds per page: " + ", ".join(f"{page_id(p)} {s:.0f}" for p, s in run.durations.items()))
    assert not stubborn, f"background steps that did not stop on SIGTERM within 30 s: {stubborn}"


def page_params():
    """One parameter per page, with a pytest-timeout that covers its steps and those of every page before it,
    and the wait for another run's README steps to free the fixed ports."""
    params, budget = [], 120 + PORTS_WAIT
    for page in step_pages():
        budget += sum(step.timeout for step in page_steps(page))
        params.append(pytest.param(page, id=page_id(page), marks=pytest.mark.timeout(budget)))
    return params


@pytest.mark.readme
@pytest.mark.parametrize("page", page_params())
def test_readme_page_runs_as_written_and_prints_what_it_shows(readme_run, page):
    readme_run.through(page)
