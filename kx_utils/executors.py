"""Where the experiment grid's tasks run: one after another in this process, or on Ray.

:func:`run_grid` hands every task whose dependencies are done to an executor, as many at
once as it has slots, and collects outcomes as they finish.  A task that raises is
reported with its settings (:meth:`kx_utils.grid.Task.describe`) and its traceback; the
tasks that depend on it are skipped, every other task still runs.  Outcomes go to the
shared artifact cache, so a rerun loads what the first run made and computes the rest.

Ray (``executor="ray"``) starts a local cluster by default, or joins one with
``address``.  Every worker writes into the same cache, by atomic renames: **the cache
must be on a filesystem every worker sees** (one machine, or a shared mount such as NFS
named by ``KX_CACHE``), and so must the data (``KX_DATA``).  With CUDA each task takes
one GPU; without, each takes ``threads`` CPU cores.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .grid import Task
from .profiles import Profile

EXECUTORS = ("serial", "ray")


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


def execute_task(task: Task, profile: Profile, threads: int | None) -> tuple[bool, str | None, float]:
    """Run one task here; (ok, traceback text or None, seconds).  Never raises for the task's own errors."""
    import torch
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        task.run(profile)
        return True, None, time.perf_counter() - t0
    except Exception:  # reported with the task's settings; the grid goes on
        return False, traceback.format_exc(), time.perf_counter() - t0
    finally:
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
    """Tasks as Ray remote calls, ``workers`` at a time (local cluster unless ``address``)."""

    name = "ray"

    def __init__(self, profile: Profile, workers: int | None = None, threads: int | None = None,
                 address: str | None = None):
        try:
            import ray
        except ImportError as exc:  # pinned in requirements.txt; a partial install lacks it
            raise RuntimeError("the ray executor needs Ray: `pip install -r requirements.txt` "
                               "(or use --executor serial)") from exc
        import torch
        self.ray, self.profile = ray, profile
        gpus = torch.cuda.device_count()
        cores = os.cpu_count() or 1
        if address is None:
            self.slots = workers or (gpus or cores)
            self.threads = threads or max(1, cores // self.slots)
            ray.init(num_cpus=self.slots * self.threads, num_gpus=gpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            self.threads = threads or 1
            self.slots = workers or (gpus or max(1, int(resources.get("CPU", 1)) // self.threads))
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": self.threads}
        self._remote = ray.remote(execute_task).options(max_retries=0, **options)
        self._running: dict = {}

    def submit(self, task: Task) -> None:
        self._running[self._remote.remote(task, self.profile, self.threads)] = task

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
                  address: str | None = None):
    if name == "serial":
        if workers not in (None, 1):
            raise ValueError("the serial executor runs one task at a time: drop --workers or use --executor ray")
        return SerialExecutor(profile, threads)
    if name == "ray":
        return RayExecutor(profile, workers, threads, address)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")


def shareable(profile: Profile) -> Profile:
    """``profile`` with its data and cache folders made absolute, as every worker must see them."""
    from .artifacts import cache_root
    from .data import data_root
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
