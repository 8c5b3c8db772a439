"""Which sub-directories of an export directory are model versions, exactly as TensorFlow Serving decides.

TensorFlow Serving's file-system source serves `<base_path>/<version>/`, where
`<version>` is a name absl::SimpleAtoi reads as a 64-bit integer: ASCII digits
with an optional sign, surrounding ASCII whitespace ignored, leading zeros
allowed (`007` is 7). Every other child (`.tmp-export-*`, `latest`, `²`, `٣`,
a number past int64) is ignored. Of names that read as the same version
(`1`, `01`) one is served. The trainer, the local server, the demo, the
sweep's results and the benchmarks all list versions through this one module,
so they never disagree with the real server (or crash on a name that only
looks like a number).
"""
from pathlib import Path

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_WHITESPACE = " \t\n\v\f\r"
_DIGITS = frozenset("0123456789")


def parse(name):
    """The version a directory name stands for, or None, as absl::SimpleAtoi(name, &int64) reads it."""
    text = name.strip(_WHITESPACE)
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not set(digits) <= _DIGITS:  # ASCII only: str.isdigit() would take '²' and '٣'
        return None
    version = int(text)
    return version if INT64_MIN <= version <= INT64_MAX else None


def ignored(base_path):
    """The children of base_path that are not version directories (for a server's log), sorted."""
    try:
        children = list(Path(base_path).iterdir())
    except OSError:
        return []
    return sorted(c.name for c in children if parse(c.name) is None or not c.is_dir())


def listing(base_path):
    """{version: path} of the version directories under base_path (none if it is missing or unreadable)."""
    try:
        children = list(Path(base_path).iterdir())
    except OSError:
        return {}
    found = {}
    for child in sorted(children):  # of duplicates (1, 01), the first name in sort order wins
        version = parse(child.name)
        if version is not None and version not in found and child.is_dir():
            found[version] = child
    return dict(sorted(found.items()))


def versions(base_path):
    """The version numbers under base_path, ascending."""
    return list(listing(base_path))


def newest(base_path):
    """The path of the highest version under base_path, or None."""
    found = listing(base_path)
    return found[max(found)] if found else None
