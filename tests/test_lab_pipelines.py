"""The pipelines the lab page and the pipeline notebook run (tfk8s.flow.lab): every step is a command its script
accepts, as the notebook image's workspace holds it, and the page shows them as written there."""
import json
import shlex
import subprocess
import sys

import pytest

from support import REPO
from test_dockerfile import build_context
from tfk8s.flow import lab, pipeline

# Each script a pipeline step runs, and the module whose parse_args() is the script's own command line (the
# script calls it first, before TensorFlow loads).
PARSERS = {"src/main.py": "tfk8s.trainer.flags", "src/batch_predict.py": "tfk8s.serving.batch",
           "src/model_config.py": "tfk8s.serving.model_config"}
PARSE = ("import json, sys; from {module} import parse_args; "
         "print(json.dumps(vars(parse_args(sys.argv[1:])), default=str))")


def stages(text):
    """[[argv, ...], ...]: the stages of a pipeline and the words of each step, as the pipeline command reads them."""
    return [[list(step.argv) for step in steps] for steps in pipeline.named(pipeline.parse(text))]


def parsed(argv):
    """The step's flags as its script's own parser reads them (a child process, from the repository's root)."""
    assert argv[0] == "python" and argv[1] in PARSERS, argv
    result = subprocess.run([sys.executable, "-c", PARSE.format(module=PARSERS[argv[1]]), *argv[2:]], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{shlex.join(argv)}: {result.stderr.strip()}"
    return json.loads(result.stdout)


def test_the_labs_pipeline_trains_then_scores_two_ways_side_by_side_then_serves_its_export():
    found = stages(lab.LAB_PIPELINE)
    assert [[argv[1] for argv in stage] for stage in found] == [
        ["src/main.py"], ["src/batch_predict.py", "src/batch_predict.py"], ["src/model_config.py"]]
    (train,), (batch, samples), (serve,) = ([parsed(argv) for argv in stage] for stage in found)
    assert train["model_dir"] == lab.RUNS and train["export_dir"] == lab.EXPORTS
    assert train["steps"] <= 2000  # a short training: the pipeline is the subject
    assert batch["model_base_path"] == samples["model_base_path"] == lab.EXPORTS
    assert batch["sample_input"] and batch["output"] != samples["output"]
    assert serve["action"] == "serve" and serve["base_path"] == lab.EXPORTS
    # On the shared volume: what a later stage (another pod) reads, and what outlives the pods.
    for value in (train["model_dir"], train["export_dir"], batch["input"], batch["output"], samples["output"]):
        assert value.startswith("/mnt/nfs/"), value


@pytest.mark.parametrize("text, names", [
    (lab.LAB_PIPELINE, [["s1-main"], ["s2-batch-predict", "s2-batch-predict-2"], ["s3-model-config"]]),
    (lab.NOTEBOOK_PIPELINE, [["s1-main"], ["s2-batch-predict"]])])
def test_the_pipeline_command_accepts_each_pipeline_and_names_its_steps_as_the_page_does(text, names):
    """Everything the command checks before it submits or starts anything: the syntax, and each script there."""
    found = pipeline.steps_of(text, str(REPO), python=sys.executable)
    assert [[step.name for step in steps] for steps in found] == names
    page = (REPO / "docs" / "cluster" / "12-pipelines.md").read_text()
    assert all(f"`{name}`" in page for steps in names for name in steps)


def test_the_notebooks_pipeline_is_two_steps_the_second_reading_the_firsts_export():
    (train,), (classify,) = ([parsed(argv) for argv in stage] for stage in stages(lab.NOTEBOOK_PIPELINE))
    assert classify["model_base_path"] == train["export_dir"]
    assert train["steps"] <= 200  # seconds on a laptop


@pytest.mark.parametrize("pipeline", [lab.LAB_PIPELINE, lab.NOTEBOOK_PIPELINE])
def test_every_file_a_step_runs_or_reads_is_in_the_notebook_images_workspace(pipeline):
    """The seed of the workspace (/app/workspace) is the build context's src/, data/ and kube/model-config.yaml."""
    context = build_context()
    for stage in stages(pipeline):
        for argv in stage:
            assert argv[1] in context
            relative = [word for word in argv[2:] if not word.startswith(("-", "/")) and "/" in word or word == "data"]
            for word in relative:
                if word.startswith("runs/"):  # what the steps write
                    continue
                assert word in context or any(p.startswith(word + "/") for p in context), word


def test_a_step_its_script_refuses_fails_the_check():
    """The check can fail: a flag main.py does not have."""
    with pytest.raises(AssertionError, match="unrecognized arguments: --epochs"):
        parsed(["python", "src/main.py", "--epochs", "3"])


def test_the_lab_page_and_the_notebook_show_the_pipelines_as_written():
    page = (REPO / "docs" / "cluster" / "12-pipelines.md").read_text()
    assert f'python src/flow.py run -c "{lab.LAB_PIPELINE}"' in " ".join(page.replace("\\\n", " ").split())
    assert "tfk8s.flow.lab import NOTEBOOK_PIPELINE" in (REPO / "notebooks" / "pipeline.ipynb").read_text()
