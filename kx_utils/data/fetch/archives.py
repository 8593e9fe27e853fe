"""Downloading one archive: from its official URL or a mirror, into a ``.part`` file, checked
against a pinned digest, then renamed into place.

An archive is used only once its digest matches its pin.  Where the pin comes from, in order:

1. ``--pins FILE``: digests the user gives (``sha256sum`` format), e.g. for a mirror that serves
   other archives than the official ones (the tests' tiny mirror);
2. the SHA-256 pinned in :mod:`kx_utils.data.fetch.sources` (published by torchvision's dataset code or
   another public checksum list, named beside each pin);
3. a SHA-256 recorded by an earlier ``--trust-unpinned`` run (``trusted-sha256.txt`` beside the
   downloads);
4. a published MD5 (Tiny-ImageNet: no SHA-256 is published) or the SHA-256 prefix that torch hub
   checks in a weights file name: the archive is checked against it, and the SHA-256 it has is
   recorded so that later runs check the whole digest;
5. nothing: the archive is refused unless ``--trust-unpinned`` is given, which records the
   SHA-256 it sees (trust on first use) and says so.

A download that stops half-way leaves its ``.part`` file; the next run resumes it (HTTP Range)
where the server allows, else starts again.  A digest that does not match deletes the ``.part``
file: nothing unverified is ever renamed to the archive's name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...runtime.artifacts import atomic_write_text

CHUNK = 1 << 20
TRUSTED_FILE = "trusted-sha256.txt"
TIMEOUT_SECONDS = 60
PROGRESS_BYTES = 100 * 2**20


class FetchError(RuntimeError):
    """A download or build that cannot go on; the message names the file and what to do."""


class ChecksumMismatch(FetchError):
    pass


class DownloadInterrupted(FetchError):
    pass


class UnpinnedArchive(FetchError):
    pass


@dataclass(frozen=True)
class Archive:
    """One file to download: its name (the key of pins files and of a mirror), URL and pins."""

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    sha256_prefix: str | None = None  # torch hub's check of a weights file
    pin_source: str = ""  # who publishes the pinned digest
    size: str = ""  # for the user: roughly how much is downloaded


def read_pins_file(path: str | os.PathLike) -> dict[str, str]:
    """``sha256  name`` lines (``sha256sum`` output) -> {name: sha256}."""
    path = Path(path)
    pins = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise FetchError(f"pins file {path} does not exist; write it as `sha256sum` does: "
                         "'<sha256>  <archive name>' per line") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0].lower()):
            raise FetchError(f"pins file {path}, line {number}: {line!r} is not '<sha256>  <archive name>' "
                             "(64 hex digits, then the file name)")
        pins[parts[1].lstrip("*")] = parts[0].lower()
    return pins


def read_trusted(downloads: Path) -> dict[str, str]:
    path = downloads / TRUSTED_FILE
    return read_pins_file(path) if path.is_file() else {}


def _record_trusted(downloads: Path, name: str, sha256: str) -> None:
    trusted = read_trusted(downloads)
    trusted[name] = sha256
    atomic_write_text(downloads / TRUSTED_FILE, "".join(f"{d}  {n}\n" for n, d in sorted(trusted.items())))


@dataclass(frozen=True)
class Pin:
    """What a download is checked against."""

    kind: str  # "sha256", "md5", "sha256-prefix" or "none"
    value: str
    source: str

    def matches(self, digests: dict[str, str]) -> bool:
        if self.kind == "sha256-prefix":
            return digests["sha256"].startswith(self.value)
        return digests[self.kind] == self.value

    @property
    def whole_sha256(self) -> bool:
        return self.kind == "sha256"


def pin_for(archive: Archive, overrides: dict[str, str], trusted: dict[str, str]) -> Pin:
    if archive.name in overrides:
        return Pin("sha256", overrides[archive.name], "the --pins file")
    if archive.sha256:
        return Pin("sha256", archive.sha256, archive.pin_source or "kx_utils.data.fetch.sources")
    if archive.name in trusted:
        return Pin("sha256", trusted[archive.name], f"recorded by an earlier --trust-unpinned run ({TRUSTED_FILE})")
    if archive.md5:
        return Pin("md5", archive.md5, archive.pin_source or "a published MD5")
    if archive.sha256_prefix:
        return Pin("sha256-prefix", archive.sha256_prefix, "the file name's SHA-256 prefix (torch hub's check)")
    return Pin("none", "", "")


def file_digests(path: Path) -> dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def source_of(archive: Archive, mirror: str | os.PathLike | None) -> str:
    """Where ``archive`` comes from: its URL, or ``<mirror>/<name>`` (a folder or a base URL)."""
    if mirror is None:
        return archive.url
    mirror = str(mirror)
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(archive.name)
    return str(Path(mirror).expanduser().resolve() / archive.name)


def _copy_from_folder(source: str, part: Path) -> None:
    if not Path(source).is_file():
        raise FetchError(f"the mirror has no {Path(source).name}: {source} does not exist")
    shutil.copyfile(source, part)


def _stream(url: str, part: Path, log: Callable[[str], None]) -> None:
    """Append ``url`` to ``part``, resuming from its length where the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kx-data-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    expected = None
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            resumed = have and response.status == 206
            if have and not resumed:
                log(f"  the server does not resume downloads: starting {part.name} again")
                have = 0
            length = response.headers.get("Content-Length")
            expected = have + int(length) if length is not None else None
            next_report = PROGRESS_BYTES
            with open(part, "ab" if resumed else "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    received += len(block)
                    if received >= next_report:  # a large download should not look stuck
                        of = f" of {expected / 2**20:,.0f}" if expected else ""
                        log(f"  {part.name}: {(have + received) / 2**20:,.0f}{of} MiB")
                        next_report += PROGRESS_BYTES
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part already holds the whole file
            return
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
            urllib.error.URLError) as exc:
        done = have + received
        of = f" of {expected:,}" if expected else ""
        raise DownloadInterrupted(
            f"download of {url} was interrupted after {done:,}{of} bytes ({type(exc).__name__}: {exc}); "
            f"the part is kept in {part}: rerun the same command to resume it") from None
    if expected is not None and have + received < expected:
        raise DownloadInterrupted(
            f"download of {url} stopped after {have + received:,} of {expected:,} bytes (the server closed "
            f"the connection); the part is kept in {part}: rerun the same command to resume it")


def download(archive: Archive, target: Path, mirror: str | os.PathLike | None = None,
             pins: dict[str, str] | None = None, trust_unpinned: bool = False,
             log: Callable[[str], None] = print) -> Path:
    """``archive`` at ``target``, downloaded unless a verified copy is there; its digest checked."""
    target = Path(target)
    downloads = target.parent
    downloads.mkdir(parents=True, exist_ok=True)
    pin = pin_for(archive, pins or {}, read_trusted(downloads))
    if pin.kind == "none" and not trust_unpinned:
        raise UnpinnedArchive(
            f"{archive.name} has no pinned checksum, so a download of it cannot be verified; rerun with "
            "--trust-unpinned to accept what the server sends and record its SHA-256 (shown) for every "
            f"later run, or give its SHA-256 with --pins FILE")
    if target.is_file():
        digests = file_digests(target)
        if pin.kind == "none" or pin.matches(digests):
            return target
        raise ChecksumMismatch(
            f"{target} does not match its pin ({pin.kind} {pin.value} from {pin.source}; the file has "
            f"{digests[pin.kind if pin.kind != 'sha256-prefix' else 'sha256']}): delete it and rerun")
    source = source_of(archive, mirror)
    part = target.with_name(target.name + ".part")
    size = f" ({archive.size})" if archive.size and mirror is None else ""
    log(f"  downloading {archive.name}{size} from {source}")
    if "://" in source:
        _stream(source, part, log)
    else:
        _copy_from_folder(source, part)
    digests = file_digests(part)
    if pin.kind == "none":
        _record_trusted(downloads, archive.name, digests["sha256"])
        log(f"  WARNING {archive.name} is not pinned: trusted on first use (--trust-unpinned); its SHA-256 "
            f"{digests['sha256']} is recorded in {downloads / TRUSTED_FILE} and checked from now on")
    elif not pin.matches(digests):
        part.unlink()
        seen = digests["sha256"] if pin.kind != "md5" else digests["md5"]
        raise ChecksumMismatch(
            f"{archive.name} from {source} does not match its pin: {pin.kind} {pin.value} ({pin.source}), "
            f"the download has {seen}; it was deleted and nothing was built from it. A corrupt or changed "
            "download: rerun to try again, or check the source")
    elif not pin.whole_sha256:
        _record_trusted(downloads, archive.name, digests["sha256"])
        log(f"  {archive.name} matches its {pin.kind} ({pin.source}); its SHA-256 {digests['sha256']} is "
            f"recorded in {downloads / TRUSTED_FILE}")
    os.replace(part, target)
    return target
