"""Turn any photo or scan of a digit into what the model was trained on.

MNIST's digits were made by a recipe: grayscale, white ink on black, cropped
to the digit, scaled to fit a 20x20 box without changing the aspect ratio,
then placed in a 28x28 field so that the centre of mass sits at its centre.
A phone photo of a digit on paper is none of these: RGB(A), any size, dark ink
on light paper, the digit anywhere. `to_mnist` applies the same recipe, so
the client and any batch tool send the model what it knows.

    from tfk8s.serving.preprocess import to_mnist
    pixels = to_mnist("data/4.png")      # float32 [28, 28, 1], 0..255, white on black
"""
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tfk8s.cli import UserError

SIZE = 28            # the model's input is SIZE x SIZE
BOX = 20             # MNIST scaled each digit to fit a BOX x BOX square...
CENTRE = 14.0        # ...and put its centre of mass here (row, column; the test set's mean is 14.0, 14.0)
INK_FLOOR = 0.1      # after normalising to 0..1, lighter marks than this are paper texture, not ink
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The largest image decoded: 64 megapixels (a 200-megapixel phone's photos are binned to 50). Its header
# says its size before any pixel is decoded, so Pillow refuses a larger one (or a "decompression bomb": a
# 164 KB PNG of 13000x13000) in one line at no cost; its warning between 1x and 2x the limit is made an
# error too. Decoding one at the limit takes at most 256 MB (RGBA).
MAX_PIXELS = 64_000_000
# Then it is shrunk to at most this many pixels a side before any arithmetic on it (which works in
# float64): the digit ends up 20x20, so nothing is lost, and memory stays bounded.
WORKING_SIDE = 2048
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard, set deliberately to the same limit


class ImageError(UserError):
    """A file that is missing, unreadable or holds no digit."""


def open_image(path):
    """Open a PNG or JPEG, upright (phones store rotation in EXIF); one-line errors for the rest."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in ("PNG", "JPEG", "MPO"):
                    raise ImageError(f"{path} is a {image.format} image; give a PNG or JPEG")
                if max(image.size) > WORKING_SIDE:
                    image.draft(image.mode, (WORKING_SIDE, WORKING_SIDE))  # JPEG: decode at a smaller scale
                image.load()
                if max(image.size) > WORKING_SIDE:
                    image.thumbnail((WORKING_SIDE, WORKING_SIDE))
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path} refused: {err} (this client decodes at most {MAX_PIXELS // 1_000_000} megapixels: "
                         "scale the image down first)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt files
        raise ImageError(f"{path} cannot be read as an image ({err})") from None


def image_paths(path):
    """The images to classify: the file itself, or a directory's PNG and JPEG files, sorted."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise ImageError(f"{path} holds no .png or .jpg files")
        return found
    if not path.exists():
        raise ImageError(f"{path}: no such file or directory")
    return [path]


def _gray(image):
    """Luminance as float64, any bit depth; transparency composited onto paper that contrasts with the ink."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image, dtype=np.float64)  # 16- and 32-bit grayscale: normalised below
    if image.mode == "P" or image.mode == "LA" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float64)
        alpha = rgba[..., 3] / 255
        gray = np.asarray(image.convert("RGB").convert("L"), dtype=np.float64)
        if alpha.min() == 1:
            return gray
        # Ink painted on a transparent canvas: lay it on white if the ink is dark, on black if it is light.
        ink = np.average(gray, weights=alpha) if alpha.sum() > 0 else 0.0
        paper = 255.0 if ink < 128 else 0.0
        return alpha * gray + (1 - alpha) * paper
    return np.asarray(image.convert("L"), dtype=np.float64)


def _white_on_black(gray):
    """Scale to 0..1 with the paper at 0 and the darkest stroke at 1, whichever way round the photo is."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper, low, high = np.median(border), gray.min(), gray.max()
    if high - low <= 0:
        return np.zeros_like(gray)
    if paper > (low + high) / 2:  # light paper, dark ink (a scan or a photo): invert
        gray, paper = high + low - gray, high + low - paper
    ink = gray.max()
    if ink - paper <= 0:
        return np.zeros_like(gray)
    x = np.clip((gray - paper) / (ink - paper), 0, 1)
    x[x < INK_FLOOR] = 0
    return x


def to_mnist(image):
    """A path or PIL image of one digit -> float32 [28, 28, 1], raw pixels 0..255, white digit on black.

    Grayscale, inverted if the paper is light, cropped to the ink, scaled to
    fit 20x20 keeping the aspect ratio, and shifted so that its centre of
    mass is at the centre of the 28x28 field, as MNIST was made.
    """
    name = image if isinstance(image, (str, os.PathLike)) else "image"
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    x = _white_on_black(_gray(image))
    rows, cols = np.flatnonzero(x.any(axis=1)), np.flatnonzero(x.any(axis=0))
    if rows.size == 0:
        raise ImageError(f"{name} is blank: no digit found")
    x = x[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    height, width = x.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray(x.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(digit, dtype=np.float64), 0, 1)

    # Place the box so that the centre of mass lands on CENTRE, keeping all of it inside the field.
    mass = digit.sum()
    r = np.arange(digit.shape[0]) @ digit.sum(axis=1) / mass
    c = np.arange(digit.shape[1]) @ digit.sum(axis=0) / mass
    top = int(np.clip(round(CENTRE - r), 0, SIZE - digit.shape[0]))
    left = int(np.clip(round(CENTRE - c), 0, SIZE - digit.shape[1]))
    field = np.zeros((SIZE, SIZE), np.float32)
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit * 255
    return field[..., None]


def load_batch(paths):
    """to_mnist for several files -> float32 [n, 28, 28, 1]."""
    return np.stack([to_mnist(p) for p in paths]) if paths else np.zeros((0, SIZE, SIZE, 1), np.float32)
