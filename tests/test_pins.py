"""pinned-images.yaml: the upstream images the workshop runs (TensorFlow Serving, the NFS servers, Argo's controller
and executor) and their digests.

`make instructor-pin-images` resolves each image in its registry (a stand-in crane here) and writes the digests
into the file; `make serve` (src/render_manifests.py) and the instructor's NFS servers then run `tag@digest`.
An image that does not resolve is one line naming it, the file left as it was. While the file has no digest, the
tag is used, with one warning line naming the command.
"""
from dataclasses import replace

import pytest
import yaml

from support import KUBE, assert_one_line_error, make, run_script
from tfk8s.instructor import argo, namespaces, preflight
from tfk8s.kube import pins

SERVING = "tensorflow/serving:2.20.0"
NFS = namespaces.NFS_IMAGE
ARGO = [argo.CONTROLLER_IMAGE, argo.EXECUTOR_IMAGE]
DIGESTS = {SERVING: "sha256:" + "1a" * 32, NFS: "sha256:" + "2b" * 32, ARGO[0]: "sha256:" + "3c" * 32,
           ARGO[1]: "sha256:" + "4d" * 32}
WARNING = "make instructor-pin-images"

CRANE = """#!/bin/sh
echo "$*" >> "{log}"
case "$1 $2" in
{cases}
esac
echo "Error: GET https://registry.example/v2/$2: MANIFEST_UNKNOWN: manifest unknown" >&2
exit 1
"""


def stand_in_crane(tmp_path, digests):
    """A PATH whose crane answers `crane digest REF` with digests[REF], and fails (exit 1) for any other REF."""
    bin_dir = tmp_path / "crane-bin"
    bin_dir.mkdir()
    cases = "\n".join(f'  "digest {ref}") echo "{digest}"; exit 0;;' for ref, digest in digests.items())
    (bin_dir / "crane").write_text(CRANE.format(log=tmp_path / "crane.log", cases=cases))
    (bin_dir / "crane").chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def pins_copy(tmp_path, digests=None):
    """The repository's pinned-images.yaml with no digest but `digests` ({reference: digest}), to point the
    commands at."""
    path = tmp_path / "pins" / "pinned-images.yaml"
    path.parent.mkdir()
    unpinned = [replace(p, digest="") for p in pins.read()]
    path.write_text(pins.dump(pins.with_digests(unpinned, digests or {})))
    return path


def images(text, kind):
    return [c["image"] for d in yaml.safe_load_all(text) if d and d["kind"] == kind
            for c in d["spec"]["template"]["spec"]["containers"]]


def render_serving(path):
    return run_script("render_manifests.py", "--namespace", "alice", "--placeholder_digest", "--pins", path,
                      KUBE / "serving.yaml")


def render_nfs_server(tmp_path, path, *flags):
    out = tmp_path / "instructor"
    result = run_script("instructor.py", "render", "--pins", path, "--output_dir", out, *flags, "alice")
    text = (out / "alice.yaml").read_text() if result.returncode == 0 else ""
    return result, images(text, "Deployment")


def test_the_repository_lists_serving_the_nfs_server_and_argo_each_with_a_digest_or_none():
    found = pins.read()  # refuses a digest that is not sha256:<64 hex>
    assert [p.reference for p in found] == [preflight.serving_image(), NFS, *ARGO] == [SERVING, NFS, *ARGO]
    assert "never guessed" in pins.PINS.read_text()
    # What the command writes is this file with digests: the comments stay.
    assert pins.PINS.read_text() == pins.dump(found)


def test_pin_images_writes_every_digest_and_serving_and_the_nfs_server_then_run_by_it(tmp_path):
    path = pins_copy(tmp_path)
    result = run_script("instructor.py", "pin-images", "--pins", path, env=stand_in_crane(tmp_path, DIGESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "crane.log").read_text().splitlines() == [f"digest {ref}" for ref in DIGESTS]
    assert [p.pinned() for p in pins.read(path)] == [f"{ref}@{digest}" for ref, digest in DIGESTS.items()]
    assert path.read_text() == pins.dump(pins.read(path)) and "never guessed" in path.read_text()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["check", "result", "detail"] and len(lines) == 2 + len(DIGESTS)
    for line, (ref, digest) in zip(lines[1:], DIGESTS.items()):
        assert f"{ref}@{digest}" in line, line
    assert sorted(p.name for p in path.parent.iterdir()) == ["pinned-images.yaml"]  # no staging file left

    serving = render_serving(path)
    assert serving.returncode == 0 and serving.stderr == "", serving.stderr
    assert images(serving.stdout, "Deployment") == [f"{SERVING}@{DIGESTS[SERVING]}"]
    nfs, found = render_nfs_server(tmp_path, path)
    assert nfs.returncode == 0 and nfs.stderr == "", nfs.stderr
    assert found == [f"{NFS}@{DIGESTS[NFS]}"]


def test_an_image_that_does_not_resolve_is_one_line_naming_it_and_the_file_stays_as_it_was(tmp_path):
    path = pins_copy(tmp_path, {SERVING: "sha256:" + "0f" * 32, NFS: "sha256:" + "0e" * 32})
    before = path.read_bytes()
    result = run_script("instructor.py", "pin-images", "--pins", path,
                        env=stand_in_crane(tmp_path, {SERVING: DIGESTS[SERVING]}))
    assert_one_line_error(result, NFS, "MANIFEST_UNKNOWN", "is unchanged")
    assert len(result.stderr.strip().splitlines()) == 1 and SERVING not in result.stderr
    assert result.stdout == ""
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["pinned-images.yaml"]


def test_without_crane_or_docker_pin_images_is_one_line_and_writes_nothing(tmp_path):
    path = pins_copy(tmp_path)
    before = path.read_bytes()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_script("instructor.py", "pin-images", "--pins", path, env={"PATH": str(empty)})
    assert_one_line_error(result, "neither crane nor docker is installed")
    assert path.read_bytes() == before


def test_without_a_digest_serving_runs_its_tag_with_one_warning_line(tmp_path):
    result = render_serving(pins_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert images(result.stdout, "Deployment") == [SERVING]
    (line,) = result.stderr.splitlines()
    assert line.startswith("warning: ") and SERVING in line and WARNING in line and NFS not in line


def test_without_a_digest_the_nfs_server_runs_its_tag_with_one_warning_line(tmp_path):
    result, found = render_nfs_server(tmp_path, pins_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert found == [NFS]
    (line,) = result.stderr.splitlines()
    assert line.startswith("warning: ") and NFS in line and WARNING in line and SERVING not in line


@pytest.mark.parametrize("flags", [("kube/tensorboard.yaml",), ("--rwx_storage_class", "standard-rwx")],
                         ids=["a manifest of the trainer only", "Filestore, no NFS server"])
def test_nothing_upstream_rendered_no_warning(tmp_path, flags):
    if flags[0].startswith("kube/"):
        result = run_script("render_manifests.py", "--placeholder_digest", *flags)
    else:
        result, _ = render_nfs_server(tmp_path, pins.PINS, *flags)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_make_serve_applies_serving_by_the_pinned_digest(fake_kubectl, tmp_path):
    path, calls = fake_kubectl
    result = make("serve", "NAMESPACE=alice", f"PINNED_IMAGES={pins_copy(tmp_path, DIGESTS)}",
                  env={"FAKE_CONTEXT_NAMESPACE": "alice"}, path=path)
    assert result.returncode == 0, result.stdout + result.stderr
    applied = [image for call in calls() if call["args"][-3:] == ["apply", "-f", "-"]
               for image in images(call["stdin"], "Deployment")]
    assert applied == [f"{SERVING}@{DIGESTS[SERVING]}"]
    assert WARNING not in result.stderr


@pytest.mark.parametrize("text, fragment", [
    ("images: []\n", "must hold `images:`"),
    (f'images:\n  - what: "x"\n    reference: "{SERVING}"\n    digest: "sha256:123"\n', "is not sha256:<64 hex"),
    (f'images:\n  - what: "x"\n    reference: "{SERVING}@{DIGESTS[SERVING]}"\n    digest: ""\n', "must be IMAGE:TAG"),
    ('images:\n  - what: "x"\n    reference: "a:1"\n', "exactly what, reference and digest"),
])
def test_a_malformed_pins_file_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "pinned-images.yaml"
    path.write_text(text)
    assert_one_line_error(render_serving(path), str(path), fragment)
    assert_one_line_error(run_script("instructor.py", "pin-images", "--pins", path), fragment)
