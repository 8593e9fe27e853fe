"""``python -m kx_utils data build``: the paper profile's datasets that no public archive serves whole,
built from what the user downloaded, in the layout :mod:`kx_utils.data.datasets` reads.

    python -m kx_utils data build cubs200 --from CUB_200_2011.tgz         # or the folder extracted from it
    python -m kx_utils data build imagenet_subset --from ILSVRC_TRAIN_DIR --seed 0 [--files hardlink]
    python -m kx_utils data build openimages --list test-images-with-rotation.csv --seed 0
    python -m kx_utils data build diabetic5 --from KAGGLE_DIR [--split patient] [--crop eyenet]

What each builder does (and where it departs from the paper):

* ``cubs200`` (CUB-200-2011, Table 1: 200 classes, 5,994 / 5,794): ``train_test_split.txt`` decides
  every image's split, exactly; each image keeps its file name under ``<split>/<class folder>/``.
  From the ``.tgz`` (read twice: the metadata first, then the images, never unpacked whole) or the
  extracted ``CUB_200_2011/`` folder.  The four metadata files must agree with each other and with
  the class folders, or nothing is built.
* ``imagenet_subset`` (the attacker's set, 3.2.1 and 4.2.1: 100 images of each of the 1,000 classes,
  90,000 / 10,000): from an ILSVRC-2012 training folder (``<root>/<wnid>/*.JPEG``), 100 images of each
  class drawn with a generator seeded by (seed, wnid), the first 90 of the draw to ``train/``, the
  last 10 to ``test/``.  The draw of a class does not depend on the other classes.  A class with fewer
  than 100 images is an error (ILSVRC-2012 has at least 732 each: the folder is incomplete).  Files are
  copied (``--files copy``, the default) or hard-linked (``--files hardlink``: no extra disk space;
  fails, with no fallback to copying, where the filesystem refuses).  The paper's own draw is not
  published, so the subset is a draw like theirs, not theirs.
* ``openimages`` (4.2.1: 20,000 images sampled uniformly): :mod:`kx_utils.data.fetch.openimages`.
* ``diabetic5`` (Kaggle DR 2015 with EyeNet's preprocessing): :mod:`kx_utils.data.fetch.diabetic`.
* ``bing`` (5.2.2: 380 images of each Caltech-256 category): not scripted, see :data:`BING_BY_HAND`.

Every build writes into a hidden sibling ``<dest>/.kx-building-<folder>-<random>/`` and renames it to
``<dest>/<folder>`` only once every file and the marker ``.kx-build.json`` (source, settings, the image
count of every class) are written: a killed build leaves only the hidden sibling, which no loader
reads and the next build deletes.  An existing folder is never touched without ``--rebuild``, and a
folder placed by hand (no marker) never.  ``data status --profile paper`` compares a built folder
with its marker, so one that lost files reads ``DAMAGED``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ...runtime.artifacts import atomic_write_text
from ..imagefolder import IMAGE_EXTENSIONS
from .archives import FetchError
from .build import (
    BUILDING_PREFIX,
    counts_on_disk,
    remove_abandoned_builds,
    swap_into_place,
)

BUILD_MARKER = ".kx-build.json"
BUILDER_VERSION = 1  # bump when a change alters what a build writes
FILE_MODES = ("copy", "hardlink")
CUB_URL = ("https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz, 1.1 GB, served by "
           "https://data.caltech.edu/records/65de6-vp158)")
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
WNID = re.compile(r"n\d{8}")
BING_BY_HAND = (
    "Bing is not scripted (kx knows no checksummed archive of it to verify): download Bergamo & Torresani's Bing "
    "images of the Caltech-256 categories (http://vlg.cs.dartmouth.edu/projects/domainadapt/) and put 380 "
    "images of each of the 256 Caltech-256 categories (5.2.2 of the paper) as bing/train/<class>/<image>, with "
    "<class> the Caltech-256 folder name (001.ak47 ... 256.toad; no 257.clutter), so that 97,280 images in all "
    "share the victim's class names")


# ---------------------------------------------------------------- building a folder whole or not at all


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder ``data build`` made, None for one placed by hand (or absent)."""
    try:
        return json.loads((Path(folder) / BUILD_MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}


def _check_replaceable(final: Path, replace: bool) -> None:
    if not final.exists():
        return
    if not replace:
        raise FetchError(f"{final} already exists; nothing was changed (`python -m kx_utils data status --profile "
                         "paper` shows what it holds; add --rebuild to build it again)")
    if read_marker(final) is None:
        raise FetchError(f"{final} was not built by `kx_utils data build` (it has no {BUILD_MARKER}), so it is never "
                         "overwritten: move it away first to build it again")


@contextlib.contextmanager
def building(dest: Path, folder: str, replace: bool = False, log: Callable[[str], None] = print) -> Iterator[Path]:
    """A fresh hidden folder beside ``<dest>/<folder>``, renamed to it when the ``with`` body succeeds.

    On any error (or a kill) the hidden folder is deleted (or left for the next build to delete), and an
    existing ``<dest>/<folder>`` is untouched.
    """
    from . import _exclusive  # one writer per data folder, shared with `data fetch`

    dest = Path(dest).expanduser().resolve()
    final = dest / folder
    _check_replaceable(final, replace)
    dest.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        remove_abandoned_builds(dest, folder, log)
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f"{BUILDING_PREFIX}{folder}-"))
        try:
            yield tmp
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            _check_replaceable(final, replace)
            swap_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def write_marker(tmp: Path, folder: str, splits: tuple[str, ...], source: str, settings: dict,
                 extra: dict | None = None) -> dict:
    """Write the marker last (before the rename): its counts are what ``data status`` checks against."""
    marker = {"folder": folder, "builder": f"kx_utils.data.fetch.paper v{BUILDER_VERSION}", "source": source,
              "settings": settings, "built": time.strftime("%Y-%m-%d %H:%M:%S"),
              "counts": counts_on_disk(tmp, splits), **(extra or {})}
    atomic_write_text(tmp / BUILD_MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")
    return marker


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def place_file(src: Path, dst: Path, files: str) -> None:
    """Copy ``src`` to ``dst``, or hard-link it: with no silent fallback from one to the other."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if files == "copy":
        shutil.copyfile(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        raise FetchError(f"cannot hard-link {src} to {dst} ({exc.strerror}): hard links need the data folder on "
                         "the same filesystem as the source, one that allows them; use --files copy instead") from None


def seeded_rng(seed: int, *parts: str) -> random.Random:
    """A generator for one draw, seeded by the seed and the draw's name: the same on every machine."""
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------- CUB-200-2011


@dataclass(frozen=True)
class CubImage:
    image_id: str
    rel: str  # <class folder>/<file>, as images.txt writes it
    train: bool

    @property
    def class_folder(self) -> str:
        return self.rel.split("/")[0]


def _id_pairs(text: str, name: str) -> dict[str, str]:
    """``<id> <value>`` lines -> {id: value}; a malformed or repeated line is an error naming it."""
    pairs = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise FetchError(f"{name}, line {number}: {line!r} is not '<image id> <value>': the file is damaged; "
                             f"download CUB_200_2011.tgz again ({CUB_URL})")
        if parts[0] in pairs:
            raise FetchError(f"{name}, line {number}: id {parts[0]} appears twice: the file is damaged")
        pairs[parts[0]] = parts[1].strip()
    return pairs


def cub_images(texts: dict[str, str]) -> list[CubImage]:
    """Every image of CUB-200-2011 with its split, checked against the class folders and each other."""
    images, labels, split, classes = (_id_pairs(texts[name], name) for name in CUB_FILES)
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        if set(table) != set(images):
            odd = sorted(set(table) ^ set(images), key=lambda i: (len(i), i))
            raise FetchError(f"{name} and images.txt list different image ids ({len(odd)} differ, e.g. {odd[0]}): "
                             f"the metadata files come from different downloads; use the four of one CUB_200_2011")
    out = []
    for image_id, rel in images.items():
        parts = rel.split("/")
        if len(parts) != 2 or ".." in parts or not all(parts):
            raise FetchError(f"images.txt: image {image_id} is {rel!r}, not '<class folder>/<file>'")
        cls = classes.get(labels[image_id])
        if cls is None:
            raise FetchError(f"image_class_labels.txt gives image {image_id} class {labels[image_id]}, which "
                             "classes.txt does not list")
        if cls != parts[0]:
            raise FetchError(f"image {image_id} ({rel}) lies in folder {parts[0]} but image_class_labels.txt gives "
                             f"it class {labels[image_id]} ({cls} in classes.txt): the metadata does not match")
        if split[image_id] not in ("0", "1"):
            raise FetchError(f"train_test_split.txt: image {image_id} has {split[image_id]!r}, not 1 (train) or 0")
        out.append(CubImage(image_id, rel, split[image_id] == "1"))
    return out


def _member_name(member: tarfile.TarInfo) -> str:
    return member.name[2:] if member.name.startswith("./") else member.name


def _cub_texts_from_tar(path: Path) -> tuple[dict[str, str], str]:
    """The four metadata files of the archive, and the prefix its images.txt lies under."""
    found: dict[str, dict[str, str]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = _member_name(member)
                base = name.rsplit("/", 1)[-1]
                if member.isfile() and base in CUB_FILES:
                    prefix = name[:-len(base)]
                    found.setdefault(prefix, {})[base] = tar.extractfile(member).read().decode("utf-8")
                    if len(found[prefix]) == len(CUB_FILES):
                        return found[prefix], prefix
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"{path} is not a readable tar archive ({exc}): download CUB_200_2011.tgz again "
                         f"({CUB_URL})") from None
    have = max(found.values(), key=len) if found else {}
    missing = [n for n in CUB_FILES if n not in have]
    raise FetchError(f"{path} lacks {', '.join(missing)}: it is not CUB_200_2011.tgz (or is cut short); download "
                     f"it from {CUB_URL}")


def _cub_folder(path: Path) -> Path:
    for root in (path, path / "CUB_200_2011"):
        if (root / "images.txt").is_file():
            missing = [n for n in CUB_FILES if not (root / n).is_file()] + \
                ([] if (root / "images").is_dir() else ["images/"])
            if missing:
                raise FetchError(f"{root} lacks {', '.join(missing)}: extract the whole of CUB_200_2011.tgz again")
            return root
    raise FetchError(f"{path} holds no images.txt: pass CUB_200_2011.tgz itself, or the CUB_200_2011 folder "
                     "extracted from it (it holds images.txt, train_test_split.txt and images/); get it from "
                     f"{CUB_URL}")


def build_cubs200(source: str | os.PathLike, dest: str | os.PathLike, replace: bool = False,
                  log: Callable[[str], None] = print) -> Path:
    """``<dest>/cubs200/{train,test}/<class>/<image>`` from CUB_200_2011.tgz or its extracted folder."""
    source = Path(source).expanduser()
    if not source.exists():
        raise FetchError(f"{source} does not exist: pass the CUB_200_2011.tgz you downloaded ({CUB_URL}) or the "
                         "folder extracted from it")
    from_tar = source.is_file()
    if from_tar:
        texts, prefix = _cub_texts_from_tar(source)
    else:
        root = _cub_folder(source)
        texts = {name: (root / name).read_text(encoding="utf-8") for name in CUB_FILES}
    images = cub_images(texts)
    classes = sorted({im.class_folder for im in images})
    log(f"cubs200: {len(images):,} images of {len(classes)} classes ({sum(im.train for im in images):,} train / "
        f"{sum(not im.train for im in images):,} test, as train_test_split.txt says) from {source}")
    with building(Path(dest), "cubs200", replace, log) as tmp:
        target = {im.rel: tmp / ("train" if im.train else "test") / im.rel for im in images}
        if from_tar:
            wanted = {f"{prefix}images/{rel}": path for rel, path in target.items()}
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    path = wanted.pop(_member_name(member), None) if member.isfile() else None
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(tar.extractfile(member).read())
            if wanted:
                raise FetchError(f"{source} lacks {len(wanted):,} of the images images.txt lists (e.g. "
                                 f"{next(iter(wanted))}): the download is incomplete; download it again ({CUB_URL})")
        else:
            absent = [rel for rel in target if not (root / "images" / rel).is_file()]
            if absent:
                raise FetchError(f"{root / 'images'} lacks {len(absent):,} of the images images.txt lists (e.g. "
                                 f"{absent[0]}): extract CUB_200_2011.tgz again")
            for rel, path in target.items():
                place_file(root / "images" / rel, path, "copy")
        write_csv(tmp / "classes.csv", ["index", "folder", "name"],
                  [[i, c, c.split(".", 1)[-1].replace("_", " ")] for i, c in enumerate(classes)])
        write_csv(tmp / "manifest.csv", ["file", "image_id", "source"],
                  sorted([f"{'train' if im.train else 'test'}/{im.rel}", im.image_id, f"images/{im.rel}"]
                         for im in images))
        write_marker(tmp, "cubs200", ("train", "test"), str(source), {"split": "train_test_split.txt"})
    return Path(dest).expanduser().resolve() / "cubs200"


# ---------------------------------------------------------------- the ImageNet subset


def _images_in(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS))


def _imagenet_classes(source: Path) -> list[str]:
    if not source.is_dir():
        raise FetchError(f"{source} is not a folder: pass the ILSVRC-2012 training folder, whose sub-folders are "
                         "the 1,000 WordNet ids (n01440764/ ... n15075141/), from https://image-net.org/download.php")
    classes = sorted(e.name for e in os.scandir(source) if e.is_dir() and WNID.fullmatch(e.name))
    if classes:
        return classes
    if any(WNID.fullmatch(p.stem) for p in source.glob("n*.tar")):
        raise FetchError(f"{source} holds the per-class archives (n01440764.tar ...) of ILSVRC2012_img_train.tar, not "
                         "class folders: extract each into a folder of its name first, e.g. `for f in n*.tar; do mkdir "
                         "\"${f%.tar}\" && tar -xf \"$f\" -C \"${f%.tar}\"; done`")
    hint = next((f" (did you mean {source / sub}?)" for sub in ("train", "Data/CLS-LOC/train")
                 if (source / sub).is_dir()), "")
    raise FetchError(f"{source} has no ImageNet class folders (n01440764/ ...){hint}: pass the ILSVRC-2012 training "
                     "folder, whose sub-folders are the 1,000 WordNet ids")


def build_imagenet_subset(source: str | os.PathLike, dest: str | os.PathLike, seed: int = 0, per_class: int = 100,
                          test_per_class: int = 10, files: str = "copy", replace: bool = False,
                          log: Callable[[str], None] = print) -> Path:
    """``<dest>/imagenet_subset/{train,test}/<wnid>/``: ``per_class`` seeded images of every class."""
    if files not in FILE_MODES:
        raise FetchError(f"--files must be one of {', '.join(FILE_MODES)}, got {files!r}")
    if not 0 < test_per_class < per_class:
        raise FetchError(f"the test images per class ({test_per_class}) must be more than 0 and fewer than the "
                         f"images per class ({per_class})")
    source = Path(source).expanduser()
    classes = _imagenet_classes(source)
    listed = {wnid: _images_in(source / wnid) for wnid in classes}
    short = [f"{wnid} ({len(names)})" for wnid, names in listed.items() if len(names) < per_class]
    if short:
        raise FetchError(f"{len(short)} class folder(s) of {source} hold fewer than the {per_class} images the paper "
                         f"samples per class: {', '.join(short[:5])}{' ...' if len(short) > 5 else ''}. ILSVRC-2012 "
                         "has at least 732 training images per class: extract those classes' archives again")
    if len(classes) != 1000:
        log(f"WARNING {source} has {len(classes)} ImageNet classes, not ILSVRC-2012's 1,000: the subset will have "
            f"{len(classes)} classes and {len(classes) * per_class:,} images, not the paper's 100,000")
    train_n = per_class - test_per_class
    log(f"imagenet_subset: {per_class} images of each of {len(classes)} classes (seed {seed}), {train_n} to train/, "
        f"{test_per_class} to test/, {'copied' if files == 'copy' else 'hard-linked'} from {source}")
    with building(Path(dest), "imagenet_subset", replace, log) as tmp:
        manifest = []
        for number, wnid in enumerate(classes, 1):
            chosen = seeded_rng(seed, "imagenet_subset", wnid).sample(listed[wnid], per_class)
            for rank, name in enumerate(chosen):
                split = "train" if rank < train_n else "test"
                place_file(source / wnid / name, tmp / split / wnid / name, files)
                manifest.append([f"{split}/{wnid}/{name}", f"{wnid}/{name}"])
            if number % 100 == 0:
                log(f"  {number} of {len(classes)} classes")
        write_csv(tmp / "manifest.csv", ["file", "source"], sorted(manifest))
        write_marker(tmp, "imagenet_subset", ("train", "test"), str(source),
                     {"seed": seed, "per_class": per_class, "test_per_class": test_per_class, "files": files})
    return Path(dest).expanduser().resolve() / "imagenet_subset"
