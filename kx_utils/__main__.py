"""``python -m kx_utils``: reproduce the paper in one command, regenerate the report, check a plan.

    python -m kx_utils reproduce --profile mini            # the seven notebooks, then figures/mini/
    python -m kx_utils reproduce --profile mini --only 01 02
    python -m kx_utils reproduce --profile paper --plan    # what is missing; trains nothing
    python -m kx_utils report --profile mini               # figures/mini/ from runs/mini/*.json
    python -m kx_utils plan --profile paper                # same as reproduce --plan
    python -m kx_utils grid --profile mini --executor ray  # every artifact the notebooks need, in parallel
    python -m kx_utils reproduce --profile mini --grid     # the grid first, then the notebooks (no training)
    python -m kx_utils artifacts                           # do artifact versions follow their code?
    python -m kx_utils artifacts --record                  # rewrite tests/artifact_sources.json
    python -m kx_utils data fetch --profile mini           # download and build the missing stand-ins
    python -m kx_utils data status --profile mini          # which data folders are there

Exit status: 0 done, 1 a notebook failed, the plan found something missing, the
pipeline state cannot be read, the disk is full or an artifact kind's source changed
without its version, 2 bad usage (an unknown profile, notebook or override, or an
override of the wrong type or out of range), 3 another ``reproduce`` holds the runs
folder or the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config.profiles import PROFILES, get_profile
from .core.settings import ProfileError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3

from .runtime.artifact_sources import check_artifact_sources


def _profile_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="mini", metavar="NAME",
                        help=f"run size: {', '.join(PROFILES)} (default: mini)")


def build_parser() -> argparse.ArgumentParser:
    from .orchestration.pipeline import NOTEBOOKS

    parser = argparse.ArgumentParser(
        prog="python -m kx_utils",
        description="Reproduce 'Extraction of Complex DNN Models: Real Threat or Boogeyman?' "
                    "(notebooks in runs/<profile>/, tables, figures and report in figures/<profile>/).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="run the notebooks in order, then regenerate figures/<profile>/",
                         description="Run the seven notebooks with papermill into runs/<profile>/ (reusing "
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
                     help="check that datasets and weights are present, print what would be trained and the "
                          "GPU-hours it needs; trains nothing")
    _projection_arguments(rep)
    rep.add_argument("--no-report", action="store_true", help="do not regenerate figures/<profile>/ afterwards")
    rep.add_argument("--grid", action="store_true",
                     help="compute every artifact first with the experiment grid (see `grid`), then run the "
                          "notebooks with training forbidden")
    _grid_arguments(rep)

    grid = sub.add_parser("grid", help="compute every artifact the notebooks need, in parallel with Ray",
                          description="The experiment grid: every victim, transfer set, surrogate (every seed) "
                                      "and detector the profile's notebooks need, as tasks with dependencies, "
                                      "computed into the shared cache. A failed task is reported with its "
                                      "settings and the rest go on; a rerun computes what is still missing.")
    _profile_argument(grid)
    grid.add_argument("--overrides", metavar="JSON", default=None, help="profile values to change, as JSON")
    grid.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                      help="the tasks of these notebooks (and what they need) only")
    grid.add_argument("--list", action="store_true", help="list the tasks and which are in the cache; compute nothing")
    _grid_arguments(grid)

    report = sub.add_parser("report", help="regenerate figures/<profile>/ from runs/<profile>/*.json",
                            description="Regenerate tables (CSV, Markdown), figures (PNG, PDF) and report.md "
                                        "from the notebooks' JSON results.")
    _profile_argument(report)
    report.add_argument("--out", metavar="DIR", default=None, help="output folder (default: figures/<profile>)")

    plan = sub.add_parser("plan", help="same as `reproduce --plan`")
    _profile_argument(plan)
    plan.add_argument("--overrides", metavar="JSON", default=None, help="profile values to change, as JSON")
    _projection_arguments(plan)

    bench = sub.add_parser("bench", help="training and inference throughput of the profile's models, and the "
                                         "accuracy of each surrogate path",
                           description="Time every model and input size the profile trains, today's path beside "
                                       "each candidate speed-up (bf16, torch.compile, channels_last, threads, "
                                       "batch sizes, partial fine-tuning from cached activations), in one run, "
                                       "and train one reference surrogate per surrogate path.")
    _profile_argument(bench)
    bench.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                       help="cpu, cuda or auto (default: cpu)")
    bench.add_argument("--overrides", metavar="JSON", default=None,
                       help='profile values to change, as JSON, e.g. \'{"cuda_eval_batch_size": 2048}\'')
    bench.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (default 3)")
    bench.add_argument("--peak-tflops", type=float, default=None, metavar="TFLOPS",
                       help="the device's dense bf16 peak in TFLOP/s, for the %% of peak column (default: "
                            "kx_utils.core.flops' table by GPU name; unknown GPUs and CPUs have none)")
    bench.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    bench.add_argument("--no-accuracy", action="store_true", help="skip the reference surrogates")
    bench.add_argument("--accuracy-victims", default="caltech,gtsrb", metavar="KEYS",
                       help="victims of the reference surrogates, comma-separated (default: caltech,gtsrb)")
    bench.add_argument("--accuracy-paths", default=None, metavar="PATHS",
                       help="surrogate paths of the reference surrogates, comma-separated: fp32 (today), "
                            "frozen<N>, bf16_pointwise, frozen_bn, frozen_bn+bf16_pointwise (default: fp32, "
                            "frozen4, frozen7, frozen14 and the profile's surrogate_frozen_blocks)")
    bench.add_argument("--accuracy-epochs", type=int, default=None,
                       help="epochs of the reference surrogates (default: the profile's surrogate epochs)")
    bench.add_argument("--out", metavar="FILE", default=None, help="also write the Markdown to FILE")
    bench.add_argument("--json", metavar="FILE", default=None,
                       help="also write the timings as JSON to FILE (schema: kx_utils/bench/report.py)")

    arts = sub.add_parser("artifacts", help="check (or --record) the versions of the artifact kinds against "
                                            "their source",
                          description="Check that every artifact kind's version was bumped when the module "
                                      "that registers it changed (the rule in kx_utils/runtime/artifacts.py), against "
                                      "tests/artifact_sources.json; --record rewrites that file.")
    arts.add_argument("--record", action="store_true",
                      help="rewrite tests/artifact_sources.json from the current source (only for changes that "
                           "cannot alter what a kind stores; otherwise bump the kind's version first)")
    compare = sub.add_parser("compare", help="whether two report folders hold the same numbers, CSV by CSV",
                             description="Compare every CSV of two report folders (e.g. figures/mini made by the "
                                         "old code and by the new), cell by cell; wall-time columns are left out. "
                                         "Exit status 0 when every CSV is identical.")
    compare.add_argument("old", help="the first report folder")
    compare.add_argument("new", help="the second report folder")
    compare.add_argument("--atol", type=float, default=0.0, help="numbers this close count as equal (default 0)")
    compare.add_argument("--keep-times", action="store_true", help="compare the wall-time columns too")
    from .data.fetch.cli import add_parser as add_data_parser
    add_data_parser(sub)
    return parser


def _projection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench", metavar="JSON", default=None,
                        help="throughput measured by `bench --device cuda --json FILE` for the GPU-hours "
                             "projection (default: stated FLOP-based defaults for an H200)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8], metavar="N",
                        help="GPU counts of the projection (default: 1 8)")


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    from .orchestration.executors import EXECUTORS
    parser.add_argument("--executor", choices=EXECUTORS, default="serial",
                        help="serial: one task at a time here; ray: in parallel on Ray (default: serial)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel tasks with ray (default: one per GPU, else one per core)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per task")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (e.g. ray://head:10001); default: a local one. The cache "
                             "($KX_CACHE) and data ($KX_DATA) must be on a filesystem every worker sees")


def _run_grid(profile_name: str, overrides: dict, args, only=None, held_back: list | None = None) -> bool:
    """The grid for ``profile_name``; its report printed and saved in runs/<profile>/grid.json.

    ``held_back``, where given, receives the notebooks that need a task that failed or was skipped."""
    from .orchestration.executors import make_executor, run_grid, shareable
    from .orchestration.grid import grid_tasks, missing_tasks, notebooks_needing
    from .orchestration.pipeline import run_dir, select_notebooks
    from .runtime.artifacts import atomic_write_text

    profile = shareable(get_profile(profile_name, **overrides))
    tasks = grid_tasks(profile, tuple(select_notebooks(only)) if only else None)
    todo = missing_tasks(tasks, profile)
    print(f"kx grid: profile {profile.name}, {len(tasks)} tasks, {len(tasks) - len(todo)} already in the cache")
    executor = make_executor(args.executor, profile, args.workers, args.threads, args.address)
    if executor.slots > 1:  # parallel workers take the ready task heading the longest chain of work first
        from .orchestration.projection import critical_path_order, estimated_seconds
        by_name = {t.name: t for t in todo}
        order = critical_path_order(estimated_seconds(profile, todo), {t.name: t.after for t in todo}, list(by_name))
        todo = [by_name[name] for name in order]
    report = run_grid(todo, executor)
    print(report.text())
    atomic_write_text(run_dir(profile.name) / "grid.json", json.dumps(report.as_dict(), indent=1) + "\n")
    if held_back is not None:
        held_back += notebooks_needing(tasks, [o.task for o in report.outcomes if o.status != "done"])
    return report.ok


def _grid_list(profile_name: str, overrides: dict, only=None) -> int:
    from .orchestration.executors import shareable
    from .orchestration.grid import grid_tasks, missing_tasks
    from .orchestration.pipeline import select_notebooks

    profile = shareable(get_profile(profile_name, **overrides))
    tasks = grid_tasks(profile, tuple(select_notebooks(only)) if only else None)
    todo = {t.name for t in missing_tasks(tasks, profile)}
    for t in tasks:
        state = "to compute" if t.name in todo else "in cache  "
        print(f"{state}  {t.name:45s} {t.notebook:28s} after {', '.join(t.after) or '-'}")
    print(f"{len(tasks)} tasks, {len(tasks) - len(todo)} in the cache (composite tasks always run: they load "
          "what is cached)")
    return EXIT_OK


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


def _plan(profile_name: str, overrides: dict, bench: str | None = None, gpus=(1, 8)) -> int:
    from .orchestration.plan import plan
    from .orchestration.projection import Throughput, load_bench, project

    profile = get_profile(profile_name, **overrides)
    result = plan(profile)
    print(result.text())
    try:
        throughput = Throughput(load_bench(bench) if bench else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if any(n < 1 for n in gpus):
        print(f"error: --gpus takes positive counts, got {gpus}", file=sys.stderr)
        return EXIT_USAGE
    print()
    print(project(profile, throughput, tuple(gpus)).text())
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
    from .orchestration import plan

    result = plan.plan(get_profile(profile_name, **overrides))
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
    from .orchestration.run_results import CorruptResultsError
    from .report import claims_text, write_report

    try:
        outcome = write_report(profile_name, out=out)
    except CorruptResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.summary())
    print(claims_text(outcome.claims))
    return EXIT_OK


def _bench(args) -> int:
    from .bench.report import document, run_markdown
    from .bench.run import run_bench
    from .bench.timing import surrogate_settings_of
    from .core.devices import CudaUnavailableError
    from .experiments.victims import victim_spec
    from .runtime.artifacts import atomic_write_text

    try:
        profile = get_profile(args.profile, **_overrides(args.overrides))
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        print(f"error: --peak-tflops must be a positive number of TFLOP/s, got {args.peak_tflops}", file=sys.stderr)
        return EXIT_USAGE
    if args.accuracy_paths:
        paths = tuple(p.strip() for p in args.accuracy_paths.split(",") if p.strip())
    else:
        paths = tuple("fp32" if b == 0 else f"frozen{b}" for b in sorted({0, 4, 7, 14, profile.surrogate_frozen_blocks}))
    victims = tuple(v.strip() for v in args.accuracy_victims.split(",") if v.strip())
    try:
        for path in paths:
            surrogate_settings_of(path)
        for victim in victims:
            victim_spec(victim)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        run = run_bench(profile, args.device, args.seconds, compile_model=not args.no_compile,
                        accuracy_victims=() if args.no_accuracy else victims, accuracy_paths=paths,
                        accuracy_epochs=args.accuracy_epochs, peak_tflops=args.peak_tflops,
                        progress=lambda m: print(m, file=sys.stderr))
    except CudaUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = run_markdown(run)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(document(run), indent=1) + "\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from .orchestration.pipeline import (
        CorruptStateError,
        NotebookFailed,
        PipelineError,
        RunInProgress,
        reproduce,
        select_notebooks,
    )
    from .runtime.artifacts import DiskFullError

    args = build_parser().parse_args(argv)
    if args.command == "artifacts":
        return check_artifact_sources(args.record)
    if args.command == "bench":
        return _bench(args)
    if args.command == "compare":
        from .report.compare import main as compare_main
        try:
            return compare_main(args.old, args.new, args.atol, args.keep_times)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "data":
        from .data.fetch.cli import run as run_data
        return run_data(args)
    try:
        overrides = _overrides(getattr(args, "overrides", None))
        get_profile(args.profile, **overrides)
        if args.command == "plan" or (args.command == "reproduce" and args.plan):
            return _plan(args.profile, overrides, args.bench, args.gpus)
        if args.command == "report":
            return _report(args.profile, args.out)
        select_notebooks(args.only)  # an unknown name is a usage error before the data check
        if args.command == "grid" and args.list:
            return _grid_list(args.profile, overrides, args.only)
        if not _data_present(args.profile, overrides, partial=bool(args.only)):
            return EXIT_FAILED
        _terminate_as_interrupt()
        if args.command == "grid":
            try:
                return EXIT_OK if _run_grid(args.profile, overrides, args, args.only) else EXIT_FAILED
            except KeyboardInterrupt:
                print("\nkx grid interrupted: rerun the same command to compute what is still missing",
                      file=sys.stderr)
                return 130
        grid = None
        if args.grid:  # its time and the cache it found go into the command's record (the report's wall time)
            from .orchestration.pipeline import grid_phase
            held_back: list[str] = []
            ok, grid = grid_phase(args.profile,
                                  lambda: _run_grid(args.profile, overrides, args, args.only, held_back),
                                  get_profile(args.profile, **overrides).cache_root)
            if not ok:
                runnable = [nb for nb in select_notebooks(args.only) if nb not in held_back]
                print(f"kx reproduce: the grid had failures (above); not run, since they need a failed task: "
                      f"{', '.join(held_back)}; running the others: {', '.join(runnable) or 'none'}", file=sys.stderr)
                if not runnable:
                    return EXIT_FAILED
                args.only = runnable
            from .core.train import NO_TRAINING_ENV
            os.environ[NO_TRAINING_ENV] = "1"  # the notebooks load what the grid made, or say what it missed
        try:
            reproduce(args.profile, only=args.only, force=args.force, overrides=overrides, grid=grid)
        except NotebookFailed as exc:
            print(f"\nkx reproduce stopped: {exc}", file=sys.stderr)
            if not args.no_report:  # what finished is still worth a report
                _report(args.profile)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("\nkx reproduce interrupted: rerun the same command to resume", file=sys.stderr)
            return 130
        if grid is not None and grid["status"] != "finished":
            if not args.no_report:  # the notebooks that ran, reported; the held-back ones read "not run"
                _report(args.profile)
            return EXIT_FAILED
        return EXIT_OK if args.no_report else _report(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CorruptStateError, DiskFullError) as exc:  # not a usage error: a file to repair, a disk to free
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunInProgress as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
