"""The mini/smoke stand-ins, declared: which archive each comes from, how its images are chosen and
stored, and (``subsets/<folder>.csv``) its classes and per-class counts, the same as the stand-ins of
the development machine (``../shared/datasets``, built from GitHub copies of the same datasets).

Selection is seeded and independent of archive order: the items of a class are sorted by name,
shuffled with a generator seeded by (seed, folder, split, class), and the target splits that share
a source split take consecutive, disjoint runs of that order (CIFAR-10's ``train`` then ``pool``
from the official training split).  GTSRB's training images come in tracks of ~30 frames of one
sign; its order interleaves tracks, so a class's images cover as many signs as possible.
Caltech-101's ``Faces_easy`` holds the same photographs as ``Faces`` (other crops, same file
numbers): it follows ``Faces``' order, so a photograph lands in one split under both labels.

Storage: an image that already is an RGB JPEG of the stand-in's size is copied byte for byte
(Tiny-ImageNet); any other is converted to RGB, fitted to the size (centre-cropped square, or the
whole image squashed for GTSRB, as in the development machine's copy) with Lanczos, and saved as PNG
when its source is lossless (CIFAR-10 arrays, GTSRB's PPM files), else as JPEG quality 95, 4:4:4.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from PIL import Image

from .archives import FetchError
from .sources import (
    Caltech101Source,
    CifarSource,
    CubSource,
    GtsrbSource,
    Source,
    TinyImagenetSource,
)

SUBSET_TABLES = "subsets"  # package folder of <folder>.csv: folder,name,source_class,<split>...
SEED = 0
BUILDER_VERSION = 1  # bump when a change to the selection or storage alters what a build writes


@dataclass(frozen=True)
class Draw:
    """Target splits drawn, in order and disjoint, from one split of the source."""

    source_split: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class StandinRecipe:
    folder: str  # under $KX_DATA
    archives: tuple[str, ...]
    source: Callable[[dict[str, Path]], Source]
    size: int
    fit: str  # "crop": centre square; "squash": the whole image, aspect ratio not kept
    draws: tuple[Draw, ...]
    interleave_tracks: tuple[str, ...] = ()  # source splits whose file names are <track>_<frame>
    follows: dict = field(default_factory=dict)  # class -> the class whose order it takes
    about: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(t for d in self.draws for t in d.targets)


RECIPES: dict[str, StandinRecipe] = {r.folder: r for r in [
    StandinRecipe("cifar10", ("cifar-10-python.tar.gz",), CifarSource, 32, "crop",
                  (Draw("train", ("train", "pool")), Draw("test", ("test",))),
                  about="CIFAR-10: train and pool from the official training split, test from its test split"),
    StandinRecipe("gtsrb", ("GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"),
                  GtsrbSource, 32, "squash", (Draw("train", ("train",)), Draw("test", ("test",))),
                  interleave_tracks=("train",),
                  about="GTSRB: the official training and test images, squashed to 32 px"),
    StandinRecipe("caltech101", ("caltech-101.zip",), Caltech101Source, 64, "crop",
                  (Draw("all", ("train", "pool", "test")),), follows={"Faces_easy": "Faces"},
                  about="Caltech-101 (no official split): train, pool and test drawn from each class"),
    StandinRecipe("cub200_subset", ("CUB_200_2011.tgz",), CubSource, 64, "crop", (Draw("all", ("train", "test")),),
                  about="CUB-200-2011, the 100 species of the course subset, train and test drawn from each species"),
    StandinRecipe("tiny_imagenet", ("tiny-imagenet-200.zip",), TinyImagenetSource, 64, "crop",
                  (Draw("train", ("train",)), Draw("val", ("val",))),
                  about="Tiny-ImageNet: train from its training split, val from its validation split"),
    StandinRecipe("ood_web", ("caltech-101.zip",), Caltech101Source, 64, "crop", (Draw("all", ("test",)),),
                  about="Caltech-101's BACKGROUND_Google images"),
]}


@dataclass(frozen=True)
class SubsetTable:
    """Classes (label order) of a stand-in and how many images each split holds of each."""

    folder: str
    classes: tuple[str, ...]
    names: tuple[str, ...]
    source_classes: tuple[str, ...]
    counts: dict  # split -> tuple of counts, one per class
    text: str  # the CSV, for the digest

    def total(self, split: str) -> int:
        return sum(self.counts[split])


def read_subset_table(folder: str, recipe: StandinRecipe, tables: str | Path | None = None) -> SubsetTable:
    """``<tables>/<folder>.csv``, else the package's own table."""
    if tables is None:
        text = resources.files(__package__).joinpath(SUBSET_TABLES, f"{folder}.csv").read_text()
        where = f"kx_utils/data/fetch/{SUBSET_TABLES}/{folder}.csv"
    else:
        path = Path(tables) / f"{folder}.csv"
        if not path.is_file():
            raise FetchError(f"no subset table {path}: --subset-tables must hold <stand-in>.csv for every "
                             f"stand-in fetched ({', '.join(RECIPES)})")
        text, where = path.read_text(), str(path)
    rows = list(csv.DictReader(io.StringIO(text)))
    wanted = {"folder", "name", "source_class", *recipe.splits}
    if not rows or not wanted <= set(rows[0]):
        raise FetchError(f"subset table {where} needs the columns {', '.join(sorted(wanted))}")
    try:
        counts = {s: tuple(int(r[s]) for r in rows) for s in recipe.splits}
    except ValueError as exc:
        raise FetchError(f"subset table {where}: a count is not a whole number ({exc})") from None
    return SubsetTable(folder, tuple(r["folder"] for r in rows), tuple(r["name"] for r in rows),
                       tuple(r["source_class"] for r in rows), counts, text)


def spec_digest(recipe: StandinRecipe, table: SubsetTable) -> str:
    """What a build depends on besides the archives (whose digests are pinned): the recipe, the table,
    the seed and the builder's version."""
    described = {"folder": recipe.folder, "size": recipe.size, "fit": recipe.fit,
                 "draws": [(d.source_split, d.targets) for d in recipe.draws],
                 "interleave": recipe.interleave_tracks, "follows": sorted(recipe.follows.items()),
                 "table": table.text, "seed": SEED, "builder": BUILDER_VERSION}
    return hashlib.sha256(repr(described).encode()).hexdigest()


# ---------------------------------------------------------------- selection


def _rng(*parts: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big"))


def _interleaved(items: list[str], rng: random.Random) -> list[str]:
    """Round-robin over tracks (``<track>_<frame>`` file names), tracks and frames in seeded order."""
    tracks: dict[str, list[str]] = {}
    for item in items:
        tracks.setdefault(Path(item).name.split("_")[0], []).append(item)
    order = sorted(tracks)
    rng.shuffle(order)
    for track in order:
        rng.shuffle(tracks[track])
    out, depth = [], max(len(v) for v in tracks.values()) if tracks else 0
    for i in range(depth):
        out += [tracks[t][i] for t in order if i < len(tracks[t])]
    return out


def select(recipe: StandinRecipe, table: SubsetTable, index: dict[tuple[str, str], list[str]]
           ) -> dict[str, dict[str, list[str]]]:
    """split -> class folder -> chosen item ids, exactly the table's counts."""
    chosen: dict[str, dict[str, list[str]]] = {s: {} for s in recipe.splits}
    orders: dict[tuple[str, str], list[str]] = {}
    ordered_classes = sorted(range(len(table.classes)),
                             key=lambda i: table.classes[i] in recipe.follows)  # leaders first
    for draw in recipe.draws:
        available = sorted({c for (s, c) in index if s == draw.source_split})
        for i in ordered_classes:
            folder, source_class = table.classes[i], table.source_classes[i]
            items = sorted(index.get((draw.source_split, source_class), []))
            if not items:
                raise FetchError(f"{recipe.folder}: the source has no images of class {source_class!r} in its "
                                 f"{draw.source_split!r} split (it has {len(available)} classes, e.g. "
                                 f"{', '.join(available[:5])}); the archive is not the one the stand-in's table "
                                 "was written for")
            leader = recipe.follows.get(folder)
            if leader is not None:
                by_name = {Path(it).name: it for it in items}
                led = [by_name[Path(it).name] for it in orders[(draw.source_split, leader)] if Path(it).name in by_name]
                taken = set(led)
                rest = [it for it in items if it not in taken]
                _rng(str(SEED), recipe.folder, draw.source_split, folder).shuffle(rest)
                order = led + rest
            elif draw.source_split in recipe.interleave_tracks:
                order = _interleaved(items, _rng(str(SEED), recipe.folder, draw.source_split, folder))
            else:
                order = list(items)
                _rng(str(SEED), recipe.folder, draw.source_split, folder).shuffle(order)
            orders[(draw.source_split, folder)] = order
            needed = sum(table.counts[t][i] for t in draw.targets)
            if len(order) < needed:
                raise FetchError(f"{recipe.folder}: class {source_class!r} has {len(order)} images in the source's "
                                 f"{draw.source_split!r} split, the stand-in needs {needed}; the archive is not "
                                 "the one the stand-in's table was written for")
            start = 0
            for target in draw.targets:
                n = table.counts[target][i]
                chosen[target][folder] = order[start:start + n]
                start += n
    return chosen


# ---------------------------------------------------------------- storage


def _fitted(image: Image.Image, size: int, fit: str) -> Image.Image:
    image = image.convert("RGB")
    if fit == "crop":
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    return image


def stored_image(payload: bytes | Image.Image, size: int, fit: str, item: str) -> tuple[bytes, str]:
    """The bytes to write for one source image, and their file suffix."""
    try:
        if isinstance(payload, Image.Image):
            image, source_format = payload, "array"
        else:
            image = Image.open(io.BytesIO(payload))
            image.load()
            source_format = image.format
            if source_format == "JPEG" and image.mode == "RGB" and image.size == (size, size):
                return payload, ".jpg"
        out = io.BytesIO()
        fitted = _fitted(image, size, fit)
        if source_format == "JPEG":
            fitted.save(out, "JPEG", quality=95, subsampling=0)
            return out.getvalue(), ".jpg"
        fitted.save(out, "PNG")
        return out.getvalue(), ".png"
    except OSError as exc:
        raise FetchError(f"cannot decode {item} of the archive ({exc}); the download is damaged: delete it "
                         "from the downloads folder and rerun") from None


def output_name(item: str, suffix: str) -> str:
    """``train/00042`` -> ``train_00042.png``; ``.../image_0004.jpg`` -> ``image_0004.jpg``."""
    stem = item.replace("/", "_") if "/" in item and "." not in item else Path(item).stem
    return stem + suffix
