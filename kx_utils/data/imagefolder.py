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

:mod:`kx_utils.data.datasets` caches what this module decodes as its ``decoded`` artifacts:
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

from ..core.images import square_resize

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


# A JPEG is decoded at a reduced scale (Pillow's ``draft``: the DCT's 1/2, 1/4 or 1/8) only while both
# sides stay at least this many times the target side: a 3,888 x 2,592 fundus photograph to 224 px
# decodes at 1/4 (972 x 648) in a fraction of the full decode's time, and the final antialiased
# resize still has more than twice the target's pixels to work from.
DRAFT_MARGIN = 2


def _central_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    if w == h:
        return im
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` of a square batch (torchvision's CenterCrop)."""
    side = images.shape[-1]
    if side == size:
        return images
    top = int(round((side - size) / 2.0))
    return images[..., top:top + size, top:top + size]


def resized_side(size: int, crop: float) -> int:
    """The side an image is resized to before its central ``size`` x ``size`` is cut out: ``size / crop``."""
    return size if crop == 1.0 else int(round(size / crop))


def decode_image(path: Path, size: int | None, crop: float = 1.0) -> np.ndarray:
    """One image as an H x W x 3 uint8 array.

    ``size``: the central square (the shorter side's length), resized to ``size`` x ``size`` with
    :func:`square_resize`; a large JPEG is first decoded at a reduced scale (:data:`DRAFT_MARGIN`).
    ``crop`` < 1: resized to :func:`resized_side` instead, then its central ``size`` x ``size`` kept
    (``crop=224/256`` is the Knockoff authors' Resize(256) + CenterCrop(224)).  None: the image as stored.
    """
    try:
        with Image.open(path) as im:
            side = None if size is None else resized_side(size, crop)
            if side is not None and im.format == "JPEG":
                im.draft("RGB", (DRAFT_MARGIN * side, DRAFT_MARGIN * side))
            im = _as_rgb(im, path)
            if size is None:
                return np.asarray(im, dtype=np.uint8).copy()
            square = torch.from_numpy(np.asarray(_central_square(im), dtype=np.uint8).copy())
            resized = square_resize(square.permute(2, 0, 1)[None], side)[0]
            return centre_crop(resized, size).permute(1, 2, 0).contiguous().numpy()
    except CorruptImageError:
        raise
    except Exception as exc:
        raise CorruptImageError(f"cannot decode image {path}: {exc}. Replace or delete the file "
                                "(a cached decode of the folder is rebuilt when its files change)") from exc


def decoded_bytes(count: int, size: int) -> int:
    """What :func:`decode_images` holds for ``count`` images at ``size`` px: the uint8 tensor it fills."""
    return count * 3 * size * size


def decode_images(paths: list[Path], size: int, workers: int | None = None, crop: float = 1.0) -> torch.Tensor:
    """Decode ``paths`` into one N x 3 x size x size uint8 tensor, each image straight to ``size``
    (:func:`decode_image`, ``crop`` included).

    The tensor is allocated once and filled in place: the peak is :func:`decoded_bytes` plus one
    image per worker, whatever the stored images' sizes (the first image's size means nothing).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"decode_images needs the side in pixels to decode every image to, got {size!r}: "
                         "images of one split differ in size, so there is no stored size to keep")
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def fill(i: int) -> None:
        out[i] = torch.from_numpy(decode_image(paths[i], size, crop)).permute(2, 0, 1)

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 1)) as pool:
        for _ in pool.map(fill, range(len(paths))):
            pass
    return out
