"""Fault injection, the long cases (``make test-reliability``): the real smoke ``reproduce``,
SIGKILLed at seeded random moments, must end with the results of an uninterrupted run, and two
uninterrupted smoke runs with the same seed must agree to the last digit on the CPU.

Each run is ``python -m kx_utils reproduce --profile smoke --no-report`` in a subprocess with a
private KX_CACHE and KX_RUNS, against the stand-in datasets of ``$KX_DATA``.  A kill is a SIGKILL
of the whole process tree (the command and the notebook kernel it drives), as a power cut would
do it.  The kills come in storms: a run from an empty cache is killed after a seeded random
delay, rerun, killed again, ... up to ``KX_RELIABILITY_KILLS_PER_STORM`` times (default 5), then
rerun to the end; storms follow until ``KX_RELIABILITY_KILLS`` kills (default 20) have landed.
After every kill each artifact in the cache must verify and load, and the final results must
equal the uninterrupted run's.  A run that ends before its kill starts a new storm from an empty
cache.  Each storm first runs a seeded random number of the notebooks undisturbed (``--only``), so
that its kills land in the later notebooks too, and the delays are spread so that the kills of a
storm cover the rest of the run (the upper bound is twice the uninterrupted run's wall time over a
storm's number of kills).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kx_utils.orchestration.pipeline import NOTEBOOKS
from kx_utils.runtime import integrity
from tests.conftest import REPO

pytestmark = pytest.mark.reliability

KILLS = int(os.environ.get("KX_RELIABILITY_KILLS", "20"))
# a storm stops after this many kills, so that several storms draw their undisturbed heads and the kills
# reach the last notebooks too (one long storm spent all of its kills in 03 and 04)
KILLS_PER_STORM = int(os.environ.get("KX_RELIABILITY_KILLS_PER_STORM", "5"))
SEED = int(os.environ.get("KX_RELIABILITY_SEED", "13"))


def _volatile(key: str) -> bool:
    """What differs between two runs that computed the same numbers: clocks, the machine, how many
    queries *this* run sent (none for answers a killed run had already cached) and whether *this* run
    trained a victim or loaded it (``from_cache``: a victim finished before a kill is loaded)."""
    return (key in ("created", "environment", "from_cache") or key.endswith("seconds")
            or key.startswith("queries_sent"))


def _require_data() -> Path:
    data = os.environ.get("KX_DATA")
    if not data or not Path(data).is_dir():
        pytest.fail("the reliability suite runs the smoke profile on the stand-in datasets: set KX_DATA "
                    "(make test-reliability sets it to ../shared/datasets)")
    return Path(data)


def _environment(cache: Path, runs: Path) -> dict:
    # PYTHONPATH: the command and its notebook kernels import this checkout's kx_utils, not whichever
    # copy the virtualenv has installed
    return {**os.environ, "KX_CACHE": str(cache), "KX_RUNS": str(runs), "KX_DATA": str(_require_data()),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _start(cache: Path, runs: Path, log: Path, only: list[str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "kx_utils", "reproduce", "--profile", "smoke", "--no-report"]
    with open(log, "ab") as out:
        return subprocess.Popen(command + (["--only", *only] if only else []), cwd=REPO,
                                env=_environment(cache, runs), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every descendant, stopped first so that none can start another (the notebook
    kernel runs in a session of its own, so a process-group kill would miss it)."""
    stopped, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        stopped.append(pid)
        todo.extend(_children(pid))
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _progress(message: str) -> None:
    """A line on the terminal as the suite goes (make test-reliability runs pytest with -s): it runs for
    hours, and what it measured so far should survive it being stopped."""
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", flush=True)


# exit statuses of a reproduce stopped by a signal from outside this suite (SIGINT, SIGTERM): on a shared
# machine another user's clean-up can do that; the run is then resumed, as a user would, and said so
INTERRUPTED_FROM_OUTSIDE = (130, -signal.SIGINT, -signal.SIGTERM)


def _run_to_end(cache: Path, runs: Path, log: Path, resumes: int = 3, only: list[str] | None = None) -> float:
    t0 = time.perf_counter()
    for _ in range(resumes + 1):
        code = _start(cache, runs, log, only).wait()
        if code not in INTERRUPTED_FROM_OUTSIDE:
            break
        _progress(f"reproduce into {runs} was stopped from outside (exit {code}); resuming it")
    assert code == 0, f"reproduce failed (exit {code}); its output: {log}\n{log.read_text()[-3000:]}"
    return time.perf_counter() - t0


def _numbers(document):
    """A results document without what differs between equal runs (clocks, machine)."""
    if isinstance(document, dict):
        return {k: _numbers(v) for k, v in document.items() if not _volatile(k)}
    if isinstance(document, list):
        return [_numbers(v) for v in document]
    return document


def _results(runs: Path) -> dict:
    return {nb: _numbers(json.loads((runs / "smoke" / f"{nb}.json").read_text())) for nb in NOTEBOOKS}


def _unloadable(cache: Path) -> list[str]:
    """Every artifact and checkpoint in the cache that does not verify and load."""
    bad = []
    for path in sorted(cache.rglob("*")):
        if path.suffix in (".pt", ".ckpt") and path.is_file():
            try:
                integrity.load(path)
            except Exception as exc:  # noqa: BLE001 - each failure is reported by name
                bad.append(f"{path.relative_to(cache)}: {exc}")
    return bad


def _running_notebook(runs: Path) -> str:
    """The notebook a killed run was executing, from its pipeline state ("start" before the first one)."""
    try:
        state = json.loads((runs / "smoke" / "pipeline.json").read_text())
    except (OSError, ValueError):
        return "start"
    running = [nb for nb, entry in state.get("notebooks", {}).items() if entry.get("status") == "running"]
    return running[0][:2] if running else "between notebooks"


def _differences(got: dict, want: dict, where: str = "") -> list[str]:
    if isinstance(got, dict) and isinstance(want, dict):
        out = [f"{where}/{k}: missing" for k in want.keys() - got.keys()]
        out += [f"{where}/{k}: unexpected" for k in got.keys() - want.keys()]
        return out + [d for k in want.keys() & got.keys() for d in _differences(got[k], want[k], f"{where}/{k}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The smoke run from an empty cache, undisturbed: the reference, and its wall time."""
    root = tmp_path_factory.mktemp("uninterrupted")
    wall = _run_to_end(root / "cache", root / "runs", root / "log.txt")
    assert not _unloadable(root / "cache")
    _progress(f"uninterrupted smoke run: {wall:.0f} s")
    return _results(root / "runs"), wall


def test_sigkill_at_seeded_random_moments_then_rerun_loses_nothing(uninterrupted, tmp_path, fault_ledger):
    reference, wall = uninterrupted
    rng = random.Random(SEED)
    longest = max(20.0, 2 * wall / min(KILLS, KILLS_PER_STORM))
    kills, survived, lost, storms, problems = 0, 0, 0, 0, []
    hit: dict[str, int] = {}  # where the kills landed: a notebook's number, "start", "between notebooks"
    while kills < KILLS:
        storms += 1
        cache, runs, log = tmp_path / f"storm{storms}" / "cache", tmp_path / f"storm{storms}" / "runs", \
            tmp_path / f"storm{storms}" / "log.txt"
        runs.mkdir(parents=True)
        # a storm's kills start after a randomly chosen number of notebooks has run undisturbed, so that
        # kills land in every notebook, not only in the first ones (each rerun pays the start-up again)
        head = list(NOTEBOOKS[:rng.randrange(len(NOTEBOOKS))])
        if head:
            _run_to_end(cache, runs, log, only=head)
            _progress(f"storm {storms}: its kills start after {head[-1]}")
        storm_kills, ended = [], None
        while kills < KILLS and len(storm_kills) < KILLS_PER_STORM and ended is None:
            delay = rng.uniform(2.0, longest)
            process = _start(cache, runs, log)
            try:
                ended = process.wait(timeout=delay)  # the run ended before its kill: the storm is over
            except subprocess.TimeoutExpired:
                _kill_tree(process.pid)
                process.wait()
                kills += 1
                hit_in = _running_notebook(runs)
                hit[hit_in] = hit.get(hit_in, 0) + 1
                unloadable = _unloadable(cache)
                storm_kills.append(not unloadable)
                problems += [f"storm {storms}, kill after {delay:.1f}s: {u}" for u in unloadable]
                _progress(f"kill {kills} (storm {storms}) after {delay:.1f} s, in {hit_in}: "
                          f"{len(unloadable)} unloadable, "
                          f"{sum(1 for _ in cache.rglob('*.tmp'))} temporary file(s) left")
                continue
            if ended in INTERRUPTED_FROM_OUTSIDE:
                _progress(f"storm {storms}: a run was stopped from outside (exit {ended}); resuming")
                ended = None
        if ended is None:
            _run_to_end(cache, runs, log)  # the rerun after the storm's last kill
        else:
            assert ended == 0, f"reproduce failed (exit {ended}); its output: {log}\n{log.read_text()[-3000:]}"
        differences = _differences(_results(runs), reference)
        _progress(f"storm {storms} ended: {len(storm_kills)} kill(s), {len(differences)} difference(s)")
        problems += [f"storm {storms}: results differ at {d}" for d in differences[:20]]
        problems += [f"storm {storms}, after its last run: {u}" for u in _unloadable(cache)]
        survived += sum(storm_kills) if not differences else 0
        lost += len(storm_kills) if differences else 0
    where = ", ".join(f"{k} x{v}" for k, v in sorted(hit.items()))
    fault_ledger(f"SIGKILL of the smoke reproduce at seeded random moments (in {storms} storm(s); in {where}), "
                 "then rerun", kills, survived, lost)
    assert not problems, "\n".join(problems)
    assert (survived, lost) == (kills, 0)


def test_two_smoke_runs_with_the_same_seed_give_identical_numbers(uninterrupted, tmp_path, fault_ledger):
    reference, _ = uninterrupted
    wall = _run_to_end(tmp_path / "cache", tmp_path / "runs", tmp_path / "log.txt")
    differences = _differences(_results(tmp_path / "runs"), reference)
    _progress(f"second smoke run: {wall:.0f} s, {len(differences)} difference(s) from the first")
    fault_ledger("determinism: a second smoke run from an empty cache, same seed (CPU)", 1,
                 int(not differences), int(bool(differences)))
    assert not differences, "\n".join(differences[:40])
