"""Where things are in this repository, for the tools that read its files.

The package lives in src/tfk8s/, so the repository is two levels up: in a
checkout, and in the trainer image (/app/src/tfk8s -> /app).
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
DATA = REPO / "data"
KUBE = REPO / "kube"
TEMPLATED = REPO / "templated"
RUNS = REPO / "runs"
