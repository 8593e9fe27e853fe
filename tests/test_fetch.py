"""`python -m kx_utils data fetch`, without network: a tiny mirror of every archive, made in the test
(tests/fetch_mirror.py), served from a folder or by a local HTTP server that can cut a download short."""

from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kx_utils import __main__ as cli
from kx_utils.data import catalog as kc
from kx_utils.data import datasets as kd
from kx_utils.data import download as kdl
from kx_utils.data import fetch as kf
from kx_utils.data.fetch import archives, build, standins
from kx_utils.data.fetch.archives import Archive
from kx_utils.orchestration import pipeline as pl
from kx_utils.orchestration import plan as planning
from tests.fetch_mirror import SIZES, TABLES, expected_counts, write_mirror

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("mirror"))


def options(mirror_source, mirror: Path, **changes) -> kf.FetchOptions:
    return kf.FetchOptions(mirror=str(mirror_source), pins_file=str(mirror / "SHA256SUMS"),
                           subset_tables=str(mirror / "subsets"), **changes)


def fetch_quietly(dest: Path, opts: kf.FetchOptions, profile: str = "mini") -> kf.FetchOutcome:
    lines = []
    outcome = kf.fetch(profile, dest, opts, log=lines.append)
    outcome.log = lines
    return outcome


class MirrorServer:
    """Serves a folder over HTTP with Range requests; ``cut[name] = n`` closes the connection after n
    bytes of that file (once), as a dropped connection does."""

    def __init__(self, root: Path):
        self.root, self.cut, self.ranges = root, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    server.ranges.append((name, start))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))


# ---------------------------------------------------------------- what a fetch builds


def test_fetch_builds_every_standin_with_the_tables_classes_counts_and_sizes(mirror, tmp_path):
    dest = tmp_path / "data"
    outcome = fetch_quietly(dest, options(mirror, mirror))
    assert outcome.ok and sorted(outcome.built) == sorted(TABLES)
    for folder in TABLES:
        assert build.counts_on_disk(dest / folder, standins.RECIPES[folder].splits) == expected_counts(folder)
        for path in image_files(dest / folder):
            with Image.open(path) as im:
                assert im.size == (SIZES[folder], SIZES[folder]) and im.mode == "RGB", path
        assert (dest / folder / "classes.csv").read_text().splitlines()[1].startswith(f"0,{TABLES[folder][1][0].split(',')[0]},")
        assert kf.standin_states(dest, str(mirror / "subsets"))[folder].state == "fetched"
    # the optional Diabetic5 stand-in is not fetched: fetch says where to get it and where to put it
    assert len(outcome.by_hand) == 1 and "kaggle.com/c/diabetic-retinopathy-detection" in outcome.by_hand[0]
    assert "diabetic_retinopathy/{train,test}" in outcome.by_hand[0] and "data not present" in outcome.by_hand[0]


def test_images_are_the_sources_pixels_copied_or_converted_as_declared(mirror, tmp_path):
    dest = tmp_path / "data"
    fetch_quietly(dest, options(mirror, mirror))
    # CIFAR-10: data_batch_1's image 0 is an airplane (label 0); 32 px arrays are stored losslessly
    with tarfile.open(mirror / "cifar-10-python.tar.gz") as tar:
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    stored = sorted((dest / "cifar10").rglob("train_00000.png"))
    assert len(stored) == 1 and stored[0].parent.name == "airplane"
    assert np.array_equal(np.asarray(Image.open(stored[0])), batch[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    # Tiny-ImageNet: an RGB 64 px JPEG is copied byte for byte; a greyscale one (index 1) is converted
    converted = 0
    with zipfile.ZipFile(mirror / "tiny-imagenet-200.zip") as z:
        for path in image_files(dest / "tiny_imagenet" / "train"):
            member = f"tiny-imagenet-200/train/{path.parent.name}/images/{path.stem}.JPEG"
            if path.stem.endswith("_1"):
                assert Image.open(z.open(member)).mode == "L" and Image.open(path).mode == "RGB"
                converted += 1
            else:
                assert path.read_bytes() == z.read(member)
    assert converted == 2
    # GTSRB: 40x36 PPM frames squashed (not cropped) to 32 px, stored as PNG
    assert all(p.suffix == ".png" for p in image_files(dest / "gtsrb"))
    # Caltech-101: Faces_easy follows Faces, so a photograph lands in one split under both labels
    for split in ("train", "pool", "test"):
        faces = sorted(p.name for p in (dest / "caltech101" / split / "Faces").iterdir())
        assert faces == sorted(p.name for p in (dest / "caltech101" / split / "Faces_easy").iterdir())
    # CIFAR-10's train and pool are disjoint draws from the official training split
    train = {p.name for p in image_files(dest / "cifar10" / "train")}
    assert train.isdisjoint(p.name for p in image_files(dest / "cifar10" / "pool"))


def test_selection_is_seeded_and_does_not_depend_on_archive_order(mirror):
    recipe = standins.RECIPES["caltech101"]
    table = standins.read_subset_table("caltech101", recipe, mirror / "subsets")
    index = {("all", c): [f"101_ObjectCategories/{c}/image_{i:04d}.jpg" for i in range(1, 9)]
             for c in ("Faces", "Faces_easy", "accordion")}
    reversed_index = {k: list(reversed(v)) for k, v in reversed(list(index.items()))}
    chosen = standins.select(recipe, table, index)
    assert chosen == standins.select(recipe, table, reversed_index)
    assert [len(chosen[s]["Faces"]) for s in ("train", "pool", "test")] == [2, 1, 1]
    # not simply the first files: the order is a seeded shuffle (fixed: these are its first picks)
    assert chosen["train"]["accordion"] != ["101_ObjectCategories/accordion/image_0001.jpg"]
    assert chosen == standins.select(recipe, table, index)


def test_a_source_with_too_few_images_is_an_error_naming_the_class(mirror):
    recipe = standins.RECIPES["cifar10"]
    table = standins.read_subset_table("cifar10", recipe, mirror / "subsets")
    index = {("train", "airplane"): ["train/00000", "train/00001"], ("train", "cat"): ["train/00003"] * 3,
             ("test", "airplane"): ["test/00000"], ("test", "cat"): ["test/00003", "test/00007"]}
    with pytest.raises(archives.FetchError, match="class 'airplane' has 2 images in the source's 'train' split, "
                                                  "the stand-in needs 3"):
        standins.select(recipe, table, index)


def test_the_packaged_tables_describe_the_development_machines_standins():
    root = Path(os.environ.get("KX_DATA") or "/nonexistent")
    if not (root / "cifar10" / "classes.csv").is_file():
        pytest.skip("needs the development machine's stand-ins: set KX_DATA")
    states = kf.standin_states(root)
    assert {k: s.state for k, s in states.items()} == dict.fromkeys(standins.RECIPES, "provided"), \
        {k: s.problems for k, s in states.items()}
    cub = standins.read_subset_table("cub200_subset", standins.RECIPES["cub200_subset"])
    assert len(cub.classes) == 100 and cub.total("train") == 2903 and cub.total("test") == 2999


# ---------------------------------------------------------------- checksums and interrupted downloads


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing_behind(mirror, tmp_path, capsys):
    pins = tmp_path / "pins"
    pins.write_text((mirror / "SHA256SUMS").read_text().replace(
        hashlib.sha256((mirror / "cifar-10-python.tar.gz").read_bytes()).hexdigest(), "0" * 64))
    dest = tmp_path / "data"
    code = cli.main(["data", "fetch", "--profile", "mini", "--dest", str(dest), "--mirror", str(mirror),
                     "--pins", str(pins), "--subset-tables", str(mirror / "subsets")])
    err = capsys.readouterr().err
    assert code == 1
    assert "cifar-10-python.tar.gz from" in err and f"does not match its pin: sha256 {'0' * 64}" in err
    assert "it was deleted and nothing was built from it" in err
    assert not (dest / "cifar10").exists()
    assert not [p for p in (dest / kf.DOWNLOADS).iterdir() if p.name.startswith("cifar")]
    assert (dest / "gtsrb").is_dir()  # the other stand-ins do not depend on it


def test_an_interrupted_download_is_an_error_and_a_rerun_resumes_it(mirror, tmp_path):
    dest = tmp_path / "data"
    size = (mirror / "tiny-imagenet-200.zip").stat().st_size
    with MirrorServer(mirror) as server:
        server.cut["tiny-imagenet-200.zip"] = size // 3
        outcome = fetch_quietly(dest, options(server.url, mirror))
        assert not outcome.ok
        (problem,) = outcome.problems
        assert problem.startswith("tiny_imagenet: download of ") and f"stopped after {size // 3:,} of {size:,} bytes" in problem
        assert "rerun the same command to resume it" in problem
        assert not (dest / "tiny_imagenet").exists()
        part = dest / kf.DOWNLOADS / "tiny-imagenet-200.zip.part"
        assert part.stat().st_size == size // 3
        outcome = fetch_quietly(dest, options(server.url, mirror))
        assert outcome.ok and outcome.built == ["tiny_imagenet"]
        assert server.ranges == [("tiny-imagenet-200.zip", size // 3)]
    assert not part.exists() and (dest / kf.DOWNLOADS / "tiny-imagenet-200.zip").stat().st_size == size
    assert build.counts_on_disk(dest / "tiny_imagenet", ("train", "val")) == expected_counts("tiny_imagenet")


def test_a_part_file_that_does_not_belong_fails_its_checksum_and_a_rerun_completes(mirror, tmp_path):
    dest = tmp_path / "data"
    (dest / kf.DOWNLOADS).mkdir(parents=True)
    part = dest / kf.DOWNLOADS / "CUB_200_2011.tgz.part"
    part.write_bytes(b"left over from another download")
    with MirrorServer(mirror) as server:
        outcome = fetch_quietly(dest, options(server.url, mirror))
        assert len(outcome.problems) == 1 and "CUB_200_2011.tgz from" in outcome.problems[0]
        assert "does not match its pin" in outcome.problems[0] and not part.exists()
        assert not (dest / "cub200_subset").exists()
        assert fetch_quietly(dest, options(server.url, mirror)).built == ["cub200_subset"]


def test_an_unpinned_archive_is_refused_unless_trusted_and_then_checked(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "x.zip").write_bytes(b"first")
    unpinned = Archive("x.zip", "https://example.invalid/x.zip")
    target = tmp_path / "downloads" / "x.zip"
    with pytest.raises(archives.UnpinnedArchive, match="rerun with --trust-unpinned"):
        archives.download(unpinned, target, source, log=lambda m: None)
    assert not target.exists() and not target.with_name("x.zip.part").exists()
    archives.download(unpinned, target, source, trust_unpinned=True, log=lambda m: None)
    recorded = archives.read_trusted(target.parent)
    assert recorded == {"x.zip": hashlib.sha256(b"first").hexdigest()}
    target.unlink()
    (source / "x.zip").write_bytes(b"changed")  # the recorded digest now pins it
    with pytest.raises(archives.ChecksumMismatch, match="recorded by an earlier --trust-unpinned run"):
        archives.download(unpinned, target, source, log=lambda m: None)


def test_an_md5_pin_is_checked_and_the_sha256_recorded(tmp_path):
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "t.zip").write_bytes(b"tiny")
    good = Archive("t.zip", "https://example.invalid/t.zip", md5=hashlib.md5(b"tiny").hexdigest())
    archives.download(good, tmp_path / "dl" / "t.zip", source, log=lambda m: None)
    assert archives.read_trusted(tmp_path / "dl") == {"t.zip": hashlib.sha256(b"tiny").hexdigest()}
    bad = Archive("t.zip", "https://example.invalid/t.zip", md5="0" * 32)
    with pytest.raises(archives.ChecksumMismatch, match=f"md5 {'0' * 32}"):
        archives.download(bad, tmp_path / "dl2" / "t.zip", source, log=lambda m: None)


def test_a_malformed_pins_file_names_the_line(tmp_path):
    pins = tmp_path / "pins"
    pins.write_text(f"{'a' * 64}  ok.zip\nnot-a-digest  x.zip\n")
    with pytest.raises(archives.FetchError, match=r"line 2: 'not-a-digest  x.zip' is not"):
        archives.read_pins_file(pins)


# ---------------------------------------------------------------- half-built, damaged and foreign folders


def test_a_killed_build_leaves_no_folder_and_is_never_used(mirror, tmp_path, monkeypatch):
    dest = tmp_path / "data"
    fetch_quietly(dest, options(mirror, mirror))
    shutil.rmtree(dest / "gtsrb")
    calls = []

    def killed(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args)

    real = build.stored_image
    monkeypatch.setattr(build, "stored_image", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_quietly(dest, options(mirror, mirror))
    assert not (dest / "gtsrb").exists() and not list(dest.glob(".kx-building-*"))
    monkeypatch.setattr(build, "stored_image", real)
    # a SIGKILL cannot clean up: it leaves the hidden build folder, which no run reads
    leftover = dest / ".kx-building-gtsrb-x1" / "train" / "00_speed_limit_20"
    leftover.mkdir(parents=True)
    (leftover / "00000_00000.png").write_bytes(b"half")
    monkeypatch.setenv("KX_DATA", str(dest))
    plan = planning.plan(pl.get_profile("mini"))
    assert any(m.startswith("dataset GTSRB (gtsrb) split train: dataset folder") and "data fetch --profile mini" in m
               for m in plan.missing)
    with pytest.raises(kc.DatasetNotFoundError, match=str(dest / "gtsrb" / "train")):
        kd.split_folder("gtsrb", "train", standins=True)
    outcome = fetch_quietly(dest, options(mirror, mirror))
    assert outcome.built == ["gtsrb"] and any("a build of gtsrb that did not finish" in line for line in outcome.log)
    assert not list(dest.glob(".kx-building-*"))


def test_a_fetched_folder_that_lost_files_is_refused_until_rebuilt(mirror, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "data"
    fetch_quietly(dest, options(mirror, mirror))
    image_files(dest / "cifar10" / "test")[0].unlink()
    state = kf.standin_states(dest, str(mirror / "subsets"))["cifar10"]
    assert state.state == "damaged" and state.problems == ["test/airplane holds 0 images, expected 1"]
    monkeypatch.setenv("KX_DATA", str(dest))
    plan = planning.plan(pl.get_profile("mini"))
    assert not plan.ok and any(f"dataset folder {dest / 'cifar10'} is damaged" in m and "--rebuild" in m
                               for m in plan.missing)
    outcome = fetch_quietly(dest, options(mirror, mirror))
    assert not outcome.ok and "rerun with --rebuild" in outcome.problems[0]
    outcome = fetch_quietly(dest, options(mirror, mirror, rebuild=True))
    assert outcome.ok and sorted(outcome.built) == sorted(TABLES)
    assert kf.standin_states(dest, str(mirror / "subsets"))["cifar10"].state == "fetched"


def test_a_folder_placed_by_hand_is_never_overwritten(mirror, tmp_path):
    dest = tmp_path / "data"
    mine = dest / "cifar10" / "train" / "my_class"
    mine.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(mine / "mine.png")
    outcome = fetch_quietly(dest, options(mirror, mirror))
    assert outcome.ok and "cifar10" not in outcome.built
    assert any(line.startswith(f"WARNING {dest / 'cifar10'} was not built by") for line in outcome.log)
    assert [p.name for p in image_files(dest / "cifar10")] == ["mine.png"]
    assert kf.standin_states(dest, str(mirror / "subsets"))["cifar10"].state == "foreign"


def test_nothing_is_written_where_every_folder_is_in_place(mirror, tmp_path):
    dest = tmp_path / "data"
    fetch_quietly(dest, options(mirror, mirror))
    before = sorted((p.relative_to(dest), p.stat().st_mtime_ns) for p in dest.rglob("*"))
    outcome = fetch_quietly(dest, options("/nonexistent-mirror", mirror))  # no download is even attempted
    assert outcome.ok and outcome.built == [] and len(outcome.present) == len(TABLES)
    assert sorted((p.relative_to(dest), p.stat().st_mtime_ns) for p in dest.rglob("*")) == before


# ---------------------------------------------------------------- the paper profile


def test_paper_fetches_what_torchvision_can_and_lists_the_rest_by_hand(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    names = ["cifar-10-python.tar.gz", "GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip",
             "GTSRB_Final_Test_GT.zip", "256_ObjectCategories.tar", "resnet18-f37072fd.pth", "resnet34-b627a593.pth",
             "resnet101-63fe2227.pth", "resnet152-394f9c45.pth"]
    for name in names:
        (mirror / name).write_bytes(f"stand-in for {name}".encode())
    (mirror / "SHA256SUMS").write_text("".join(f"{hashlib.sha256((mirror / n).read_bytes()).hexdigest()}  {n}\n"
                                               for n in names))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    exported = {}

    def exporter(key):
        def export(raw, out):
            exported[key] = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file())
            (out / "train" / "c").mkdir(parents=True)
        return export

    for key in kf.PAPER_ARCHIVES:
        monkeypatch.setitem(kdl.DOWNLOADERS, key, exporter(key))
    dest = tmp_path / "data"
    outcome = kf.fetch("paper", dest, kf.FetchOptions(mirror=str(mirror), pins_file=str(mirror / "SHA256SUMS")),
                       log=lambda m: None)
    assert outcome.ok
    assert exported == {"cifar10": ["cifar-10-python.tar.gz"],
                        "gtsrb": sorted(["gtsrb/GTSRB-Training_fixed.zip", "gtsrb/GTSRB_Final_Test_Images.zip",
                                         "gtsrb/GTSRB_Final_Test_GT.zip"]),
                        "caltech256": ["caltech256/256_ObjectCategories.tar"]}
    assert sorted(p.name for p in (tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == sorted(names[5:])
    by_hand = "\n".join(outcome.by_hand)
    for folder, link in (("imagenet_subset", "image-net.org"), ("cubs200", "cub_200_2011"),
                         ("diabetic5", "kaggle.com"), ("openimages", "openimages"), ("bing", "dartmouth.edu")):
        assert f"({folder}): " in by_hand and link in by_hand.lower() and f"{dest / folder}/" in by_hand
    assert len(outcome.by_hand) == 5


# ---------------------------------------------------------------- `make mini`'s fetch step, then the plan


def test_make_fetch_data_from_an_empty_data_folder_gives_the_mini_plan_everything_but_diabetic5(mirror, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path / "empty"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    with MirrorServer(mirror) as server:  # the local mirror stands in for the network
        args = f"--mirror {server.url} --pins {mirror / 'SHA256SUMS'} --subset-tables {mirror / 'subsets'}"
        done = subprocess.run(["make", "--no-print-directory", "fetch-data", f"VENV={sys.prefix}", f"KX_DATA={dest}",
                               f"KX_FETCH_ARGS={args}"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == sorted(TABLES)
    plan = subprocess.run([sys.executable, "-m", "kx_utils", "plan", "--profile", "mini"], cwd=REPO,
                          env={**env, "KX_DATA": str(dest)}, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Missing: nothing; the run can start." in plan.stdout
    optional = [line for line in plan.stdout.splitlines() if line.startswith("  OPTIONAL  ")]
    assert len(optional) == 1 and optional[0].startswith("  OPTIONAL  dataset Diabetic5 (diabetic_retinopathy)")


def test_data_status_reports_each_folder_and_fails_while_one_is_missing(mirror, tmp_path, capsys):
    dest = tmp_path / "data"
    assert cli.main(["data", "status", "--dest", str(dest), "--subset-tables", str(mirror / "subsets")]) == 1
    out = capsys.readouterr().out
    assert f"MISSING   {dest / 'cifar10'}" in out and f"OPTIONAL  {dest / 'diabetic_retinopathy'}" in out
    fetch_quietly(dest, options(mirror, mirror))
    assert cli.main(["data", "status", "--dest", str(dest), "--subset-tables", str(mirror / "subsets")]) == 0
    out = capsys.readouterr().out
    assert f"FETCHED   {dest / 'gtsrb'}: fetched and complete" in out and "MISSING" not in out
