"""``python -m kx_utils data fetch|status``: the command line of :mod:`kx_utils.fetch`.

    python -m kx_utils data fetch --profile mini                 # into $KX_DATA, else <repo>/data
    python -m kx_utils data fetch --profile mini --mirror DIR_OR_URL --pins SHA256SUMS
    python -m kx_utils data status --profile mini
    python -m kx_utils data fetch --profile paper                # what torchvision can, and a by-hand list

Exit status: 0 everything the profile needs is there (optional data aside), 1 something is missing,
damaged or failed to download (each named, with the fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import DATASETS
from . import STANDIN_PROFILES, FetchError, FetchOptions, default_dest, describe_sources, fetch, standin_states

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
                                 "kx_utils/fetch/subsets/ (a test mirror holds fewer images)")
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


def _status(args) -> int:
    dest = default_dest() if args.dest is None else Path(args.dest).expanduser().resolve()
    if args.profile == "paper":
        missing = [info for info in DATASETS.values() if not (dest / info.folder).is_dir()]
        for info in DATASETS.values():
            print(f"{'MISSING' if info in missing else 'ok':8s} {info.folder} ({info.paper_name})"
                  + (f": {info.how_to_get}" if info in missing else ""))
        return EXIT_FAILED if missing else EXIT_OK
    failed = False
    for state in standin_states(dest, args.subset_tables).values():
        failed |= not state.usable
        print(f"{state.state.upper():9s} {state.path}" + (f": {state.detail}" if state.detail else "")
              + (f" ({'; '.join(state.problems)})" if state.problems else ""))
    for info in DATASETS.values():
        if info.standin_optional:
            there = (dest / info.standin).is_dir()
            print(f"{'PROVIDED' if there else 'OPTIONAL':9s} {dest / info.standin}"
                  + ("" if there else f": not present; {info.standin_optional}"))
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


def run(args: argparse.Namespace) -> int:
    return _fetch(args) if args.data_command == "fetch" else _status(args)
