"""The paper's datasets, their offline stand-ins, and a decode-once image cache.

Data lives under ``$KX_DATA`` in torchvision's ImageFolder layout,
``<folder>/<split>/<class>/<image>``.  Images are decoded once into a uint8
tensor (N x 3 x H x W) that is cached as an artifact, so that no epoch ever
decodes a JPEG again; normalisation with ImageNet's mean and standard deviation
happens inside the models (:class:`kx_utils.core.models.Normalize`).  Reading and
checking a split folder, and converting every image to 8-bit RGB, is
:mod:`kx_utils.data.imagefolder`'s.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..core.images import resize_images
from ..core.seeded import seeded_generator, seeded_permutation, seeded_subset
from ..runtime.artifacts import ArtifactStore, artifact_kind, settings_key
from ..runtime.memo import Memo
from .catalog import (
    DatasetNotFoundError,
    data_root,
    dataset_info,
)
from .download import download
from .imagefolder import (  # noqa: F401
    IMAGE_EXTENSIONS,
    CorruptImageError,
    DataLayoutError,
    decode_images,
    folder_signature,  # noqa: F401
    list_image_folder,
)

# v2: 16-bit greyscale PNGs keep their high byte instead of clipping to white (kx_utils.data.imagefolder)
# v3: every image decoded straight to the requested size (no more "the first image's width")
DECODED = artifact_kind("decoded", 3)  # an ImageFolder split decoded to uint8 tensors
# the sha256 of a split's files (names, labels, bytes), keyed by the folder's listing, sizes and mtimes
SPLIT_CONTENT = artifact_kind("split_content", 1)
@dataclass
class ImageSet:
    """Decoded images of one split: ``images`` uint8 N x 3 x H x W, ``labels`` int64 N."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""
    files: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, indices: torch.Tensor | Sequence[int], name: str | None = None) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        files = [self.files[i] for i in idx.tolist()] if self.files else []
        return ImageSet(self.images[idx], self.labels[idx], self.classes, name or self.name, files)

    def per_class(self, n: int | None, seed: int = 0) -> "ImageSet":
        """At most ``n`` images of every class, drawn with ``seed`` (all of them when ``n`` is None)."""
        if n is None:
            return self
        return self.subset(per_class_indices(self.labels, n, seed))

    def capped(self, cap: int | None, seed: int) -> "ImageSet":
        """At most ``cap`` images (all of them when ``cap`` is None), a seeded draw kept in the set's order."""
        if cap is None or len(self) <= cap:
            return self
        return self.subset(seeded_subset(len(self), cap, seed))

    def resized(self, size: int) -> "ImageSet":
        if size == self.image_size:
            return self
        return ImageSet(resize_images(self.images, size), self.labels, self.classes, self.name, self.files)

    def without_classes(self, drop: Sequence[int]) -> "ImageSet":
        """Remove the given classes and renumber the others 0..K-1 in their order."""
        drop_set = set(int(c) for c in drop)
        keep = [c for c in range(self.num_classes) if c not in drop_set]
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
        idx = torch.nonzero(remap[self.labels] >= 0).flatten()
        sub = self.subset(idx)
        return ImageSet(sub.images, remap[sub.labels], [self.classes[c] for c in keep], self.name, sub.files)


def per_class_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of at most ``n`` items of every class, a seeded draw, in ascending order."""
    gen = seeded_generator(seed)  # one stream, class after class
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[seeded_permutation(len(members), generator=gen)[:n]])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.empty(0, dtype=torch.long)


# ---------------------------------------------------------------- reading folders


def decode_folder(split_dir: Path, size: int, workers: int | None = None, crop: float = 1.0) -> ImageSet:
    """Decode a whole ImageFolder split into uint8 tensors (no caching; ``crop``: :func:`decode_image`'s)."""
    classes, samples = list_image_folder(split_dir)
    if not samples:
        raise DatasetNotFoundError(f"no images under {split_dir}: expected <class>/<image> sub-folders")
    images = decode_images([split_dir / rel for rel, _ in samples], size, workers, crop)
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return ImageSet(images, labels, classes, split_dir.name, [rel for rel, _ in samples])


def read_class_names(dataset_dir: Path, folders: list[str]) -> list[str]:
    """Human-readable class names from ``classes.csv`` where the dataset has one, else the folders."""
    csv_path = dataset_dir / "classes.csv"
    if not csv_path.is_file():
        return list(folders)
    with open(csv_path, newline="") as f:
        names = {row["folder"]: row["name"] for row in csv.DictReader(f)}
    return [names.get(folder, folder) for folder in folders]


# ---------------------------------------------------------------- the public loader


def split_folder(key: str, split: str, standins: bool, root: str | os.PathLike | None = None,
                 allow_download: bool = False) -> Path:
    """The folder of one split, checked to exist (downloading it first when allowed and possible)."""
    info = dataset_info(key)
    base = data_root(root)
    folder, sub = info.location(standins, split)
    path = base / folder / sub
    if not path.is_dir():
        if allow_download and not standins and info.downloader:
            download(info, base)
        if not path.is_dir():
            what = f"the offline stand-in for {info.paper_name} ({info.standin_note})" if standins \
                else info.paper_name
            hint = info.how_to_get
            if standins:
                hint = info.standin_optional or (
                    "`python -m kx_utils data fetch --profile mini` downloads its public source and builds it "
                    f"into {base} (or point KX_DATA at prepared stand-ins, e.g. ../shared/datasets on the "
                    "development machine)")
            raise DatasetNotFoundError(
                f"dataset folder {path} not found: expected {what} in ImageFolder layout "
                f"{base / folder}/{sub}/<class>/<image>. To get it: {hint}")
    return path


_CONTENT_MEMO: Memo[str] = Memo("split content digests")  # (folder, split) -> sha256, for the process


def split_content_digest(key: str, split: str, *, standins: bool, root: str | os.PathLike | None = None,
                         store: ArtifactStore | None = None) -> str:
    """The sha256 of one split's content: every file's path under the split, label and bytes.

    Trained models and answer sets carry it in their keys, so replacing, adding or relabelling an
    image makes them stale instead of reused.  Reading every byte is done once per state of the
    folder: the digest is cached under the folder's listing, sizes and modification times (a copy
    of the data re-reads it, and finds the same digest), and memoised for the process.
    """
    path = split_folder(key, split, standins, root)

    def digest() -> str:
        _, samples = list_image_folder(path)

        def compute() -> dict:
            h = hashlib.sha256()
            for rel, label in samples:
                h.update(f"{rel}\0{label}\0".encode())
                with open(path / rel, "rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
            return {"sha256": h.hexdigest(), "files": len(samples)}

        return (store or ArtifactStore()).cached(SPLIT_CONTENT, {"signature": folder_signature(path, samples)},
                                                 compute)["sha256"]

    return _CONTENT_MEMO.get((str(path), split), digest)


def class_folders(key: str, split: str, *, standins: bool, root: str | os.PathLike | None = None) -> list[str]:
    """The class folder names of one split, in label order (what the overlap lists name)."""
    return list_image_folder(split_folder(key, split, standins, root))[0]


def load_split(key: str, split: str, *, standins: bool, size: int,
               root: str | os.PathLike | None = None, store: ArtifactStore | None = None,
               allow_download: bool = False, crop: float = 1.0) -> ImageSet:
    """Decode one split of a registered dataset to uint8 tensors, cached after the first call.

    ``size`` is the side of the square images returned: each image's central square, resized
    (:func:`kx_utils.data.imagefolder.decode_image`; ``crop`` < 1 resizes to ``size / crop`` and keeps the
    central ``size`` x ``size``).  The cache is keyed by the folder's file list,
    sizes and modification times, so a changed file is decoded again.
    """
    if size is None:
        raise TypeError(f"load_split({key!r}, {split!r}) needs size=, the side in pixels to decode every image "
                        "to (the profile's image_size for the dataset): a split's images differ in size")
    path = split_folder(key, split, standins, root, allow_download)
    classes, samples = list_image_folder(path)
    if not samples:
        raise DatasetNotFoundError(f"dataset folder {path} holds no images: expected <class>/<image> "
                                   f"sub-folders ({dataset_info(key).how_to_get})")
    store = store or ArtifactStore()
    settings = {"folder": str(path), "signature": folder_signature(path, samples), "size": size}
    if crop != 1.0:
        settings["crop"] = crop

    def compute():
        s = decode_folder(path, size, crop=crop)
        return {"images": s.images, "labels": s.labels, "files": s.files, "classes": s.classes}

    def from_cache() -> ImageSet:
        blob = store.cached(DECODED, settings, compute)
        names = read_class_names(path.parent, blob["classes"])
        # files named from the dataset's folder (``train/<class>/<image>``): a train and a test image of
        # the same name stay two images when splits are concatenated (the paper's pool is both)
        return ImageSet(blob["images"], blob["labels"], names, f"{key}/{split}",
                        [f"{path.name}/{f}" for f in blob["files"]])

    return remembered(("decoded", str(store.root), settings_key(settings)), from_cache)


# ---------------------------------------------------------------- decoded sets held for the process

# A paper run asks for the same decoded pool (15 GB at 224 px) in dozens of calls; reading and
# verifying it from the cache each time cost minutes per call.  Decoded sets are kept in memory for
# the process, least recently used first out, up to this many bytes (KX_MEMORY_CACHE_GIB overrides).
def _memory_budget() -> int:
    gib = os.environ.get("KX_MEMORY_CACHE_GIB")
    if gib is not None:
        try:
            value = float(gib)
        except ValueError:
            value = -1.0
        if value < 0:
            raise ValueError(f"KX_MEMORY_CACHE_GIB={gib!r} must be a number of GiB, 0 or more (0 keeps nothing)")
        return int(value * 2**30)
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 16 * 2**30
    return physical // 4


def _bytes_of(images: ImageSet) -> int:
    return images.images.numel() * images.images.element_size()


_REMEMBERED: Memo[ImageSet] = Memo("decoded image sets", max_bytes=lambda: _memory_budget(), size_of=_bytes_of)


def remembered(key: tuple, build: Callable[[], ImageSet]) -> ImageSet:
    """``build()``'s set, built once per process for ``key`` while it fits :func:`_memory_budget`
    (:class:`kx_utils.runtime.memo.Memo`: least recently used out first).

    The set is shared between callers: treat its tensors as read-only (every ImageSet method
    returns new tensors)."""
    return _REMEMBERED.get(key, build)


def forget_remembered() -> None:
    """Drop every set :func:`remembered` holds and the split content digests (tests; a process that changes
    its data).  :func:`kx_utils.runtime.memo.forget_all` empties these and every other memo of the process."""
    _REMEMBERED.forget()
    _CONTENT_MEMO.forget()
