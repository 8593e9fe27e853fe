"""Artifacts: trained models, query answers, features, decoded images.

Each artifact is a ``torch.save`` file keyed by the hash of the settings that
made it, so that a later notebook reuses what an earlier one computed and any
notebook can run alone.  Files are written to a temporary name and renamed into
place, so a crash or a kill never leaves a file that a later run trusts.  They
are read with ``weights_only=True``: artifacts hold tensors, numbers, strings,
lists and dicts only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

# Bump when a change to the code makes earlier artifacts wrong.
ARTIFACT_VERSION = 1

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def settings_key(settings: dict) -> str:
    """A short, stable hash of a settings dict (order of keys does not matter)."""
    blob = json.dumps({"v": ARTIFACT_VERSION, "s": _canonical(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


class CorruptArtifactError(RuntimeError):
    pass


class ArtifactStore:
    """A folder of artifacts, ``<root>/<kind>/<key>.pt`` with ``<key>.json`` settings beside."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = cache_root(root)

    def path(self, kind: str, settings: dict) -> Path:
        return self.root / kind / f"{settings_key(settings)}.pt"

    def exists(self, kind: str, settings: dict) -> bool:
        return self.path(kind, settings).is_file()

    def load(self, kind: str, settings: dict) -> Any | None:
        path = self.path(kind, settings)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file that fails to load is never trusted
            raise CorruptArtifactError(
                f"artifact {path} cannot be read ({exc}); delete it and rerun to recompute it"
            ) from exc

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
