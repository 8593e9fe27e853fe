"""The smoke grid on a local Ray cluster: the serial run's artifacts, and notebooks that train nothing.

One task per worker core (``threads=1`` on both sides): a CPU's kernels give the same bits
at the same thread count, so the Ray run and the serial run must store identical files.
"""

from __future__ import annotations

import pytest
import torch

from kx_utils.runtime import integrity
from tests.conftest import cache_files

pytestmark = pytest.mark.notebooks


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a
                                                                   if k not in ("train_seconds", "seconds"))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def test_ray_grid_stores_what_the_serial_grid_stores(smoke_grid):
    ray_cache, serial_cache = smoke_grid.caches["ray"], smoke_grid.caches["serial"]
    ray_report, serial_report = smoke_grid.reports["ray"], smoke_grid.reports["serial"]
    assert ray_report.workers == 2 and serial_report.workers == 1
    ray_files, serial_files = cache_files(ray_cache), cache_files(serial_cache)
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


def test_notebooks_after_the_grid_train_nothing(smoke_grid):
    assert all(entry["status"] == "finished" for entry in smoke_grid.state["notebooks"].values())
    assert smoke_grid.after == smoke_grid.before, \
        f"the notebooks computed {sorted(set(smoke_grid.after) - set(smoke_grid.before))[:5]}"
