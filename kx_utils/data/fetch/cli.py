"""``python -m kx_utils data fetch|status``: the command line of :mod:`kx_utils.data.fetch`.

    python -m kx_utils data fetch --profile mini                 # into $KX_DATA, else <repo>/data
    python -m kx_utils data fetch --profile mini --mirror DIR_OR_URL --pins SHA256SUMS
    python -m kx_utils data status --profile mini
    python -m kx_utils data fetch --profile paper                # what torchvision can, and a by-hand list
    python -m kx_utils data status --profile paper               # every split: present? counts vs the paper's
    python -m kx_utils data build cubs200 --from CUB_200_2011.tgz                # kx_utils/data/fetch/paper.py
    python -m kx_utils data build imagenet_subset --from ILSVRC_TRAIN_DIR --seed 0
    python -m kx_utils data build openimages --list test-images-with-rotation.csv --seed 0
    python -m kx_utils data build diabetic5 --from KAGGLE_DIR

Exit status: 0 everything the profile needs is there (optional data aside), 1 something is missing,
damaged or failed to download (each named, with the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalog import DATASETS
from . import (
    STANDIN_PROFILES,
    FetchError,
    FetchOptions,
    default_dest,
    describe_sources,
    fetch,
    standin_states,
)

EXIT_OK, EXIT_FAILED = 0, 1


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="fetch the data of a profile from its public sources, or show its state",
                          description="Download the public sources of a profile's datasets, verify each archive "
                                      "against its pinned checksum, and build the ImageFolder layout kx reads.")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, text in (("fetch", "download and build what is missing (present folders are left alone)"),
                       ("status", "show which folders are present, fetched, damaged or missing")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--profile", default="mini", choices=(*STANDIN_PROFILES, "paper"),
                            help="whose data (default: mini; smoke uses the same stand-ins)")
        action.add_argument("--dest", metavar="DIR", default=None,
                            help="the data folder (default: $KX_DATA, else data/ in the repository)")
        action.add_argument("--subset-tables", metavar="DIR", default=None,
                            help="read each stand-in's classes and counts from DIR/<stand-in>.csv instead of "
                                 "kx_utils/data/fetch/subsets/ (a test mirror holds fewer images)")
        if name == "fetch":
            action.add_argument("--mirror", metavar="DIR_OR_URL", default=None,
                                help="take every archive from DIR_OR_URL/<archive name> instead of its official URL")
            action.add_argument("--pins", metavar="FILE", default=None,
                                help="SHA-256 digests ('<sha256>  <archive name>' lines, as sha256sum writes "
                                     "them) that replace the built-in pins, e.g. for a mirror of other archives")
            action.add_argument("--trust-unpinned", action="store_true",
                                help="accept an archive that has no pinned checksum, recording the SHA-256 it "
                                     "has for every later run (trust on first use)")
            action.add_argument("--rebuild", action="store_true",
                                help="rebuild stand-ins that were fetched before (never a folder placed by hand)")
    _add_build_parser(actions)


BUILDABLE = ("cubs200", "imagenet_subset", "openimages", "diabetic5", "bing")


def _add_build_parser(actions) -> None:
    text = "build a paper dataset from files you downloaded (CUB, ImageNet, Open Images' list, Kaggle DR)"
    build = actions.add_parser("build", help=text, description=text + ". Each build is written beside its folder "
                               "and renamed into place only when complete (kx_utils/data/fetch/paper.py).")
    build.add_argument("dataset", choices=BUILDABLE, help="the dataset folder to build (bing: prints the manual steps)")
    build.add_argument("--from", dest="source", metavar="PATH", default=None,
                       help="cubs200: CUB_200_2011.tgz or its extracted folder; imagenet_subset: the ILSVRC-2012 "
                            "training folder (<wnid>/*.JPEG); diabetic5: the folder with trainLabels.csv and train/")
    build.add_argument("--list", dest="image_list", metavar="CSV", default=None,
                       help="openimages: the image list (ImageID and URL columns), e.g. test-images-with-rotation.csv")
    build.add_argument("--dest", metavar="DIR", default=None,
                       help="the data folder (default: $KX_DATA, else data/ in the repository)")
    build.add_argument("--seed", type=int, default=0, help="seed of the draw or split (default 0)")
    build.add_argument("--rebuild", action="store_true",
                       help="replace a folder built before by `data build` (never one placed by hand)")
    build.add_argument("--files", choices=("copy", "hardlink"), default="copy",
                       help="imagenet_subset: copy the images (default) or hard-link them (same filesystem only; "
                            "no fallback to copying)")
    build.add_argument("--count", type=int, default=None, help="openimages: images to keep (default 20,000)")
    build.add_argument("--url-column", default="OriginalURL", help="openimages: the list's URL column")
    build.add_argument("--url-template", default=None,
                       help="openimages: build each URL from the ImageID instead, e.g. "
                            "'https://open-images-dataset.s3.amazonaws.com/test/{ImageID}.jpg'")
    build.add_argument("--subset", default="test", help="openimages: the Subset to keep where the list has that column")
    build.add_argument("--size", type=int, default=None,
                       help="openimages: shorter side in px (default 256; 0 keeps it); diabetic5: side (default 256)")
    build.add_argument("--workers", type=int, default=None,
                       help="parallel downloads (openimages, default 16) or processes (diabetic5, default: the cores)")
    build.add_argument("--split", choices=("image", "patient"), default="image",
                       help="diabetic5: split the augmented images 80/20 (default, the paper's counts) or the patients")
    build.add_argument("--crop", choices=("fundus", "eyenet"), default="fundus",
                       help="diabetic5: square around the detected fundus (default) or EyeNet's central 1,800 px")


def _status(args) -> int:
    from .paper_status import status

    dest = default_dest() if args.dest is None else Path(args.dest).expanduser().resolve()
    text, complete = status(dest, standins=args.profile != "paper")
    if args.profile == "paper":
        print(text)
        return EXIT_OK if complete else EXIT_FAILED
    failed = not complete
    for state in standin_states(dest, args.subset_tables).values():
        failed |= not state.usable
        print(f"{state.state.upper():9s} {state.path}" + (f": {state.detail}" if state.detail else "")
              + (f" ({'; '.join(state.problems)})" if state.problems else ""))
    for info in DATASETS.values():
        if info.standin_optional:
            there = (dest / info.standin).is_dir()
            print(f"{'PROVIDED' if there else 'OPTIONAL':9s} {dest / info.standin}"
                  + ("" if there else f": not present; {info.standin_optional}"))
    print("\n" + text)
    print("\nSources:\n" + "\n".join(f"  {line}" for line in describe_sources()))
    if failed:
        print(f"\n`python -m kx_utils data fetch --profile {args.profile}` builds what is missing "
              "(--rebuild: what is damaged)")
    return EXIT_FAILED if failed else EXIT_OK


def _fetch(args) -> int:
    options = FetchOptions(mirror=args.mirror, pins_file=args.pins, trust_unpinned=args.trust_unpinned,
                           rebuild=args.rebuild, subset_tables=args.subset_tables)
    try:
        outcome = fetch(args.profile, args.dest, options)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for item in outcome.by_hand:
        print(f"BY HAND  {item}")
    for problem in outcome.problems:
        print(f"error: {problem}", file=sys.stderr)
    built = ", ".join(outcome.built) or "nothing"
    print(f"data fetch --profile {args.profile}: built {built}; {len(outcome.present)} already present"
          + (f"; {len(outcome.problems)} problem(s)" if outcome.problems else ""))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _build(args) -> int:
    from .diabetic import build_diabetic5
    from .openimages import (
        DEFAULT_COUNT,
        DEFAULT_SIZE,
        DEFAULT_WORKERS,
        build_openimages,
    )
    from .paper import BING_BY_HAND, build_cubs200, build_imagenet_subset

    dest = default_dest() if args.dest is None else Path(args.dest).expanduser().resolve()
    name = args.dataset
    if name == "bing":
        print(f"error: {BING_BY_HAND}", file=sys.stderr)
        return EXIT_FAILED
    wanted = ("--list", args.image_list, "the Open Images image list, e.g. test-images-with-rotation.csv") \
        if name == "openimages" else ("--from", args.source, {
            "cubs200": "CUB_200_2011.tgz or the folder extracted from it",
            "imagenet_subset": "the ILSVRC-2012 training folder (<wnid>/*.JPEG)",
            "diabetic5": "the folder holding Kaggle's trainLabels.csv and train/"}[name])
    if wanted[1] is None:
        print(f"error: `data build {name}` needs {wanted[0]} PATH: {wanted[2]}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if name == "cubs200":
            built = build_cubs200(args.source, dest, replace=args.rebuild)
        elif name == "imagenet_subset":
            built = build_imagenet_subset(args.source, dest, seed=args.seed, files=args.files, replace=args.rebuild)
        elif name == "openimages":
            built = build_openimages(args.image_list, dest, seed=args.seed, count=args.count or DEFAULT_COUNT,
                                     url_column=args.url_column, url_template=args.url_template,
                                     subset=args.subset or None,
                                     size=DEFAULT_SIZE if args.size is None else args.size,
                                     workers=args.workers or DEFAULT_WORKERS, replace=args.rebuild)
        else:
            built = build_diabetic5(args.source, dest, seed=args.seed, split=args.split, crop=args.crop,
                                    size=args.size or 256, workers=args.workers, replace=args.rebuild)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"data build {name}: {built} is complete (`python -m kx_utils data status --profile paper` checks it)")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return {"fetch": _fetch, "status": _status, "build": _build}[args.data_command](args)
