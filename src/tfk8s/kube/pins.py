"""The upstream images the workshop runs, pinned by digest: pinned-images.yaml at the repository's root.

    images:
      - what: serving (kube/serving.yaml)
        reference: tensorflow/serving:2.20.0
        digest: ""

A node pulls `reference@digest` (the digest wins over the tag: whatever the tag names later, the node runs
these bytes). The repository's file carries no digests: none could be established from a source, so they are
resolved by `make instructor-pin-images` (src/instructor.py pin-images) on a machine that reaches the
registries, the day before, and written into the file. Until then the tag alone is used and whoever renders
those images is told so in one warning line.

Everything that applies one of these images pins it through here: src/render_manifests.py (TensorFlow
Serving, `make serve`), the instructor's NFS servers (tfk8s.instructor.namespaces) and Argo's controller and
executor (tfk8s.instructor.argo).
"""
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tfk8s import yamlfile
from tfk8s.cli import UserError
from tfk8s.paths import REPO, replace_text

PINS = REPO / "pinned-images.yaml"
COMMAND = "make instructor-pin-images"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
HEADER = f"""\
# Every upstream image the workshop runs, its tag and the digest a node pulls: `reference@digest`.
# A digest is learned from the registry that serves the image, never guessed or copied: the repository
# ships them empty, and the instructor fills them in the day before, on a machine that reaches the
# registries:
#   {COMMAND}     (src/instructor.py pin-images: crane digest, or docker manifest inspect)
# which rewrites this file. Until then the tag alone is pulled, with a warning each time one is rendered.
# The trainer's base image is not here: src/Dockerfile pins it by digest itself.
"""


@dataclass(frozen=True)
class Pin:
    what: str        # what runs it, for people
    reference: str   # IMAGE:TAG, as the manifests and the code name it
    digest: str      # sha256:<64 hex>, or "" until the instructor resolved it

    def pinned(self):
        """IMAGE:TAG@DIGEST, or IMAGE:TAG while the digest is unknown."""
        return f"{self.reference}@{self.digest}" if self.digest else self.reference


def read(path=PINS):
    """[Pin] of the file at `path`; a missing or malformed file is one line (UserError)."""
    doc = yamlfile.load(yamlfile.read_text(path, "the pinned images file"), str(path))
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path} must hold `images:`, a list of what, reference and digest")
    pins = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) != {"what", "reference", "digest"} \
                or not all(isinstance(value, str) for value in entry.values()):
            raise UserError(f"{path}: image {number} must have exactly what, reference and digest, as text")
        if "@" in entry["reference"] or ":" not in entry["reference"].rpartition("/")[2]:
            raise UserError(f"{path}: image {number}'s reference {entry['reference']!r} must be IMAGE:TAG "
                            "(the digest goes in digest)")
        if entry["digest"] and not DIGEST.fullmatch(entry["digest"]):
            raise UserError(f"{path}: the digest of {entry['reference']} is not sha256:<64 hex digits> or empty: "
                            f"{COMMAND}")
        pins.append(Pin(**entry))
    if len({p.reference for p in pins}) != len(pins):
        raise UserError(f"{path} names an image twice")
    return pins


def dump(pins):
    """The file's text for `pins` (what `read` reads back)."""
    lines = [HEADER, "images:"]
    for p in pins:
        # JSON strings are YAML strings: quoted, whatever they hold.
        lines += [f"  - what: {json.dumps(p.what)}", f"    reference: {json.dumps(p.reference)}",
                  f"    digest: {json.dumps(p.digest)}"]
    return "\n".join(lines) + "\n"


def write(pins, path=PINS):
    """Replace the file at `path` with `pins` at once: a reader sees the old file or the new one, never a part."""
    try:
        replace_text(path, dump(pins))
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None


def with_digests(pins, digests):
    """`pins` with the digests of {reference: digest} filled in."""
    return [replace(p, digest=digests.get(p.reference, p.digest)) for p in pins]


def pinned(reference, pins):
    """What a node should pull for `reference`: reference@digest when the file has its digest, else reference."""
    return next((p.pinned() for p in pins if p.reference == reference), reference)


def unpinned(references, pins):
    """Those of `references` the file lists without a digest."""
    return [p.reference for p in pins if p.reference in set(references) and not p.digest]


def warn(references, path=PINS):
    """One warning line on stderr if any of `references` is pulled by its tag alone."""
    if references:
        print(f"warning: {', '.join(references)} pulled by tag only ({Path(path).name} has no digest for it: "
              f"the instructor runs {COMMAND})", file=sys.stderr)
