"""`python -m kx_utils data build|status` for the paper profile (kx_utils/data/fetch/paper.py, openimages.py,
diabetic.py, paper_status.py) and Caltech-256's export without clutter, on tiny synthetic inputs made in
the test: a CUB tgz, an ILSVRC-like folder, an Open Images list served by a local HTTP server, Kaggle-like
fundus photographs.  Nothing is downloaded from the internet."""

from __future__ import annotations

import base64
import csv
import dataclasses
import functools
import hashlib
import http.server
import io
import json
import math
import os
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kx_utils import __main__ as cli
from kx_utils.data import catalog as kc
from kx_utils.data import datasets as kd
from kx_utils.data import download as kdl
from kx_utils.data.fetch import FetchError, diabetic, openimages, paper, paper_status
from kx_utils.data.fetch.build import BUILDING_PREFIX


def jpeg(size=(40, 30), color=(120, 60, 30), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def tree(folder: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under ``folder`` (markers excluded)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != paper.BUILD_MARKER}


def leftovers(dest: Path) -> list[str]:
    return [p.name for p in dest.iterdir() if p.name.startswith(BUILDING_PREFIX)] if dest.exists() else []


# ---------------------------------------------------------------- CUB-200-2011

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
CUB_SPLIT = {1: 1, 2: 0, 3: 1, 4: 1, 5: 0, 6: 0, 7: 1, 8: 0, 9: 1}  # image id -> is_training, 3 per class


def make_cub(root: Path, corrupt_label: bool = False) -> Path:
    """A CUB_200_2011 folder: 3 classes x 3 images, the official metadata files."""
    base = root / "CUB_200_2011"
    images, labels, split = [], [], []
    for image_id, train in CUB_SPLIT.items():
        cls = (image_id - 1) // 3
        rel = f"{CUB_CLASSES[cls]}/{CUB_CLASSES[cls][4:]}_{image_id:04d}_{100 + image_id}.jpg"
        (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "images" / rel).write_bytes(jpeg(seed=image_id))
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {cls + 1 if not (corrupt_label and image_id == 4) else 3}")
        split.append(f"{image_id} {train}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_CLASSES)))
    return base


def make_cub_tgz(root: Path, drop: str | None = None) -> Path:
    """CUB_200_2011.tgz with the images before the metadata (the builder must not rely on the order)."""
    base = make_cub(root / "src")
    path = root / "CUB_200_2011.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "src" / "CUB_200_2011" / "images", arcname="CUB_200_2011/images",
                filter=lambda info: None if drop and info.name.endswith(drop) else info)
        for name in paper.CUB_FILES:
            tar.add(base / name, arcname=f"CUB_200_2011/{name}")
        info = tarfile.TarInfo("attributes.txt")  # the real archive has one at its top
        info.size = 3
        tar.addfile(info, io.BytesIO(b"1 x"))
    return path


def cub_expected() -> dict[str, str]:
    """output file -> its split, from train_test_split.txt."""
    out = {}
    for image_id, train in CUB_SPLIT.items():
        cls = CUB_CLASSES[(image_id - 1) // 3]
        out[f"{'train' if train else 'test'}/{cls}/{cls[4:]}_{image_id:04d}_{100 + image_id}.jpg"] = \
            "train" if train else "test"
    return out


def test_cub_from_the_tgz_follows_train_test_split_exactly(tmp_path):
    dest = tmp_path / "data"
    built = paper.build_cubs200(make_cub_tgz(tmp_path), dest, log=lambda m: None)
    images = {k: v for k, v in tree(built).items() if k.startswith(("train/", "test/"))}
    assert sorted(images) == sorted(cub_expected())  # every image in the split the file gives it, nothing else
    source = tmp_path / "src" / "CUB_200_2011" / "images"
    for rel, data in images.items():
        assert data == (source / rel.split("/", 1)[1]).read_bytes()  # copied byte for byte
    marker = paper.read_marker(built)
    assert marker["counts"] == {"train": {CUB_CLASSES[0]: 2, CUB_CLASSES[1]: 1, CUB_CLASSES[2]: 2},
                                "test": {CUB_CLASSES[0]: 1, CUB_CLASSES[1]: 2, CUB_CLASSES[2]: 1}}
    with open(built / "classes.csv", newline="") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    assert names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert leftovers(dest) == []
    # the loaders read it as the paper's CUBS
    assert kd.class_folders("cubs200", "test", standins=False, root=dest) == CUB_CLASSES


def test_cub_from_the_extracted_folder_is_the_same_as_from_the_tgz(tmp_path):
    a = paper.build_cubs200(make_cub_tgz(tmp_path), tmp_path / "a", log=lambda m: None)
    b = paper.build_cubs200(tmp_path / "src", tmp_path / "b", log=lambda m: None)  # the parent of CUB_200_2011/
    c = paper.build_cubs200(tmp_path / "src" / "CUB_200_2011", tmp_path / "c", log=lambda m: None)
    assert tree(a) == tree(b) == tree(c)


def test_cub_metadata_that_disagrees_is_an_error_and_builds_nothing(tmp_path):
    make_cub(tmp_path, corrupt_label=True)
    with pytest.raises(FetchError, match=r"image 4 .* lies in folder 002.Laysan_Albatross but image_class_labels"):
        paper.build_cubs200(tmp_path / "CUB_200_2011", tmp_path / "data", log=lambda m: None)
    assert not (tmp_path / "data" / "cubs200").exists() and leftovers(tmp_path / "data") == []


def test_cub_archive_missing_an_image_is_an_error_and_builds_nothing(tmp_path):
    tgz = make_cub_tgz(tmp_path, drop="_0005_105.jpg")
    with pytest.raises(FetchError, match=r"lacks 1 of the images images.txt lists .*download it again"):
        paper.build_cubs200(tgz, tmp_path / "data", log=lambda m: None)
    assert not (tmp_path / "data" / "cubs200").exists() and leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere.tgz", "does not exist"),
    (lambda p: (p / "x.tgz").write_bytes(b"not a tar") and p / "x.tgz", "not a readable tar archive"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no images.txt: pass CUB_200_2011.tgz"),
])
def test_cub_bad_input_names_the_problem_and_the_fix(tmp_path, make, message):
    with pytest.raises(FetchError, match=message):
        paper.build_cubs200(make(tmp_path), tmp_path / "data", log=lambda m: None)


def test_a_built_folder_is_replaced_only_with_rebuild_and_one_placed_by_hand_never(tmp_path):
    tgz, dest = make_cub_tgz(tmp_path), tmp_path / "data"
    paper.build_cubs200(tgz, dest, log=lambda m: None)
    with pytest.raises(FetchError, match="already exists; nothing was changed.*--rebuild"):
        paper.build_cubs200(tgz, dest, log=lambda m: None)
    (dest / "cubs200" / "train" / CUB_CLASSES[0] / "extra.jpg").write_bytes(jpeg())
    paper.build_cubs200(tgz, dest, replace=True, log=lambda m: None)
    assert not (dest / "cubs200" / "train" / CUB_CLASSES[0] / "extra.jpg").exists() and leftovers(dest) == []
    (dest / "cubs200" / paper.BUILD_MARKER).unlink()  # now it looks placed by hand
    with pytest.raises(FetchError, match="not built by `kx_utils data build`.*never overwritten"):
        paper.build_cubs200(tgz, dest, replace=True, log=lambda m: None)


def test_a_build_that_fails_late_leaves_no_folder_and_a_killed_one_is_cleaned_up(tmp_path, monkeypatch):
    tgz, dest = make_cub_tgz(tmp_path), tmp_path / "data"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the marker")

    monkeypatch.setattr(paper, "write_marker", crash)
    with pytest.raises(KeyboardInterrupt):
        paper.build_cubs200(tgz, dest, log=lambda m: None)
    assert not (dest / "cubs200").exists() and leftovers(dest) == []
    monkeypatch.undo()
    (dest / f"{BUILDING_PREFIX}cubs200-abc123" / "train").mkdir(parents=True)  # what a SIGKILL leaves
    text, ok = paper_status.status(dest, standins=False)
    assert not ok and f"{BUILDING_PREFIX}cubs200-abc123 is a build that did not finish" in text
    lines = []
    paper.build_cubs200(tgz, dest, log=lines.append)
    assert leftovers(dest) == [] and any("did not finish" in line for line in lines)


# ---------------------------------------------------------------- the ImageNet subset

WNIDS = {"n01440764": 120, "n01443537": 104, "n02123045": 131}


def make_ilsvrc(root: Path, counts=WNIDS) -> Path:
    for wnid, n in counts.items():
        (root / wnid).mkdir(parents=True)
        for i in range(n):
            (root / wnid / f"{wnid}_{i}.JPEG").write_bytes(f"{wnid}-{i}".encode())
    (root / "LOC_synset_mapping.txt").write_text("not a class folder\n")
    return root


def test_imagenet_subset_takes_90_train_and_10_test_per_class_from_that_class(tmp_path):
    source = make_ilsvrc(tmp_path / "train")
    lines = []
    built = paper.build_imagenet_subset(source, tmp_path / "data", seed=0, log=lines.append)
    files = tree(built)
    for wnid in WNIDS:
        train = {k for k in files if k.startswith(f"train/{wnid}/")}
        test = {k for k in files if k.startswith(f"test/{wnid}/")}
        assert len(train) == 90 and len(test) == 10
        assert not {k.split("/")[-1] for k in train} & {k.split("/")[-1] for k in test}
        for rel in train | test:  # each file is its source's copy, from its own class
            assert files[rel] == (source / wnid / rel.split("/")[-1]).read_bytes()
    assert any("3 ImageNet classes, not ILSVRC-2012's 1,000" in line for line in lines)
    assert os.stat(built / "train" / "n01440764" / next(iter(os.listdir(built / "train" / "n01440764")))).st_nlink == 1


def test_imagenet_subset_is_the_same_for_a_seed_another_for_another_and_per_class(tmp_path):
    source = make_ilsvrc(tmp_path / "train")
    a = tree(paper.build_imagenet_subset(source, tmp_path / "a", seed=0, log=lambda m: None))
    b = tree(paper.build_imagenet_subset(source, tmp_path / "b", seed=0, log=lambda m: None))
    c = tree(paper.build_imagenet_subset(source, tmp_path / "c", seed=1, log=lambda m: None))
    assert a == b and set(a) != set(c)
    # a class's draw does not depend on which other classes there are
    alone = make_ilsvrc(tmp_path / "alone", {"n01443537": 104})
    d = tree(paper.build_imagenet_subset(alone, tmp_path / "d", seed=0, log=lambda m: None))
    assert {k for k in d if "n01443537" in k} == {k for k in a if "n01443537" in k and k != "manifest.csv"}


def test_imagenet_subset_hard_links_when_asked(tmp_path):
    source = make_ilsvrc(tmp_path / "train")
    built = paper.build_imagenet_subset(source, tmp_path / "data", files="hardlink", log=lambda m: None)
    for path in (built / "test" / "n02123045").iterdir():
        assert os.path.samefile(path, source / "n02123045" / path.name)


def test_imagenet_subset_bad_input_is_an_error_naming_it(tmp_path):
    short = make_ilsvrc(tmp_path / "short", {"n01440764": 120, "n01443537": 57})
    with pytest.raises(FetchError, match=r"n01443537 \(57\).*at least 732"):
        paper.build_imagenet_subset(short, tmp_path / "data", log=lambda m: None)
    assert not (tmp_path / "data" / "imagenet_subset").exists()
    tars = tmp_path / "tars"
    tars.mkdir()
    (tars / "n01440764.tar").write_bytes(b"")
    with pytest.raises(FetchError, match="per-class archives.*extract each"):
        paper.build_imagenet_subset(tars, tmp_path / "data", log=lambda m: None)
    with pytest.raises(FetchError, match="has no ImageNet class folders .*pass the ILSVRC-2012 training folder"):
        paper.build_imagenet_subset(tmp_path, tmp_path / "data", log=lambda m: None)  # holds short/, tars/, ...
    (tmp_path / "x" / "train").mkdir(parents=True)
    with pytest.raises(FetchError, match=r"did you mean .*x/train"):
        paper.build_imagenet_subset(tmp_path / "x", tmp_path / "data", log=lambda m: None)


# ---------------------------------------------------------------- Open Images

OI_COLUMNS = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
              "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
OI_BAD = {"id03": "missing", "id05": "not an image", "id08": "wrong md5", "id10": "missing"}


@pytest.fixture
def image_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def make_image_list(path: Path, served: Path, base_url: str, n: int = 14, reverse: bool = False) -> Path:
    rows = []
    for i in range(n):
        image_id = f"id{i:02d}"
        data = jpeg((80, 60), seed=i)
        kind = OI_BAD.get(image_id)
        if kind != "missing":
            (served / f"{image_id}.jpg").write_bytes(b"<html>gone</html>" if kind == "not an image" else data)
        md5 = base64.b64encode(hashlib.md5(b"other" if kind == "wrong md5" else data).digest()).decode()
        rows.append({"ImageID": image_id, "Subset": "test", "OriginalURL": f"{base_url}/{image_id}.jpg",
                     "OriginalMD5": md5, "Rotation": "0"})
    rows.append({"ImageID": "train01", "Subset": "train", "OriginalURL": f"{base_url}/id00.jpg"})  # filtered out
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, OI_COLUMNS)
        writer.writeheader()
        writer.writerows(reversed(rows) if reverse else rows)
    return path


def first_good(list_path: Path, seed: int, count: int) -> tuple[list[str], list[str]]:
    order = [c.image_id for c in openimages.sampling_order(openimages.read_image_list(list_path), seed)]
    kept, failed = [], []
    for image_id in order:
        if len(kept) == count:
            break
        (failed if image_id in OI_BAD else kept).append(image_id)
    return kept, failed


def test_openimages_keeps_the_first_images_of_the_seeded_order_that_download(tmp_path, image_server):
    served, url = image_server
    listing = make_image_list(tmp_path / "list.csv", served, url)
    lines = []
    built = openimages.build_openimages(listing, tmp_path / "data", seed=0, count=8, size=32, workers=3,
                                        log=lines.append)
    kept, failed = first_good(listing, 0, 8)
    assert failed, "the seed should put a failing image among the first ones (the test checks the replacement)"
    files = sorted(p.stem for p in (built / "test" / "all").iterdir())
    assert files == sorted(kept)
    with open(built / "failed.csv", newline="") as f:
        reasons = {r["ImageID"]: r["reason"] for r in csv.DictReader(f)}
    assert sorted(reasons) == sorted(failed)
    for image_id, reason in reasons.items():
        want = {"missing": "HTTP 404", "not an image": "not a readable image", "wrong md5": "MD5 differs"}
        assert reason.startswith(want[OI_BAD[image_id]])
    assert paper.read_marker(built)["failed_downloads"] == len(failed)
    assert any(f"{len(failed)} downloads failed and were replaced" in line for line in lines)
    with Image.open(next((built / "test" / "all").iterdir())) as im:
        assert min(im.size) == 32 and im.size == (43, 32)  # shorter side to --size, aspect kept
    assert not (tmp_path / "data" / ".kx-downloads" / "openimages-32").exists()  # downloads deleted once installed
    assert kd.class_folders("openimages", "test", standins=False, root=tmp_path / "data") == ["all"]


def test_openimages_sample_depends_on_the_seed_only_not_the_lists_order(tmp_path, image_server):
    served, url = image_server
    a_list = make_image_list(tmp_path / "a.csv", served, url)
    b_list = make_image_list(tmp_path / "b.csv", served, url, reverse=True)
    def pick(listing, dest, seed):
        built = openimages.build_openimages(listing, tmp_path / dest, seed=seed, count=6, size=32, workers=4,
                                            log=lambda m: None)
        return sorted(p.name for p in (built / "test" / "all").iterdir())

    assert pick(a_list, "a", 0) == pick(b_list, "b", 0) != pick(a_list, "c", 5)


def test_openimages_with_too_few_downloads_installs_nothing_and_keeps_the_downloads(tmp_path, image_server):
    served, url = image_server
    listing = make_image_list(tmp_path / "list.csv", served, url)
    with pytest.raises(FetchError, match=r"only 10 of the 11 images could be downloaded.*4 failed.*rerun"):
        openimages.build_openimages(listing, tmp_path / "data", count=11, size=32, log=lambda m: None)
    assert not (tmp_path / "data" / "openimages").exists() and leftovers(tmp_path / "data") == []
    assert len(list((tmp_path / "data" / ".kx-downloads" / "openimages-32").glob("*.jpg"))) == 10


def test_openimages_reads_file_urls_and_names_a_list_without_the_columns(tmp_path):
    (tmp_path / "img").mkdir()
    rows = ["ImageID,OriginalURL"]
    for i in range(3):
        (tmp_path / "img" / f"f{i}.jpg").write_bytes(jpeg(seed=i))
        rows.append(f"f{i},{(tmp_path / 'img' / f'f{i}.jpg').as_uri()}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    built = openimages.build_openimages(tmp_path / "list.csv", tmp_path / "data", count=3, size=0, log=lambda m: None)
    assert sorted(p.name for p in (built / "test" / "all").iterdir()) == ["f0.jpg", "f1.jpg", "f2.jpg"]
    (tmp_path / "bad.csv").write_text("id,url\nx,y\n")
    with pytest.raises(FetchError, match="no ImageID column"):
        openimages.build_openimages(tmp_path / "bad.csv", tmp_path / "d2", count=1, log=lambda m: None)
    with pytest.raises(FetchError, match="no Thumbnail300KURL column.*--url-column"):
        openimages.build_openimages(tmp_path / "list.csv", tmp_path / "d2", count=1, url_column="Thumbnail300KURL",
                                    log=lambda m: None)
    with pytest.raises(FetchError, match="must name the image as {ImageID}"):
        openimages.build_openimages(tmp_path / "list.csv", tmp_path / "d2", count=1, url_template="http://x/{id}.jpg",
                                    log=lambda m: None)
    templated = openimages.read_image_list(tmp_path / "list.csv", url_template="https://mirror.test/t/{ImageID}.jpg")
    assert [c.url for c in templated][:1] == ["https://mirror.test/t/f0.jpg"] and templated[0].md5 is None
    with pytest.raises(FetchError, match="lists 3 images, fewer than the 20,000"):
        openimages.build_openimages(tmp_path / "list.csv", tmp_path / "d2", log=lambda m: None)


# ---------------------------------------------------------------- Diabetic5 (EyeNet)


def fundus(width=320, height=200, centre=(140, 100), radius=80, caption=False, color=(200, 110, 60)) -> Image.Image:
    """A bright disc on black, as a fundus photograph; ``caption``: a white label in a corner."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    cx, cy = centre
    draw.ellipse((cx - radius, cy - radius, cx + radius - 1, cy + radius - 1), fill=color)
    draw.ellipse((cx - 10, cy - 30, cx + 10, cy - 10), fill=(255, 240, 200))  # an optic disc, for orientation
    if caption:
        draw.rectangle((width - 40, height - 12, width - 4, height - 4), fill=(255, 255, 255))
    return image


def test_fundus_box_is_the_disc_and_ignores_a_caption():
    assert diabetic.fundus_box(np.asarray(fundus().convert("L"))) == (60, 20, 220, 180)
    assert diabetic.fundus_box(np.asarray(fundus(caption=True).convert("L"))) == (60, 20, 220, 180)
    assert diabetic.fundus_box(np.zeros((50, 60), np.uint8) + 8) is None  # the black border only: blank
    # a disc cut at the top and bottom, as most Kaggle photographs: the square keeps its whole width
    clipped = diabetic.fundus_box(np.asarray(fundus(radius=120, centre=(160, 100)).convert("L")))
    assert clipped == (40, 0, 280, 200)
    assert diabetic.square_around(clipped) == (40, -20, 280, 220)
    assert diabetic.centre_square(3888, 2592, diabetic.EYENET_CROP) == (1044, 396, 2844, 2196)
    assert diabetic.centre_square(1000, 700, diabetic.EYENET_CROP) == (150, 0, 850, 700)  # no larger than the image


def test_preprocess_crops_the_black_border_to_a_square_and_resizes(tmp_path):
    path = tmp_path / "1_left.jpeg"
    fundus(radius=120, centre=(160, 100)).save(path, quality=95)
    out = np.asarray(diabetic.preprocess(path, "fundus", 64))
    assert out.shape == (64, 64, 3)
    assert out[32, 1].mean() > 60 and out[32, 62].mean() > 60  # the disc reaches the left and right edges
    assert out[:4].mean() < 10 and out[-4:].mean() < 10  # padded black above and below the cut disc
    assert out[0, 0].mean() < 10 and out[32, 32].mean() > 60
    Image.new("RGB", (300, 200)).save(tmp_path / "blank.jpeg")
    assert diabetic.preprocess(tmp_path / "blank.jpeg", "fundus", 64) is None
    wide = np.asarray(diabetic.preprocess(path, "eyenet", 64))  # central min(1800, 200) square: disc all over
    assert wide.shape == (64, 64, 3) and wide[32, 1].mean() > 60 and wide[1, 32].mean() > 60


def test_augmentation_is_eyenets_per_grade():
    image = fundus().crop((0, 0, 200, 200))
    copies = diabetic.augmented(image, 0)
    assert list(copies) == ["", "mir"]
    copies = diabetic.augmented(image, 3)
    assert list(copies) == ["", "90", "120", "180", "270", "mir"]
    arr = np.asarray(image)
    assert np.array_equal(np.asarray(copies["90"]), np.rot90(arr))  # counter-clockwise, as skimage's rotate
    assert np.array_equal(np.asarray(copies["270"]), np.rot90(arr, 3))
    assert np.array_equal(np.asarray(copies["mir"]), arr[:, ::-1])
    assert np.asarray(copies["120"])[0, 0].max() == 0  # uncovered corners are black


KAGGLE = {"10_left": 0, "10_right": 0, "13_left": 0, "13_right": 1, "15_left": 2, "15_right": 2,
          "16_left": 4, "16_right": 3, "17_left": 0, "17_right": 0, "19_left": 1, "19_right": 0, "20_left": 0}
BLANK = "20_left"


def make_kaggle(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in KAGGLE:
        if name == BLANK:
            Image.new("RGB", (240, 160)).save(root / "train" / f"{name}.jpeg")
        else:
            cx, cy = int(rng.integers(100, 140)), int(rng.integers(70, 90))
            fundus(240, 160, (cx, cy), int(rng.integers(60, 75))).save(root / "train" / f"{name}.jpeg", quality=90)
    (root / "trainLabels.csv").write_text("image,level\n" + "".join(f"{n},{g}\n" for n, g in KAGGLE.items()))
    return root


def built_files(folder: Path) -> dict[str, str]:
    """file name -> "<split>/<grade folder>"."""
    return {p.name: f"{p.parent.parent.name}/{p.parent.name}" for p in folder.glob("*/*/*.jpeg")}


def test_diabetic5_augments_by_grade_drops_blanks_and_splits_80_20(tmp_path):
    lines = []
    built = diabetic.build_diabetic5(make_kaggle(tmp_path / "kaggle"), tmp_path / "data", size=32, workers=1,
                                     log=lines.append)
    files = built_files(built)
    kept = {n: g for n, g in KAGGLE.items() if n != BLANK}
    expected = {f"{n}{'_' + s if s else ''}.jpeg": g for n, g in kept.items() for s in diabetic.variants_of(g)}
    assert sorted(files) == sorted(expected)
    assert len(files) == 2 * sum(g == 0 for g in kept.values()) + 6 * sum(g > 0 for g in kept.values())
    for name, where in files.items():  # each copy in its source's grade folder
        assert where.split("/")[1] == diabetic.GRADE_FOLDERS[expected[name]]
    test = [n for n, w in files.items() if w.startswith("test/")]
    assert len(test) == math.ceil(0.2 * len(files))  # as train_test_split(test_size=0.2): 21,278 of 106,386
    marker = paper.read_marker(built)
    assert marker["blank_dropped"] == [BLANK] and marker["sources"] == len(KAGGLE)
    assert any("1 blank image(s) dropped" in line for line in lines)
    with Image.open(built / files["13_right_90.jpeg"] / "13_right_90.jpeg") as im:
        assert im.size == (32, 32)


def test_diabetic5_split_is_seeded_and_the_patient_split_keeps_a_patient_together(tmp_path):
    kaggle = make_kaggle(tmp_path / "kaggle")
    build = lambda dest, **kw: built_files(diabetic.build_diabetic5(  # noqa: E731
        kaggle, tmp_path / dest, size=16, log=lambda m: None, **{"workers": 1, **kw}))
    a, b, c = build("a"), build("b"), build("c", seed=3)
    assert a == b and a != c
    by_patient = build("p", split="patient")
    patients = {}
    for name, where in by_patient.items():
        patients.setdefault(name.split("_")[0], set()).add(where.split("/")[0])
    assert all(len(splits) == 1 for splits in patients.values())
    assert sum(splits == {"test"} for splits in patients.values()) == math.ceil(0.2 * len(patients))
    # processes give the same folder as one worker
    assert build("w", workers=2) == a


def test_diabetic5_bad_input_names_the_problem_and_the_fix(tmp_path):
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (kaggle / "trainLabels.csv.zip").write_bytes(b"")
    with pytest.raises(FetchError, match="unzip trainLabels.csv.zip there"):
        diabetic.build_diabetic5(kaggle, tmp_path / "data", log=lambda m: None)
    (kaggle / "trainLabels.csv").write_text("image,level\n1_left,0\n2_left,1\n")
    (kaggle / "train.zip.001").write_bytes(b"")
    with pytest.raises(FetchError, match=r"7z x train.zip.001"):
        diabetic.build_diabetic5(kaggle, tmp_path / "data", log=lambda m: None)
    (kaggle / "train").mkdir()
    fundus().save(kaggle / "train" / "1_left.jpeg")
    with pytest.raises(FetchError, match=r"1 of the 2 images trainLabels.csv lists are not in .*incomplete"):
        diabetic.build_diabetic5(kaggle, tmp_path / "data", log=lambda m: None)
    (kaggle / "trainLabels.csv").write_text("image,level\n1_left,7\n")
    with pytest.raises(FetchError, match="line 2: level '7' of 1_left is not a grade 0-4"):
        diabetic.build_diabetic5(kaggle, tmp_path / "data", log=lambda m: None)
    assert not (tmp_path / "data" / "diabetic5").exists()


# ---------------------------------------------------------------- Caltech-256 without clutter


class FakeCaltech256:
    """torchvision's Caltech256 interface (categories, y, items), three tiny classes, clutter last."""

    categories = ["001.ak47", "002.american-flag", "257.clutter"]

    def __init__(self, root, download=False):
        self.y = [0] * 4 + [1] * 3 + [2] * 5

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return Image.new("RGB", (8, 6), (i * 10, 0, 0)), self.y[i]


def test_caltech256_export_drops_clutter(tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "Caltech256", FakeCaltech256)
    kdl._download_caltech256(tmp_path / "raw", tmp_path / "out", test_per_class=1)
    for split, per_class in (("train", {"001.ak47": 3, "002.american-flag": 2}),
                             ("test", {"001.ak47": 1, "002.american-flag": 1})):
        assert {c.name: len(list(c.iterdir())) for c in (tmp_path / "out" / split).iterdir()} == per_class


# ---------------------------------------------------------------- data status and the command line


def test_status_of_an_empty_data_folder_lists_every_dataset_missing_with_its_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KX_DATA", str(tmp_path))
    assert cli.main(["data", "status", "--profile", "paper"]) == 1
    out = capsys.readouterr().out
    for key, info in kc.DATASETS.items():
        for sub in info.splits.values():
            assert f"MISSING    {tmp_path / info.folder / sub} does not exist" in out
    assert f"data build cubs200 --from PATH/CUB_200_2011.tgz --dest {tmp_path}" in out
    assert f"data build imagenet_subset --from ILSVRC_TRAIN_DIR --seed 0 --dest {tmp_path}" in out
    assert f"data build openimages --list PATH/test-images-with-rotation.csv --seed 0 --dest {tmp_path}" in out
    assert f"data build diabetic5 --from KAGGLE_DIR --dest {tmp_path}" in out
    assert f"data fetch --profile paper --dest {tmp_path}" in out
    assert "bing/train/<class>/<image>" in out and "380 images of each of the 256" in out
    assert "0 of 8 datasets complete" in out


def test_status_compares_counts_with_the_papers_and_fails_only_on_missing_or_broken(tmp_path, monkeypatch, capsys):
    dest = tmp_path / "data"
    paper.build_cubs200(make_cub_tgz(tmp_path), dest, log=lambda m: None)
    small = {k: dataclasses.replace(i, paper_classes=3, paper_train=5, paper_test=4) if k == "cubs200" else i
             for k, i in kc.DATASETS.items()}
    monkeypatch.setattr(paper_status, "DATASETS", {"cubs200": small["cubs200"]})
    assert cli.main(["data", "status", "--profile", "paper", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "train  ok         3 classes (paper 3), 5 images (paper 5)" in out
    assert "test   ok         3 classes (paper 3), 4 images (paper 4)" in out and "built by `data build`" in out
    monkeypatch.setattr(paper_status, "DATASETS", {"cubs200": kc.DATASETS["cubs200"]})  # the paper's own counts
    assert cli.main(["data", "status", "--profile", "paper", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "train  DIFFERS    3 classes (paper 200), 5 images (paper 5,994)" in out
    victim = next((dest / "cubs200" / "test" / CUB_CLASSES[1]).iterdir())
    victim.unlink()  # a built folder that lost a file
    assert cli.main(["data", "status", "--profile", "paper", "--dest", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "test   DAMAGED" in out and "rebuild it with --rebuild" in out
    shutil.rmtree(dest / "cubs200" / "test" / CUB_CLASSES[1])
    (dest / "cubs200" / "test" / CUB_CLASSES[1]).mkdir()  # an empty class folder: the loaders refuse it
    assert cli.main(["data", "status", "--profile", "paper", "--dest", str(dest)]) == 1
    assert "test   UNREADABLE" in capsys.readouterr().out


def test_status_of_the_standins_lists_each_split_and_the_optional_one(tmp_path, capsys):
    (tmp_path / "ood_web" / "test" / "background_google").mkdir(parents=True)
    (tmp_path / "ood_web" / "test" / "background_google" / "a.jpg").write_bytes(jpeg())
    assert cli.main(["data", "status", "--profile", "mini", "--dest", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "openimages: OpenImages (ood) (stand-in ood_web/ for the paper's OpenImages)" in out
    assert "test   ok         1 classes, 1 images" in out
    assert f"MISSING    {tmp_path / 'tiny_imagenet' / 'val'} does not exist" in out
    assert "train  OPTIONAL   not present (optional)" in out  # Diabetic5's stand-in needs a Kaggle account
    assert f"to get it: python -m kx_utils data fetch --profile mini --dest {tmp_path}" in out


def test_data_build_on_the_command_line(tmp_path, capsys):
    dest = tmp_path / "data"
    assert cli.main(["data", "build", "cubs200", "--dest", str(dest)]) == 1
    assert "needs --from PATH: CUB_200_2011.tgz" in capsys.readouterr().err
    assert cli.main(["data", "build", "openimages", "--dest", str(dest)]) == 1
    assert "needs --list PATH" in capsys.readouterr().err
    assert cli.main(["data", "build", "bing", "--dest", str(dest)]) == 1
    assert "bing/train/<class>/<image>" in capsys.readouterr().err
    tgz = make_cub_tgz(tmp_path)
    assert cli.main(["data", "build", "cubs200", "--from", str(tgz), "--dest", str(dest)]) == 0
    assert f"{dest / 'cubs200'} is complete" in capsys.readouterr().out
    assert cli.main(["data", "build", "cubs200", "--from", str(tgz), "--dest", str(dest)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["data", "build", "cubs200", "--from", str(tgz), "--dest", str(dest), "--rebuild"]) == 0
    assert cli.main(["data", "build", "imagenet_subset", "--from", str(tmp_path / "none"), "--dest", str(dest)]) == 1
    assert "is not a folder: pass the ILSVRC-2012 training folder" in capsys.readouterr().err
    assert json.loads((dest / "cubs200" / paper.BUILD_MARKER).read_text())["folder"] == "cubs200"
