"""A pipeline's text, as `flow.py run -c TEXT` takes it: stages of steps, each step a command line.

    python src/main.py --steps 2000 >> python src/batch_predict.py & python src/model_config.py show

`>>` separates stages (the next starts when every step of this one succeeded); `&` separates the steps of one
stage (they run side by side). Each step's words are split as a POSIX shell splits them: blanks separate words,
'single quotes' keep everything, "double quotes" keep everything but \\ before $ ` " \\ or a newline, and a
backslash outside quotes keeps the next character. No shell runs a step: there is no $VAR expansion, no glob,
no redirection. So an unquoted `>`, `<`, `|`, `;`, `&&` or `||` is refused rather than passed on as a word;
a quoted ">>" or "&" is a word like any other.

Everything here happens before anything is submitted or started, and every mistake is one line (UsageError):
an empty pipeline, an empty step, an unbalanced quote, a command that is not found.
"""
import os
import re
import shutil
from dataclasses import dataclass

from tfk8s.cli import UsageError

STAGE, PARALLEL = ">>", "&"
# Shell operators that mean something else in a shell: refused unquoted, so no one is surprised by `a > out`
# writing no file. (`>>` and `&` are ours; quoted, every one of these is a word.)
REFUSED = {">": "a redirection", "<": "a redirection", "|": "a pipe", "||": "a shell's 'or'",
           ";": "a shell's separator", "&&": "a shell's 'and' (use >> to run a command after another)"}
OPERATOR_CHARS = "><|;&"
PYTHONS = re.compile(r"python(3(\.\d+)?)?")
PYTHON_OPTIONS_WITH_VALUE = ("-W", "-X")   # python's own options that take the next word (-c and -m end them)
MAX_WORD = 40  # characters of a step's word in its name; Argo's limit on a task name is 128 (validate.go)
# Argo v4.1.2's Workflow CRD (manifests/base/crds/full): spec.templates maxItems 200, one per step and the DAG.
MAX_STEPS = 199


@dataclass(frozen=True)
class Step:
    name: str      # s<stage>-<word>, unique in the pipeline: a DAG task's and a template's name
    argv: tuple    # the command and its arguments, run without a shell


def tokens(text):
    """(kind, value, position) of the text: ("word", str) or ("op", operator), quotes resolved; UsageError for
    an unbalanced quote or a trailing backslash."""
    out, word, quoted, i = [], [], False, 0
    start = None

    def end_word():
        nonlocal word, quoted, start
        if word or quoted:
            out.append(("word", "".join(word), start))
        word, quoted, start = [], False, None

    while i < len(text):
        ch = text[i]
        if ch.isspace():
            end_word()
            i += 1
            continue
        if start is None:
            start = i
        if ch == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise UsageError(f"unbalanced ' quote (opened at character {i + 1}) in: {text}")
            word.append(text[i + 1:close])
            quoted, i = True, close + 1
        elif ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '$`"\\\n':
                    if text[j + 1] != "\n":  # a backslash-newline inside double quotes is removed
                        word.append(text[j + 1])
                    j += 2
                    continue
                word.append(text[j])
                j += 1
            if j >= len(text):
                raise UsageError(f'unbalanced " quote (opened at character {i + 1}) in: {text}')
            quoted, i = True, j + 1
        elif ch == "\\":
            if i + 1 >= len(text):
                raise UsageError(f"a backslash ends the text, escaping nothing: {text}")
            if text[i + 1] != "\n":  # a backslash-newline joins lines
                word.append(text[i + 1])
            i += 2
        elif ch in OPERATOR_CHARS:
            end_word()
            j = i
            while j < len(text) and text[j] in OPERATOR_CHARS and j - i < 2:
                j += 1
            op = text[i:j]
            if op not in (STAGE, PARALLEL) and op not in REFUSED:
                op = text[i]  # `&>` and the like: one character at a time
                j = i + 1
            out.append(("op", op, i))
            i = j
        else:
            word.append(ch)
            i += 1
    end_word()
    return out


def parse(text):
    """The stages of a pipeline's text: [[argv, ...], ...], each argv a list of words; UsageError for an empty
    text or step, an unbalanced quote, a shell operator."""
    if text is None or not text.strip():
        raise UsageError('the pipeline is empty: give commands, e.g. -c "python src/main.py >> python src/a.py"')
    stages, steps, argv, before = [], [], [], None
    for kind, value, position in tokens(text) + [("op", None, len(text))]:
        if kind == "word":
            argv.append(value)
            continue
        if value in REFUSED:
            raise UsageError(f"unquoted '{value}' at character {position + 1} is {REFUSED[value]}; steps run "
                             f"without a shell: quote it to pass it as a word, or run sh -c '...' as a step")
        if not argv:
            where = f"after '{before}'" if before else "at the start"
            what = f"before '{value}'" if value else "at the end"
            raise UsageError(f"an empty step {where}, {what} (character {position + 1}): every '>>' and '&' "
                             f"needs a command on each side")
        steps.append(argv)
        argv, before = [], value
        if value != PARALLEL:  # '>>' or the end
            stages.append(steps)
            steps = []
    count = sum(map(len, stages))
    if count > MAX_STEPS:
        raise UsageError(f"{count} steps: a pipeline has at most {MAX_STEPS} (Argo's Workflow CRD holds 200 "
                         "templates, and the DAG is one of them)")
    return stages


def word_of(argv):
    """The word a step's name is made of: the script's or module's name for python, else the command's name;
    lower-case, [a-z0-9-]."""
    command = os.path.basename(argv[0])
    word = command
    if PYTHONS.fullmatch(command):
        kind, target = python_target(argv)
        if kind == "script":
            word = os.path.splitext(os.path.basename(target))[0]
        elif kind == "module":
            word = target.rsplit(".", 1)[-1]
    word = re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-")[:MAX_WORD].strip("-")
    return word or "step"


def python_target(argv):
    """What a python command line runs: ("script", path), ("module", name), ("code", text) or ("none", None)
    (an interactive interpreter), reading python's own options as it does."""
    i = 1
    while i < len(argv):
        word = argv[i]
        if word in ("-c", "-m"):
            value = argv[i + 1] if i + 1 < len(argv) else None
            return ("code" if word == "-c" else "module"), value
        if word.startswith(("-c", "-m")):  # -cCODE, -mMODULE
            return ("code" if word[1] == "c" else "module"), word[2:]
        if word == "-" or not word.startswith("-"):
            return ("script", word) if word != "-" else ("none", None)
        if word in PYTHON_OPTIONS_WITH_VALUE:
            i += 2
            continue
        i += 1
    return "none", None


def named(stages):
    """[[Step, ...], ...]: the stages' steps named s<stage>-<word>, a suffix -2, -3, ... where names repeat."""
    taken, out = set(), []
    for number, steps in enumerate(stages, 1):
        out.append([])
        for argv in steps:
            base = f"s{number}-{word_of(argv)}"
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
            taken.add(name)
            out[-1].append(Step(name, tuple(argv)))
    return out


def check_commands(stages, cwd, python=None):
    """UsageError naming the first step whose command cannot run in `cwd`: a command not on PATH (or, with a
    slash, no executable file there), or a python script that does not exist there. `python`, when given, is
    the interpreter that runs `python` (the local runner's own), which needs no PATH entry."""
    for steps in stages:
        for step in steps:
            command = step.argv[0]
            if python and PYTHONS.fullmatch(command):
                found = python
            elif "/" in command:
                path = os.path.join(cwd, command)
                found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
            else:
                found = shutil.which(command)
            if not found:
                where = f"in {cwd}" if "/" in command else "on PATH"
                raise UsageError(f"step {step.name}: command not found: {command} (nothing executable {where})")
            if PYTHONS.fullmatch(os.path.basename(command)):
                kind, script = python_target(step.argv)
                if kind == "script" and not os.path.isfile(os.path.join(cwd, script)):
                    raise UsageError(f"step {step.name}: {command} {script}: no such file in {cwd}")


def steps_of(text, cwd, python=None):
    """The pipeline's named stages, each command checked: everything that is checked before anything runs."""
    stages = named(parse(text))
    check_commands(stages, cwd, python)
    return stages
