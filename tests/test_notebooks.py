"""Notebook-level checks on the smoke profile (nbval executes each notebook once besides).

These run the real notebooks with papermill, twice where the second run must reuse the cache.
Both runs use one fresh, temporary KX_CACHE (and KX_RUNS): the first run must compute
everything, so the second can only reuse what the first computed, never a warm cache of
an earlier session.  They need the stand-in datasets: set KX_DATA (CI sets it to
../shared/datasets).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import REPO, SmokeEnv

pytestmark = pytest.mark.notebooks


def _run(notebook: str, env: SmokeEnv, **parameters) -> dict:
    import papermill as pm
    saved = {key: os.environ.get(key) for key in ("KX_RUNS", "KX_CACHE", "PYTHONPATH")}
    os.environ["KX_RUNS"], os.environ["KX_CACHE"] = str(env.runs), str(env.cache)  # the kernel inherits them
    # ... and imports this checkout's kx_utils, whichever one the environment has installed
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    try:
        pm.execute_notebook(str(REPO / "notebooks" / f"{notebook}.ipynb"), str(env.runs / f"{notebook}.ipynb"),
                            parameters={"profile": "smoke", **parameters}, progress_bar=False,
                            cwd=str(REPO / "notebooks"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    with open(env.runs / "smoke" / f"{notebook}.json") as f:
        return json.load(f)


def test_victims_notebook_trains_then_reuses_cached_victims(smoke_env):
    first = _run("01_victims", smoke_env)
    victims = first["tables"]["victims"]
    assert set(victims) == {"caltech", "cubs", "diabetic5", "gtsrb", "cifar10", "gtsrb_5l", "cifar10_9l"}
    assert not any(row["from_cache"] for row in victims.values())  # the fresh cache: all trained now
    assert any((smoke_env.cache / "victim").glob("*.pt"))  # ... and stored where the second run looks
    second = _run("01_victims", smoke_env)
    assert all(row["from_cache"] for row in second["tables"]["victims"].values())
    assert all(row["victim_acc"] > row["chance"] for k, row in victims.items() if k in ("caltech", "gtsrb"))
    assert [r["victim_acc"] for r in second["tables"]["victims"].values()] == \
        [r["victim_acc"] for r in victims.values()]
    assert set(first["tables"]["table1"]) == {"caltech256", "cubs200", "diabetic5", "gtsrb", "cifar10"}


def test_knockoff_notebook_queries_once(smoke_env):
    first = _run("02_knockoff", smoke_env)
    second = _run("02_knockoff", smoke_env)
    for key, row in first["tables"]["table2"].items():
        assert row["queries"] == row["budget"] > 0
        # the fresh cache: every query of every seed's transfer set sent by the first run
        assert len(row["seeds"]) >= 2 and row["queries_sent_now"] == row["budget"] * len(row["seeds"])
        assert second["tables"]["table2"][key]["queries_sent_now"] == 0
        assert 0 < row["recovery"] and row["surrogate_acc"] == second["tables"]["table2"][key]["surrogate_acc"]


def test_defences_notebook_measures_both_sides_and_reuses_everything(smoke_env):
    first = _run("07_defences", smoke_env)
    rows = first["tables"]["defences"]
    undefended = rows["cifar10/probs/none"]
    # the honest client of the undefended API gets the victim's own answers
    assert undefended["top1_kept"] == 1.0 and undefended["l1"] < 1e-5 and undefended["kl"] < 1e-5
    assert undefended["benign_acc"] == pytest.approx(undefended["victim_acc"], abs=1e-6)
    label = rows["cifar10/label/none"]
    assert label["top1_kept"] == 1.0 and label["benign_acc"] == undefended["benign_acc"]
    assert (label["family"], label["defence"]) == ("label-only", "label-only")
    for key, row in rows.items():
        if row["family"] == "mad" and row["answers"] == "probs":  # MAD moves each vector by at most its L1 budget
            assert row["l1"] <= row["strength"] + 1e-5, key
        assert row["budget"] == undefended["budget"] and 0 <= row["surrogate_acc"] <= 1, key
    dawn = next(iter(first["tables"]["dawn"].values()))
    assert 0 < dawn["watermarked"] < dawn["budget"] and 0 <= dawn["agreement_suspect"] <= 1
    wrong = rows[f"cifar10/probs/dawn_r{dawn['rate']}"]
    assert 1 - wrong["top1_kept"] == pytest.approx(dawn["rate"], abs=0.15)  # the share of answers it falsifies
    assert {r["client"] for r in first["tables"]["prada"].values()} == {"knockoff", "benign_random", "benign_sorted"}
    adaptive = first["tables"]["adaptive"]["cifar10"]
    assert adaptive["adaptive_classes_queried"] <= 200 and adaptive["random_classes_queried"] <= 200
    second = _run("07_defences", smoke_env)  # everything cached: the same numbers
    assert second["tables"] == first["tables"]
