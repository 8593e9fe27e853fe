"""``data build openimages``: the paper's 20,000 Open Images (4.2.1: "20,000 uniformly sampled images"), a
complementary out-of-distribution test set, into ``openimages/test/all/``.

From the published image list the user downloads, e.g. Open Images V4's test list (the paper cites V4)
https://storage.googleapis.com/openimages/2018_04/test/test-images-with-rotation.csv (125,436 images;
columns ImageID, Subset, OriginalURL, ..., OriginalMD5, Thumbnail300KURL, Rotation).  A list of every
subset (``image_ids_and_rotation.csv``) is filtered to ``--subset`` (default ``test``) when it has a
Subset column.

Sampling: the list's rows are sorted by ImageID (the CSV's order does not matter) and shuffled with a
generator seeded by ``--seed``; the images are taken in that order until ``--count`` downloads have
succeeded.  A download that fails (HTTP error, timeout, not an image, Flickr's "photo unavailable"
stand-in, an MD5 that differs from the list's OriginalMD5) is skipped and so replaced by the next image
of the order: the result is the first ``count`` images of the order that download, whatever the
timing of the parallel downloads.  How many failed is printed, and each is listed with its reason in
``openimages/failed.csv`` (``manifest.csv``: the images kept).

Where this departs from the paper, which says no more than the sentence above: the paper's sample is not
published, so this is a sample like theirs; images whose URL is dead today are replaced, so the sample
is uniform over the images that can still be downloaded; each image is stored as a JPEG (quality 90) with
its shorter side resized to ``--size`` (default 256 px; the paper's models see 224 px), not as the
multi-megabyte original; the list's Rotation column is not applied (the images are stored as served).

Downloads go to ``<dest>/.kx-downloads/openimages-<size>/<ImageID>.jpg`` first (each written whole, then
renamed), so a rerun after an interruption downloads only what is not there yet; the folder is built
from them (see :func:`kx_utils.data.fetch.paper.building`) and the downloads are deleted once it is in place.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from .archives import FetchError
from .paper import building, seeded_rng, write_csv, write_marker

TEST_LIST_URL = "https://storage.googleapis.com/openimages/2018_04/test/test-images-with-rotation.csv"
DEFAULT_COUNT = 20_000  # 4.2.1 of the paper
DEFAULT_SIZE = 256
DEFAULT_WORKERS = 16  # downloads in flight: the time goes into waiting for servers, not the CPU
TIMEOUT_SECONDS = 30
ATTEMPTS = 2  # a second try for a connection that dropped; a 404 is not retried
UNAVAILABLE_MARKERS = ("photo_unavailable",)  # Flickr redirects a deleted photo to such an image


@dataclass(frozen=True)
class Candidate:
    image_id: str
    url: str
    md5: str | None  # base64 MD5 of the original file (the list's OriginalMD5), when the URL serves it


def read_image_list(path: str | os.PathLike, url_column: str = "OriginalURL", url_template: str | None = None,
                    subset: str | None = "test") -> list[Candidate]:
    """The list's images (of ``subset`` where it has a Subset column), each with the URL to download."""
    if url_template is not None:
        try:
            url_template.format(ImageID="x")
        except (KeyError, IndexError, ValueError):
            raise FetchError(f"--url-template {url_template!r} must name the image as {{ImageID}} and nothing else, "
                             "e.g. 'https://example.org/test/{ImageID}.jpg'") from None
    path = Path(path).expanduser()
    if not path.is_file():
        raise FetchError(f"image list {path} does not exist: download the Open Images test list, e.g. {TEST_LIST_URL}, "
                         "and pass its path with --list")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "ImageID" not in columns:
            raise FetchError(f"{path} has no ImageID column (its columns: {', '.join(columns) or 'none'}): pass an "
                             f"Open Images image list such as {TEST_LIST_URL}")
        if url_template is None and url_column not in columns:
            raise FetchError(f"{path} has no {url_column} column (its columns: {', '.join(columns)}): choose the URL "
                             "column with --url-column, or build URLs from the ImageID with --url-template")
        rows = list(reader)
    if subset and "Subset" in columns:
        rows = [r for r in rows if r["Subset"] == subset]
    check_md5 = url_template is None and url_column == "OriginalURL" and "OriginalMD5" in columns
    out, seen = [], set()
    for row in rows:
        image_id = row["ImageID"].strip()
        if not image_id or image_id in seen:
            continue
        seen.add(image_id)
        url = url_template.format(ImageID=image_id) if url_template else (row.get(url_column) or "").strip()
        out.append(Candidate(image_id, url, (row.get("OriginalMD5") or None) if check_md5 else None))
    if not out:
        of_subset = f" of subset {subset!r}" if subset and "Subset" in columns else ""
        raise FetchError(f"{path} lists no images{of_subset}")
    return out


def sampling_order(candidates: list[Candidate], seed: int) -> list[Candidate]:
    """Every candidate in a seeded random order that does not depend on the list's row order."""
    ordered = sorted(candidates, key=lambda c: c.image_id)
    seeded_rng(seed, "openimages").shuffle(ordered)
    return ordered


def _download(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "kx-data-build"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        final = response.geturl() or url
        if any(marker in final for marker in UNAVAILABLE_MARKERS):
            raise ValueError(f"the server says the photo is no longer available ({final})")
        return response.read()


def fetch_image(candidate: Candidate, cache: Path, size: int, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """Download one image into ``cache/<ImageID>.jpg``; None when it is there, else why it failed."""
    target = cache / f"{candidate.image_id}.jpg"
    if target.is_file():
        return None
    if not candidate.url:
        return "no URL in the list"
    data, reason = None, None
    for _ in range(ATTEMPTS):
        try:
            data = _download(candidate.url, timeout)
            break
        except urllib.error.HTTPError as exc:  # the server answered: trying again does not help
            return f"HTTP {exc.code} {exc.reason}"
        except ValueError as exc:
            return str(exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    if data is None:
        return reason
    if candidate.md5 and base64.b64encode(hashlib.md5(data).digest()).decode() != candidate.md5:
        return "MD5 differs from the list's OriginalMD5 (the file was replaced or is damaged)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
    except Exception as exc:  # Pillow raises many kinds for a file that is not an image
        return f"not a readable image ({type(exc).__name__})"
    if size and min(image.size) > size:  # shorter side to `size`, aspect ratio kept
        scale = size / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    part = target.with_name(target.name + ".part")
    image.save(part, "JPEG", quality=90)
    os.replace(part, target)
    return None


def build_openimages(list_path: str | os.PathLike, dest: str | os.PathLike, seed: int = 0, count: int = DEFAULT_COUNT,
                     url_column: str = "OriginalURL", url_template: str | None = None, subset: str | None = "test",
                     size: int = DEFAULT_SIZE, workers: int = DEFAULT_WORKERS, timeout: float = TIMEOUT_SECONDS,
                     replace: bool = False, log: Callable[[str], None] = print) -> Path:
    """``<dest>/openimages/test/all/``: the first ``count`` images of the seeded order that download."""
    if count < 1 or workers < 1 or size < 0:
        raise FetchError(f"--count and --workers must be positive and --size not negative, got {count}, {workers}, "
                         f"{size}")
    candidates = read_image_list(list_path, url_column, url_template, subset)
    if len(candidates) < count:
        raise FetchError(f"{list_path} lists {len(candidates):,} images, fewer than the {count:,} asked for")
    order = sampling_order(candidates, seed)
    dest = Path(dest).expanduser().resolve()
    cache = dest / ".kx-downloads" / f"openimages-{size or 'full'}"
    log(f"openimages: {count:,} of the {len(candidates):,} images of {list_path} (seed {seed}), {workers} downloads "
        f"at a time, into {cache} first")
    with building(dest, "openimages", replace, log) as tmp:
        cache.mkdir(parents=True, exist_ok=True)
        kept, failed = _download_in_order(order, count, cache, size, workers, timeout, log)
        if len(kept) < count:
            examples = "; ".join(f"{c.image_id}: {why}" for c, why in failed[:3])
            raise FetchError(f"only {len(kept):,} of the {count:,} images could be downloaded: all {len(order):,} "
                             f"of the list were tried and {len(failed):,} failed (e.g. {examples}). Nothing was "
                             f"installed; the downloads are kept in {cache}, and a rerun tries the failed ones again")
        (tmp / "test" / "all").mkdir(parents=True)
        for c in kept:
            shutil.copyfile(cache / f"{c.image_id}.jpg", tmp / "test" / "all" / f"{c.image_id}.jpg")
        write_csv(tmp / "manifest.csv", ["file", "ImageID", "url"],
                  [[f"test/all/{c.image_id}.jpg", c.image_id, c.url] for c in kept])
        write_csv(tmp / "failed.csv", ["ImageID", "url", "reason"], [[c.image_id, c.url, why] for c, why in failed])
        write_marker(tmp, "openimages", ("test",), str(list_path),
                     {"seed": seed, "count": count, "url": url_template or url_column, "subset": subset, "size": size},
                     {"failed_downloads": len(failed), "listed": len(candidates)})
    shutil.rmtree(cache, ignore_errors=True)
    log(f"openimages: {count:,} images in {dest / 'openimages' / 'test' / 'all'}; {len(failed):,} downloads failed and "
        "were replaced by the next images of the seeded order (openimages/failed.csv lists them)")
    return dest / "openimages"


def _download_in_order(order: list[Candidate], count: int, cache: Path, size: int, workers: int, timeout: float,
                       log: Callable[[str], None]) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """The first ``count`` candidates of ``order`` that download, and the failures met before them."""
    kept: list[Candidate] = []
    failed: list[tuple[Candidate, str]] = []
    start = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while len(kept) < count and start < len(order):
            # as many as are still needed (at least a pool's worth): a round is one more only where some failed
            window = order[start:start + max(count - len(kept), workers)]
            start += len(window)
            futures = [pool.submit(fetch_image, c, cache, size, timeout) for c in window]
            for candidate, future in zip(window, futures):  # in the order's order, whatever finished first
                if len(kept) == count:  # the rest of the window is not needed
                    for rest in futures:
                        rest.cancel()
                    break
                reason = future.result()
                if reason is None:
                    kept.append(candidate)
                    if len(kept) % 1000 == 0:
                        log(f"  {len(kept):,} of {count:,} downloaded ({len(failed):,} failed so far)")
                else:
                    failed.append((candidate, reason))
    return kept, failed
