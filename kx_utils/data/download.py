"""The paper's datasets that torchvision can download (CIFAR10, GTSRB, Caltech-256), written as ImageFolder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..core.seeded import seeded_generator, seeded_permutation
from .catalog import DatasetInfo, DatasetNotFoundError


def _export_torchvision(dataset, out_dir: Path, class_names: list[str] | None = None) -> None:
    """Write a torchvision dataset of (PIL image, label) pairs as ImageFolder PNGs."""
    for i in range(len(dataset)):
        img, label = dataset[i]
        name = class_names[label] if class_names else f"{label:05d}"
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(target / f"{i:06d}.png")


def _download_cifar10(raw: Path, out: Path) -> None:
    from torchvision.datasets import CIFAR10
    for split, train in (("train", True), ("test", False)):
        ds = CIFAR10(raw, train=train, download=True)
        _export_torchvision(ds, out / split, ds.classes)


def _download_gtsrb(raw: Path, out: Path) -> None:
    from torchvision.datasets import GTSRB
    for split in ("train", "test"):
        _export_torchvision(GTSRB(raw, split=split, download=True), out / split)


CALTECH256_CLUTTER = "257.clutter"  # background images, not an object category


def _download_caltech256(raw: Path, out: Path, test_per_class: int = 25, seed: int = 0) -> None:
    """Caltech-256's 256 object categories, ``test_per_class`` random images of each for the test split.

    ``257.clutter`` is left out, as the Knockoff authors' loader (which the paper follows) drops it:
    the paper's Caltech has 256 classes.
    """
    from torchvision.datasets import Caltech256
    ds = Caltech256(raw, download=True)
    labels = torch.tensor(ds.y)
    gen = seeded_generator(seed)  # one stream, class after class
    for c in torch.unique(labels).tolist():
        if ds.categories[c] == CALTECH256_CLUTTER:
            continue  # skipped before its draw, so the other classes' draws do not depend on it
        members = torch.nonzero(labels == c).flatten()
        members = members[seeded_permutation(len(members), generator=gen)]
        for j, i in enumerate(members.tolist()):
            split = "test" if j < test_per_class else "train"
            img, _ = ds[i]
            target = out / split / ds.categories[c]
            target.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(target / f"{i:06d}.png")


DOWNLOADERS: dict[str, Callable[[Path, Path], None]] = {
    "cifar10": _download_cifar10, "gtsrb": _download_gtsrb, "caltech256": _download_caltech256,
}


def download(info: DatasetInfo, root: Path) -> Path:
    """Fetch a dataset with torchvision and write it as ImageFolder under ``root/info.folder``.

    The folder appears only once the export is complete (built beside it, then renamed).
    """
    if info.downloader is None:
        raise DatasetNotFoundError(f"{info.paper_name} cannot be downloaded automatically: {info.how_to_get}")
    final = root / info.folder
    raw = root / "_downloads" / info.key
    raw.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=root, prefix=f".{info.folder}."))
    try:
        DOWNLOADERS[info.downloader](raw, building)
        os.replace(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final
