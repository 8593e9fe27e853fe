"""``python -m kx_utils``: reproduce the paper in one command, regenerate the report, check a plan.

    python -m kx_utils reproduce --profile mini            # the six notebooks, then figures/mini/
    python -m kx_utils reproduce --profile mini --only 01 02
    python -m kx_utils reproduce --profile paper --plan    # what is missing; trains nothing
    python -m kx_utils report --profile mini               # figures/mini/ from runs/mini/*.json
    python -m kx_utils plan --profile paper                # same as reproduce --plan

Exit status: 0 done, 1 a notebook failed or the plan found something missing,
2 bad usage (an unknown profile, notebook or override).
"""

from __future__ import annotations

import argparse
import json
import sys

from .profiles import PROFILES, ProfileError, get_profile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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

    outcome = write_report(profile_name, out=out)
    print(outcome.summary())
    print(claims_text(outcome.claims))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from .pipeline import NotebookFailed, PipelineError, reproduce

    args = build_parser().parse_args(argv)
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
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
