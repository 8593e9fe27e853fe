"""The public archives the stand-ins are built from, and a reader for each archive's own layout.

Every archive is listed with its official URL and its pin.  The SHA-256 pins are the ones
torchvision's dataset code publishes (its prototype datasets pin SHA-256, its classic datasets
MD5: both are given where both exist) or, for Caltech-101's zip, the digest that projects checking
that zip publish; Tiny-ImageNet has no published SHA-256, only the MD5 that Tiny-ImageNet
loaders check, so its SHA-256 is recorded on the first verified download
(:mod:`kx_utils.data.fetch.archives`).

A reader opens the downloaded archive(s) of one source and offers its images by split and class:
:meth:`Source.index` lists ``(split, class) -> item ids`` without decoding anything, and
:meth:`Source.read` yields the chosen items in archive order (a compressed tar is read forward,
once).  An item is either the image file's bytes or, for CIFAR-10's pickled arrays, a PIL image.
"""

from __future__ import annotations

import csv
import io
import pickle
import posixpath
import tarfile
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .archives import Archive, FetchError

TORCHVISION = "torchvision's dataset code"
TORCHVISION_PROTOTYPE = "torchvision's prototype datasets (SHA-256)"

ARCHIVES: dict[str, Archive] = {a.name: a for a in [
    Archive("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            md5="c58f30108f718f92721af3b95e74349a", pin_source=TORCHVISION_PROTOTYPE, size="163 MiB"),
    Archive("GTSRB-Training_fixed.zip",
            "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB-Training_fixed.zip",
            sha256="df4144942083645bd60b594de348aa6930126c3e0e5de09e39611630abf8455a",
            md5="513f3c79a4c5141765e10e952eaa2478", pin_source=TORCHVISION_PROTOTYPE, size="179 MiB"),
    Archive("GTSRB_Final_Test_Images.zip",
            "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Test_Images.zip",
            sha256="48ba6fab7e877eb64eaf8de99035b0aaecfbc279bee23e35deca4ac1d0a837fa",
            md5="c7e4e6327067d32654124b0fe9e82185", pin_source=TORCHVISION_PROTOTYPE, size="85 MiB"),
    Archive("GTSRB_Final_Test_GT.zip",
            "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Test_GT.zip",
            sha256="f94e5a7614d75845c74c04ddb26b8796b9e483f43541dd95dd5b726504e16d6d",
            md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5", pin_source=TORCHVISION_PROTOTYPE, size="0.1 MiB"),
    Archive("caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
            sha256="331234750fc7f77520e50d9565e8b6907b03565e30320da1401130db08c61f91",
            md5="3138e1922a9193bfa496528edbbc45d0",
            pin_source="the SHA-256 that projects checking this zip (TensorFlow Datasets' archive) publish; "
                       "the MD5 is torchvision's", size="~130 MiB"),
    Archive("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            md5="90528d7ca1a48142e341f4ef8d21d0de",
            pin_source="the MD5 Tiny-ImageNet loaders check (no SHA-256 is published)", size="237 MiB"),
    Archive("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
            md5="97eceeb196236b17998738112f37df78", pin_source=TORCHVISION_PROTOTYPE, size="1.1 GiB"),
    # the paper profile's Caltech-256 (torchvision writes it out, kx_utils.data.download.download)
    Archive("256_ObjectCategories.tar", "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
            sha256="08ff01b03c65566014ae88eb0490dbe4419fc7ac4de726ee1163e39fd809543e",
            md5="67b4f42ca05d46448c6bb8ecd2220f6d", pin_source=TORCHVISION_PROTOTYPE, size="1.1 GiB"),
]}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm")


def _is_image(name: str) -> bool:
    base = posixpath.basename(name)
    return base.lower().endswith(IMAGE_SUFFIXES) and not base.startswith(".")


class Source:
    """The images of one public dataset, by split and class; use as a context manager."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths
        self._stack = ExitStack()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def index(self) -> dict[tuple[str, str], list[str]]:
        raise NotImplementedError

    def read(self, items: Iterable[str]) -> Iterator[tuple[str, bytes | Image.Image]]:
        raise NotImplementedError

    def _layout_error(self, archive: str, what: str) -> FetchError:
        return FetchError(f"{self.paths[archive]} does not have the layout of {archive}: {what}. Delete it "
                          "and rerun (or, with a mirror, check that it serves the official archive)")


class _TarMembers:
    """The image members of a tar archive (a path, or a file object inside another archive)."""

    def __init__(self, stack: ExitStack, path: Path | None = None, fileobj=None):
        self.tar = stack.enter_context(tarfile.open(name=path, fileobj=fileobj, mode="r:*"))
        self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()
                        if m.isfile() and _is_image(m.name)}

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for member in sorted((self.members[n] for n in names), key=lambda m: m.offset):  # forward only
            yield member.name, self.tar.extractfile(member).read()


class _ArraysOnly(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts of lists, bytes and numpy arrays) and nothing else: a verified
    archive is still never a way to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR batch: only numpy arrays are expected")
        return super().find_class(module, name)


class CifarSource(Source):
    """cifar-10-python.tar.gz: pickled uint8 arrays; items ``train/<index>`` and ``test/<index>``."""

    ARCHIVE = "cifar-10-python.tar.gz"
    BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

    def __init__(self, paths):
        super().__init__(paths)
        self.arrays, self.labels = {}, {}
        with tarfile.open(paths[self.ARCHIVE], "r:gz") as tar:
            def load(name):
                try:
                    return _ArraysOnly(tar.extractfile(f"cifar-10-batches-py/{name}"), encoding="bytes").load()
                except KeyError:
                    raise self._layout_error(self.ARCHIVE, f"no cifar-10-batches-py/{name}") from None
            self.names = [n.decode() for n in load("batches.meta")[b"label_names"]]
            for split, batches in self.BATCHES.items():
                parts = [load(b) for b in batches]
                self.arrays[split] = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
                self.labels[split] = [int(v) for p in parts for v in p[b"labels"]]

    def index(self):
        out = {}
        for split, labels in self.labels.items():
            for i, label in enumerate(labels):
                out.setdefault((split, self.names[label]), []).append(f"{split}/{i:05d}")
        return out

    def read(self, items):
        for item in items:
            split, i = item.split("/")
            yield item, Image.fromarray(self.arrays[split][int(i)].transpose(1, 2, 0))


class GtsrbSource(Source):
    """GTSRB as torchvision downloads it: training images by class folder, test images labelled by
    GT-final_test.csv; classes are the numeric ClassIds (``0`` .. ``42``)."""

    TRAIN, TEST, TRUTH = "GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"

    def __init__(self, paths):
        super().__init__(paths)
        self.zips = {name: self._stack.enter_context(zipfile.ZipFile(paths[name])) for name in (self.TRAIN, self.TEST)}
        with zipfile.ZipFile(paths[self.TRUTH]) as truth:
            try:
                text = truth.read("GT-final_test.csv").decode()
            except KeyError:
                raise self._layout_error(self.TRUTH, "no GT-final_test.csv") from None
        self.test_labels = {row["Filename"]: str(int(row["ClassId"]))
                            for row in csv.DictReader(io.StringIO(text), delimiter=";", skipinitialspace=True)}

    def index(self):
        out = {}
        for name in self.zips[self.TRAIN].namelist():
            parts = name.split("/")  # GTSRB/Training/<class>/<track>_<frame>.ppm
            if len(parts) == 4 and parts[:2] == ["GTSRB", "Training"] and _is_image(name):
                out.setdefault(("train", str(int(parts[2]))), []).append(name)
        for name in self.zips[self.TEST].namelist():
            base = posixpath.basename(name)
            if name.startswith("GTSRB/Final_Test/Images/") and _is_image(name):
                if base not in self.test_labels:
                    raise self._layout_error(self.TRUTH, f"no class for the test image {base}")
                out.setdefault(("test", self.test_labels[base]), []).append(name)
        if not out:
            raise self._layout_error(self.TRAIN, "no GTSRB/Training/<class>/<image>.ppm")
        return out

    def read(self, items):
        for item in items:
            archive = self.TRAIN if item.startswith("GTSRB/Training/") else self.TEST
            yield item, self.zips[archive].read(item)


class Caltech101Source(Source):
    """caltech-101.zip, which holds caltech-101/101_ObjectCategories.tar.gz: one split, ``all``, with a
    class per folder (BACKGROUND_Google included)."""

    ARCHIVE = "caltech-101.zip"
    INNER = "caltech-101/101_ObjectCategories.tar.gz"

    def __init__(self, paths):
        super().__init__(paths)
        outer = self._stack.enter_context(zipfile.ZipFile(paths[self.ARCHIVE]))
        try:
            inner = self._stack.enter_context(outer.open(self.INNER))
        except KeyError:
            raise self._layout_error(self.ARCHIVE, f"no {self.INNER}") from None
        self.tar = _TarMembers(self._stack, fileobj=inner)

    def index(self):
        out = {}
        for name in self.tar.members:
            parts = name.split("/")  # 101_ObjectCategories/<class>/image_0001.jpg
            if len(parts) == 3 and parts[0] == "101_ObjectCategories":
                out.setdefault(("all", parts[1]), []).append(name)
        return out

    def read(self, items):
        return self.tar.read(items)


class TinyImagenetSource(Source):
    """tiny-imagenet-200.zip: ``train`` by wnid folder, ``val`` labelled by val_annotations.txt."""

    ARCHIVE = "tiny-imagenet-200.zip"
    ROOT = "tiny-imagenet-200"

    def __init__(self, paths):
        super().__init__(paths)
        self.zip = self._stack.enter_context(zipfile.ZipFile(paths[self.ARCHIVE]))
        try:
            text = self.zip.read(f"{self.ROOT}/val/val_annotations.txt").decode()
        except KeyError:
            raise self._layout_error(self.ARCHIVE, f"no {self.ROOT}/val/val_annotations.txt") from None
        self.val_labels = {line.split("\t")[0]: line.split("\t")[1] for line in text.splitlines() if line.strip()}

    def index(self):
        out = {}
        for name in self.zip.namelist():
            parts = name.split("/")
            if not _is_image(name) or parts[0] != self.ROOT:
                continue
            if len(parts) == 5 and parts[1] == "train" and parts[3] == "images":
                out.setdefault(("train", parts[2]), []).append(name)
            elif len(parts) == 4 and parts[1:3] == ["val", "images"]:
                if parts[3] not in self.val_labels:
                    raise self._layout_error(self.ARCHIVE, f"no label for {name} in val_annotations.txt")
                out.setdefault(("val", self.val_labels[parts[3]]), []).append(name)
        return out

    def read(self, items):
        for item in items:
            yield item, self.zip.read(item)


class CubSource(Source):
    """CUB_200_2011.tgz: one split, ``all``; classes are the species names of the image folders
    (``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``)."""

    ARCHIVE = "CUB_200_2011.tgz"

    def __init__(self, paths):
        super().__init__(paths)
        self.tar = _TarMembers(self._stack, path=paths[self.ARCHIVE])

    def index(self):
        out = {}
        for name in self.tar.members:
            parts = name.split("/")  # CUB_200_2011/images/<id>.<species>/<file>.jpg
            if len(parts) == 4 and parts[:2] == ["CUB_200_2011", "images"] and "." in parts[2]:
                out.setdefault(("all", parts[2].split(".", 1)[1]), []).append(name)
        return out

    def read(self, items):
        return self.tar.read(items)
