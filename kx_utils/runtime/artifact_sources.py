"""Artifact kinds and their source: each kind's version must move when the module that makes it changes.

``tests/artifact_sources.json`` records, for every artifact kind, its version and the sha256 of the
module that registers it; ``python -m kx_utils artifacts`` compares the code with the record (the
rule in :mod:`kx_utils.runtime.artifacts`) and ``--record`` rewrites it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED = 0, 1


# The modules that register artifact kinds (kx_utils.runtime.artifacts.artifact_kind); importing them fills
# ARTIFACT_KINDS and ARTIFACT_OWNERS.
PRODUCING_MODULES = ("kx_utils.experiments.detection", "kx_utils.experiments.ood_baselines", "kx_utils.experiments.victims",
                     "kx_utils.experiments.attack", "kx_utils.experiments.defences", "kx_utils.data.datasets")
RECORD_COMMAND = "python -m kx_utils artifacts --record"


def artifact_sources_path() -> Path:
    from .artifacts import REPO_ROOT
    return REPO_ROOT / "tests" / "artifact_sources.json"


def artifact_sources() -> dict[str, dict]:
    """kind -> {version, module, source, sha256}: each artifact kind of kx_utils, its version and the
    content hash of the source file of the module that registers (owns) it."""
    from .artifacts import ARTIFACT_KINDS, ARTIFACT_OWNERS, REPO_ROOT

    for name in PRODUCING_MODULES:
        importlib.import_module(name)
    out = {}
    for kind in sorted(ARTIFACT_KINDS):
        owner = ARTIFACT_OWNERS.get(kind, "?")
        if owner != "kx_utils" and not owner.startswith("kx_utils."):
            continue  # a kind a test registers for itself
        source = Path(sys.modules[owner].__file__).resolve()
        try:
            shown = source.relative_to(REPO_ROOT).as_posix()
        except ValueError:
            shown = str(source)
        out[kind] = {"version": ARTIFACT_KINDS[kind], "module": owner, "source": shown,
                     "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    return out


def record_artifact_sources(path: Path | None = None) -> Path:
    """Write the current kinds, versions and source hashes to ``tests/artifact_sources.json``."""
    from .artifacts import atomic_write_text

    path = Path(path or artifact_sources_path())
    document = {"about": "Each artifact kind's version and the sha256 of the module that registers it. "
                         "tests/test_artifacts.py fails when a module changed but its kinds' versions did "
                         f"not: bump the version, or re-record with `{RECORD_COMMAND}` when the change "
                         "cannot alter what the kind stores (kx_utils/runtime/artifacts.py states the rule).",
                "kinds": artifact_sources()}
    atomic_write_text(path, json.dumps(document, indent=1, sort_keys=True) + "\n")
    return path


def artifact_source_problems(recorded: dict, current: dict | None = None) -> list[str]:
    """Why the record ``recorded`` (the ``kinds`` of the JSON) does not match the code; [] when it does."""
    current = artifact_sources() if current is None else current
    rerecord = f"re-record with `{RECORD_COMMAND}`"
    problems = []
    for kind, now in current.items():
        was = recorded.get(kind)
        where = f"{now['module']} ({now['source']})"
        if was is None:
            problems.append(f"artifact kind {kind!r} of {where}, version {now['version']}, is not recorded: "
                            f"{rerecord}")
        elif was.get("module") != now["module"]:
            problems.append(f"artifact kind {kind!r} is now registered by {now['module']}, recorded as "
                            f"{was.get('module')}: bump its version in {now['source']} if what it stores "
                            f"may have changed, then {rerecord}")
        elif now["version"] < was.get("version", 0):
            problems.append(f"artifact kind {kind!r} went down from version {was.get('version')} to "
                            f"{now['version']} in {now['source']}: versions only go up (an old version "
                            "would reach artifacts of older code); bump it past the recorded one")
        elif now["version"] > was.get("version", 0):
            problems.append(f"artifact kind {kind!r} was bumped from version {was.get('version')} to "
                            f"{now['version']} in {now['source']}: {rerecord} so that the record follows")
        elif now["sha256"] != was.get("sha256"):
            problems.append(f"{now['source']} changed but its artifact kind {kind!r} is still version "
                            f"{now['version']}: bump the version in {now['module']} "
                            f"(artifact_kind({kind!r}, {now['version'] + 1})) if the change could alter "
                            f"what it stores; if it cannot, {rerecord}")
    for kind in sorted(set(recorded) - set(current)):
        problems.append(f"artifact kind {kind!r} is recorded but no module registers it any more: {rerecord}")
    return problems


def check_artifact_sources(record: bool) -> int:
    path = artifact_sources_path()
    if record:
        record_artifact_sources(path)
        print(f"recorded {len(artifact_sources())} artifact kinds in {path}")
        return EXIT_OK
    try:
        with open(path) as f:
            recorded = json.load(f)["kinds"]
    except FileNotFoundError:
        print(f"error: {path} is missing: `{RECORD_COMMAND}` writes it", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: {path} cannot be read ({exc!r}): `{RECORD_COMMAND}` rewrites it", file=sys.stderr)
        return EXIT_FAILED
    problems = artifact_source_problems(recorded)
    for problem in problems:
        print(f"STALE  {problem}")
    if not problems:
        print(f"ok: every artifact kind's version matches its source ({path})")
    return EXIT_FAILED if problems else EXIT_OK
