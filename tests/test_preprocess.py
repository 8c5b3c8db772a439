"""preprocess.to_mnist: any photo or scan of a digit becomes the 28x28 white-on-black digit MNIST would have made."""
import numpy as np
import pytest
from PIL import Image

from support import variants
from tfk8s import mnist
from tfk8s.serving import preprocess
from tfk8s.serving.preprocess import ImageError, to_mnist

TEST_IMAGES, TEST_LABELS = mnist.DATASETS["mini"][2:]


@pytest.fixture(scope="module")
def test_set():
    return (mnist.read_idx(mnist.DATA_DIR / TEST_IMAGES),
            mnist.read_idx(mnist.DATA_DIR / TEST_LABELS))


def centre_of_mass(x):
    x = x[..., 0].astype(np.float64)
    i = np.arange(28)
    return (i @ x.sum(1)) / x.sum(), (i @ x.sum(0)) / x.sum()


def test_an_mnist_digit_comes_back_almost_unchanged(test_set):
    """The recipe is MNIST's own: applied to MNIST digits it changes almost nothing."""
    images, _ = test_set
    diffs = [np.abs(to_mnist(Image.fromarray(images[i]))[..., 0] - images[i]).mean() for i in range(100)]
    # Out of 255. Measured (deterministic): median 0.23, mean 0.47; the bounds are about twice that.
    assert np.median(diffs) < 0.5 and np.mean(diffs) < 1.0, (np.median(diffs), np.mean(diffs))


@pytest.mark.parametrize("index", [0, 1, 4, 18, 61])
def test_every_kind_of_picture_of_a_digit_becomes_the_same_mnist_digit(test_set, tmp_path, index):
    images, _ = test_set
    reference = to_mnist(Image.fromarray(images[index]))[..., 0]
    for name, image in variants(images[index]).items():
        path = tmp_path / f"{name}.png"
        image.save(path)
        x = to_mnist(path)[..., 0]
        correlation = np.corrcoef(x.ravel(), reference.ravel())[0, 1]
        # The same strokes, give or take a pixel. Measured (deterministic) over these five digits: 0.859 at the
        # least (digit 61, the 10x scan), 0.96 to 1.0 for most; 0.83 leaves room for Pillow's resampling.
        assert correlation > 0.83, (name, correlation)


def test_a_jpeg_photo_works_like_a_png(test_set, tmp_path):
    images, _ = test_set
    photo = Image.fromarray(255 - images[4]).convert("RGB").resize((200, 200), Image.Resampling.BICUBIC)
    photo.save(tmp_path / "four.jpg", quality=70)
    x = to_mnist(tmp_path / "four.jpg")[..., 0]
    correlation = np.corrcoef(x.ravel(), to_mnist(Image.fromarray(images[4]))[..., 0].ravel())[0, 1]
    assert correlation > 0.9, correlation  # measured: 0.903, deterministic (JPEG at quality 70 blurs the strokes)


def test_output_is_what_the_model_takes_placed_as_mnist_placed_its_digits(test_set):
    images, _ = test_set
    off_centre = variants(images[7])["off_centre"]
    x = to_mnist(off_centre)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == pytest.approx(255, abs=1)
    rows, cols = np.flatnonzero(x[..., 0].any(1)), np.flatnonzero(x[..., 0].any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == preprocess.BOX  # scaled to fit 20x20
    r, c = centre_of_mass(x)
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


def test_a_wide_digit_keeps_its_aspect_ratio():
    bar = np.zeros((50, 200), np.uint8)
    bar[20:30, :] = 255  # 10 x 200: a minus sign
    x = to_mnist(Image.fromarray(bar))[..., 0]
    rows, cols = np.flatnonzero(x.any(1)), np.flatnonzero(x.any(0))
    assert cols[-1] - cols[0] + 1 == 20 and rows[-1] - rows[0] + 1 <= 2


@pytest.mark.parametrize("make, name, message", [
    (lambda d: None, "missing.png", "no such file"),
    (lambda d: (d / "notes.png").write_text("not an image"), "notes.png", "is not a PNG or JPEG image"),
    (lambda d: Image.new("L", (40, 40), 200).save(d / "blank.png"), "blank.png", "is blank"),
    (lambda d: Image.new("L", (40, 40), 200).save(d / "digit.gif"), "digit.gif", "give a PNG or JPEG"),
])
def test_unusable_files_are_one_clear_error(tmp_path, make, name, message):
    make(tmp_path)
    with pytest.raises(ImageError, match=message):
        to_mnist(tmp_path / name)


def test_a_directory_means_its_png_and_jpeg_files_in_order(tmp_path):
    for name in ("b.png", "a.JPG", "c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in preprocess.image_paths(tmp_path)] == ["a.JPG", "b.png", "c.jpeg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no .png or .jpg"):
        preprocess.image_paths(tmp_path / "empty")


@pytest.mark.parametrize("index", [0, 1, 4, 18, 61])
def test_faint_paper_texture_is_not_taken_for_ink(test_set, index):
    images, _ = test_set
    reference = to_mnist(Image.fromarray(images[index]))[..., 0]
    scan = np.asarray(variants(images[index])["large"], np.float64)  # dark ink on white paper, 280x280
    grain = np.random.default_rng(index).uniform(0, 18, scan.shape)  # up to 7% of the paper-to-ink range
    x = to_mnist(Image.fromarray(np.clip(scan - grain, 0, 255).astype(np.uint8)))[..., 0]
    correlation = np.corrcoef(x.ravel(), reference.ravel())[0, 1]
    # Measured (deterministic): 0.856 (digit 61) to 0.979, as the clean scans; with the grain taken for ink
    # (preprocess.INK_FLOOR 0) the crop is the whole sheet and the digit shrinks: 0.29 to 0.50.
    assert correlation > 0.83, f"digit {index} on grainy paper: correlation {correlation:.3f} with the clean one"
