"""Checksummed torch files: what a cached artifact looks like on disk.

A file is a fixed-size header, then the ``torch.save`` payload::

    KXCHECKED1\\n{"identity": "victim/3f2a....pt", "bytes": 81234, "sha256": "..."}<spaces>\\n

The header names the artifact the file holds (``<folder>/<file name>``, the kind
and key for a cache artifact), the payload's length and its sha256.  A reader
hashes the payload *before* anything is unpickled, so a truncated file, flipped
bytes, an empty file or another artifact's file copied into place is rejected by
its bytes, never by what the unpickler makes of them.  The payload is then read
with ``weights_only=True``: tensors, numbers, strings, lists and dicts only.

This module only reads and writes bytes; :mod:`kx_utils.runtime.artifacts` writes the
files atomically and decides what happens to a file that fails verification.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import torch

MAGIC = b"KXCHECKED1\n"
HEADER_BYTES = 256
_CHUNK = 1 << 20


class UnverifiedFile(Exception):
    """A file that cannot be trusted; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        self.stat: os.stat_result | None = None  # of the file that failed, to set aside that one only
        super().__init__(f"{path}: {reason}")


class LegacyFile(UnverifiedFile):
    """A torch file written before artifacts carried a checksum (no header at all)."""


class CorruptFile(UnverifiedFile):
    """A file whose header or payload does not verify: damaged, truncated, empty or foreign."""


def identity_of(path: str | os.PathLike) -> str:
    """What a file at ``path`` must hold: its folder's name and its own (``kind/key.pt`` in the cache)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


class _HashingWriter:
    """Forwards writes to ``file`` while hashing and counting them: torch.save streams through it."""

    def __init__(self, file: BinaryIO):
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def _header(identity: str, size: int, sha256: str) -> bytes:
    fields = json.dumps({"identity": identity, "bytes": size, "sha256": sha256}).encode()
    header = MAGIC + fields
    if len(header) + 1 > HEADER_BYTES:
        raise ValueError(f"the identity {identity!r} is too long for a {HEADER_BYTES}-byte header")
    return header + b" " * (HEADER_BYTES - 1 - len(header)) + b"\n"


# what ``torch.load(weights_only=True)`` reads back: exact types, since numpy's scalars subclass
# Python's (``np.float64`` is a ``float``) and pass an isinstance check, then fail the load
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_PLAIN_CONTAINERS = (dict, list, tuple, set, frozenset)


def not_plain(obj: Any, where: str = "the artifact") -> str | None:
    """Where ``obj`` holds a value ``weights_only`` loading refuses (``"the artifact['Cs'][0] is
    numpy.float64"``), or None when it holds only tensors, plain numbers, strings and containers."""
    kind = type(obj)
    if kind in _PLAIN_SCALARS or isinstance(obj, torch.Tensor):
        return None
    if kind is dict or kind.__name__ == "OrderedDict":
        for key, value in obj.items():
            found = not_plain(key, f"a key of {where}") or not_plain(value, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if kind in _PLAIN_CONTAINERS:
        for i, value in enumerate(obj):
            found = not_plain(value, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where} is {kind.__module__}.{kind.__qualname__}"


def dump(obj: Any, file: BinaryIO, identity: str) -> None:
    """Write ``obj`` with its header to ``file`` (a fresh, seekable file opened for writing).

    ``obj`` must hold only what ``weights_only`` loading reads back (:func:`not_plain`): anything
    else is a ``TypeError`` here, before a byte is written, rather than a file no run can read.
    The payload streams through the hash, so nothing is held twice in memory; the header's
    place is reserved first and filled in once the payload's length and digest are known.
    """
    problem = not_plain(obj)
    if problem:
        raise TypeError(f"cannot store {identity}: {problem}, which torch.load(weights_only=True) refuses; "
                        "convert it (float(x), x.tolist(), torch.as_tensor(x)) in the code that builds it")
    start = file.tell()
    file.write(b"\0" * HEADER_BYTES)
    writer = _HashingWriter(file)
    torch.save(obj, writer)
    end = file.tell()
    file.seek(start)
    file.write(_header(identity, writer.size, writer.digest.hexdigest()))
    file.seek(end)


def _read_header(path: Path, file: BinaryIO, identity: str) -> dict:
    head = file.read(HEADER_BYTES)
    if not head:
        raise CorruptFile(path, "the file is empty")
    if not head.startswith(MAGIC):
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # a bare torch.save file (zip or pickle)
            raise LegacyFile(path, "written without a checksum (by kx_utils before checksums were stored)")
        raise CorruptFile(path, "no kx_utils header (not an artifact file, or its first bytes are damaged)")
    if len(head) < HEADER_BYTES:
        raise CorruptFile(path, f"truncated inside its header ({len(head)} of {HEADER_BYTES} bytes)")
    try:
        fields = json.loads(head[len(MAGIC):].decode("ascii"))
        stored = {"identity": str(fields["identity"]), "bytes": int(fields["bytes"]),
                  "sha256": str(fields["sha256"])}
        canonical = _header(stored["identity"], stored["bytes"], stored["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CorruptFile(path, "its header is damaged") from None
    if head != canonical:  # any byte the writer would not have written, padding included
        raise CorruptFile(path, "its header is damaged")
    if stored["identity"] != identity:
        raise CorruptFile(path, f"it holds another artifact ({stored['identity']}), not {identity}")
    return stored


def verify(path: str | os.PathLike, file: BinaryIO, identity: str) -> None:
    """Check ``file`` (open at its start) against its header; raises :class:`UnverifiedFile`."""
    path = Path(path)
    stored = _read_header(path, file, identity)
    digest, size = hashlib.sha256(), 0
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    if size != stored["bytes"]:
        what = "truncated" if size < stored["bytes"] else "longer than written"
        raise CorruptFile(path, f"{what}: {size} payload bytes, the header says {stored['bytes']}")
    if digest.hexdigest() != stored["sha256"]:
        raise CorruptFile(path, "its checksum does not match its bytes (the file was damaged)")


def load(path: str | os.PathLike, identity: str | None = None) -> Any:
    """The object in the checked file at ``path``, verified first, then read with ``weights_only``.

    Raises :class:`UnverifiedFile` (never unpickling anything) when the bytes do not verify,
    and torch's own error when verified bytes hold something ``weights_only`` refuses.
    ``identity`` defaults to :func:`identity_of` ``path``.
    """
    path = Path(path)
    identity = identity or identity_of(path)
    # one open file for both steps: a writer renaming a new file into place meanwhile cannot
    # slip unverified bytes between the check and the load
    with open(path, "rb") as file:
        try:
            verify(path, file, identity)
        except UnverifiedFile as exc:
            exc.stat = os.fstat(file.fileno())
            raise
        file.seek(HEADER_BYTES)
        return torch.load(file, map_location="cpu", weights_only=True)
