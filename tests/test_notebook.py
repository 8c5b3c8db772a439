"""notebooks/walkthrough.ipynb: committed clean, and it runs top to bottom headless on the shipped data."""
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from test_demo import server_processes

NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def text_of(cell):
    """Everything a code cell printed (streams and plain-text results)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_committed_as_nbformat_4_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_trains_serves_shows_the_mistakes_and_skips_the_tfjob_without_a_cluster(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("NOTEBOOK_RUN_DIR", str(run_dir))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # never a real cluster, even where there is one
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # kernel "python3" is this venv's ipykernel, not a user-wide one
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel starts in notebooks/, as JupyterLab starts it.
    NotebookClient(nb, kernel_name="python3", timeout=600, startup_timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [o for cell in code for o in cell.outputs if o["output_type"] == "error"]
    printed = "\n".join(text_of(cell) for cell in code)
    progress = re.findall(r"^step +(\d+)/(\d+) ", printed, re.M)  # the trainer's progress lines, streamed
    assert len(progress) >= 2 and progress[-1][0] == progress[-1][1], printed
    assert f"test accuracy after {progress[-1][0]} steps:" in printed  # read back from the event files
    served = re.search(r"test accuracy through the model server: (\d+\.\d+)% \((\d+) of 10000 misclassified\)", printed)
    assert served and float(served.group(1)) > 80, printed
    assert "model server stopped" in printed
    assert "TFJob mnist-tfjob in namespace default: 1 Chief, 2 Worker" in printed
    assert "skipped: no cluster (" in printed and (run_dir / "tfjob.yaml").read_text().count("kind: TFJob") == 1
    pictures = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 4  # the training digits, the learning curve, the samples, the mistakes
    assert any((run_dir / "export").iterdir())
    assert not server_processes(run_dir)  # the cleanup cell stopped it

