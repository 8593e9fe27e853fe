"""Reading one ImageFolder split, ``<split>/<class>/<image>``, into uint8 RGB arrays.

The folder is checked before anything is decoded: a class folder without images
(it would leave a label that no image has) and a file that is not an image (it
would be silently skipped, shrinking the class) are :class:`DataLayoutError` s
that name the path.  Every image becomes 8-bit RGB, whatever it was stored as:

* greyscale (``L``), bilevel (``1``), palette (``P``, ``PA``; transparency dropped),
  ``LA``/``RGBA`` (alpha dropped), ``CMYK`` and ``YCbCr`` are converted by Pillow;
* 16-bit greyscale PNGs (``I;16*``) keep their high byte, as Pillow itself does for
  16-bit colour PNGs (which it opens as 8-bit ``RGB``): a plain conversion would clip
  every value above 255 to white;
* any other mode (32-bit integer ``I``, float ``F``: no defined range) is a
  :class:`CorruptImageError` naming the file and its mode.

:mod:`kx_utils.data` caches what this module decodes as its ``decoded`` artifacts:
a change here that alters the decoded pixels must bump that kind's version there.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# modes Pillow converts to RGB with a meaning; 16-bit greyscale is handled apart
_CONVERTIBLE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


class DataLayoutError(ValueError):
    """A split folder that is not an ImageFolder of images: the message names the path and the fix."""


class CorruptImageError(RuntimeError):
    """An image file cannot be decoded: the message names the file."""


def list_image_folder(split_dir: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (sorted sub-folder names) and (relative file, label) pairs, as ImageFolder does.

    Hidden files and folders (``.DS_Store``) are skipped; any other file in a class folder
    must be an image, and every class folder must hold one.
    """
    split_dir = Path(split_dir)
    classes = sorted(d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith("."))
    samples = []
    for label, cls in enumerate(classes):
        found = 0
        for root, dirs, files in sorted(os.walk(split_dir / cls)):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in sorted(files):
                if f.startswith("."):
                    continue
                rel = os.path.relpath(os.path.join(root, f), split_dir)
                if not f.lower().endswith(IMAGE_EXTENSIONS):
                    raise DataLayoutError(
                        f"{split_dir / rel} is not an image (kx reads {', '.join(IMAGE_EXTENSIONS)}): "
                        f"move it out of the class folders of {split_dir}, or delete it")
                samples.append((rel, label))
                found += 1
        if not found:
            raise DataLayoutError(
                f"class folder {split_dir / cls} holds no images: every class folder of a split needs "
                "images (an empty one would be a class no image has); add its images or remove the folder")
    return classes, samples


def folder_signature(split_dir: Path, samples: list[tuple[str, int]]) -> str:
    """A hash of the listed files' names, labels, sizes and modification times."""
    h = hashlib.sha256()
    for rel, label in samples:
        st = os.stat(split_dir / rel)
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _as_rgb(im: Image.Image, path: Path) -> Image.Image:
    if im.mode.startswith("I;16"):
        high_byte = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(high_byte).convert("RGB")
    if im.mode not in _CONVERTIBLE_MODES:
        raise CorruptImageError(f"image {path} has pixel mode {im.mode!r}, which has no defined 8-bit RGB "
                                "equivalent; save it as 8-bit RGB (or greyscale), or delete it")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # what Pillow asks for a palette with transparency; the alpha goes next
    return im.convert("RGB")


def decode_image(path: Path, size: int | None) -> np.ndarray:
    """One image as an H x W x 3 uint8 array; ``size``: shorter side resized, then the central square."""
    try:
        with Image.open(path) as im:
            im = _as_rgb(im, path)
            if size is not None and im.size != (size, size):
                w, h = im.size
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                               Image.BILINEAR, reducing_gap=None)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).copy()
    except CorruptImageError:
        raise
    except Exception as exc:
        raise CorruptImageError(f"cannot decode image {path}: {exc}. Replace or delete the file "
                                "(a cached decode of the folder is rebuilt when its files change)") from exc


def decode_images(paths: list[Path], size: int | None, workers: int | None = None) -> torch.Tensor:
    """Decode ``paths`` into one N x 3 x size x size uint8 tensor (``size`` None: the first image's width)."""
    if size is None:
        size = decode_image(paths[0], None).shape[1]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 1)) as pool:
        arrays = list(pool.map(lambda p: decode_image(p, size), paths))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
