"""Synthetic images in the `paper` profile's folder layout, for the paper-shaped dry run.

Every dataset of :data:`kx_utils.data.catalog.DATASETS` gets its paper folders and splits
(``caltech256/{train,test}``, ``imagenet_subset/{train,test}``, ``openimages/test/all``, ...), with
class folders named as the real ones where the code reads the names (the audited ImageNet-overlap
lists name Caltech-256's and CUB's classes).  The images are what real folders are like where it
matters to the code: mixed sizes and aspect ratios, a large first image in every split (a decoder
that squares a split to its first image's side would blow up), JPEG and PNG, greyscale among them.
Each class has its own colour and stripe direction, so a model can learn something.
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from kx_utils.data.catalog import DATASETS
from kx_utils.data.overlap import list_path
from kx_utils.data.wordnet import imagenet_paths

FIRST_IMAGE = (480, 360)  # every split's first image: far larger than the profile's size


def _listed_classes(folder: str) -> list[str]:
    with list_path(folder).open(newline="", encoding="utf-8") as f:
        return [row["class"] for row in csv.DictReader(f)]


# dataset key -> (class folder names, train images per class, test images per class)
def layout() -> dict[str, tuple[list[str], int, int]]:
    # most listed classes overlap ImageNet; the starred detectors' 10-fold CV needs 10 images of the others
    caltech = _listed_classes("caltech256") + [f"{300 + i}.synthetic-{i}" for i in range(5)]
    cubs = _listed_classes("cubs200") + ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    wnids = sorted(imagenet_paths())[::50]  # 20 real ImageNet classes: the adaptive attacker walks their WordNet tree
    return {
        "caltech256": (sorted(set(caltech)), 3, 2),
        "cubs200": (sorted(set(cubs)), 6, 3),
        "diabetic5": (["0", "1", "2", "3", "4"], 8, 4),
        "gtsrb": ([f"{c:05d}" for c in range(10)], 6, 3),
        "cifar10": (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"], 6, 3),
        "imagenet": (wnids, 9, 1),  # the paper's 90 / 10 per class, scaled down
        "openimages": (["all"], 0, 30),
        "bing": ([f"b{c:03d}" for c in range(10)], 8, 0),
    }


def _image(rng: np.random.Generator, label: int, size: tuple[int, int]) -> Image.Image:
    w, h = size
    r, g, b = colorsys.hsv_to_rgb((label * 0.618) % 1.0, 0.8, 0.9)
    colour = np.array([r, g, b]) * 255
    yy, xx = np.mgrid[0:h, 0:w]
    angle = (label % 4) * np.pi / 4
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / max(4, min(w, h) / 4))
    pixels = colour[None, None, :] * (0.75 + 0.25 * stripes[..., None]) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_paper_shaped_data(root: Path, seed: int = 0) -> dict[str, int]:
    """Write every paper dataset under ``root``; returns ``{folder/split: images}``."""
    rng = np.random.default_rng(seed)
    counts = {}
    for key, (classes, train, test) in layout().items():
        info = DATASETS[key]
        for split, sub in info.splits.items():
            per_class = train if split == "train" else test
            if per_class == 0:
                continue
            n = 0
            for label, cls in enumerate(classes):
                folder = root / info.folder / sub / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    size = FIRST_IMAGE if n == 0 else tuple(int(v) for v in rng.integers(24, 97, 2))
                    image = _image(rng, label, size)
                    if n % 7 == 3:
                        image = image.convert("L")  # greyscale files exist in the real sets
                    suffix = ".png" if n % 2 else ".jpg"
                    image.save(folder / f"{cls}_{i:03d}{suffix}")
                    n += 1
            counts[f"{info.folder}/{sub}"] = n
    return counts
