"""Batch inference without a server: the shipped 10k test images scored as well as the export scores their arrays.

The images go through the client's preprocessing (src/preprocess.py) as PNG
files, exactly as a folder of scans would, so the run is compared with the
export's `predict` signature applied directly to the same 10,000 uint8
arrays. PNG keeps uint8 pixels exactly; the preprocessing re-crops, rescales
and re-centres each digit, which on MNIST's already centred digits moves a
few of them by a pixel: a handful of answers may change, no more.
"""
import csv
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from support import REPO, assert_one_line_error, doc, local_run, run_script
from tfk8s import mnist

MAX_CHANGED = 30  # of 10,000 answers (0.3%); measured: 6 to 10 with the 300-step model


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_batch_job_command_scores_the_10k_test_images_as_the_export_scores_their_arrays(tmp_path, trained_model):
    """kube/batch-predict.yaml's command: the empty input folder gets the test set as PNGs, every one is scored."""
    import tensorflow as tf

    nfs = tmp_path / "nfs"
    shutil.copytree(trained_model["version"], nfs / "exports" / "mnist" / trained_model["version"].name)
    (predict_container,) = doc("batch-predict.yaml", "Job")["spec"]["template"]["spec"]["initContainers"]
    result = local_run(predict_container, nfs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote the 10000 MNIST test digits" in result.stdout
    assert f"with {nfs}/exports/mnist/{trained_model['version'].name} (signature predict)" in result.stdout
    assert re.search(r"10000 rows \(10000 scored, 0 with an error\) in [\d.]+s, [\d,]+ images/s", result.stdout)

    table = rows(nfs / "batch" / "out" / "predictions.csv")
    assert len(table) == 10_000 and list(table[0]) == ["path", "digit", "probability", "error"]
    images, labels = mnist.load("mini")["test"]
    # <index>-<label>.png, in index order: row i is test image i.
    assert [r["path"] for r in table[:2]] == [f"{nfs}/batch/in/00000-{labels[0]}.png",
                                              f"{nfs}/batch/in/00001-{labels[1]}.png"]
    batch = np.array([int(r["digit"]) for r in table])
    probability = np.array([float(r["probability"]) for r in table])
    assert all(r["error"] == "" for r in table) and ((probability > 0.1) & (probability <= 1.0)).all()

    predict = tf.saved_model.load(str(trained_model["version"])).signatures["predict"]
    direct = np.concatenate([predict(image=tf.constant(images[i:i + 1000, ..., None], tf.float32))["classes"].numpy()
                             for i in range(0, len(images), 1000)])
    changed = int((batch != direct).sum())
    assert changed <= MAX_CHANGED, f"{changed} answers differ"
    assert abs(np.mean(batch == labels) - np.mean(direct == labels)) <= MAX_CHANGED / len(labels)
    # The trained_model fixture scores 96.57-98.60% of the test set (eleven measured runs, see test_trainer.py).
    assert np.mean(batch == labels) > 0.95


@pytest.mark.slow
def test_bad_files_get_a_row_with_their_error_and_the_rest_are_scored(tmp_path, trained_model):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REPO / "data" / "3.png", folder / "a-three.png")
    shutil.copy(REPO / "data" / "7.png", folder / "b-seven.PNG")
    (folder / "c-text.png").write_text("not an image")
    (folder / "d-empty.jpg").write_bytes(b"")
    Image.new("L", (28, 28)).save(folder / "e-blank.png")
    (folder / "f-truncated.png").write_bytes((REPO / "data" / "5.png").read_bytes()[:60])
    (folder / "notes.txt").write_text("not scored: not an image name")
    out = tmp_path / "out" / "p.csv"
    result = run_script("batch_predict.py", "--model_base_path", trained_model["export_dir"], "--input", folder,
                        "--output", out, "--batch_size", 2)
    assert result.returncode == 0, result.stdout + result.stderr
    table = {row["path"].rsplit("/", 1)[-1]: row for row in rows(out)}
    assert list(table) == ["a-three.png", "b-seven.PNG", "c-text.png", "d-empty.jpg", "e-blank.png", "f-truncated.png"]
    assert (table["a-three.png"]["digit"], table["b-seven.PNG"]["digit"]) == ("3", "7")
    assert table["a-three.png"]["error"] == "" and float(table["a-three.png"]["probability"]) > 0.5
    assert "is not a PNG or JPEG image" in table["c-text.png"]["error"]
    assert "is not a PNG or JPEG image" in table["d-empty.jpg"]["error"]
    assert "blank: no digit found" in table["e-blank.png"]["error"]
    assert "cannot be read" in table["f-truncated.png"]["error"] or "not a PNG" in table["f-truncated.png"]["error"]
    for name in ("c-text.png", "d-empty.jpg", "e-blank.png", "f-truncated.png"):
        assert table[name]["digit"] == table[name]["probability"] == ""
    assert "6 rows (2 scored, 4 with an error)" in result.stdout


@pytest.mark.slow
def test_the_newest_version_is_scored_unless_model_version_names_another(tmp_path, trained_model):
    export = tmp_path / "export"
    old = int(trained_model["version"].name)
    shutil.copytree(trained_model["version"], export / str(old))
    shutil.copytree(trained_model["version"], export / str(old + 1))
    (export / ".tmp-export-abc").mkdir()  # an export being written is never picked
    args = ["--input", REPO / "data" / "4.png", "--output", tmp_path / "p.csv"]
    newest = run_script("batch_predict.py", "--model_base_path", export, *args)
    assert f"with {export}/{old + 1} (signature predict)" in newest.stdout, newest.stderr
    pinned = run_script("batch_predict.py", "--model_base_path", export, "--model_version", old, *args)
    assert f"with {export}/{old} (signature predict)" in pinned.stdout, pinned.stderr
    assert [r["digit"] for r in rows(tmp_path / "p.csv")] == ["4"]


@pytest.mark.parametrize("args,fragment", [
    (["--model_base_path", "{tmp}/none"], "no such directory"),
    (["--model_base_path", "{tmp}"], "holds no exported model"),
    (["--model_base_path", "{export}", "--model_version", "7"], "has no version 7"),
    (["--model_base_path", "{export}", "--input", "{tmp}/missing"], "no such file or directory"),
    (["--model_base_path", "{export}", "--batch_size", "0"], "--batch_size must be at least 1"),
    (["--model_base_path", "{export}", "--output", "{tmp}/file/p.csv"], "cannot write"),
])
def test_mistakes_are_one_line_errors_and_no_csv_is_left_behind(tmp_path, args, fragment):
    export = tmp_path / "export"
    (export / "1").mkdir(parents=True)  # never loaded: every case fails before
    (tmp_path / "file").write_text("a file, not a folder")
    defaults = {"--input": str(REPO / "data"), "--output": str(tmp_path / "out.csv")}
    argv = [a.format(tmp=tmp_path, export=export) for a in args]
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    assert_one_line_error(run_script("batch_predict.py", *argv), fragment)
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv.*"))


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_an_error_row_and_the_rest_are_scored(tmp_path, trained_model):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REPO / "data" / "3.png", folder / "a-three.png")
    shutil.copy(REPO / "data" / "7.png", os.fsdecode(bytes(folder) + b"/b-\xff\xfe.png"))  # Latin-1 bytes, say
    shutil.copy(REPO / "data" / "2.png", folder / "c-two.png")
    out = tmp_path / "p.csv"
    result = run_script("batch_predict.py", "--model_base_path", trained_model["export_dir"], "--input", folder,
                        "--output", out)
    assert result.returncode == 0, result.stdout + result.stderr
    table = {row["path"].rsplit("/", 1)[-1]: row for row in rows(out)}
    assert list(table) == ["a-three.png", "b-\\xff\\xfe.png", "c-two.png"]
    assert (table["a-three.png"]["digit"], table["c-two.png"]["digit"]) == ("3", "2")
    assert "the file name is not UTF-8" in table["b-\\xff\\xfe.png"]["error"]
    assert "3 rows (2 scored, 1 with an error)" in result.stdout


@pytest.mark.slow
def test_an_export_whose_predict_signature_is_another_models_is_one_line(tmp_path):
    import tensorflow as tf

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def predict(self, x):
            return {"y": x * 2.0}

    other = Other()
    tf.saved_model.save(other, str(tmp_path / "export" / "1"), signatures={"predict": other.predict})
    shutil.copy(REPO / "data" / "3.png", tmp_path / "three.png")
    result = run_script("batch_predict.py", "--model_base_path", tmp_path / "export", "--input",
                        tmp_path / "three.png", "--output", tmp_path / "p.csv")
    assert_one_line_error(result, "its 'predict' signature is not an MNIST classifier's",
                          "it takes x float32(None, 3) and returns y")
    assert len(result.stderr.splitlines()) < 40, result.stderr  # TensorFlow's start-up notices, not a traceback
    assert not (tmp_path / "p.csv").exists()
