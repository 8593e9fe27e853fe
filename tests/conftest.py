"""Shared fixtures: a tiny ImageFolder tree in the stand-in layout, made in the test."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kx_utils import get_profile
from kx_utils.runtime.artifacts import ArtifactStore

REPO = Path(__file__).resolve().parent.parent
# `make test-gpu` sets KX_TEST_DEVICE=cuda: the same unit tests then run every model on the GPU
TEST_DEVICE = os.environ.get("KX_TEST_DEVICE", "cpu")


PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200)]


def write_image_folder(root: Path, classes: int, per_class: int, size: int = 16, seed: int = 0,
                       pattern: str = "colour") -> None:
    """Images whose class is visible: each class has its own colour (or stripe direction)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            if pattern == "colour":
                img = np.array(PALETTE[c % len(PALETTE)], dtype=float) + rng.normal(0, 12, (size, size, 3))
            else:  # "noise": no class structure, the attacker's natural images
                img = rng.uniform(0, 255, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


@pytest.fixture
def tiny_data(tmp_path_factory) -> Path:
    """A KX_DATA folder holding cifar10 (victim) and tiny_imagenet (attacker pool) stand-ins."""
    root = tmp_path_factory.mktemp("kx_data")
    write_image_folder(root / "cifar10" / "train", classes=4, per_class=24, seed=1)
    write_image_folder(root / "cifar10" / "test", classes=4, per_class=8, seed=2)
    write_image_folder(root / "tiny_imagenet" / "train", classes=6, per_class=20, seed=3, pattern="noise")
    write_image_folder(root / "tiny_imagenet" / "val", classes=6, per_class=4, seed=4, pattern="noise")
    return root


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "cache")


@pytest.fixture
def tiny_profile(tiny_data, tmp_path):
    """The smoke profile pointed at the tiny data, 16 px, quick recipes."""
    size = {k: 16 for k in get_profile("smoke").image_size}
    return get_profile("smoke", data_root=str(tiny_data), cache_root=str(tmp_path / "cache"),
                       image_size=size, scratch_image_size=16, train_per_class=None,
                       test_per_class=None, pool_size=None, transfer_budget=60,
                       victim_recipe={"epochs": 2, "batch_size": 16, "lr": 0.01, "augment": "none"},
                       scratch_recipe={"epochs": 8, "batch_size": 16},
                       surrogate_recipe={"epochs": 2, "batch_size": 16, "lr": 0.01},
                       device=TEST_DEVICE, progress=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is as fast, and does not stall on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class SmokeEnv:
    runs: Path
    cache: Path


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory) -> SmokeEnv:
    """The KX_RUNS and KX_CACHE of tests/test_notebooks.py's smoke runs, empty at first: its first run of
    01 trains every victim there.  tests/test_notebooks_in_browser.py, which runs after it, starts from a
    copy of those victims, as a reader who ran 01 before opening 02."""
    if not os.environ.get("KX_DATA"):
        pytest.skip("KX_DATA is not set: the notebook checks need the stand-in datasets")
    env = SmokeEnv(tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("kx_cache"))
    assert not any(env.cache.iterdir())  # nothing cached yet: the first run computes everything
    return env


# ---------------------------------------------------------------- the smoke grid, then the notebooks

# A batch size above 64, so that the report's claim 5 has something to judge (smoke trains 16 and 64), and
# smoke's surrogate batch size (32), whose Table 7 column is Table 2's runs (tests/test_grid_smoke.py)
SMOKE_GRID_OVERRIDES = {"batch_sizes": [32, 64, 128]}


def cache_files(root: Path) -> dict[str, Path]:
    """The artifacts under a cache folder: not its lock files (".reproduce.lock") nor training checkpoints."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix != ".ckpt" and not p.name.startswith(".")}


@dataclass
class SmokeGrid:
    caches: dict  # executor name -> the cache its grid filled
    reports: dict  # executor name -> its GridReport
    runs: Path  # the seven notebooks' results, run on the Ray grid's cache with every fit() forbidden
    state: dict  # reproduce's pipeline state of that run
    before: dict  # artifact -> mtime, before the notebooks ran
    after: dict  # ... and after


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory) -> SmokeGrid:
    """The smoke grid on Ray (two workers) and serially (notebooks 01-02's tasks, for CI's time), one
    torch thread per task on both sides; then ``reproduce`` on the Ray cache with training forbidden.
    tests/test_grid_smoke.py checks the grids, tests/test_report.py builds the report from those runs."""
    if not os.environ.get("KX_DATA"):
        pytest.skip("KX_DATA is not set: the grid needs the stand-in datasets")
    pytest.importorskip("ray")
    from kx_utils.core.train import NO_TRAINING_ENV
    from kx_utils.orchestration.executors import make_executor, run_grid, shareable
    from kx_utils.orchestration.grid import grid_tasks
    from kx_utils.orchestration.pipeline import reproduce

    caches, reports = {}, {}
    # `make test` names the Ray grid's cache (KX_SMOKE_GRID_CACHE, an empty folder) so that nbval's run of
    # the notebooks afterwards loads what the grid made instead of training the smoke profile once more
    named = os.environ.get("KX_SMOKE_GRID_CACHE")
    for name, workers, notebooks in (("ray", 2, None), ("serial", None, ("01_victims", "02_knockoff"))):
        cache = Path(named) if named and name == "ray" else tmp_path_factory.mktemp(f"cache_{name}")
        if any(cache.glob("*/*.pt")):
            pytest.fail(f"KX_SMOKE_GRID_CACHE={cache} already holds artifacts: the smoke grid must start from an "
                        "empty cache (give it a new folder)")
        profile = shareable(get_profile("smoke", cache_root=str(cache), **SMOKE_GRID_OVERRIDES))
        report = run_grid(grid_tasks(profile, notebooks), make_executor(name, profile, workers=workers, threads=1),
                          log=lambda m: None)
        assert report.ok, report.text()
        caches[name], reports[name] = cache, report
    runs = tmp_path_factory.mktemp("runs_after_grid")
    before = {name: path.stat().st_mtime_ns for name, path in cache_files(caches["ray"]).items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KX_CACHE", str(caches["ray"]))
        mp.setenv("KX_RUNS", str(runs))  # the notebooks' kernels write their JSON there
        mp.setenv(NO_TRAINING_ENV, "1")  # any fit() in a notebook raises
        state = reproduce("smoke", runs=runs, overrides=SMOKE_GRID_OVERRIDES, log=lambda line: None)
    after = {name: path.stat().st_mtime_ns for name, path in cache_files(caches["ray"]).items()}
    return SmokeGrid(caches, reports, runs, state, before, after)


# ---------------------------------------------------------------- the fault-injection ledger

# Each fault-injection test records what it did (tests/test_faults*.py, tests/test_integrity.py,
# tests/test_reliability.py); the table is printed at the end of the run.
FAULT_LEDGER: list[tuple[str, int, int, int]] = []


@pytest.fixture
def fault_ledger():
    """``record(fault, trials, survived, data_lost)``: one row of the fault table."""
    def record(fault: str, trials: int, survived: int, data_lost: int) -> None:
        FAULT_LEDGER.append((fault, trials, survived, data_lost))
    return record


def pytest_collection_modifyitems(config, items):
    """The reliability suite runs for an hour or more: only when ``-m`` names it (make test-reliability)."""
    if "reliability" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long fault-injection suite: run it with `make test-reliability`")
    for item in items:
        if "reliability" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if not FAULT_LEDGER:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write_line("| fault | trials | survived | data lost |")
    terminalreporter.write_line("|---|---:|---:|---:|")
    for fault, trials, survived, lost in FAULT_LEDGER:
        terminalreporter.write_line(f"| {fault} | {trials} | {survived} | {lost} |")


@pytest.fixture(autouse=True)
def forget_decoded_sets():
    """Every test starts without what an earlier test's process kept in memory: the decoded sets, the Section 4
    sets, the frozen backbones, the fitted Gaussians (every memo of kx_utils.runtime.memo)."""
    from kx_utils.runtime.memo import forget_all
    forget_all()
    yield
    forget_all()
