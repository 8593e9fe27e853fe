"""Notebook-level checks on the smoke profile (nbval executes each notebook once besides).

These run the real notebooks with papermill, twice where the second run must reuse the cache.
They need the stand-in datasets: set KX_DATA (CI sets it to ../shared/datasets).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    if not os.environ.get("KX_DATA"):
        pytest.skip("KX_DATA is not set: the notebook checks need the stand-in datasets")
    runs = tmp_path_factory.mktemp("runs")
    return runs


def _run(notebook: str, runs, **parameters) -> dict:
    import papermill as pm
    os.environ["KX_RUNS"] = str(runs)
    try:
        pm.execute_notebook(str(REPO / "notebooks" / f"{notebook}.ipynb"), str(runs / f"{notebook}.ipynb"),
                            parameters={"profile": "smoke", **parameters}, progress_bar=False,
                            cwd=str(REPO / "notebooks"))
    finally:
        os.environ.pop("KX_RUNS", None)
    with open(runs / "smoke" / f"{notebook}.json") as f:
        return json.load(f)


def test_victims_notebook_trains_then_reuses_cached_victims(smoke_env):
    # a seed of its own keeps this test's victims apart from the nbval run's
    first = _run("01_victims", smoke_env, overrides={"seed": 11})
    second = _run("01_victims", smoke_env, overrides={"seed": 11})
    victims = first["tables"]["victims"]
    assert set(victims) == {"caltech", "cubs", "diabetic5", "gtsrb", "cifar10", "gtsrb_5l", "cifar10_9l"}
    assert all(row["victim_acc"] > row["chance"] for k, row in victims.items() if k in ("caltech", "gtsrb"))
    assert all(row["from_cache"] for row in second["tables"]["victims"].values())
    assert [r["victim_acc"] for r in second["tables"]["victims"].values()] == \
        [r["victim_acc"] for r in victims.values()]
    assert set(first["tables"]["table1"]) == {"caltech256", "cubs200", "diabetic5", "gtsrb", "cifar10"}


def test_knockoff_notebook_queries_once(smoke_env):
    first = _run("02_knockoff", smoke_env, overrides={"seed": 11})
    second = _run("02_knockoff", smoke_env, overrides={"seed": 11})
    for key, row in first["tables"]["table2"].items():
        assert row["queries"] == row["budget"] > 0
        assert second["tables"]["table2"][key]["queries_sent_now"] == 0
        assert 0 < row["recovery"] and row["surrogate_acc"] == second["tables"]["table2"][key]["surrogate_acc"]
