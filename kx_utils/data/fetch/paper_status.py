"""``python -m kx_utils data status``: every dataset of a profile, split by split: whether its folder is there,
its class and image counts (against the paper's Table 1 and Sections 4.2.1 and 5.2.2 for ``paper``), and the
command or manual step that gets what is missing.

A split is ``ok`` (the paper's counts), ``DIFFERS`` (present and readable, other counts: a note, not a
failure, e.g. Caltech-256 without its clutter class), ``MISSING``, ``UNREADABLE`` (a class folder without
images, a file that is not an image: the loaders refuse it) or ``DAMAGED`` (built by ``data build``, but
its files no longer match the counts in its marker).  The status fails while a split is missing,
unreadable or damaged.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import DATASETS, DatasetInfo
from ..imagefolder import DataLayoutError, list_image_folder
from .build import BUILDING_PREFIX
from .paper import BING_BY_HAND, BUILD_MARKER, CUB_URL, read_marker

FAILING = ("MISSING", "UNREADABLE", "DAMAGED")

# how to get each dataset of the paper profile; {dest} is the data folder, as a shell word
PAPER_STEPS = {
    "caltech256": "python -m kx_utils data fetch --profile paper --dest {dest}  (torchvision downloads Caltech-256; "
                  "the export drops 257.clutter and holds out 25 images per class)",
    "cubs200": f"download CUB_200_2011.tgz from {CUB_URL}, then: python -m kx_utils data build cubs200 --from "
               "PATH/CUB_200_2011.tgz --dest {dest}",
    "diabetic5": "accept the rules of https://www.kaggle.com/c/diabetic-retinopathy-detection/data, download "
                 "trainLabels.csv.zip and train.zip.001-005 into KAGGLE_DIR and extract them (unzip "
                 "trainLabels.csv.zip; 7z x train.zip.001), then: python -m kx_utils data build diabetic5 --from "
                 "KAGGLE_DIR --dest {dest}",
    "gtsrb": "python -m kx_utils data fetch --profile paper --dest {dest}  (torchvision downloads GTSRB)",
    "cifar10": "python -m kx_utils data fetch --profile paper --dest {dest}  (torchvision downloads CIFAR-10)",
    "imagenet": "register at https://image-net.org/download.php, download ILSVRC2012_img_train.tar and extract it "
                "and its 1,000 class archives into ILSVRC_TRAIN_DIR/<wnid>/, then: python -m kx_utils data build "
                "imagenet_subset --from ILSVRC_TRAIN_DIR --seed 0 --dest {dest}",
    "openimages": "download the Open Images test list "
                  "https://storage.googleapis.com/openimages/2018_04/test/test-images-with-rotation.csv, then: "
                  "python -m kx_utils data build openimages --list PATH/test-images-with-rotation.csv --seed 0 "
                  "--dest {dest}",
    "bing": BING_BY_HAND,
}
# why a dataset built as above does not hold the paper's counts
PAPER_NOTES = {
    "caltech256": "the paper's 23,703 + 6,904 = 30,607 is every Caltech-256 image, 257.clutter included; kx drops "
                  "clutter (256 classes, as the paper and Knockoff's loader) and holds out 25 per class: about "
                  "23,380 / 6,400",
    "diabetic5": "85,108 + 21,278 = 106,386 is EyeNet's augmentation of Kaggle's 34,723 non-black training images, "
                 "split 80/20 (kx_utils/data/fetch/diabetic.py); --split patient gives slightly other counts",
    "bing": "the paper samples 380 images of each of the 256 categories",
}


@dataclass
class SplitReport:
    split: str
    path: Path
    state: str  # "ok", "DIFFERS", "MISSING", "UNREADABLE", "DAMAGED", "OPTIONAL" (an absent optional stand-in)
    classes: int | None = None
    images: int | None = None
    expected_classes: int | None = None
    expected_images: int | None = None
    problem: str = ""

    def text(self) -> str:
        if self.state in ("MISSING", "UNREADABLE", "OPTIONAL"):
            return f"{self.split:6s} {self.state:10s} {self.problem or self.path}"
        want_c = f" (paper {self.expected_classes:,})" if self.expected_classes else ""
        want_i = f" (paper {self.expected_images:,})" if self.expected_images else ""
        return (f"{self.split:6s} {self.state:10s} {self.classes:,} classes{want_c}, {self.images:,} images{want_i}"
                + (f"; {self.problem}" if self.problem else ""))


@dataclass
class DatasetReport:
    key: str
    info: DatasetInfo
    folder: Path
    splits: list[SplitReport] = field(default_factory=list)
    optional: str = ""  # why the run may go without it (stand-ins only)
    built: str = ""  # "built by data build on ..." when it has a marker
    leftovers: list[Path] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(s.state not in FAILING for s in self.splits)

    @property
    def failing(self) -> bool:  # an absent optional stand-in is "OPTIONAL", not failing; a broken one fails
        return not self.complete


def _split_report(split: str, path: Path, expected_classes, expected_images, marker_counts) -> SplitReport:
    if not path.is_dir():
        return SplitReport(split, path, "MISSING", problem=f"{path} does not exist")
    try:
        classes, samples = list_image_folder(path)
    except (DataLayoutError, OSError) as exc:
        return SplitReport(split, path, "UNREADABLE", problem=str(exc))
    if not classes:
        return SplitReport(split, path, "UNREADABLE", problem=f"{path} holds no class folders (<class>/<image>)")
    report = SplitReport(split, path, "ok", len(classes), len(samples), expected_classes, expected_images)
    if marker_counts is not None:
        per_class = {c: 0 for c in classes}
        for _, label in samples:
            per_class[classes[label]] += 1
        if per_class != marker_counts:
            report.state = "DAMAGED"
            report.problem = (f"it differs from what `data build` wrote ({sum(marker_counts.values()):,} images in "
                              f"{len(marker_counts)} classes): rebuild it with --rebuild")
            return report
    if (expected_classes and len(classes) != expected_classes) or (expected_images and len(samples) != expected_images):
        report.state = "DIFFERS"
    return report


def dataset_reports(dest: Path, standins: bool) -> list[DatasetReport]:
    """One report per dataset of the paper (paper profile) or per stand-in (mini, smoke)."""
    out = []
    for key, info in DATASETS.items():
        folder_name, splits = (info.standin, info.standin_splits) if standins else (info.folder, info.splits)
        folder = dest / folder_name
        marker = None if standins else read_marker(folder)
        unfinished = sorted(dest.glob(f"{BUILDING_PREFIX}{folder_name}-*")) if dest.is_dir() else []
        report = DatasetReport(key, info, folder, optional=info.standin_optional if standins else "",
                               leftovers=unfinished)
        if marker is not None:
            report.built = f"built by `data build` {marker.get('built', '')}".rstrip()
        absent_optional = bool(report.optional) and not all((folder / sub).is_dir() for sub in splits.values())
        for split, sub in splits.items():
            if absent_optional:  # a run goes on without it: not a failure, and not reported as one
                report.splits.append(SplitReport(split, folder / sub, "OPTIONAL", problem="not present (optional)"))
                continue
            paper = not standins
            expected_classes = info.paper_classes if paper and info.paper_classes and key != "openimages" else None
            expected_images = {"train": info.paper_train, "test": info.paper_test}.get(split) if paper else None
            counts = (marker or {}).get("counts", {}).get(sub) if marker and not marker.get("unreadable") else None
            report.splits.append(_split_report(split, folder / sub, expected_classes, expected_images, counts))
        out.append(report)
    return out


def status_text(reports: list[DatasetReport], dest: Path, standins: bool) -> str:
    profile = "the stand-ins (mini, smoke)" if standins else "the paper profile"
    lines = [f"Datasets of {profile} in {dest}:"]
    for r in reports:
        where = f" (stand-in {r.folder.name}/ for the paper's {r.info.paper_name})" if standins else ""
        lines.append(f"\n{r.key}: {r.info.paper_name} ({r.info.role}){where}, {r.folder}"
                     + (f", {r.built}" if r.built else ""))
        lines += [f"  {s.text()}" for s in r.splits]
        if r.leftovers:
            lines.append(f"  note: {', '.join(p.name for p in r.leftovers)} is a build that did not finish; no run "
                         "reads it and the next `data build` deletes it")
        if standins:
            if any(s.state == "OPTIONAL" for s in r.splits):
                lines.append(f"  OPTIONAL: {r.optional}")
            elif not r.complete:
                lines.append("  to get it: python -m kx_utils data fetch --profile mini --dest "
                             f"{shlex.quote(str(dest))}")
            continue
        if not r.complete or any(s.state == "DIFFERS" for s in r.splits):
            if r.key in PAPER_NOTES:
                lines.append(f"  note: {PAPER_NOTES[r.key]}")
        if not r.complete:
            lines.append(f"  to get it: {PAPER_STEPS[r.key].format(dest=shlex.quote(str(dest)))}")
    failing = [r.key for r in reports if r.failing]
    lines.append("")
    lines.append(f"{len(reports) - len(failing)} of {len(reports)} datasets complete"
                 + (f"; missing or broken: {', '.join(failing)}" if failing else ""))
    return "\n".join(lines)


def status(dest: Path, standins: bool) -> tuple[str, bool]:
    """The status text, and whether everything required is there."""
    reports = dataset_reports(dest, standins)
    return status_text(reports, dest, standins), not any(r.failing for r in reports)


__all__ = ["status", "dataset_reports", "status_text", "PAPER_STEPS", "BUILD_MARKER"]
