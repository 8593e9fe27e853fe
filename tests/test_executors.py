"""kx_utils.orchestration.executors: how Ray is asked to run the grid's tasks, and what a worker shows the driver."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import types

import pytest
import torch

from kx_utils import get_profile
from kx_utils.experiments.registry import Task
from kx_utils.orchestration.executors import (
    RayExecutor,
    ThrottledProgress,
    execute_task,
    make_executor,
    run_grid,
)


class FakeRay(types.ModuleType):
    """What RayExecutor asks of Ray, recorded: ray.init, ray.remote and each .options(...)."""

    def __init__(self, cluster: dict | None = None):
        super().__init__("ray")
        self.inits, self.remotes, self.options, self.cluster = [], [], [], cluster or {}

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def cluster_resources(self):
        return self.cluster

    def remote(self, **decorator_kwargs):
        fake = self

        def decorate(function):
            fake.remotes.append(decorator_kwargs)

            class Remote:
                def options(self, **options):
                    fake.options.append(options)
                    return types.SimpleNamespace(remote=lambda *args: object())  # an object ref
            return Remote()
        return decorate


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` CPU cores and ``gpus`` GPUs, with a fake Ray."""
    def make(cores: int, gpus: int, cluster: dict | None = None) -> FakeRay:
        fake = FakeRay(cluster)
        monkeypatch.setitem(sys.modules, "ray", fake)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        return fake
    return make


def _submit_one(executor) -> dict:
    executor.submit(Task("surrogate/table2/caltech/seed1", "02_knockoff", "kx_utils.experiments.attack:knockoff", ("caltech",)))
    return executor.options


def test_gpu_tasks_get_a_fresh_process_and_the_machines_cores_over_its_gpus(machine):
    fake = machine(cores=32, gpus=4)
    executor = RayExecutor(get_profile("smoke"))
    # max_calls on the remote function itself: .options() may not set it, and Ray's GPU default
    # (max_calls=1) is not applied when num_gpus only comes through .options()
    assert fake.remotes == [{"max_calls": 1, "max_retries": 0}]
    _submit_one(executor)
    assert fake.options == [{"name": "surrogate/table2/caltech/seed1", "num_cpus": 8, "num_gpus": 1}]
    assert (executor.slots, executor.threads) == (4, 8)
    assert fake.inits == [{"num_cpus": 32, "num_gpus": 4, "include_dashboard": False, "log_to_driver": True,
                           "configure_logging": False}]


def test_the_cpus_of_a_gpu_task_can_be_chosen(machine):
    fake = machine(cores=32, gpus=4)
    executor = RayExecutor(get_profile("smoke"), threads=3)
    _submit_one(executor)
    assert fake.options[-1] == {"name": "surrogate/table2/caltech/seed1", "num_cpus": 3, "num_gpus": 1}
    assert fake.inits[-1]["num_cpus"] == 12


def test_cpu_only_runs_keep_their_workers_and_cores(machine):
    fake = machine(cores=16, gpus=0)
    executor = RayExecutor(get_profile("smoke"), workers=2, threads=1)
    assert fake.remotes == [{"max_retries": 0}]  # no max_calls: a CPU worker process is reused
    _submit_one(executor)
    assert fake.options == [{"name": "surrogate/table2/caltech/seed1", "num_cpus": 1}]
    assert fake.inits[-1]["num_cpus"] == 2 and fake.inits[-1]["num_gpus"] == 0
    default = RayExecutor(get_profile("smoke"), workers=4)
    assert (default.slots, default.threads) == (4, 4)


def test_a_cluster_shares_its_cpus_out_over_its_gpus(machine):
    fake = machine(cores=2, gpus=0, cluster={"CPU": 128.0, "GPU": 8.0})
    executor = RayExecutor(get_profile("smoke"), address="ray://head:10001")
    assert (executor.slots, executor.threads) == (8, 16)
    assert fake.remotes == [{"max_calls": 1, "max_retries": 0}]
    assert _submit_one(executor) == {"num_cpus": 16, "num_gpus": 1}


def test_fresh_workers_can_be_forced_either_way(machine):
    fake = machine(cores=4, gpus=0)
    RayExecutor(get_profile("smoke"), fresh_workers=True)
    machine(cores=4, gpus=2)
    RayExecutor(get_profile("smoke"), fresh_workers=False)
    assert fake.remotes[0] == {"max_calls": 1, "max_retries": 0}
    assert sys.modules["ray"].remotes == [{"max_retries": 0}]


def test_counts_that_are_not_positive_are_refused(machine):
    machine(cores=4, gpus=0)
    with pytest.raises(ValueError, match="--threads takes a positive count, got 0"):
        RayExecutor(get_profile("smoke"), threads=0)
    with pytest.raises(ValueError, match="--workers takes a positive count, got -1"):
        RayExecutor(get_profile("smoke"), workers=-1)


# ---------------------------------------------------------------- progress lines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_redraws_become_one_line_per_interval():
    out, clock = io.StringIO(), Clock()
    stream = ThrottledProgress(out, 60.0, clock)
    stream.write("\rtrain  1%")  # tqdm's redraws: a carriage return, the bar, no newline
    stream.write("\rtrain  2%   ")
    assert out.getvalue() == "train  1%\n"  # the first complete redraw, at once
    clock.now = 30.0
    stream.write("\rtrain  3%")
    assert out.getvalue() == "train  1%\n"  # within the minute: held
    clock.now = 61.0
    stream.write("\rtrain 40%")
    assert out.getvalue() == "train  1%\ntrain  3%\n"  # the newest complete redraw, trailing blanks gone
    stream.write("\rtrain 100%\n")  # the bar closes: its last state passes whatever its age
    stream.write("a whole line\n")
    assert out.getvalue().splitlines() == ["train  1%", "train  3%", "train 100%", "a whole line"]


def test_a_bad_progress_interval_is_refused():
    with pytest.raises(ValueError, match="seconds >= 0"):
        ThrottledProgress(io.StringIO(), -1.0)


def test_execute_task_shows_progress_through_the_throttle_and_restores_stderr(tmp_path, monkeypatch):
    (tmp_path / "noisy_tasks.py").write_text(textwrap.dedent("""
        import sys

        def bar(profile, store=None):
            for i in range(3):
                sys.stderr.write(f"\\rstep {i}")
            sys.stderr.write("\\n")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", seen)
    profile = get_profile("smoke", cache_root=str(tmp_path / "cache"))
    ok, error, _ = execute_task(Task("bar", "01_victims", "noisy_tasks:bar"), profile, 1, progress_every_s=3600.0)
    assert ok, error
    assert sys.stderr is seen
    assert seen.getvalue() == "step 0\nstep 2\n"  # the first redraw, then the closing one


def test_the_grid_log_says_when_a_task_starts(tmp_path, monkeypatch):
    (tmp_path / "quiet_tasks.py").write_text("def nothing(profile, store=None):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lines = []
    profile = get_profile("smoke", cache_root=str(tmp_path / "cache"))
    run_grid([Task("a", "01_victims", "quiet_tasks:nothing")], make_executor("serial", profile), log=lines.append)
    assert lines[0] == "[start] a" and lines[1].startswith("[1/1] a: done in ")


# ---------------------------------------------------------------- real Ray, on the CPU

PID_TASKS = """
    import os
    from pathlib import Path

    def pid(profile, name, store=None, folder=None):
        Path(folder, name).write_text(f"{os.getpid()} {os.environ.get('OMP_NUM_THREADS')}")
"""


def test_fresh_workers_run_consecutive_tasks_in_new_processes(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    (tmp_path / "pid_tasks.py").write_text(textwrap.dedent(PID_TASKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so that Ray sets it from the task's CPUs
    out = tmp_path / "seen"
    out.mkdir()
    # one worker slot: the second task starts only once the first has finished
    tasks = [Task(n, "01_victims", "pid_tasks:pid", (n,), {"folder": str(out)}) for n in ("first", "second")]
    profile = get_profile("smoke", cache_root=str(tmp_path / "cache"))
    report = run_grid(tasks, make_executor("ray", profile, workers=1, threads=2, fresh_workers=True),
                      log=lambda m: None)
    assert report.ok, report.text()
    (pid1, omp1), (pid2, omp2) = [(out / n).read_text().split() for n in ("first", "second")]
    assert pid1 != pid2
    assert omp1 == omp2 == "2"  # Ray's OMP_NUM_THREADS follows the task's num_cpus
