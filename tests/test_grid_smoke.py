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


def _results(smoke_grid, notebook: str) -> dict:
    import json
    with open(smoke_grid.runs / "smoke" / f"{notebook}.json") as f:
        return json.load(f)["tables"]


def test_section5_tables_hold_table2s_surrogates(smoke_grid):
    """Tables 5-7 are Table 2's attack: its runs are Table 6's probability column, Table 5's pretrained rows
    and Table 7's batch-64 column -- the very numbers, seed by seed, not merely close ones."""
    table2 = _results(smoke_grid, "02_knockoff")["table2"]
    section51, table7 = _results(smoke_grid, "04_architecture_and_output"), \
        _results(smoke_grid, "05_hyperparameters")["table7"]
    table5, table6 = section51["table5"], section51["table6"]
    assert set(table6) == set(table2) and {"gtsrb", "cifar10"} <= set(table5) and table7
    for key, row in table2.items():
        assert table6[key]["probs_acc"] == row["surrogate_acc"]
        assert table6[key]["probs_acc_seeds"] == row["surrogate_acc_seeds"]
        assert table6[key]["probs_recovery"] == row["recovery"]
    for key in ("gtsrb", "cifar10"):
        for column in ("surrogate_acc", "surrogate_acc_seeds", "recovery", "queries", "epochs"):
            assert table5[key][column] == table2[key][column], (key, column)
    from kx_utils import get_profile
    column = f"bs{get_profile('smoke').surrogate_recipe.batch_size}"  # Table 2's own batch size
    compared = [key for key in table7 if key in table2]
    assert compared, "no victim of Table 7 is in Table 2"
    for key in compared:
        assert table7[key][column] == table2[key]["surrogate_acc"]
        assert table7[key][f"{column}_seeds"] == table2[key]["surrogate_acc_seeds"]
    # the label-only column ran on its own seeds beside them (one in smoke's plan), at Table 2's size
    assert all(r["label_acc"] is not None for r in table6.values())
