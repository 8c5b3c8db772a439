"""A YAML file a command was given: its documents, or one line saying why not (UserError, exit 1)."""
from pathlib import Path

import yaml

from tfk8s.cli import UserError


def documents(path):
    """The YAML documents of `path`, empty ones skipped; a missing, unreadable, binary or malformed file is one line."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a text file (byte {err.start} is not UTF-8)") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a manifest") from None
