"""Where things are in this repository, for the tools that read its files.

The package lives in src/tfk8s/, so the repository is two levels up: in a
checkout, and in the trainer image (/app/src/tfk8s -> /app).
"""
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
DATA = REPO / "data"
KUBE = REPO / "kube"
TEMPLATED = REPO / "templated"
RUNS = REPO / "runs"


def replace_text(path, text):
    """Replace the file at `path` with `text` in one step (written beside it, then renamed over it): a reader
    sees the old file or the new one, never a part, and a failed write leaves no staging file behind."""
    path = Path(path)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
