"""The experiment grid: its tasks mirror the notebooks' calls, its scheduler survives failures."""

from __future__ import annotations

import json
import textwrap

import pytest

from kx_utils import get_profile
from kx_utils.config.seeds import seeds_for
from kx_utils.core.train import NO_TRAINING_ENV, TrainingForbiddenError, fit
from kx_utils.experiments.attack import (
    SURROGATE,
    BudgetError,
    knockoff,
    surrogate_settings,
)
from kx_utils.experiments.registry import Task
from kx_utils.experiments.section5 import Section5Settings
from kx_utils.experiments.victims import PRETRAINED_VICTIMS, VICTIM
from kx_utils.orchestration.executors import SerialExecutor, make_executor, run_grid
from kx_utils.orchestration.grid import grid_tasks, missing_tasks


def test_surrogate_settings_are_the_key_knockoff_stores(tiny_profile, store):
    """The grid's key of a surrogate, computed without training, is the one knockoff() caches under."""
    args = {"seed": 1, "budget": 30, "batch_size": 8, "validation_fraction": 0.2, "mode": "topk", "k": 2}
    result = knockoff(tiny_profile, "cifar10", store=store, **args)
    assert surrogate_settings(tiny_profile, "cifar10", **args) == result.settings
    assert store.exists(SURROGATE, surrogate_settings(tiny_profile, "cifar10", **args))
    assert surrogate_settings(tiny_profile, "cifar10", **{**args, "seed": 2}) != result.settings
    with pytest.raises(BudgetError, match="decoded pool"):
        surrogate_settings(tiny_profile, "cifar10", budget="all")


def test_a_whole_pool_task_has_the_key_knockoff_stores(tiny_profile, store):
    """budget="all" resolves to the pool's size counted in its folder: the key knockoff() caches under."""
    task = Task("surrogate/budget/cifar10/all/seed1", "02_knockoff", "kx_utils.experiments.attack:knockoff", ("cifar10",),
                {"budget": "all", "seed": 1, "validation_fraction": 0.2})
    result = knockoff(tiny_profile, "cifar10", store=store, **task.kwargs)
    assert task.artifact(tiny_profile) == (SURROGATE, result.settings)
    assert missing_tasks([task], tiny_profile, store) == []


def test_grid_tasks_follow_the_profile_plan():
    mini = get_profile("mini")
    tasks = {t.name: t for t in grid_tasks(mini)}
    table2 = [n for n in tasks if n.startswith("surrogate/table2/")]
    assert len(table2) == len(PRETRAINED_VICTIMS) * len(seeds_for(mini, "table2")) == 15
    assert tasks["surrogate/table2/caltech/seed2"].after == ("victim/caltech",)
    assert tasks["surrogate/table2/caltech/seed2"].kwargs == {"seed": 2, "validation_fraction": 0.1}
    # Section 5 is Table 2's attack: Table 7's batch size 64, Table 5's pretrained rows and Table 6's probability
    # column are Table 2's runs (same key but the test curve): one task makes each
    for name in ("surrogate/table7/caltech/bs64/seed0", "surrogate/table5/gtsrb/seed0", "surrogate/table6/caltech/probs/seed1"):
        assert name not in tasks
    assert "surrogate/table5/gtsrb_5l/seed2" in tasks and "surrogate/table7/caltech/bs256/seed0" in tasks
    assert "surrogate/table7/caltech/bs16/seed0" not in tasks and "surrogate/table7/caltech/bs128/seed1" not in tasks
    assert not [n for n in tasks if "equal_steps" in n or "convergence" in n]  # cut from mini for time
    # the label-only column on Table 2's three seeds (claim 1), with no top-k or rounded column
    assert tasks["surrogates/table6/cubs/seed2"].args == ("cubs", ["probs", "label"])
    # Table 2 queries the whole pool, so the budget curve's last point ("all") is Table 2's seed-0 run
    assert mini.transfer_budget == 12000 and "all" in mini.section5.budget_curve_budgets
    assert "surrogate/budget/caltech/all/seed0" not in tasks and "surrogate/budget/caltech/2000/seed0" in tasks
    # no surrogate is trained twice, and none is missing: mini's distinct surrogate keys, counted by hand.
    # Table 2: 5 pretrained victims x 3 seeds = 15; Table 5: the 2 scratch victims x 3 seeds = 6; Table 7: Caltech at
    # bs128 and bs256 on seed 0 = 2; the budget curve: 3 victims x 2 budgets on seed 0 = 6 (Table 6's label-only
    # surrogates are the attack_formats tasks'); 07: 2 reverse-sigmoid and 2 MAD strengths on seed 0 = 4, the adaptive
    # attacker on 3 seeds and random sampling at its budget on seeds 1 and 2 (seed 0 is the budget curve's) = 5
    from kx_utils.runtime.artifacts import settings_key
    knockoffs = [t for t in tasks.values() if t.function == "kx_utils.experiments.attack:knockoff"]
    keys = {t.name: t.artifact(mini)[1] for t in knockoffs}
    assert len(knockoffs) == len({settings_key(k) for k in keys.values()}) == 15 + 6 + 2 + 6 + 4 + 5
    # the key Table 7's batch size 64 asks for (its bs128 run's arguments at batch size 64) is Table 2's seed 0,
    # with the test curve Table 2 scores
    bs128 = tasks["surrogate/table7/caltech/bs128/seed0"].kwargs
    bs64 = surrogate_settings(mini, "caltech", **{**bs128, "batch_size": 64, "test_curve": True})
    assert [name for name, key in keys.items() if key == bs64] == ["surrogate/table2/caltech/seed0"]
    order = list(tasks)
    for task in tasks.values():  # dependencies come first
        assert all(order.index(d) < order.index(task.name) for d in task.after)


@pytest.mark.parametrize("name", ["smoke", "mini"])
def test_every_task_describes_itself_as_json_for_grid_json(name):
    tasks = grid_tasks(get_profile(name))
    described = json.loads(json.dumps([t.describe() for t in tasks]))  # a Recipe among the args raised here
    pair = next(d for d in described if d["function"] == "kx_utils.experiments.section5:section_5_1_3_pair")
    recipe = Section5Settings.resolve(get_profile(name)).recipe
    assert pair["args"][1] == json.loads(json.dumps(recipe.as_dict()))


def test_grid_for_some_notebooks_keeps_what_they_need():
    tasks = grid_tasks(get_profile("smoke"), ("06_in_distribution",))
    names = {t.name for t in tasks}
    assert {"victim/caltech", "detection/table4/caltech", "detection/cv_arch"} <= names
    assert not any(n.startswith("surrogate/table2/") for n in names)
    # mini's Figure 2 is Table 2's runs: notebook 05 alone still gets them, made by 02's tasks
    names = {t.name for t in grid_tasks(get_profile("mini"), ("05_hyperparameters",))}
    assert {"surrogate/table2/caltech/seed0", "surrogate/table2/caltech/seed2", "surrogate/table7/caltech/bs128/seed0"} \
        <= names  # Table 7's batch-64 column is Table 2's runs too
    assert not any(n.startswith("detection/") for n in names)


def _module(tmp_path, monkeypatch, body: str) -> str:
    (tmp_path / "fake_tasks.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_tasks"


FAKE_TASKS = """
    from pathlib import Path

    def make(profile, name, store=None, folder=None):
        Path(folder, name).write_text(name)

    def explode(profile, store=None, **kwargs):
        raise ValueError("this task cannot work: " + repr(kwargs))
"""


def test_a_failed_task_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, FAKE_TASKS)
    out = tmp_path / "made"
    out.mkdir()
    tasks = [Task("a", "01_victims", f"{module}:make", ("a",), {"folder": str(out)}),
             Task("bad", "01_victims", f"{module}:explode", (), {"budget": 7}),
             Task("needs-bad", "02_knockoff", f"{module}:make", ("needs-bad",), {"folder": str(out)}, ("bad",)),
             Task("needs-a", "02_knockoff", f"{module}:make", ("needs-a",), {"folder": str(out)}, ("a",)),
             Task("c", "02_knockoff", f"{module}:make", ("c",), {"folder": str(out)})]
    report = run_grid(tasks, SerialExecutor(get_profile("smoke"), threads=1), log=lambda m: None)
    status = {o.task: o.status for o in report.outcomes}
    assert status == {"a": "done", "bad": "failed", "needs-bad": "skipped", "needs-a": "done", "c": "done"}
    assert sorted(p.name for p in out.iterdir()) == ["a", "c", "needs-a"]
    assert not report.ok
    text = report.text()
    assert "FAILED bad" in text and "'budget': 7" in text and "this task cannot work" in text
    assert "skipped needs-bad: needs bad" in text


def test_dependencies_outside_the_list_count_as_done(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, FAKE_TASKS)
    task = Task("b", "02_knockoff", f"{module}:make", ("b",), {"folder": str(tmp_path)}, ("made-earlier",))
    report = run_grid([task], SerialExecutor(get_profile("smoke")), log=lambda m: None)
    assert report.ok and (tmp_path / "b").read_text() == "b"


def test_a_cycle_is_a_bug_not_a_hang(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, FAKE_TASKS)
    tasks = [Task("x", "01_victims", f"{module}:make", ("x",), {"folder": str(tmp_path)}, ("y",)),
             Task("y", "01_victims", f"{module}:make", ("y",), {"folder": str(tmp_path)}, ("x",))]
    with pytest.raises(AssertionError, match="cycle"):
        run_grid(tasks, SerialExecutor(get_profile("smoke")), log=lambda m: None)


def test_a_rerun_computes_only_what_is_missing(tiny_profile, store):
    tasks = [t for t in grid_tasks(tiny_profile) if t.name in ("victim/cifar10", "surrogate/table2/cifar10/seed0")]
    tasks = [Task(t.name, t.notebook, t.function, t.args, {**t.kwargs, "budget": 30} if "surrogate" in t.name
                  else t.kwargs, t.after) for t in tasks]
    assert missing_tasks(tasks, tiny_profile, store) == tasks
    report = run_grid(tasks, SerialExecutor(tiny_profile, threads=1), log=lambda m: None)
    assert report.ok, report.text()
    assert store.exists(VICTIM, tasks[0].artifact(tiny_profile)[1])
    assert missing_tasks(tasks, tiny_profile, store) == []


def test_training_can_be_forbidden(monkeypatch):
    import torch
    monkeypatch.setenv(NO_TRAINING_ENV, "1")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    images = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(TrainingForbiddenError, match="experiment grid"):
        fit(model, images, torch.tensor([0, 1, 0, 1]), get_profile("smoke").surrogate_recipe, desc="surrogate X",
            progress=False)


def test_executor_names_are_checked():
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask", get_profile("smoke"))
    with pytest.raises(ValueError, match="one task at a time"):
        make_executor("serial", get_profile("smoke"), workers=2)


def test_ray_reports_a_failed_task_and_runs_the_rest(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import os
    module = _module(tmp_path, monkeypatch, FAKE_TASKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "made"
    out.mkdir()
    tasks = [Task("bad", "01_victims", f"{module}:explode", (), {"seed": 3}),
             Task("needs-bad", "02_knockoff", f"{module}:make", ("needs-bad",), {"folder": str(out)}, ("bad",))]
    tasks += [Task(f"t{i}", "02_knockoff", f"{module}:make", (f"t{i}",), {"folder": str(out)}) for i in range(4)]
    report = run_grid(tasks, make_executor("ray", get_profile("smoke"), workers=2, threads=1), log=lambda m: None)
    assert report.workers == 2
    assert {o.task: o.status for o in report.outcomes} == {"bad": "failed", "needs-bad": "skipped", **{
        f"t{i}": "done" for i in range(4)}}
    assert sorted(p.name for p in out.iterdir()) == [f"t{i}" for i in range(4)]
    assert "this task cannot work: {'seed': 3}" in report.text()


def test_a_failed_task_holds_back_the_notebooks_that_need_it_and_what_waits_on_it():
    from kx_utils.experiments.registry import Task
    from kx_utils.orchestration.grid import notebooks_needing
    tasks = [Task("victim/caltech", "01_victims", "m:f"), Task("surrogate/x", "02_knockoff", "m:f", after=("victim/caltech",)),
             Task("detection/t4", "03_detection", "m:f", after=("victim/caltech",), also_for=("06_in_distribution",)),
             Task("surrogate/y", "05_hyperparameters", "m:f")]
    assert notebooks_needing(tasks, ["detection/t4"]) == ["03_detection", "06_in_distribution"]
    assert notebooks_needing(tasks, ["victim/caltech"]) == ["01_victims", "02_knockoff", "03_detection",
                                                            "06_in_distribution"]
    assert notebooks_needing(tasks, []) == []
