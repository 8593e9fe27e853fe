"""Building a stand-in folder so that it is either complete or absent, and telling the two apart.

A stand-in is built in a hidden sibling, ``<dest>/.kx-building-<folder>-<random>/``, and renamed to
``<dest>/<folder>`` only once every image, ``classes.csv``, ``manifest.csv`` and the marker
``.kx-fetch.json`` are written.  A build that is killed leaves only the hidden sibling, which no
loader looks at and the next fetch deletes.  The marker holds the spec digest
(:func:`kx_utils.data.fetch.standins.spec_digest`) and the image count of every class, so that a later
check sees a fetched folder that lost files (``damaged``) or was built from another spec
(``stale``).  A folder without a marker was placed by hand (``provided``, as on the development
machine); it is compared with the stand-in's table and never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...runtime.artifacts import atomic_write_text
from ..imagefolder import IMAGE_EXTENSIONS
from .archives import FetchError
from .standins import (
    BUILDER_VERSION,
    StandinRecipe,
    SubsetTable,
    output_name,
    select,
    spec_digest,
    stored_image,
)

MARKER = ".kx-fetch.json"
BUILDING_PREFIX = ".kx-building-"


@dataclass
class FolderState:
    folder: str
    path: Path
    state: str  # "missing", "fetched", "stale", "damaged", "provided", "foreign"
    detail: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether a run may read it (a stale or foreign folder is usable, with a warning)."""
        return self.state in ("fetched", "stale", "provided", "foreign")


def counts_on_disk(path: Path, splits: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """split -> class folder -> number of images, as ImageFolder sees them.

    Counted leniently (an empty class folder counts 0 rather than raising as
    :func:`kx_utils.data.imagefolder.list_image_folder` does): a damaged folder must be reported, not crash.
    """
    out = {}
    for split in splits:
        split_dir = path / split
        if split_dir.is_dir():
            out[split] = {cls.name: sum(1 for f in cls.rglob("*") if f.is_file() and not f.name.startswith(".")
                                        and f.name.lower().endswith(IMAGE_EXTENSIONS))
                          for cls in sorted(split_dir.iterdir()) if cls.is_dir() and not cls.name.startswith(".")}
    return out


def table_counts(table: SubsetTable) -> dict[str, dict[str, int]]:
    return {s: dict(zip(table.classes, counts)) for s, counts in table.counts.items()}


def count_differences(found: dict[str, dict[str, int]], wanted: dict[str, dict[str, int]], limit: int = 4
                      ) -> list[str]:
    problems = []
    for split, classes in wanted.items():
        have = found.get(split)
        if have is None:
            problems.append(f"no {split}/ split")
            continue
        for cls in sorted(set(classes) | set(have)):
            if have.get(cls, 0) != classes.get(cls, 0):
                problems.append(f"{split}/{cls} holds {have.get(cls, 0)} images, expected {classes.get(cls, 0)}")
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])


def read_marker(path: Path) -> dict | None:
    marker = path / MARKER
    if not marker.is_file():
        return None
    try:
        value = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def folder_state(dest: Path, recipe: StandinRecipe, table: SubsetTable) -> FolderState:
    """What ``<dest>/<folder>`` is: missing, complete as fetched, or something else (and why)."""
    path = dest / recipe.folder
    if not path.is_dir():
        return FolderState(recipe.folder, path, "missing")
    found = counts_on_disk(path, recipe.splits)
    marker = read_marker(path)
    if marker is None:
        problems = count_differences(found, table_counts(table))
        if problems:
            return FolderState(recipe.folder, path, "foreign", "placed by hand, and not the stand-in", problems)
        return FolderState(recipe.folder, path, "provided", "placed by hand; classes and counts match the stand-in")
    problems = count_differences(found, marker.get("counts") or {}) if marker.get("counts") else [
        f"its marker {MARKER} cannot be read"]
    if problems:
        return FolderState(recipe.folder, path, "damaged", "fetched, but its files differ from its marker", problems)
    if marker.get("spec_digest") != spec_digest(recipe, table):
        return FolderState(recipe.folder, path, "stale", "fetched by another version of kx or from another "
                                                         "subset table: `data fetch --rebuild` rebuilds it")
    return FolderState(recipe.folder, path, "fetched", "fetched and complete")


def remove_abandoned_builds(dest: Path, folder: str, log: Callable[[str], None]) -> None:
    """Hidden half-built siblings of ``folder`` left by a killed fetch (no run ever reads them)."""
    for leftover in dest.glob(f"{BUILDING_PREFIX}{folder}-*"):
        log(f"  removing {leftover.name}, a build of {folder} that did not finish")
        shutil.rmtree(leftover)


def _csv_text(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def build_standin(recipe: StandinRecipe, table: SubsetTable, archive_paths: dict[str, Path],
                  archive_digests: dict[str, str], dest: Path, replace: bool = False,
                  log: Callable[[str], None] = print) -> Path:
    """Build ``<dest>/<folder>`` from the archives; it appears only when complete."""
    final = dest / recipe.folder
    remove_abandoned_builds(dest, recipe.folder, log)
    building = Path(tempfile.mkdtemp(dir=dest, prefix=f"{BUILDING_PREFIX}{recipe.folder}-"))
    try:
        with recipe.source(archive_paths) as source:
            chosen = select(recipe, table, source.index())
            wanted = {item: (split, cls) for split, per_class in chosen.items()
                      for cls, items in per_class.items() for item in items}
            for split in recipe.splits:
                for cls in table.classes:
                    (building / split / cls).mkdir(parents=True)
            manifest = []
            for item, payload in source.read(wanted):
                data, suffix = stored_image(payload, recipe.size, recipe.fit, item)
                split, cls = wanted[item]
                name = output_name(item, suffix)
                (building / split / cls / name).write_bytes(data)
                manifest.append([f"{split}/{cls}/{name}", "+".join(recipe.archives), item])
        counts = counts_on_disk(building, recipe.splits)
        problems = count_differences(counts, table_counts(table))
        if problems:  # two items of a class written to one file name, or a reader that skipped items
            raise FetchError(f"the build of {recipe.folder} is incomplete ({'; '.join(problems)}); nothing was "
                             "installed. This is a bug in kx_utils.data.fetch: please report it")
        atomic_write_text(building / "classes.csv", _csv_text(
            ["index", "folder", "name"], [[i, c, n] for i, (c, n) in enumerate(zip(table.classes, table.names))]))
        atomic_write_text(building / "manifest.csv", _csv_text(["file", "archive", "member"], sorted(manifest)))
        marker = {"folder": recipe.folder, "spec_digest": spec_digest(recipe, table),
                  "builder": BUILDER_VERSION, "archives": archive_digests, "about": recipe.about,
                  "counts": counts}
        atomic_write_text(building / MARKER, json.dumps(marker, indent=1, sort_keys=True))
        os.chmod(building, 0o755)  # mkdtemp makes it private
        if final.exists() and not replace:
            raise FetchError(f"{final} appeared while it was being built; nothing was changed")
        swap_into_place(building, final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final


def swap_into_place(building: Path, final: Path) -> None:
    """Rename the complete folder ``building`` to ``final``; an old ``final`` is first renamed aside (under a
    name the next build deletes, should this one be killed), then deleted."""
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{BUILDING_PREFIX}{final.name}-old-"))
        os.replace(final, old / final.name)
        os.replace(building, final)
        shutil.rmtree(old)
    else:
        os.replace(building, final)
