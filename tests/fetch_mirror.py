"""A tiny local mirror of every archive `kx_utils data fetch` downloads for the mini stand-ins.

Each archive has the real archive's name and internal layout (pickled CIFAR-10 batches, GTSRB's
three zips with its ground-truth CSV, Caltech-101's zip holding a tar.gz, Tiny-ImageNet's zip with
val_annotations.txt, CUB's tgz) but a few small images per class, drawn in the test.  Beside the
archives: ``SHA256SUMS`` (their digests, for ``--pins``) and ``subsets/<stand-in>.csv`` (the tiny
stand-ins built from them, for ``--subset-tables``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# stand-in -> (header, rows): what the mirror's subset tables ask for
TABLES = {
    "cifar10": ("folder,name,source_class,train,pool,test",
                ["airplane,airplane,airplane,2,1,1", "cat,cat,cat,1,2,2"]),
    "gtsrb": ("folder,name,source_class,train,test",
              ["00_speed_limit_20,speed_limit_20,0,3,1", "01_speed_limit_30,speed_limit_30,1,2,2"]),
    "caltech101": ("folder,name,source_class,train,pool,test",
                   ["Faces,Faces,Faces,2,1,1", "Faces_easy,Faces_easy,Faces_easy,2,1,1",
                    "accordion,accordion,accordion,1,1,1"]),
    "cub200_subset": ("folder,name,source_class,train,test",
                      ["000.Black_footed_Albatross,Black footed Albatross,Black_footed_Albatross,2,1",
                       "001.Groove_billed_Ani,Groove billed Ani,Groove_billed_Ani,1,2"]),
    "tiny_imagenet": ("folder,name,source_class,train,val",
                      ["n01443537,goldfish,n01443537,2,1", "n01629819,salamander,n01629819,3,2"]),
    "ood_web": ("folder,name,source_class,test", ["background_google,web images,BACKGROUND_Google,3"]),
}
SIZES = {"cifar10": 32, "gtsrb": 32, "caltech101": 64, "cub200_subset": 64, "tiny_imagenet": 64, "ood_web": 64}


def _image(rng, size, mode="RGB") -> Image.Image:
    w, h = size
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return image.convert(mode)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def _tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def cifar_archive(rng) -> bytes:
    def batch(n):
        labels = [i % 4 for i in range(n)]  # airplane, automobile, bird, cat
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        return pickle.dumps({b"data": data, b"labels": labels})
    files = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": [n.encode() for n in CIFAR_NAMES]})}
    files.update({f"cifar-10-batches-py/data_batch_{i}": batch(4) for i in range(1, 6)})
    files["cifar-10-batches-py/test_batch"] = batch(8)
    return _tar_bytes(files, "w:gz")


def gtsrb_archives(rng) -> dict[str, bytes]:
    train, truth = {}, ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for cls in range(3):
        for track in range(2):
            for frame in range(3):
                train[f"GTSRB/Training/{cls:05d}/{track:05d}_{frame:05d}.ppm"] = _encoded(_image(rng, (40, 36)), "PPM")
        train[f"GTSRB/Training/{cls:05d}/GT-{cls:05d}.csv"] = b"Filename;ClassId\n"
    test = {}
    for i in range(9):
        test[f"GTSRB/Final_Test/Images/{i:05d}.ppm"] = _encoded(_image(rng, (30, 34)), "PPM")
        truth.append(f"{i:05d}.ppm;30;34;1;1;29;33;{i % 3}")
    test["GTSRB/Final_Test/Images/GT-final_test.test.csv"] = b"Filename\n"
    return {"GTSRB-Training_fixed.zip": _zip_bytes(train), "GTSRB_Final_Test_Images.zip": _zip_bytes(test),
            "GTSRB_Final_Test_GT.zip": _zip_bytes({"GT-final_test.csv": "\n".join(truth).encode()})}


def caltech_archive(rng) -> bytes:
    inner = {}
    for cls, n in (("Faces", 5), ("Faces_easy", 5), ("accordion", 4), ("BACKGROUND_Google", 4), ("ant", 2)):
        for i in range(1, n + 1):
            inner[f"101_ObjectCategories/{cls}/image_{i:04d}.jpg"] = _encoded(_image(rng, (80, 60)), "JPEG")
    return _zip_bytes({"caltech-101/101_ObjectCategories.tar.gz": _tar_bytes(inner, "w:gz"),
                       "caltech-101/Annotations.tar": _tar_bytes({"Annotations/x.mat": b"0"}, "w")})


def tiny_imagenet_archive(rng) -> bytes:
    files, annotations = {}, []
    for wnid in ("n01443537", "n01629819", "n01641577"):
        for i in range(4):
            mode = "L" if i == 1 else "RGB"  # Tiny-ImageNet holds a few greyscale JPEGs
            files[f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG"] = _encoded(_image(rng, (64, 64), mode), "JPEG")
        files[f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt"] = b""
    for i in range(7):
        wnid = ("n01443537", "n01629819")[i % 2]
        files[f"tiny-imagenet-200/val/images/val_{i}.JPEG"] = _encoded(_image(rng, (64, 64)), "JPEG")
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    files["tiny-imagenet-200/val/val_annotations.txt"] = "\n".join(annotations).encode()
    files["tiny-imagenet-200/wnids.txt"] = b"n01443537\nn01629819\nn01641577\n"
    return _zip_bytes(files)


def cub_archive(rng) -> bytes:
    files = {"CUB_200_2011/classes.txt": b"1 001.Black_footed_Albatross\n4 004.Groove_billed_Ani\n"}
    for folder in ("001.Black_footed_Albatross", "004.Groove_billed_Ani", "002.Laysan_Albatross"):
        for i in range(4):
            files[f"CUB_200_2011/images/{folder}/{folder[4:]}_{i:04d}.jpg"] = _encoded(_image(rng, (90, 70)), "JPEG")
    return _tar_bytes(files, "w:gz")


def write_mirror(root: Path, seed: int = 0) -> Path:
    """Write the archives, ``SHA256SUMS`` and ``subsets/`` under ``root``; return ``root``."""
    rng = np.random.default_rng(seed)
    archives = {"cifar-10-python.tar.gz": cifar_archive(rng), **gtsrb_archives(rng),
                "caltech-101.zip": caltech_archive(rng), "tiny-imagenet-200.zip": tiny_imagenet_archive(rng),
                "CUB_200_2011.tgz": cub_archive(rng)}
    root.mkdir(parents=True, exist_ok=True)
    for name, data in archives.items():
        (root / name).write_bytes(data)
    (root / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in archives.items()))
    (root / "subsets").mkdir(exist_ok=True)
    for folder, (header, rows) in TABLES.items():
        (root / "subsets" / f"{folder}.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def expected_counts(folder: str) -> dict[str, dict[str, int]]:
    """split -> class folder -> count, as the mirror's table for ``folder`` asks."""
    header, rows = TABLES[folder]
    columns = header.split(",")
    splits = columns[3:]
    out = {s: {} for s in splits}
    for row in rows:
        cells = row.split(",")
        for split, count in zip(splits, cells[3:]):
            out[split][cells[0]] = int(count)
    return out
