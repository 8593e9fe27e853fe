"""Run the seven notebooks of a profile in order with papermill, resuming what already finished.

Each notebook is executed into ``runs/<profile>/<name>.ipynb`` (or
``$KX_RUNS/<profile>/``) and writes its own results next to it,
``runs/<profile>/<name>.json``.  The pipeline keeps a small state file,
``runs/<profile>/pipeline.json``, rewritten atomically after every change, with
each notebook's status, parameters, wall time and error.  A rerun skips a
notebook that finished with the same parameters, the same code cells and the same
``kx_utils`` source (every module and package data file, see
:func:`kx_utils.orchestration.fingerprints.package_fingerprint`) and whose results file is still there and readable; a
notebook that failed or was killed runs again, and runs again cheaply, because the
expensive steps inside it (victims, answers, surrogates) are cached artifacts (whose
keys carry the version of the code that produced them, see :mod:`kx_utils.runtime.artifacts`).

A state file or results file that cannot be read is never silently taken as absent:
a corrupt ``pipeline.json`` stops the run with :class:`CorruptStateError` naming it, and
a corrupt results file is reported (naming it) and its notebook runs again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from ..config.profiles import get_profile
from ..experiments.registry import notebook_names
from ..runtime.artifacts import REPO_ROOT, atomic_write_text, cache_root
from ..runtime.locks import FolderBusy, exclusive
from .fingerprints import PACKAGE_ROOT, notebook_fingerprint, package_fingerprint
from .run_results import CorruptResultsError, read_results, results_path, runs_root

NOTEBOOKS = notebook_names()  # the registry's (kx_utils.experiments.catalogue), in order
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
STATE_FILE = "pipeline.json"
KEPT_INVOCATIONS = 20


class PipelineError(RuntimeError):
    """A run that cannot start or cannot go on; the message says why and what to do."""


class CorruptStateError(PipelineError):
    """``pipeline.json`` exists but cannot be read: the message names it and what to do."""


class RunInProgress(PipelineError):
    """Another ``reproduce`` holds the runs folder or the cache: the message names it."""


class NotebookFailed(PipelineError):
    """A notebook raised an error: names the notebook, the failing cell and the executed copy."""

    def __init__(self, notebook: str, message: str, executed: Path):
        self.notebook, self.executed = notebook, executed
        super().__init__(message)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def format_seconds(seconds: float | None) -> str:
    """``75.2`` -> ``1m15s``; ``3700`` -> ``1h01m40s``."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def select_notebooks(only: Iterable[str] | None = None) -> list[str]:
    """The notebooks to run, in pipeline order.  ``only`` takes full names or unique prefixes
    (``01``, ``02_knock``) or the part after the number (``knockoff``)."""
    if not only:
        return list(NOTEBOOKS)
    chosen = set()
    for name in only:
        name = name.strip().removesuffix(".ipynb").removeprefix("notebooks/")
        matches = [nb for nb in NOTEBOOKS
                   if nb == name or nb.startswith(name) or nb.split("_", 1)[1] == name]
        if len(matches) != 1:
            why = "matches none" if not matches else f"is ambiguous ({', '.join(matches)})"
            raise PipelineError(f"notebook {name!r} {why}; the notebooks are: {', '.join(NOTEBOOKS)}")
        chosen.add(matches[0])
    return [nb for nb in NOTEBOOKS if nb in chosen]


def run_dir(profile_name: str, runs: str | os.PathLike | None = None) -> Path:
    return runs_root(runs) / profile_name


def state_path(profile_name: str, runs: str | os.PathLike | None = None) -> Path:
    return run_dir(profile_name, runs) / STATE_FILE


def load_state(profile_name: str, runs: str | os.PathLike | None = None) -> dict:
    """The pipeline state of a profile (empty when no run has happened yet).

    Raises :class:`CorruptStateError`, naming the file, when it exists but is not a
    state: it is written atomically, so only a hand edit or a foreign file breaks it,
    and starting afresh silently would forget what finished.
    """
    path = state_path(profile_name, runs)
    if not path.is_file():
        return {"profile": profile_name, "notebooks": {}, "invocations": []}
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStateError(f"the pipeline state {path} cannot be read ({exc}); delete it to start "
                                "afresh: every notebook then runs again, reusing its cached artifacts") from None
    if not isinstance(state, dict) or not isinstance(state.get("notebooks", {}), dict) \
            or not isinstance(state.get("invocations", []), list):
        raise CorruptStateError(f"the pipeline state {path} is not a pipeline state (a JSON object with "
                                "'notebooks' and 'invocations'); delete it to start afresh: every notebook "
                                "then runs again, reusing its cached artifacts")
    state.setdefault("notebooks", {})
    state.setdefault("invocations", [])
    return state


def save_state(state: dict, profile_name: str, runs: str | os.PathLike | None = None) -> None:
    atomic_write_text(state_path(profile_name, runs), json.dumps(state, indent=1))


def papermill_execute(notebook: Path, executed: Path, parameters: dict, cwd: Path) -> None:
    """Execute ``notebook`` into ``executed`` with papermill (a progress bar on a terminal)."""
    import papermill

    with open(notebook) as f:
        has_kernel = bool(json.load(f).get("metadata", {}).get("kernelspec"))
    papermill.execute_notebook(str(notebook), str(executed), parameters=parameters, cwd=str(cwd),
                               kernel_name=None if has_kernel else "python3",
                               language=None if has_kernel else "python",
                               progress_bar=sys.stderr.isatty(), log_output=False,
                               request_save_on_cell_execute=True)


def _unreadable_results(results: Path) -> str | None:
    """Why ``results`` cannot be used (naming the file), or None when it reads as a results document."""
    try:
        read_results(results)
    except FileNotFoundError:
        return None  # absent: the callers say so in their own words
    except CorruptResultsError as exc:
        return str(exc)
    return None


def finished_reason(entry: dict | None, parameters: dict, fingerprint: str, results: Path
                    ) -> str | None:
    """Why an earlier run of a notebook can be reused, or None when it must run (again)."""
    if not entry or entry.get("status") != "finished":
        return None
    if entry.get("parameters") != parameters or entry.get("fingerprint") != fingerprint:
        return None
    if not results.is_file() or results.stat().st_mtime < entry.get("started_at", float("inf")):
        return None
    if _unreadable_results(results):
        return None
    return f"finished {entry.get('finished', '')} in {format_seconds(entry.get('wall_seconds'))}"


def _rerun_reason(entry: dict | None, parameters: dict, fingerprint: str, results: Path,
                  package: str | None = None) -> str:
    if not entry:
        return "first run"
    status = entry.get("status")
    if status in ("running", "interrupted"):
        return "its last run was interrupted; its cached models and answers are reused"
    if status == "failed":
        return "its last run failed"
    if entry.get("parameters") != parameters:
        return "parameters changed"
    if entry.get("fingerprint") != fingerprint:
        if package is not None and entry.get("package_fingerprint") != package:
            return "the kx_utils package changed since its last run"
        return "its code cells changed"
    if not results.is_file():
        return f"its results {results.name} are missing"
    unreadable = _unreadable_results(results)
    if unreadable:
        return f"warning: {unreadable}"
    return "its results are older than its last run"


def _cell_error(exc) -> tuple[str, dict]:
    """A readable description of a papermill cell error, and the same as a dict for the state."""
    source = (exc.source or "").strip().splitlines()
    shown = "\n".join(f"    {line}" for line in source[:12])
    if len(source) > 12:
        shown += f"\n    ... ({len(source) - 12} more lines)"
    cell = f"cell {exc.cell_index}" + (f" (In [{exc.exec_count}])" if exc.exec_count else "")
    text = f"{cell} raised {exc.ename}: {exc.evalue}\n  the cell:\n{shown}"
    return text, {"cell_index": exc.cell_index, "exec_count": exc.exec_count, "ename": exc.ename,
                  "evalue": exc.evalue, "source": exc.source}


@contextlib.contextmanager
def _exclusive(folder: Path, cache: Path, profile_name: str):
    """Refuse a second concurrent run on the same runs folder or the same cache: two runs of one
    profile would overwrite each other's notebooks, and two runs on one cache (``KX_CACHE``
    shared by two runs folders) would train and write the same artifacts at once.  The locks are
    released however the run ends, ``kill -9`` included (:mod:`kx_utils.runtime.locks`)."""
    purpose = f"kx_utils reproduce --profile {profile_name} into {folder} with the cache {cache}"
    try:
        with exclusive(folder / ".pipeline.lock", purpose,
                       "wait for it to end (two runs would overwrite each other's notebooks)"), \
                exclusive(cache / ".reproduce.lock", purpose,
                          "wait for it to end, or give this run a cache of its own with KX_CACHE=<folder> "
                          "(two runs would write the same artifacts at once)"):
            yield
    except FolderBusy as exc:
        raise RunInProgress(f"another `kx_utils reproduce` is running: {exc}") from None


def _count_files(root: Path) -> int:
    """Files under ``root``, hidden ones (the lock, temporary files of a write) aside."""
    count = 0
    for _, _, files in os.walk(root):
        count += sum(not name.startswith(".") for name in files)
    return count


@contextlib.contextmanager
def _runs_folder_for_notebooks(runs: str | os.PathLike | None):
    """The notebooks write their results where ``$KX_RUNS`` points (their kernels inherit this
    process's environment): point it at ``runs`` for the duration of a ``reproduce``."""
    if runs is None:
        yield
        return
    before = os.environ.get("KX_RUNS")
    os.environ["KX_RUNS"] = str(runs_root(runs))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KX_RUNS", None)
        else:
            os.environ["KX_RUNS"] = before


def grid_phase(profile_name: str, run_grid: Callable[[], bool], cache_root_path: str | os.PathLike | None = None
               ) -> tuple[bool, dict]:
    """Run ``run_grid`` (the experiment grid of ``reproduce --grid``) and time it: ``(ok, record)``.

    The record (start, the cache's file count before it, wall seconds, outcome) goes into the
    command's invocation (:func:`reproduce`'s ``grid``), so a run from an empty cache counts the
    grid's time.  A grid that fails or is interrupted is recorded as a failed or interrupted
    command of its own (:func:`record_command`): its time still counts towards the total.
    """
    cache = cache_root(cache_root_path)
    record = {"started": _now(), "cache_files_at_start": _count_files(cache) if cache.is_dir() else 0}
    t0 = time.perf_counter()
    try:
        ok = run_grid()
    except KeyboardInterrupt:
        record.update(wall_seconds=time.perf_counter() - t0, status="interrupted")
        record_command(profile_name, record, cache)
        raise
    record.update(wall_seconds=time.perf_counter() - t0, status="finished" if ok else "failed")
    if not ok:
        record_command(profile_name, record, cache)
    return ok, record


def _new_invocation(cache: Path, *, only: list | None = None, force: bool = False, overrides: dict | None = None,
                    status: str = "running", grid: dict | None = None) -> dict:
    """One command's entry in the pipeline state.  A command that ran the grid first starts when the
    grid started, from the cache the grid found."""
    invocation = {"started": _now(), "only": only, "force": force, "overrides": overrides or {}, "ran": [],
                  "reused": [], "status": status, "cache_root": str(cache),
                  "cache_files_at_start": _count_files(cache) if cache.is_dir() else 0}
    if grid:
        invocation.update(started=grid["started"], cache_files_at_start=grid["cache_files_at_start"], grid=grid)
    return invocation


def record_command(profile_name: str, grid: dict, cache: Path, runs: str | os.PathLike | None = None) -> None:
    """A ``reproduce --grid`` that stopped in its grid: an invocation that ran no notebook."""
    with _exclusive(run_dir(profile_name, runs), cache, profile_name):
        state = load_state(profile_name, runs)
        invocation = _new_invocation(cache, status=grid["status"], grid=grid)
        invocation.update(finished=_now(), wall_seconds=grid["wall_seconds"])
        state["invocations"] = (state["invocations"] + [invocation])[-KEPT_INVOCATIONS:]
        save_state(state, profile_name, runs)


def reproduce(profile_name: str, only: Iterable[str] | None = None, force: bool = False,
              overrides: dict | None = None, runs: str | os.PathLike | None = None,
              notebook_dir: str | os.PathLike | None = None,
              execute: Callable[[Path, Path, dict, Path], None] | None = None,
              log: Callable[[str], None] = print,
              package_root: str | os.PathLike | None = None, grid: dict | None = None) -> dict:
    """Run the selected notebooks of ``profile_name`` in order; return the pipeline state.

    Raises :class:`NotebookFailed` on the first notebook that fails (the rest do
    not run) and :class:`PipelineError` when a run cannot start.  ``execute``
    replaces the papermill call and ``package_root`` the package whose source
    enters the fingerprint (tests).  ``grid`` is the record of the experiment grid that
    ran just before, in the same command (:func:`grid_phase`): the command's invocation then
    starts when the grid started, from the cache the grid found, and its time includes the grid's.
    """
    execute = execute or papermill_execute
    overrides = dict(overrides or {})
    profile = get_profile(profile_name, **overrides)  # a bad name or key fails before anything runs
    selected = select_notebooks(only)
    nb_dir = Path(notebook_dir or NOTEBOOK_DIR)
    missing = [nb for nb in selected if not (nb_dir / f"{nb}.ipynb").is_file()]
    if missing:
        raise PipelineError(f"notebook(s) not found: {', '.join(str(nb_dir / f'{m}.ipynb') for m in missing)}"
                            "; run the ones that exist with --only")
    folder = run_dir(profile.name, runs)
    parameters = {"profile": profile.name, "overrides": overrides}
    cache = cache_root(profile.cache_root)
    package = package_fingerprint(package_root or PACKAGE_ROOT)  # once: an edit during the run counts from the next one

    with _exclusive(folder, cache, profile.name), _runs_folder_for_notebooks(runs):
        state = load_state(profile.name, runs)
        invocation = _new_invocation(cache, only=selected if only else None, force=force, overrides=overrides,
                                     grid=grid)
        state["invocations"] = (state["invocations"] + [invocation])[-KEPT_INVOCATIONS:]
        save_state(state, profile.name, runs)
        log(f"kx reproduce: profile {profile.name}, {len(selected)} notebook(s); executed copies and "
            f"results in {folder}")
        t_start = time.perf_counter()
        try:
            for i, nb in enumerate(selected, 1):
                tag = f"[{i}/{len(selected)}] {nb:28s}"
                source = nb_dir / f"{nb}.ipynb"
                executed, results = folder / f"{nb}.ipynb", results_path(nb, profile.name, runs)
                fingerprint = notebook_fingerprint(source, package=package)
                entry = state["notebooks"].get(nb)
                reused = None if force else finished_reason(entry, parameters, fingerprint, results)
                if reused:
                    log(f"{tag} reused: {reused} with the same parameters and code (--force reruns it)")
                    invocation["reused"].append(nb)
                    continue
                why = "forced" if force and entry else _rerun_reason(entry, parameters, fingerprint, results,
                                                                     package)
                log(f"{tag} running ({why}) ...")
                _run_one(state, nb, source, executed, results, parameters, (fingerprint, package),
                         profile.name, runs, execute, nb_dir, log, tag)
                invocation["ran"].append(nb)
            invocation["status"] = "finished"
        except NotebookFailed:
            invocation["status"] = "failed"
            raise
        except KeyboardInterrupt:
            invocation["status"] = "interrupted"
            raise
        finally:
            invocation["finished"] = _now()
            invocation["wall_seconds"] = time.perf_counter() - t_start + (grid or {}).get("wall_seconds", 0.0)
            save_state(state, profile.name, runs)
        total = sum(state["notebooks"][nb].get("wall_seconds") or 0 for nb in selected)
        log(f"done: {len(invocation['ran'])} ran, {len(invocation['reused'])} reused; this command took "
            f"{format_seconds(invocation['wall_seconds'])}; the {len(selected)} notebook(s) took "
            f"{format_seconds(total)} in their last runs")
    return state


def _run_one(state, nb, source, executed, results, parameters, fingerprints, profile_name, runs,
             execute, nb_dir, log, tag) -> None:
    previous = state["notebooks"].get(nb) or {}
    fingerprint, package = fingerprints
    entry = {"status": "running", "started": _now(), "started_at": time.time(),
             "parameters": parameters, "fingerprint": fingerprint, "package_fingerprint": package,
             "executed": str(executed),
             "results": str(results), "attempts": int(previous.get("attempts", 0)) + 1}
    state["notebooks"][nb] = entry
    save_state(state, profile_name, runs)
    executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        _execute_and_check(entry, nb, source, executed, results, parameters, execute, nb_dir, log, tag)
    finally:  # every outcome is on disk before anything else happens
        save_state(state, profile_name, runs)


def _execute_and_check(entry, nb, source, executed, results, parameters, execute, nb_dir, log, tag):
    t0 = time.perf_counter()
    try:
        execute(source, executed, parameters, nb_dir)
    except KeyboardInterrupt:
        entry.update(status="interrupted", wall_seconds=time.perf_counter() - t0, finished=_now())
        log(f"{tag} interrupted after {format_seconds(entry['wall_seconds'])}; a rerun resumes here")
        raise
    except Exception as exc:  # noqa: BLE001 - every failure stops the run with a readable message
        entry.update(status="failed", wall_seconds=time.perf_counter() - t0, finished=_now())
        if hasattr(exc, "ename") and hasattr(exc, "cell_index"):
            detail, entry["error"] = _cell_error(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
            entry["error"] = {"ename": type(exc).__name__, "evalue": str(exc)}
        message = (f"notebook {nb} failed after {format_seconds(entry['wall_seconds'])}: {detail}\n"
                   f"  executed copy (with the traceback): {executed}\n"
                   f"  fix it, then rerun the same command: finished notebooks are reused")
        raise NotebookFailed(nb, message, executed) from exc
    wall = time.perf_counter() - t0
    if not results.is_file() or results.stat().st_mtime < entry["started_at"]:
        entry.update(status="failed", wall_seconds=wall, finished=_now(),
                     error={"ename": "NoResults", "evalue": f"{results} was not written"})
        raise NotebookFailed(nb, f"notebook {nb} ran to the end but did not write {results} "
                                 f"(its last cell must call run.save()); executed copy: {executed}", executed)
    unreadable = _unreadable_results(results)
    if unreadable:
        entry.update(status="failed", wall_seconds=wall, finished=_now(),
                     error={"ename": "CorruptResults", "evalue": unreadable})
        raise NotebookFailed(nb, f"notebook {nb} ran to the end but {unreadable}; executed copy: {executed}",
                             executed)
    entry.update(status="finished", wall_seconds=wall, finished=_now())
    log(f"{tag} finished in {format_seconds(wall)}")
