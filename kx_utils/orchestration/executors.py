"""Where the experiment grid's tasks run: one after another in this process, or on Ray.

:func:`run_grid` hands every task whose dependencies are done to an executor, as many at
once as it has slots, and collects outcomes as they finish.  A task that raises is
reported with its settings (:meth:`kx_utils.orchestration.grid.Task.describe`) and its traceback; the
tasks that depend on it are skipped, every other task still runs.  Outcomes go to the
shared artifact cache, so a rerun loads what the first run made and computes the rest.

Ray (``executor="ray"``) starts a local cluster by default, or joins one with
``address``.  Every worker writes into the same cache, by atomic renames: **the cache
must be on a filesystem every worker sees** (one machine, or a shared mount such as NFS
named by ``KX_CACHE``), and so must the data (``KX_DATA``).

With CUDA each task takes one GPU and ``threads`` CPU cores (default: the machine's cores over
its GPUs): its data decoding and the detectors' scikit-learn fits run on those cores, and Ray
sets a task's ``OMP_NUM_THREADS`` to its CPU count.  Each GPU task also gets a **fresh worker
process** (``max_calls=1``): what a task leaves in its process (the decoded sets memoised by
:mod:`kx_utils.experiments.detection_sets`, fitted Mahalanobis Gaussians, cached backbones, a CUDA context
holding memory) would otherwise carry over into the next task.  Ray gives GPU functions
``max_calls=1`` only when ``num_gpus`` is set in ``@ray.remote`` itself, and ``.options()``
cannot set ``max_calls`` at all, so it is set on the remote function here.  Without CUDA each
task takes ``threads`` CPU cores and workers are reused, as before (``fresh_workers`` forces
either).

Worker output reaches the driver (``log_to_driver``), each line prefixed by Ray with the task's
name; a progress bar's redraws become one line every :data:`PROGRESS_EVERY_S` seconds
(:class:`ThrottledProgress`), since Ray forwards whole lines only.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, TextIO

from ..config.schema import Profile
from ..experiments.registry import Task

EXECUTORS = ("serial", "ray")
# a Ray worker's progress bar shown as one line this often (a 200-epoch training is hours of one bar)
PROGRESS_EVERY_S = 60.0


@dataclass
class Outcome:
    task: str
    status: str  # "done" | "failed" | "skipped"
    seconds: float = 0.0
    error: str | None = None
    settings: dict = field(default_factory=dict)


@dataclass
class GridReport:
    profile: str
    executor: str
    workers: int
    outcomes: list[Outcome]
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return all(o.status == "done" for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def text(self) -> str:
        lines = [f"grid {self.profile} on {self.executor} ({self.workers} worker(s)): {self.count('done')} done, "
                 f"{self.count('failed')} failed, {self.count('skipped')} skipped, in {self.wall_seconds:.1f} s"]
        for o in self.outcomes:
            if o.status == "failed":
                lines += [f"FAILED {o.task}: settings {o.settings}", *("    " + line for line in
                                                                      (o.error or "").rstrip().splitlines()[-6:])]
            elif o.status == "skipped":
                lines.append(f"skipped {o.task}: {o.error}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"profile": self.profile, "executor": self.executor, "workers": self.workers,
                "wall_seconds": self.wall_seconds, "outcomes": [o.__dict__ for o in self.outcomes]}


class ThrottledProgress(io.TextIOBase):
    """A text stream over ``stream`` that turns a progress bar's carriage-return redraws into lines.

    A Ray worker's output goes to a log file that Ray forwards to the driver line by line, so a
    tqdm bar (redrawn in place with ``\\r``) would show nothing until it closes.  Here every
    complete redraw is a candidate line, and one is written every ``every_s`` seconds (the
    first at once); text that ends in a newline passes unchanged.
    """

    def __init__(self, stream: TextIO, every_s: float, clock: Callable[[], float] = time.monotonic):
        if not every_s >= 0:
            raise ValueError(f"a progress interval is a number of seconds >= 0, got {every_s!r}")
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self._line = ""
        self._shown_at = -math.inf

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for i, piece in enumerate(text.replace("\r\n", "\n").split("\n")):
            if i:  # a newline ended the line before this piece: it passes whatever its age
                self._emit(self._line)
                self._line = ""
            *redraws, self._line = (self._line + piece).split("\r")
            latest = next((r for r in reversed(redraws) if r.strip()), None)
            if latest is not None and self.clock() - self._shown_at >= self.every_s:
                self._emit(latest)
        return len(text)

    def _emit(self, line: str) -> None:
        self.stream.write(line.rstrip() + "\n")
        self.stream.flush()
        self._shown_at = self.clock()

    def flush(self) -> None:  # a partial line stays held: it is shown once it is complete
        self.stream.flush()

    def fileno(self) -> int:  # for code that writes to the descriptor itself (faulthandler)
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")


def execute_task(task: Task, profile: Profile, threads: int | None,
                 progress_every_s: float | None = None) -> tuple[bool, str | None, float]:
    """Run one task here; (ok, traceback text or None, seconds).  Never raises for the task's own errors.

    ``progress_every_s``: show progress bars on stderr as one line that often (:class:`ThrottledProgress`).
    """
    import torch
    before, stderr = torch.get_num_threads(), sys.stderr
    if threads:
        torch.set_num_threads(threads)
    if progress_every_s is not None:
        sys.stderr = ThrottledProgress(stderr, progress_every_s)
    t0 = time.perf_counter()
    try:
        task.run(profile)
        return True, None, time.perf_counter() - t0
    except Exception:  # reported with the task's settings; the grid goes on
        return False, traceback.format_exc(), time.perf_counter() - t0
    finally:
        sys.stderr = stderr
        torch.set_num_threads(before)


class SerialExecutor:
    """Tasks one at a time, in this process."""

    name = "serial"

    def __init__(self, profile: Profile, threads: int | None = None):
        self.profile, self.threads, self.slots = profile, threads, 1
        self._finished: list[tuple[Task, tuple]] = []

    def submit(self, task: Task) -> None:
        self._finished.append((task, execute_task(task, self.profile, self.threads)))

    def wait(self) -> list[tuple[Task, tuple]]:
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        pass


class RayExecutor:
    """Tasks as Ray remote calls, ``workers`` at a time (local cluster unless ``address``).

    ``threads``: CPU cores (and torch threads) per task; default the cores over the GPUs with CUDA,
    else the cores over ``workers``.  ``fresh_workers``: a new worker process per task (default:
    with CUDA only).  ``progress_every_s``: a progress line per task that often (None: bars off the
    driver's screen, as Ray would show them: only once finished).
    """

    name = "ray"

    def __init__(self, profile: Profile, workers: int | None = None, threads: int | None = None,
                 address: str | None = None, fresh_workers: bool | None = None,
                 progress_every_s: float | None = PROGRESS_EVERY_S):
        for label, value in (("workers", workers), ("threads", threads)):
            if value is not None and value < 1:
                raise ValueError(f"--{label} takes a positive count, got {value}")
        # progress lines of tasks named alike (seed0, seed1) differ only in numbers, which Ray's driver
        # folds into "[repeated Nx]"; read when Ray is first imported, so set before it
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        try:
            import ray
        except ImportError as exc:  # pinned in requirements.txt; a partial install lacks it
            raise RuntimeError("the ray executor needs Ray: `pip install -r requirements.txt` "
                               "(or use --executor serial)") from exc
        import torch
        self.ray, self.profile, self.progress_every_s = ray, profile, progress_every_s
        gpus = torch.cuda.device_count()
        cores = os.cpu_count() or 1
        if address is None:
            self.slots = workers or (gpus or cores)
            # with GPUs: the machine's cores shared out over them, as one task per GPU runs at a time
            self.threads = threads or max(1, cores // (min(self.slots, gpus) if gpus else self.slots))
            ray.init(num_cpus=self.slots * self.threads, num_gpus=gpus, include_dashboard=False,
                     log_to_driver=True, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=True, configure_logging=False)
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            cpus = int(resources.get("CPU", 1))
            self.threads = threads or (max(1, cpus // gpus) if gpus else 1)
            self.slots = workers or (gpus or max(1, cpus // self.threads))
        self.gpus = gpus
        self.fresh_workers = bool(gpus) if fresh_workers is None else fresh_workers
        # max_calls belongs to the remote function: .options() refuses it (and its GPU default is only
        # applied when num_gpus is given here, not in .options())
        decorator = ray.remote(max_calls=1, max_retries=0) if self.fresh_workers else ray.remote(max_retries=0)
        self._function = decorator(execute_task)
        # num_cpus with GPUs too: Ray sets OMP_NUM_THREADS to it, which scikit-learn's BLAS then uses
        self.options = {"num_cpus": self.threads, **({"num_gpus": 1} if gpus else {})}
        self._running: dict = {}

    def submit(self, task: Task) -> None:
        remote = self._function.options(name=task.name, **self.options)  # the name prefixes its log lines
        self._running[remote.remote(task, self.profile, self.threads, self.progress_every_s)] = task

    def wait(self) -> list[tuple[Task, tuple]]:
        if not self._running:
            return []
        ready, _ = self.ray.wait(list(self._running), num_returns=1)
        out = []
        for ref in ready:
            task = self._running.pop(ref)
            try:
                out.append((task, self.ray.get(ref)))
            except Exception as exc:  # the worker itself died (killed, out of memory)
                out.append((task, (False, f"the Ray worker running it died: {exc!r}", 0.0)))
        return out

    def close(self) -> None:
        self.ray.shutdown()


def make_executor(name: str, profile: Profile, workers: int | None = None, threads: int | None = None,
                  address: str | None = None, fresh_workers: bool | None = None):
    if name == "serial":
        if workers not in (None, 1):
            raise ValueError("the serial executor runs one task at a time: drop --workers or use --executor ray")
        return SerialExecutor(profile, threads)
    if name == "ray":
        return RayExecutor(profile, workers, threads, address, fresh_workers)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")


def shareable(profile: Profile) -> Profile:
    """``profile`` with its data and cache folders made absolute, as every worker must see them."""
    from ..data.catalog import data_root
    from ..runtime.artifacts import cache_root
    return profile.replace(data_root=str(data_root(profile.data_root)), cache_root=str(cache_root(profile.cache_root)))


def run_grid(tasks: list[Task], executor, log: Callable[[str], None] = print) -> GridReport:
    """Run ``tasks`` (dependencies first) on ``executor``; a dependency outside ``tasks`` counts as done."""
    names = {t.name for t in tasks}
    pending = list(tasks)
    done: set[str] = set()
    outcomes: dict[str, Outcome] = {}
    running = 0
    t0 = time.perf_counter()
    try:
        while pending or running:
            for task in list(pending):
                blocked = [d for d in task.after if d in names and outcomes.get(d, Outcome(d, "")).status
                           in ("failed", "skipped")]
                if blocked:
                    pending.remove(task)
                    outcomes[task.name] = Outcome(task.name, "skipped", error=f"needs {blocked[0]}, which did not finish",
                                                  settings=task.describe())
            ready = [t for t in pending if all(d in done or d not in names for d in t.after)]
            for task in ready[:max(0, executor.slots - running)]:
                pending.remove(task)
                log(f"[start] {task.name}")  # hours may pass before its outcome line
                executor.submit(task)
                running += 1
            if not running:
                if pending:  # every pending task waits on another pending one
                    raise AssertionError(f"the grid's dependencies form a cycle: {[t.name for t in pending]}")
                break
            for task, (ok, error, seconds) in executor.wait():
                running -= 1
                outcome = Outcome(task.name, "done" if ok else "failed", seconds, error, task.describe())
                outcomes[task.name] = outcome
                if ok:
                    done.add(task.name)
                log(f"[{len(outcomes)}/{len(tasks)}] {task.name}: {outcome.status} in {seconds:.1f} s"
                    + ("" if ok else f" -- {(error or '').strip().splitlines()[-1]}"))
    finally:
        executor.close()
    return GridReport(executor.profile.name, executor.name, executor.slots, [outcomes[t.name] for t in tasks if t.name in outcomes],
                      time.perf_counter() - t0)
