"""What a notebook's results depend on besides its parameters: its code cells and the package's source.

A rerun of ``reproduce`` skips a notebook only while both fingerprints are unchanged
(:mod:`kx_utils.orchestration.pipeline`); an edit anywhere in ``kx_utils`` makes every earlier result stale,
an edit of a notebook's prose does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the kx_utils package, whose source enters the fingerprint


def _package_files(root: Path) -> list[Path]:
    """The package's modules and data files: everything under ``root`` but bytecode caches,
    compiled files and hidden files (editor and temporary files)."""
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or path.suffix in (".pyc", ".pyo") or any(
                part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def package_fingerprint(root: str | os.PathLike | None = None) -> str:
    """A hash of the ``kx_utils`` source: every ``*.py`` module and package data file (such as
    ``overlap_lists/*.csv``) under ``root`` (default: this package), by relative path and content.

    A fix anywhere in the package can change what a notebook measures, so it makes every
    earlier result stale (its expensive artifacts stay cached unless their kind's version moved).
    """
    root = Path(root or PACKAGE_ROOT).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"package root {root} is not a folder")
    digest = hashlib.sha256()
    for path in _package_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def code_cells_fingerprint(path: Path) -> str:
    """A hash of the notebook's code cells: editing code makes its earlier results stale,
    editing prose does not."""
    with open(path) as f:
        nb = json.load(f)
    code = [c.get("source", "") for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    code = ["".join(s) if isinstance(s, list) else s for s in code]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()[:16]


def notebook_fingerprint(path: Path, package_root: str | os.PathLike | None = None,
                         package: str | None = None) -> str:
    """What a notebook's results depend on besides its parameters: its code cells and the
    source of the ``kx_utils`` package under ``package_root`` (``package``: that package's
    fingerprint, already computed)."""
    package = package or package_fingerprint(package_root)
    both = f"{code_cells_fingerprint(path)}:{package}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]
