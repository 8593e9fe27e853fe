"""Artifacts: trained models, query answers, features, decoded images.

Each artifact is a ``torch.save`` file keyed by the hash of the settings that
made it, so that a later notebook reuses what an earlier one computed and any
notebook can run alone.  Files are written to a temporary name and renamed into
place, so a crash or a kill never leaves a file that a later run trusts; a full
disk is a :class:`DiskFullError` that names the file and leaves nothing behind.
Each file carries the sha256 of its payload and the name of the artifact it holds
(:mod:`kx_utils.runtime.integrity`), checked on every load before anything is unpickled:
a file that fails (truncated, damaged, empty, another artifact's) is moved aside
with an :class:`ArtifactWarning` naming it, and the caller recomputes it.  Files
are read with ``weights_only=True``: artifacts hold tensors, numbers, strings,
lists and dicts only.  Concurrent writers of one key are safe: each renames a
complete file into place, and the last one wins.

Versions: the rule
------------------
The settings say *what* was computed, not *how*: a cached victim stays valid
after a change to the training loop unless something says otherwise.  That
something is the version of the artifact's kind.

* Every kind is registered once, with :func:`artifact_kind`, by the module whose
  code produces it: ``victims`` (victim), ``attack`` (answers, surrogate), ``data``
  (decoded), ``detect.experiments`` (features, detector, detector_outputs,
  ood_scores, baseline_tuning, filter_benign).  That module *owns* the kind and its
  version; :data:`ARTIFACT_OWNERS` remembers it.
* The owner bumps the version (``artifact_kind("victim", 1)`` -> ``2``, with a
  comment saying why) whenever a change could alter what the kind stores: the
  computation, its inputs, its defaults, or the layout of the stored object, in the
  owner's module or in code it calls for that artifact (``train``, ``models``,
  ``api``, ...).  The version enters every key of the kind, so the old artifacts
  become unreachable and are recomputed; the other kinds stay cached.
* A change that cannot alter the stored artifacts (a comment, a message, a
  refactoring that computes the same values) keeps the version.
* :data:`ARTIFACT_VERSION` is the store's own version: bump it only when the key
  scheme or the file format changes, which invalidates every kind at once.  A new
  file format that the reader tells apart from the old one needs no bump: the
  checksum header of :mod:`kx_utils.runtime.integrity` came without one, and files written
  before it are rejected by their first bytes (with one warning per cache) and
  recomputed, rather than left behind unreachable.

``tests/test_artifacts.py`` enforces the rule for the owners' own source:
``tests/artifact_sources.json`` records each kind's version and the sha256 of the
source file of the module that registers it, and the test fails when that source
changed while the version did not.  Then either bump the version in that module,
or, if the change cannot alter what the kind stores, re-record with
``python -m kx_utils artifacts --record`` (which rewrites the JSON); commit the JSON
with the change either way.  The test cannot see changes to helper modules the
owner calls: for those the rule above is the author's to apply.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from . import integrity, regime

# Bump when a change to the store itself (the key or the file format) makes every artifact wrong.
ARTIFACT_VERSION = 2

# kind -> version, registered by the module whose code produces that kind (:func:`artifact_kind`).
ARTIFACT_KINDS: dict[str, int] = {}
# kind -> the module that registered it (its owner, which bumps its version)
ARTIFACT_OWNERS: dict[str, str] = {}

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$KX_CACHE``, else ``<repo>/.kx_cache``."""
    root = explicit or os.environ.get("KX_CACHE") or REPO_ROOT / ".kx_cache"
    return Path(root).expanduser().resolve()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "as_dict"):
        return _canonical(value.as_dict())
    raise TypeError(f"cannot hash setting of type {type(value).__name__}: {value!r}")


def artifact_kind(kind: str, version: int, owner: str | None = None) -> str:
    """Register a kind of artifact with the version of the code that produces it; returns ``kind``.

    The rule (module docstring): the module that computes an artifact owns its kind and version,
    and bumps the version whenever a change to that code could change what it stores.  The version
    enters every key, so the old artifacts become unreachable (``tests/test_artifacts.py`` checks
    that the producing source and the version move together).  ``owner`` is the registering
    module's name, by default the caller's ``__name__``.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"an artifact kind's version is a positive integer, got {version!r}")
    owner = owner or sys._getframe(1).f_globals.get("__name__", "?")
    registered, first = ARTIFACT_KINDS.get(kind, version), ARTIFACT_OWNERS.get(kind, owner)
    if registered != version:
        raise ValueError(f"artifact kind {kind!r} is registered twice, as version {registered} and {version}")
    if first != owner:
        raise ValueError(f"artifact kind {kind!r} is registered twice, by {first} and by {owner}: "
                         "one module owns a kind")
    ARTIFACT_KINDS[kind], ARTIFACT_OWNERS[kind] = version, owner
    return kind


def settings_key(settings: dict) -> str:
    """A short, stable hash of a settings dict (order of keys does not matter)."""
    blob = json.dumps({"v": ARTIFACT_VERSION, "s": _canonical(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DiskFullError(OSError):
    """The disk filled up while writing a file: nothing was written; the message says where."""


class CorruptArtifactError(RuntimeError):
    """An artifact whose bytes verify but that ``weights_only`` refuses: the code that stored it is wrong."""


class ArtifactWarning(UserWarning):
    """A cached file failed verification (or predates checksums) and is recomputed."""


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            _discard(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"no space left on the disk of {path.parent} while writing "
                                           f"{path.name}: nothing was written (the partial file is removed). "
                                           "Free space there, or point KX_CACHE (artifacts) or KX_RUNS "
                                           "(results) at a disk with room, then rerun") from exc
        raise
    except BaseException:
        if tmp is not None:
            _discard(tmp)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` with its checksum header (:mod:`kx_utils.runtime.integrity`), atomically."""
    path = Path(path)
    atomic_write_bytes(path, lambda f: integrity.dump(obj, f, integrity.identity_of(path)))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


# caches (a kind folder's parent) already warned about files written before checksums, this process
_LEGACY_WARNED: set[Path] = set()


def _still_the_same_file(path: Path, seen: os.stat_result | None) -> bool:
    """Whether ``path`` is still the file that failed: a concurrent writer may have renamed a good
    one into place since, which must not be set aside."""
    try:
        return seen is not None and os.path.samestat(os.stat(path), seen)
    except FileNotFoundError:
        return False


def load_verified(path: str | os.PathLike, what: str) -> Any | None:
    """The object in the checked file ``path``; None when there is none or when it fails verification.

    A damaged file is renamed to ``<name>.corrupt`` (kept for a look) and a file written before
    checksums is removed, each with an :class:`ArtifactWarning` that names it and ``what`` it held
    (one warning per cache for the old files): either way the caller recomputes it.  A file that
    verifies but holds objects ``weights_only`` refuses raises :class:`CorruptArtifactError`:
    recomputing would store the same again.
    """
    path = Path(path)
    try:
        return integrity.load(path)
    except FileNotFoundError:
        return None
    except integrity.LegacyFile as exc:
        if _still_the_same_file(path, exc.stat):
            path.unlink(missing_ok=True)
        cache = path.parent.parent
        if cache not in _LEGACY_WARNED:
            _LEGACY_WARNED.add(cache)
            warnings.warn(f"{what} {path} was {exc.reason}: it is not trusted, removed and recomputed; "
                          f"every such file in {cache} is treated the same, without another warning",
                          ArtifactWarning, stacklevel=2)
        return None
    except integrity.UnverifiedFile as exc:
        aside = path.with_name(path.name + ".corrupt")
        if _still_the_same_file(path, exc.stat):
            os.replace(path, aside)
            where = f"moved aside to {aside.name}"
        else:
            where = "already set aside or replaced by another process"
        warnings.warn(f"{what} {path} failed verification ({exc.reason}); {where}; it is recomputed",
                      ArtifactWarning, stacklevel=2)
        return None
    except OSError:  # unreadable for another reason (permissions, I/O): not a verdict on the bytes
        raise
    except Exception as exc:  # noqa: BLE001 - verified bytes that weights_only refuses
        lines = str(exc).splitlines() or [type(exc).__name__]
        detail = next((line.strip() for line in lines if "Unsupported global" in line), lines[0])
        raise CorruptArtifactError(
            f"{what} {path} verifies but cannot be loaded with weights_only=True ({detail}): the code that "
            "stored it saved something other than tensors, numbers, strings, lists and dicts; fix that "
            "code, then delete the file") from exc


class ArtifactStore:
    """A folder of artifacts, ``<root>/<kind>/<key>.pt`` with ``<key>.json`` settings beside."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)

    def path(self, kind: str, settings: dict) -> Path:
        if kind not in ARTIFACT_KINDS:
            raise KeyError(f"unknown artifact kind {kind!r}: register it with artifact_kind({kind!r}, version) "
                           f"in the module that produces it (known: {', '.join(sorted(ARTIFACT_KINDS))})")
        keyed = {'kind_version': ARTIFACT_KINDS[kind], 'settings': settings}
        switched = regime.non_defaults()  # random weights, fp32 on CUDA: never a default run's artifacts
        if switched:
            keyed["regime"] = switched
        return self.root / kind / f"{settings_key(keyed)}.pt"

    def exists(self, kind: str, settings: dict) -> bool:
        """Whether a file is there (unverified: :meth:`load` checks it)."""
        return self.path(kind, settings).is_file()

    def load(self, kind: str, settings: dict) -> Any | None:
        """The artifact, or None when it is missing or fails verification (see :func:`load_verified`)."""
        return load_verified(self.path(kind, settings), f"{kind} artifact")

    def save(self, kind: str, settings: dict, obj: Any) -> Path:
        path = self.path(kind, settings)
        atomic_write_text(path.with_suffix(".json"),
                          json.dumps(_canonical(settings), indent=1, sort_keys=True))
        atomic_save(obj, path)
        return path

    def cached(self, kind: str, settings: dict, compute: Callable[[], Any]) -> Any:
        """Load the artifact for ``settings``, or compute and store it."""
        found = self.load(kind, settings)
        if found is not None:
            return found
        obj = compute()
        self.save(kind, settings, obj)
        return obj

    def scratch_path(self, kind: str, settings: dict, suffix: str) -> Path:
        """A path for intermediate files of one artifact (a training checkpoint, say)."""
        path = self.path(kind, settings)
        return path.with_name(f"{path.stem}.{suffix}")
