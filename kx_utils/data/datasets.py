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
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..core.images import resize_images
from ..core.seeded import seeded_generator, seeded_permutation, seeded_subset
from ..runtime.artifacts import REPO_ROOT, ArtifactStore, artifact_kind, settings_key
from ..runtime.memo import Memo
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
DEFAULT_DATA_ROOT = REPO_ROOT / "data"  # used when KX_DATA is not set (git-ignored)



class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing: the message names the path and how to get the data."""


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of the paper and the offline stand-in that replaces it in mini/smoke."""

    key: str
    paper_name: str
    role: str  # "victim", "attacker" or "ood"
    paper_classes: int | None
    paper_train: int | None
    paper_test: int | None
    paper_size: str
    folder: str  # under $KX_DATA, paper profile
    splits: dict  # logical split -> sub-folder, paper profile
    standin: str  # under $KX_DATA, mini/smoke profiles
    standin_splits: dict  # logical split -> sub-folder of the stand-in
    standin_note: str
    how_to_get: str
    downloader: str | None = None  # name of a torchvision downloader in DOWNLOADERS
    # why a run on the stand-ins may go without this one ("" = it may not): its rows then read "data not present"
    standin_optional: str = ""

    def location(self, standins: bool, split: str) -> tuple[str, str]:
        folder, splits = (self.standin, self.standin_splits) if standins else (self.folder, self.splits)
        if split not in splits:
            raise KeyError(f"dataset {self.key!r} has no split {split!r}; "
                           f"its splits: {', '.join(splits)}")
        return folder, splits[split]


DATASETS: dict[str, DatasetInfo] = {d.key: d for d in [
    DatasetInfo(
        key="caltech256", paper_name="Caltech", role="victim",
        paper_classes=256, paper_train=23_703, paper_test=6_904, paper_size="224x224",
        folder="caltech256", splits={"train": "train", "test": "test"},
        standin="caltech101", standin_splits={"train": "train", "test": "test"},
        standin_note="Caltech-101 (101 classes, 64 px): no usable Caltech-256 snapshot offline",
        how_to_get="download Caltech-256 (https://data.caltech.edu/records/nyy15-4j048), or let "
                   "kx download it with torchvision (download=True), which drops 257.clutter (as the Knockoff "
                   "authors' loader does: 256 classes) and splits it 25 test images per class",
        downloader="caltech256"),
    DatasetInfo(
        key="cubs200", paper_name="CUBS", role="victim",
        paper_classes=200, paper_train=5_994, paper_test=5_794, paper_size="224x224",
        folder="cubs200", splits={"train": "train", "test": "test"},
        standin="cub200_subset", standin_splits={"train": "train", "test": "test"},
        standin_note="100 of CUB-200-2011's 200 species, 64 px",
        how_to_get="download CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/), then "
                   "`python -m kx_utils data build cubs200 --from CUB_200_2011.tgz` splits it by "
                   "train_test_split.txt into cubs200/{train,test}/<class>/<image>"),
    DatasetInfo(
        key="diabetic5", paper_name="Diabetic5", role="victim",
        paper_classes=5, paper_train=85_108, paper_test=21_278, paper_size="224x224",
        folder="diabetic5", splits={"train": "train", "test": "test"},
        standin="diabetic_retinopathy", standin_splits={"train": "train", "test": "test"},
        standin_note="6,742 Kaggle DR 2015 images (patient-disjoint split), 64 px, no EyeNet preprocessing",
        how_to_get="accept the Kaggle competition rules, download "
                   "https://www.kaggle.com/c/diabetic-retinopathy-detection/data (trainLabels.csv and train.zip.*) "
                   "and extract it, then `python -m kx_utils data build diabetic5 --from KAGGLE_DIR` applies "
                   "EyeNet's preprocessing (https://github.com/gregwchase/dsi-capstone) into "
                   "diabetic5/{train,test}/<grade>/<image>",
        standin_optional="the Kaggle diabetic-retinopathy data needs a Kaggle account, so `kx_utils data fetch` "
                         "cannot download it: accept the competition rules at "
                         "https://www.kaggle.com/c/diabetic-retinopathy-detection/data, download train.zip.* and "
                         "trainLabels.csv, and place 64 px RGB images as diabetic_retinopathy/{train,test}/"
                         "{0_no_dr,1_mild,2_moderate,3_severe,4_proliferative}/<image>.jpg (the development "
                         "machine's stand-in: 1,830 train / 454 test images, patient-disjoint)"),
    DatasetInfo(
        key="gtsrb", paper_name="GTSRB", role="victim",
        paper_classes=43, paper_train=39_209, paper_test=12_630, paper_size="32x32 / 224x224",
        folder="gtsrb", splits={"train": "train", "test": "test"},
        standin="gtsrb", standin_splits={"train": "train", "test": "test"},
        standin_note="10,590 / 3,320 official GTSRB images, 32 px",
        how_to_get="let kx download it with torchvision (download=True), or get it from "
                   "https://benchmark.ini.rub.de/gtsrb_dataset.html",
        downloader="gtsrb"),
    DatasetInfo(
        key="cifar10", paper_name="CIFAR10", role="victim",
        paper_classes=10, paper_train=50_000, paper_test=10_000, paper_size="32x32 / 224x224",
        folder="cifar10", splits={"train": "train", "test": "test"},
        standin="cifar10", standin_splits={"train": "train", "test": "test", "pool": "pool"},
        standin_note="15,000 / 3,000 CIFAR-10 images (JPEG re-encoded), 32 px",
        how_to_get="let kx download it with torchvision (download=True), or get it from "
                   "https://www.cs.toronto.edu/~kriz/cifar.html",
        downloader="cifar10"),
    DatasetInfo(
        key="imagenet", paper_name="ImageNet", role="attacker",
        paper_classes=1000, paper_train=90_000, paper_test=10_000, paper_size="224x224",
        folder="imagenet_subset", splits={"train": "train", "test": "test"},
        standin="tiny_imagenet", standin_splits={"train": "train", "test": "val"},
        standin_note="Tiny-ImageNet: 200 ImageNet classes, 60 + 10 images per class, 64 px",
        how_to_get="ImageNet needs a registered download (https://image-net.org/download.php); then "
                   "`python -m kx_utils data build imagenet_subset --from ILSVRC2012_TRAIN_DIR --seed 0` samples "
                   "100 training images per class, 90 into imagenet_subset/train/<wnid>/ and 10 into "
                   "imagenet_subset/test/<wnid>/"),
    DatasetInfo(
        key="openimages", paper_name="OpenImages", role="ood",
        paper_classes=None, paper_train=None, paper_test=20_000, paper_size="224x224",
        folder="openimages", splits={"test": "test"},
        standin="ood_web", standin_splits={"test": "test"},
        standin_note="Caltech-101's BACKGROUND_Google: 467 random web images, 64 px",
        how_to_get="download Open Images' test image list (https://storage.googleapis.com/openimages/web/"
                   "download.html), then `python -m kx_utils data build openimages --list LIST.csv --seed 0` "
                   "downloads 20,000 uniformly sampled images into openimages/test/all/"),
    DatasetInfo(
        key="bing", paper_name="Bing", role="attacker",
        paper_classes=256, paper_train=256 * 380, paper_test=None, paper_size="224x224",
        folder="bing", splits={"train": "train"},
        standin="caltech101", standin_splits={"train": "pool"},
        standin_note="caltech101/pool: other Caltech-101 images of the victim's classes (closer to the "
                     "victim's distribution than Bing)",
        how_to_get="download the Bing images of the Caltech-256 categories (Bergamo & Torresani 2010, "
                   "http://vlg.cs.dartmouth.edu/projects/domainadapt/) into bing/train/<class>/"),
]}


def absent_optional_datasets(standins: bool, root: str | os.PathLike | None = None) -> dict[str, str]:
    """key -> why it may be absent, for each dataset a run may go without that is not present.

    Only stand-ins can be optional (``DatasetInfo.standin_optional``): the paper profile needs all.
    Without any data folder every optional dataset is absent.
    """
    optional = {k: d for k, d in DATASETS.items() if standins and d.standin_optional}
    try:
        base = data_root(root)
    except DatasetNotFoundError:
        return {k: d.standin_optional for k, d in optional.items()}
    return {k: d.standin_optional for k, d in optional.items()
            if not all((base / d.standin / sub).is_dir() for sub in d.standin_splits.values())}


def dataset_info(key: str) -> DatasetInfo:
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {key!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$KX_DATA``, else ``<repo>/data`` where `python -m kx_utils data fetch` puts the
    stand-ins; an error that says how to set it when none of them is a folder."""
    root = explicit or os.environ.get("KX_DATA")
    if not root:
        if DEFAULT_DATA_ROOT.is_dir():
            return DEFAULT_DATA_ROOT
        raise DatasetNotFoundError(
            "no data folder: set KX_DATA to the folder that holds the datasets in ImageFolder layout "
            "(<dataset>/<split>/<class>/<image>), e.g. `export KX_DATA=../shared/datasets` "
            f"on the development machine, or run `python -m kx_utils data fetch --profile mini`, which "
            f"downloads the stand-ins into {DEFAULT_DATA_ROOT.name}/ of the repository; README.md says where "
            "each dataset comes from")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DatasetNotFoundError(f"KX_DATA={root} is not a folder; point it at the folder that "
                                   "holds the datasets (README.md, section 'Data')")
    return path


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


# ---------------------------------------------------------------- downloaders

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
