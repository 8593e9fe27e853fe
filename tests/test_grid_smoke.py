"""The smoke grid on a local Ray cluster: the serial run's artifacts, and notebooks that train nothing.

One task per worker core (``threads=1`` on both sides): a CPU's kernels give the same bits
at the same thread count, so the Ray run and the serial run must store identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kx_utils import get_profile, integrity
from kx_utils.executors import make_executor, run_grid, shareable
from kx_utils.grid import grid_tasks
from kx_utils.pipeline import reproduce
from kx_utils.train import NO_TRAINING_ENV

pytestmark = pytest.mark.notebooks


def _files(root: Path) -> dict[str, Path]:
    # artifacts only: not the lock files of the cache (".reproduce.lock") nor training checkpoints
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix != ".ckpt" and not p.name.startswith(".")}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a
                                                                   if k not in ("train_seconds", "seconds"))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    if not os.environ.get("KX_DATA"):
        pytest.skip("KX_DATA is not set: the grid needs the stand-in datasets")
    pytest.importorskip("ray")
    out = {}
    # the whole grid on Ray; serially (for CI's time) the tasks of notebooks 01-02, whose files the Ray
    # run must hold byte for byte
    for name, workers, notebooks in (("ray", 2, None), ("serial", None, ("01_victims", "02_knockoff"))):
        cache = tmp_path_factory.mktemp(f"cache_{name}")
        profile = shareable(get_profile("smoke", cache_root=str(cache)))
        report = run_grid(grid_tasks(profile, notebooks), make_executor(name, profile, workers=workers, threads=1),
                          log=lambda m: None)
        assert report.ok, report.text()
        out[name] = (cache, report)
    return out


def test_ray_grid_stores_what_the_serial_grid_stores(grids):
    (ray_cache, ray_report), (serial_cache, serial_report) = grids["ray"], grids["serial"]
    assert ray_report.workers == 2 and serial_report.workers == 1
    ray_files, serial_files = _files(ray_cache), _files(serial_cache)
    assert any(n.startswith("surrogate/") for n in serial_files) and set(serial_files) <= set(ray_files)
    assert len(ray_files) > len(serial_files)  # ... and the rest of the grid besides
    differing = []
    for name, path in serial_files.items():
        if name.endswith(".pt"):
            a, b = integrity.load(ray_files[name]), integrity.load(path)
            if not _same(a, b):
                differing.append(name)
        elif path.read_bytes() != ray_files[name].read_bytes():
            differing.append(name)
    assert not differing, f"{len(differing)} of {len(serial_files)} artifacts differ: {differing[:5]}"


def test_notebooks_after_the_grid_train_nothing(grids, tmp_path, monkeypatch):
    cache = grids["ray"][0]
    before = {name: path.stat().st_mtime_ns for name, path in _files(cache).items()}
    monkeypatch.setenv("KX_CACHE", str(cache))
    monkeypatch.setenv(NO_TRAINING_ENV, "1")  # any fit() in a notebook raises
    state = reproduce("smoke", runs=tmp_path / "runs", log=lambda m: None)
    assert all(entry["status"] == "finished" for entry in state["notebooks"].values())
    after = {name: path.stat().st_mtime_ns for name, path in _files(cache).items()}
    assert after == before, f"the notebooks computed {sorted(set(after) - set(before))[:5]}"
