"""``data build diabetic5``: Kaggle's Diabetic Retinopathy Detection (2015) training set, preprocessed and
augmented as EyeNet does (https://github.com/gregwchase/dsi-capstone, the paper's [4]), split 80/20 into
``diabetic5/{train,test}/<grade>/<image>``.

Input: the folder holding the competition's files, downloaded after accepting its rules
(https://www.kaggle.com/c/diabetic-retinopathy-detection/data): ``trainLabels.csv`` (unzipped from
trainLabels.csv.zip) and ``train/<image>.jpeg`` (extracted from train.zip.001-005, e.g. ``7z x train.zip.001``).

What the paper says: "We augmented the Diabetic5 dataset using preprocessing techniques recommended in [4]
to address the class imbalance problem" (3.2.1), and Table 1: 5 classes, 85,108 train / 21,278 test
images.  What EyeNet does (src/resize_images.py, preprocess_images.py, rotate_images.py):

1. crop every image to its central 1,800 x 1,800 pixels and resize it to 256 x 256;
2. drop the images that are entirely black (403 of the 35,126);
3. balance the grades: each image without retinopathy (grade 0) gets one mirrored copy; each image with
   retinopathy (grades 1-4) gets copies rotated by 90, 120, 180 and 270 degrees and a mirrored one.

The numbers fit the paper exactly: 35,126 - 403 = 34,723 images, of which 2 x 25,488 (grade 0) + 6 x 9,235
(grades 1-4) = 106,386 after augmentation, and 85,108 + 21,278 = 106,386, the 80/20 split that
scikit-learn's ``train_test_split(test_size=0.2)`` makes (test = ceil(0.2 n)).  So the paper's Diabetic5 is
EyeNet's augmented training set split 80/20 *after* augmentation (inferred from the counts: the paper does
not say), and Kaggle's test set (``retinopathy_solution.csv``, ``test/``) is not used; neither is it here.

What this builder does:

* augmentation and naming as EyeNet: grade 0 -> ``<image>.jpeg``, ``<image>_mir.jpeg``; grades 1-4 -> also
  ``_90``, ``_120``, ``_180``, ``_270`` (counter-clockwise, as scikit-image's ``rotate``; the corners a 120
  degree turn uncovers are black, as there); the mirror is left-right (``cv2.flip(img, 1)``).  The grades
  stay unbalanced after it (about 51.0k / 14.7k / 31.8k / 5.2k / 4.2k), as in EyeNet and the paper;
* ``--split image`` (default, the paper's counts): a seeded random 80/20 split of the augmented images, as
  the paper's numbers imply.  Copies of one photograph then fall in both splits, which flatters test
  accuracy; ``--split patient`` instead puts 20% of the patients (Kaggle's ``<patient>_<left|right>``
  names), with every copy of both their eyes, in test: no leak, and counts a little off the paper's;
* ``--crop fundus`` (default) departs from EyeNet's fixed central 1,800 px square, which depends on the
  camera's resolution (too tight at 3,888 x 2,592, larger than the whole image on the smaller cameras,
  where EyeNet's slicing goes wrong): it finds the fundus (pixels brighter than grey level 20; the
  unbroken run of rows, and of columns, around the fullest one that hold at least 5% as many such pixels
  as it, so a caption in a corner or JPEG noise in the border is ignored), takes the square around its
  centre whose side is the fundus' larger extent (black padding
  where that leaves the image), which crops the black border and keeps the whole disc.
  ``--crop eyenet`` takes EyeNet's central 1,800 px square (measured at the original resolution, and no
  larger than the image);
* an image is dropped as blank when no pixel is brighter than grey level 20 (EyeNet: when its mean is 0,
  which the near-black ones with JPEG noise escape); the dropped ones are listed in the marker;
* stored as JPEG quality 90 at ``--size`` (default 256, EyeNet's; the paper's models see 224 px).
"""

from __future__ import annotations

import csv
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .archives import FetchError
from .paper import building, seeded_rng, write_csv, write_marker

KAGGLE_URL = "https://www.kaggle.com/c/diabetic-retinopathy-detection/data"
GRADE_FOLDERS = ("0_no_dr", "1_mild", "2_moderate", "3_severe", "4_proliferative")
NO_DR_VARIANTS = ("", "mir")
DR_VARIANTS = ("", "90", "120", "180", "270", "mir")
EYENET_CROP = 1800  # pixels of the original image, src/resize_images.py
DEFAULT_SIZE = 256  # EyeNet's
TEST_FRACTION = 0.2
BRIGHT = 20  # grey level above which a pixel is fundus (the black border reads 0-10 with JPEG noise)
PROFILE_FRACTION = 0.05
CROPS = ("fundus", "eyenet")
SPLIT_UNITS = ("image", "patient")
SOURCE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff")


def variants_of(grade: int) -> tuple[str, ...]:
    return NO_DR_VARIANTS if grade == 0 else DR_VARIANTS


def fundus_box(gray: np.ndarray, bright: int = BRIGHT, fraction: float = PROFILE_FRACTION
               ) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the fundus in a greyscale image, None when nothing is bright."""
    mask = gray > bright
    cols, rows = mask.sum(axis=0), mask.sum(axis=1)
    if not cols.any():
        return None
    left, right = _run_around_peak(cols, fraction)
    top, bottom = _run_around_peak(rows, fraction)
    return left, top, right, bottom


def _run_around_peak(profile: np.ndarray, fraction: float) -> tuple[int, int]:
    """[start, end) of the unbroken run of entries >= ``fraction`` of the peak that holds the peak.

    The fundus is one convex blob: a caption or a speck of noise off it is cut away by the black gap
    between them (and single noisy pixels by the fraction).
    """
    peak = int(profile.argmax())
    gaps = np.nonzero(profile < max(1.0, fraction * profile.max()))[0]
    before, after = gaps[gaps < peak], gaps[gaps > peak]
    return (int(before[-1]) + 1 if len(before) else 0), (int(after[0]) if len(after) else len(profile))


def square_around(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The square with the box's centre whose side is the box's larger extent."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    x0, y0 = (left + right - side) // 2, (top + bottom - side) // 2
    return x0, y0, x0 + side, y0 + side


def centre_square(width: int, height: int, side: int) -> tuple[int, int, int, int]:
    side = min(side, width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def preprocess(path: str | os.PathLike, crop: str = "fundus", size: int = DEFAULT_SIZE) -> Image.Image | None:
    """One photograph cropped and resized to ``size`` x ``size`` RGB; None when it is blank."""
    with Image.open(path) as im:
        full_width = im.width
        if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale where that still leaves twice the output size
            factor = 2 * size / min(im.size)
            im.draft(im.mode, (math.ceil(im.width * factor), math.ceil(im.height * factor)))
        image = im.convert("RGB")
    box = fundus_box(np.asarray(image.convert("L")))
    if box is None:
        return None
    if crop == "fundus":
        square = square_around(box)
    else:
        square = centre_square(image.width, image.height, round(EYENET_CROP * image.width / full_width))
    return image.crop(square).resize((size, size), Image.Resampling.LANCZOS)  # outside the image: black


def augmented(image: Image.Image, grade: int) -> dict[str, Image.Image]:
    """suffix -> image: EyeNet's copies for the grade ("" is the image itself)."""
    make = {"": lambda: image,
            "90": lambda: image.transpose(Image.Transpose.ROTATE_90),
            "120": lambda: image.rotate(120, resample=Image.Resampling.BILINEAR),
            "180": lambda: image.transpose(Image.Transpose.ROTATE_180),
            "270": lambda: image.transpose(Image.Transpose.ROTATE_270),
            "mir": lambda: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}
    return {suffix: make[suffix]() for suffix in variants_of(grade)}


def _process(task: tuple) -> tuple[str, list[str] | None, str]:
    """Worker: one source image -> the files written under ``staging`` (None: blank), or an error."""
    path, staging, name, grade, crop, size = task
    try:
        image = preprocess(path, crop, size)
    except Exception as exc:  # a damaged file: reported with its name, the build stops
        return name, None, f"{type(exc).__name__}: {exc}"
    if image is None:
        return name, None, ""
    written = []
    for suffix, copy in augmented(image, grade).items():
        rel = f"{GRADE_FOLDERS[grade]}/{name}{'_' + suffix if suffix else ''}.jpeg"
        copy.save(Path(staging) / rel, "JPEG", quality=90)
        written.append(rel)
    return name, written, ""


def patient_of(name: str) -> str:
    match = re.fullmatch(r"(\d+)_(left|right)", name)
    return match.group(1) if match else name


def assign_splits(outputs: dict[str, list[str]], unit: str, seed: int) -> dict[str, str]:
    """file -> "train" or "test"; ``outputs``: source image -> its files."""
    if unit == "image":
        files = sorted(f for written in outputs.values() for f in written)
        seeded_rng(seed, "diabetic5", unit).shuffle(files)
        test = set(files[:math.ceil(TEST_FRACTION * len(files))])
        return {f: "test" if f in test else "train" for written in outputs.values() for f in written}
    patients = sorted({patient_of(name) for name in outputs})
    seeded_rng(seed, "diabetic5", unit).shuffle(patients)
    test_patients = set(patients[:math.ceil(TEST_FRACTION * len(patients))])
    return {f: "test" if patient_of(name) in test_patients else "train"
            for name, written in outputs.items() for f in written}


def read_kaggle(kaggle_dir: str | os.PathLike) -> list[tuple[str, int, Path]]:
    """(image name, grade, file) for every image of trainLabels.csv, each checked to be in train/."""
    root = Path(kaggle_dir).expanduser()
    if not root.is_dir():
        raise FetchError(f"{root} is not a folder: pass the folder holding trainLabels.csv and train/ from "
                         f"{KAGGLE_URL}")
    labels = root / "trainLabels.csv"
    if not labels.is_file():
        zipped = " (unzip trainLabels.csv.zip there)" if (root / "trainLabels.csv.zip").is_file() else ""
        raise FetchError(f"{labels} does not exist{zipped}: download trainLabels.csv.zip from {KAGGLE_URL} after "
                         "accepting the competition's rules, and unzip it into that folder")
    train = root / "train"
    if not train.is_dir():
        parts = " (extract train.zip.001-005 there: `7z x train.zip.001`)" if (root / "train.zip.001").exists() else ""
        raise FetchError(f"{train} does not exist{parts}: download train.zip.001-005 from {KAGGLE_URL} and extract "
                         f"them, so that the images lie in {train}/<image>.jpeg")
    with open(labels, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"image", "level"} <= set(reader.fieldnames or []):
            raise FetchError(f"{labels} has columns {reader.fieldnames}, not image,level: it is not Kaggle's "
                             "trainLabels.csv")
        rows = list(reader)
    files = {}
    for entry in os.scandir(train):
        stem, suffix = os.path.splitext(entry.name)
        if entry.is_file() and suffix.lower() in SOURCE_SUFFIXES:
            files[stem] = Path(entry.path)
    out, missing, seen = [], [], set()
    for number, row in enumerate(rows, 2):
        name, level = row["image"].strip(), row["level"].strip()
        if level not in {str(g) for g in range(len(GRADE_FOLDERS))}:
            raise FetchError(f"{labels}, line {number}: level {level!r} of {name} is not a grade 0-4")
        if name in seen:
            raise FetchError(f"{labels}, line {number}: {name} is listed twice")
        seen.add(name)
        if name not in files:
            missing.append(name)
        else:
            out.append((name, int(level), files[name]))
    if missing:
        raise FetchError(f"{len(missing):,} of the {len(rows):,} images trainLabels.csv lists are not in {train} (e.g. "
                         f"{missing[0]}.jpeg): the extraction of train.zip.001-005 is incomplete; extract them again")
    if not out:
        raise FetchError(f"{labels} lists no images")
    return out


def build_diabetic5(kaggle_dir: str | os.PathLike, dest: str | os.PathLike, seed: int = 0, split: str = "image",
                    crop: str = "fundus", size: int = DEFAULT_SIZE, workers: int | None = None, replace: bool = False,
                    log: Callable[[str], None] = print) -> Path:
    """``<dest>/diabetic5/{train,test}/<grade>/<image>``: EyeNet's preprocessing and augmentation, split 80/20."""
    if split not in SPLIT_UNITS or crop not in CROPS:
        raise FetchError(f"--split must be one of {', '.join(SPLIT_UNITS)} and --crop one of {', '.join(CROPS)}, "
                         f"got {split!r} and {crop!r}")
    if size < 8:
        raise FetchError(f"--size must be at least 8 pixels, got {size}")
    sources = read_kaggle(kaggle_dir)
    root = Path(kaggle_dir).expanduser()
    if (root / "retinopathy_solution.csv").is_file() or (root / "test").is_dir():
        log("diabetic5: Kaggle's test set in that folder is not used: the paper's 85,108 + 21,278 images are EyeNet's "
            "augmentation of the training set (kx_utils/data/fetch/diabetic.py says why)")
    workers = workers or os.cpu_count() or 1
    log(f"diabetic5: {len(sources):,} images of {root / 'train'}, crop {crop}, {size} px, EyeNet's augmentation, "
        f"{split} split 80/20 (seed {seed}), {workers} worker(s)")
    with building(Path(dest), "diabetic5", replace, log) as tmp:
        staging = tmp / ".staging"
        for folder in GRADE_FOLDERS:
            (staging / folder).mkdir(parents=True)
        tasks = [(str(path), str(staging), name, grade, crop, size) for name, grade, path in sources]
        outputs, blank, broken = {}, [], []
        with (ProcessPoolExecutor(workers) if workers > 1 else _InProcess()) as pool:
            for done, (name, written, error) in enumerate(pool.map(_process, tasks, chunksize=16), 1):
                if error:
                    broken.append(f"{name} ({error})")
                elif written is None:
                    blank.append(name)
                else:
                    outputs[name] = written
                if done % 2000 == 0:
                    log(f"  {done:,} of {len(tasks):,} images")
        if broken:
            raise FetchError(f"{len(broken)} image(s) of {root / 'train'} cannot be read: {', '.join(broken[:3])}; "
                             "extract them from train.zip.001-005 again. Nothing was installed")
        splits = assign_splits(outputs, split, seed)
        for rel, which in sorted(splits.items()):
            (tmp / which / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, tmp / which / rel)
        for folder in GRADE_FOLDERS:
            (staging / folder).rmdir()
        staging.rmdir()
        write_csv(tmp / "manifest.csv", ["file", "source"],
                  sorted([f"{splits[f]}/{f}", f"train/{name}"] for name, written in outputs.items() for f in written))
        marker = write_marker(tmp, "diabetic5", ("train", "test"), str(root),
                              {"seed": seed, "split": split, "crop": crop, "size": size, "bright": BRIGHT},
                              {"sources": len(sources), "blank_dropped": sorted(blank)})
    totals = {s: sum(marker["counts"].get(s, {}).values()) for s in ("train", "test")}
    log(f"diabetic5: {len(blank):,} blank image(s) dropped; {totals['train']:,} train / {totals['test']:,} test images "
        "(the paper: 85,108 / 21,278)")
    return Path(dest).expanduser().resolve() / "diabetic5"


class _InProcess:
    """The pool interface, run here: one worker needs no process (and tests stay fast)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items, chunksize=1):
        return map(fn, items)
