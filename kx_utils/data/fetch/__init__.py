"""``python -m kx_utils data fetch``: the data of a profile from its public sources.

``mini`` and ``smoke`` run on stand-ins (:mod:`kx_utils.data.fetch.standins`): each missing one is
built from its public archive, downloaded once into ``<dest>/.kx-downloads/`` and checked against
its pin (:mod:`kx_utils.data.fetch.archives`), with the classes, per-class counts and image sizes of the
development machine's stand-ins, by a seeded selection (:mod:`kx_utils.data.fetch.build` makes sure a
folder is complete or absent).  Diabetic5's stand-in needs a Kaggle account: fetch says where to get
it and where to put it, and the run goes on without it (its rows read "data not present").

``paper`` fetches what torchvision can (CIFAR10, GTSRB, Caltech-256, written out by
:func:`kx_utils.data.download.download` from the verified archives, and the ResNets' ImageNet weights into
torch's hub cache) and lists what must be placed by hand, with links and the expected layout.

Folders already present are left alone, so on a machine with prepared data (``KX_DATA`` pointing at
them) fetch downloads nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..catalog import DATASETS, DEFAULT_DATA_ROOT
from .archives import (
    ChecksumMismatch,
    DownloadInterrupted,
    FetchError,
    UnpinnedArchive,
    download,
    file_digests,
    read_pins_file,
    source_of,
)
from .build import BUILDING_PREFIX, MARKER, FolderState, build_standin, folder_state
from .sources import ARCHIVES
from .standins import RECIPES, read_subset_table

__all__ = ["FetchError", "ChecksumMismatch", "DownloadInterrupted", "UnpinnedArchive", "FetchOptions", "FetchOutcome",
           "fetch", "standin_states", "default_dest", "MARKER", "BUILDING_PREFIX"]

DOWNLOADS = ".kx-downloads"
STANDIN_PROFILES = ("mini", "smoke")
PAPER_FETCHABLE = ("cifar10", "gtsrb", "caltech256")
PAPER_ARCHIVES = {"cifar10": ("cifar-10-python.tar.gz",),  # where torchvision's downloaders look for them
                  "gtsrb": tuple(f"gtsrb/{n}" for n in ("GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip",
                                                        "GTSRB_Final_Test_GT.zip")),
                  "caltech256": ("caltech256/256_ObjectCategories.tar",)}
PAPER_WEIGHTS = ("resnet18", "resnet34", "resnet101", "resnet152")


def default_dest() -> Path:
    """``$KX_DATA``, else ``<repo>/data``."""
    return Path(os.environ.get("KX_DATA") or DEFAULT_DATA_ROOT).expanduser().resolve()


@dataclass(frozen=True)
class FetchOptions:
    mirror: str | None = None  # a folder or base URL serving the archives under their names
    pins_file: str | None = None  # sha256sum-format digests that replace the built-in pins
    trust_unpinned: bool = False
    rebuild: bool = False  # rebuild fetched folders (never one placed by hand)
    subset_tables: str | None = None  # a folder of <stand-in>.csv replacing the package's tables


@dataclass
class FetchOutcome:
    built: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each names the folder and the fix
    by_hand: list[str] = field(default_factory=list)  # what fetch cannot get, and how to

    @property
    def ok(self) -> bool:
        return not self.problems


@contextlib.contextmanager
def _exclusive(dest: Path):
    """One fetch per destination: two would build the same folders."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(dest / ".kx-fetch.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FetchError(f"another `kx_utils data fetch` is writing to {dest}; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def standin_states(dest: Path, subset_tables: str | None = None) -> dict[str, FolderState]:
    """folder -> its state, for every stand-in fetch can build."""
    return {name: folder_state(dest, recipe, read_subset_table(name, recipe, subset_tables))
            for name, recipe in RECIPES.items()}


def fetch(profile: str, dest: str | os.PathLike | None = None, options: FetchOptions = FetchOptions(),
          log: Callable[[str], None] = print) -> FetchOutcome:
    """Fetch what ``profile`` needs into ``dest`` (default :func:`default_dest`)."""
    dest = Path(dest).expanduser().resolve() if dest else default_dest()
    pins = read_pins_file(options.pins_file) if options.pins_file else {}
    outcome = FetchOutcome()
    if profile in STANDIN_PROFILES:
        _fetch_standins(dest, options, pins, outcome, log)
    elif profile == "paper":
        _fetch_paper(dest, options, pins, outcome, log)
    else:
        raise FetchError(f"unknown profile {profile!r}; fetch knows {', '.join(STANDIN_PROFILES + ('paper',))}")
    return outcome


def _download_all(names, downloads: Path, options: FetchOptions, pins: dict, log) -> dict[str, Path]:
    return {name: download(ARCHIVES[name], downloads / name, options.mirror, pins, options.trust_unpinned, log)
            for name in names}


def _needs_building(state: FolderState, options: FetchOptions) -> bool:
    return state.state == "missing" or (options.rebuild and state.state in ("fetched", "stale", "damaged"))


def _fetch_standins(dest: Path, options: FetchOptions, pins: dict, outcome: FetchOutcome, log) -> None:
    to_build = []
    for name, state in standin_states(dest, options.subset_tables).items():
        if _needs_building(state, options):
            to_build.append(name)
        elif state.state == "damaged":
            outcome.problems.append(f"{state.path} was fetched but is damaged ({'; '.join(state.problems)}): rerun "
                                    "with --rebuild to build it again (runs refuse it until then)")
        elif state.state == "foreign":
            log(f"WARNING {state.path} was not built by `kx_utils data fetch` and is not the stand-in "
                f"({'; '.join(state.problems)}); it is left as is (fetch never overwrites a folder placed by hand), "
                "so results on it are not comparable with figures/mini")
            outcome.present.append(name)
        else:
            log(f"{name}: present ({state.detail})")
            outcome.present.append(name)
    if to_build:  # a folder with everything in place is never written to, not even a lock file
        dest.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest):
            for name in to_build:
                try:
                    _build_one(name, dest, options, pins, outcome, log)
                except FetchError as exc:  # the other stand-ins do not depend on this one
                    outcome.problems.append(f"{name}: {exc}")
    for key, info in DATASETS.items():
        if info.standin_optional and not (dest / info.standin).is_dir():
            outcome.by_hand.append(f"{info.paper_name} ({info.standin}, optional): {info.standin_optional}. "
                                   f"Without it the run goes on, and {info.paper_name}'s rows read "
                                   "\"data not present\".")
    if outcome.built:
        log(f"downloaded archives are kept in {dest / DOWNLOADS} (delete the folder to reclaim the space; a "
            "--rebuild then downloads them again)")


def _build_one(name: str, dest: Path, options: FetchOptions, pins: dict, outcome: FetchOutcome, log) -> None:
    recipe = RECIPES[name]
    table = read_subset_table(name, recipe, options.subset_tables)
    if not _needs_building(folder_state(dest, recipe, table), options):  # another fetch built it meanwhile
        outcome.present.append(name)
        return
    log(f"{name}: building from {', '.join(recipe.archives)} ({recipe.about})")
    paths = _download_all(recipe.archives, dest / DOWNLOADS, options, pins, log)
    digests = {archive: file_digests(path)["sha256"] for archive, path in paths.items()}
    build_standin(recipe, table, paths, digests, dest, replace=options.rebuild, log=log)
    log(f"{name}: built {', '.join(f'{s} {table.total(s):,}' for s in recipe.splits)} images at "
        f"{recipe.size} px in {dest / name}")
    outcome.built.append(name)


def _fetch_paper(dest: Path, options: FetchOptions, pins: dict, outcome: FetchOutcome, log) -> None:
    from ..catalog import dataset_info
    from ..download import download as export_with_torchvision

    for key in PAPER_FETCHABLE:
        info = dataset_info(key)
        if (dest / info.folder).is_dir():
            log(f"{info.folder}: present")
            outcome.present.append(info.folder)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest):
            raw = dest / "_downloads" / key  # where kx_utils.data.download.download runs torchvision's downloader
            for relative in PAPER_ARCHIVES[key]:
                download(ARCHIVES[Path(relative).name], raw / relative, options.mirror, pins,
                         options.trust_unpinned, log)
            log(f"{info.folder}: writing it out with torchvision from the verified archives")
            export_with_torchvision(info, dest)
        outcome.built.append(info.folder)
    for arch in PAPER_WEIGHTS:
        _fetch_weights(arch, options, pins, outcome, log)
    for key, info in DATASETS.items():
        if key in PAPER_FETCHABLE or (dest / info.folder).is_dir():
            continue
        layout = ", ".join(f"{dest / info.folder}/{sub}/<class>/<image>" for sub in dict.fromkeys(info.splits.values()))
        outcome.by_hand.append(f"{info.paper_name} ({info.folder}): {info.how_to_get}. Expected layout: {layout}")


def _fetch_weights(arch: str, options: FetchOptions, pins: dict, outcome: FetchOutcome, log) -> None:
    import torchvision

    from ...core.models import (
        _TORCHVISION,
        MissingWeightsError,
        hub_checkpoint_dir,
        resolve_weights,
    )
    from .archives import Archive

    try:
        log(f"ImageNet weights of {arch}: present ({resolve_weights(arch)})")
        outcome.present.append(f"weights:{arch}")
        return
    except MissingWeightsError:
        pass
    url = getattr(torchvision.models, _TORCHVISION[arch][1]).IMAGENET1K_V1.url
    name = Path(url).name  # resnet34-b627a593.pth: torch hub checks this SHA-256 prefix
    archive = Archive(name, url, sha256_prefix=name.rsplit("-", 1)[1].split(".")[0])
    log(f"ImageNet weights of {arch}: downloading into torch's hub cache")
    download(archive, hub_checkpoint_dir() / name, options.mirror, pins, options.trust_unpinned, log)
    outcome.built.append(f"weights:{arch}")


def describe_sources() -> list[str]:
    """Every archive fetch may download: name, URL and pin (for ``data status``)."""
    lines = []
    for archive in ARCHIVES.values():
        pin = (f"SHA-256 {archive.sha256[:16]}... ({archive.pin_source})" if archive.sha256
               else f"MD5 {archive.md5} only ({archive.pin_source}); SHA-256 recorded on the first verified download")
        lines.append(f"{archive.name} ({archive.size}) {source_of(archive, None)}: {pin}")
    return lines
