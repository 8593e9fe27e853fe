"""The paper's datasets and their offline stand-ins: what each is, where its folder lives, how to get it.

:data:`DATASETS` is the one list of them (:class:`DatasetInfo`: the paper's name, size and role, the
ImageFolder splits, the stand-in that replaces it in ``mini``/``smoke`` and why); :func:`data_root` finds the
folder that holds them (``$KX_DATA``).  Loading a split is :mod:`kx_utils.data.datasets`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..runtime.artifacts import REPO_ROOT

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
