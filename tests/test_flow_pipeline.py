"""The pipeline's text (`flow.py run -c`): stages, steps, words as a POSIX shell splits them, step names, and
every mistake refused in one line before anything runs."""
import subprocess
import sys

import pytest

from tfk8s.cli import UsageError
from tfk8s.flow import pipeline


def test_stages_and_steps():
    assert pipeline.parse("python a.py --x 1 >> b & c -v >> d") == [
        [["python", "a.py", "--x", "1"]], [["b"], ["c", "-v"]], [["d"]]]


def test_operators_need_no_blanks_around_them():
    assert pipeline.parse("a>>b&c") == [[["a"]], [["b"], ["c"]]]


def sh_words(text):
    """The words /bin/sh makes of `text` (globbing off), each as the command would get it."""
    result = subprocess.run(["sh", "-c", 'set -f; set -- ' + text + '; printf "%s\\0" "$@"'], capture_output=True,
                            text=True, check=True)
    return result.stdout.split("\0")[:-1]


@pytest.mark.parametrize("text", [
    """echo 'a b' "c d" e\\ f""",
    """echo "say \\"hi\\" \\$HOME \\\\ \\n \\`" 'it''s' "" ''""",
    """echo a"b"'c'd  \t x""",
    "echo 'line\nbreak' \"tab\tin\"",
    "echo * ? '#' x#y",
])
def test_words_as_a_posix_shell_splits_them(text):
    assert pipeline.parse(text) == [[sh_words(text)]]


def test_no_expansion():
    """No shell runs a step: $VAR, ~ and globs are the words as written."""
    assert pipeline.parse("echo $HOME ~ *.py") == [[["echo", "$HOME", "~", "*.py"]]]


def test_quoted_operators_are_words():
    assert pipeline.parse("""echo ">>" '&' \\& a">>"b >> echo '|' ";" "&&" \\>""") == [
        [["echo", ">>", "&", "&", "a>>b"]], [["echo", "|", ";", "&&", ">"]]]


@pytest.mark.parametrize("text, fragment", [
    ("", "the pipeline is empty"),
    ("   \n ", "the pipeline is empty"),
    ("a >> >> b", "an empty step after '>>', before '>>'"),
    ("a &", "an empty step after '&', at the end"),
    (">> a", "an empty step at the start, before '>>'"),
    ("a & & b", "an empty step after '&', before '&'"),
    ("a >>", "an empty step after '>>', at the end"),
    ("a ''", None),  # an empty word is a word: not an error
    ("echo 'open", "unbalanced ' quote (opened at character 6)"),
    ('echo "open \\"', 'unbalanced " quote (opened at character 6)'),
    ("echo a\\", "a backslash ends the text"),
    ("echo a > out", "unquoted '>' at character 8 is a redirection"),
    ("a && b", "unquoted '&&'"),
    ("a | b", "a pipe"),
    ("a >>> b", "unquoted '>'"),
    ("a; b", "a shell's separator"),
])
def test_bad_text_is_one_usage_error(text, fragment):
    if fragment is None:
        assert pipeline.parse(text) == [[["a", ""]]]
        return
    with pytest.raises(UsageError) as err:
        pipeline.parse(text)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value).strip() or "\n" in text


@pytest.mark.parametrize("argv, word", [
    (["python", "src/main.py", "--steps", "2000"], "main"),
    (["python", "src/batch_predict.py"], "batch-predict"),
    (["python3", "-u", "-W", "ignore", "src/model_config.py", "promote"], "model-config"),
    (["python", "-m", "tfk8s.serving.batch"], "batch"),
    (["python", "-c", "print(1)"], "python"),
    (["/usr/bin/Echo_Hi", "x"], "echo-hi"),
    (["___"], "step"),
    (["python3.11", "x" * 60 + ".py"], "x" * 40),
])
def test_step_word(argv, word):
    assert pipeline.word_of(argv) == word


def test_step_names_stage_numbered_and_unique():
    stages = pipeline.named(pipeline.parse(
        "python src/main.py >> python src/batch_predict.py & python src/model_config.py show & echo a & echo b"
        " >> echo c"))
    assert [[s.name for s in stage] for stage in stages] == [
        ["s1-main"], ["s2-batch-predict", "s2-model-config", "s2-echo", "s2-echo-2"], ["s3-echo"]]
    assert stages[1][2].argv == ("echo", "a")


def test_commands_found(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("")
    pipeline.steps_of("python src/a.py >> echo x & python -c pass", tmp_path)  # no error


@pytest.mark.parametrize("text, fragment", [
    ("echo a >> no-such-command-here x", "step s2-no-such-command-here: command not found: no-such-command-here"),
    ("python src/missing.py", "step s1-missing: python src/missing.py: no such file in"),
    ("./not-there", "command not found: ./not-there (nothing executable in"),
])
def test_command_not_found(tmp_path, text, fragment):
    with pytest.raises(UsageError) as err:
        pipeline.steps_of(text, tmp_path)
    assert fragment in str(err.value)


def test_python_is_the_given_interpreter_without_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no python on PATH
    (tmp_path / "a.py").write_text("")
    with pytest.raises(UsageError):
        pipeline.steps_of("python a.py", tmp_path)
    pipeline.steps_of("python a.py", tmp_path, python=sys.executable)


def test_a_pipeline_has_at_most_the_steps_argos_workflow_crd_holds():
    assert sum(map(len, pipeline.parse(" & ".join(["echo"] * 199)))) == 199
    with pytest.raises(UsageError, match="^200 steps: a pipeline has at most 199 "):
        pipeline.parse(" >> ".join(["echo"] * 100) + " & " + " & ".join(["echo"] * 100))
