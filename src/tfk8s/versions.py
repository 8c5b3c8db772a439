"""Which sub-directories of an export directory are model versions, exactly as TensorFlow Serving decides.

TensorFlow Serving's file-system source serves `<base_path>/<version>/`, where
`<version>` is a directory whose name parses as a 64-bit integer; every other
child (`.tmp-export-*`, `latest`, `²`, a number past int64) is ignored. The
trainer, the local server, the demo, the sweep's results and the benchmarks
all list versions through this one module, so they never disagree with the
real server (or crash on a name that only looks like a number).
"""
from pathlib import Path

INT64_MAX = 2**63 - 1


def parse(name):
    """The version a directory name stands for, or None: ASCII digits only, within int64."""
    if not name or not name.isascii() or not name.isdigit():
        return None
    version = int(name)
    return version if version <= INT64_MAX else None


def listing(base_path):
    """{version: path} of the version directories under base_path (none if it is missing or unreadable)."""
    try:
        children = list(Path(base_path).iterdir())
    except OSError:
        return {}
    found = {}
    for child in children:
        version = parse(child.name)
        if version is not None and child.is_dir():
            found[version] = child
    return dict(sorted(found.items()))


def versions(base_path):
    """The version numbers under base_path, ascending."""
    return list(listing(base_path))


def newest(base_path):
    """The path of the highest version under base_path, or None."""
    found = listing(base_path)
    return found[max(found)] if found else None
