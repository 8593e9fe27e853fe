"""``python -m kx_utils``: reproduce the paper in one command, regenerate the report, check a plan.

    python -m kx_utils reproduce --profile mini            # the six notebooks, then figures/mini/
    python -m kx_utils reproduce --profile mini --only 01 02
    python -m kx_utils reproduce --profile paper --plan    # what is missing; trains nothing
    python -m kx_utils report --profile mini               # figures/mini/ from runs/mini/*.json
    python -m kx_utils plan --profile paper                # same as reproduce --plan
    python -m kx_utils artifacts                           # do artifact versions follow their code?
    python -m kx_utils artifacts --record                  # rewrite tests/artifact_sources.json
    python -m kx_utils data fetch --profile mini           # download and build the missing stand-ins
    python -m kx_utils data status --profile mini          # which data folders are there

Exit status: 0 done, 1 a notebook failed, the plan found something missing, the
pipeline state cannot be read or an artifact kind's source changed without its
version, 2 bad usage (an unknown profile, notebook or override).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path

from .profiles import PROFILES, ProfileError, get_profile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# ---------------------------------------------------------------- artifact versions and their source

# The modules that register artifact kinds (kx_utils.artifacts.artifact_kind); importing them fills
# ARTIFACT_KINDS and ARTIFACT_OWNERS.
PRODUCING_MODULES = ("kx_utils.detect", "kx_utils.victims", "kx_utils.attack", "kx_utils.data")
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
                         "cannot alter what the kind stores (kx_utils/artifacts.py states the rule).",
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


def _artifacts(record: bool) -> int:
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


def _profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", metavar="NAME",
                        help=f"run size: {', '.join(PROFILES)} (default: mini)")


def build_parser() -> argparse.ArgumentParser:
    from .pipeline import NOTEBOOKS

    parser = argparse.ArgumentParser(
        prog="python -m kx_utils",
        description="Reproduce 'Extraction of Complex DNN Models: Real Threat or Boogeyman?' "
                    "(notebooks in runs/<profile>/, tables, figures and report in figures/<profile>/).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="run the notebooks in order, then regenerate figures/<profile>/",
                         description="Run the six notebooks with papermill into runs/<profile>/ (reusing "
                                     "those that finished with the same parameters), then regenerate "
                                     "figures/<profile>/.")
    _profile_argument(rep)
    rep.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                     help=f"run these notebooks only (names or prefixes such as 01 or knockoff): "
                          f"{', '.join(NOTEBOOKS)}")
    rep.add_argument("--force", action="store_true",
                     help="rerun notebooks that already finished (cached models and answers are still reused)")
    rep.add_argument("--overrides", metavar="JSON", default=None,
                     help='profile values to change, as JSON, e.g. \'{"transfer_budget": 3000}\'')
    rep.add_argument("--plan", action="store_true",
                     help="check that datasets and weights are present and print what would be trained; "
                          "trains nothing")
    rep.add_argument("--no-report", action="store_true", help="do not regenerate figures/<profile>/ afterwards")

    report = sub.add_parser("report", help="regenerate figures/<profile>/ from runs/<profile>/*.json",
                            description="Regenerate tables (CSV, Markdown), figures (PNG, PDF) and report.md "
                                        "from the notebooks' JSON results.")
    _profile_argument(report)
    report.add_argument("--out", metavar="DIR", default=None, help="output folder (default: figures/<profile>)")

    plan = sub.add_parser("plan", help="same as `reproduce --plan`")
    _profile_argument(plan)
    plan.add_argument("--overrides", metavar="JSON", default=None, help="profile values to change, as JSON")

    bench = sub.add_parser("bench", help="training and inference throughput of the profile's models, and the "
                                         "accuracy of each surrogate path",
                           description="Time every model and input size the profile trains, today's path beside "
                                       "each candidate speed-up (bf16, torch.compile, channels_last, threads, "
                                       "batch sizes, partial fine-tuning from cached activations), in one run, "
                                       "and train one reference surrogate per surrogate path.")
    _profile_argument(bench)
    bench.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    bench.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (default 3)")
    bench.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    bench.add_argument("--no-accuracy", action="store_true", help="skip the reference surrogates")
    bench.add_argument("--accuracy-epochs", type=int, default=None,
                       help="epochs of the reference surrogates (default: the profile's surrogate epochs)")
    bench.add_argument("--out", metavar="FILE", default=None, help="also write the Markdown to FILE")

    arts = sub.add_parser("artifacts", help="check (or --record) the versions of the artifact kinds against "
                                            "their source",
                          description="Check that every artifact kind's version was bumped when the module "
                                      "that registers it changed (the rule in kx_utils/artifacts.py), against "
                                      "tests/artifact_sources.json; --record rewrites that file.")
    arts.add_argument("--record", action="store_true",
                      help="rewrite tests/artifact_sources.json from the current source (only for changes that "
                           "cannot alter what a kind stores; otherwise bump the kind's version first)")
    from .fetch.cli import add_parser as add_data_parser
    add_data_parser(sub)
    return parser


def _overrides(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"--overrides is not valid JSON ({exc}); write e.g. "
                           "'{\"transfer_budget\": 3000}'") from None
    if not isinstance(value, dict):
        raise ProfileError(f"--overrides must be a JSON object of profile values, got {text!r}")
    return value


def _plan(profile_name: str, overrides: dict) -> int:
    from .pipeline import plan

    result = plan(get_profile(profile_name, **overrides))
    print(result.text())
    return EXIT_OK if result.ok else EXIT_FAILED


def _terminate_as_interrupt() -> None:
    """A `kill` ends the run like Ctrl-C: the kernel is shut down and the state file says so."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (an embedding caller): keep the default
        pass


def _data_present(profile_name: str, overrides: dict, partial: bool) -> bool:
    """Check data and weights before an hour of training, not in the middle of it.

    With ``--only`` a missing item is a warning: the chosen notebooks may not need it.
    """
    from . import pipeline

    result = pipeline.plan(get_profile(profile_name, **overrides))
    if result.ok:
        return True
    listing = "\n".join(f"  MISSING  {m}" for m in result.missing)
    if partial:
        print(f"warning: missing data or weights (the notebooks chosen with --only may not need them):\n"
              f"{listing}", file=sys.stderr)
        return True
    print(f"error: missing data or weights; nothing was run:\n{listing}\n"
          f"`python -m kx_utils plan --profile {profile_name}` shows the whole plan", file=sys.stderr)
    return False


def _report(profile_name: str, out=None) -> int:
    from .report import claims_text, write_report
    from .results import CorruptResultsError

    try:
        outcome = write_report(profile_name, out=out)
    except CorruptResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.summary())
    print(claims_text(outcome.claims))
    return EXIT_OK


def _bench(args) -> int:
    from .artifacts import atomic_write_text
    from .bench import run_bench

    try:
        profile = get_profile(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    frozen = tuple(sorted({0, 4, 7, 14, profile.surrogate_frozen_blocks}))
    text = run_bench(profile, args.device, args.seconds, compile_model=not args.no_compile,
                     accuracy_victims=() if args.no_accuracy else ("caltech", "gtsrb"), frozen=frozen,
                     accuracy_epochs=args.accuracy_epochs, progress=lambda m: print(m, file=sys.stderr))
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from .pipeline import CorruptStateError, NotebookFailed, PipelineError, reproduce

    args = build_parser().parse_args(argv)
    if args.command == "artifacts":
        return _artifacts(args.record)
    if args.command == "bench":
        return _bench(args)
    if args.command == "data":
        from .fetch.cli import run as run_data
        return run_data(args)
    try:
        overrides = _overrides(getattr(args, "overrides", None))
        get_profile(args.profile, **overrides)
        if args.command == "plan" or (args.command == "reproduce" and args.plan):
            return _plan(args.profile, overrides)
        if args.command == "report":
            return _report(args.profile, args.out)
        if not _data_present(args.profile, overrides, partial=bool(args.only)):
            return EXIT_FAILED
        _terminate_as_interrupt()
        try:
            reproduce(args.profile, only=args.only, force=args.force, overrides=overrides)
        except NotebookFailed as exc:
            print(f"\nkx reproduce stopped: {exc}", file=sys.stderr)
            if not args.no_report:  # what finished is still worth a report
                _report(args.profile)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("\nkx reproduce interrupted: rerun the same command to resume", file=sys.stderr)
            return 130
        return EXIT_OK if args.no_report else _report(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CorruptStateError as exc:  # not a usage error: a file to repair or delete
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
