"""The registry of experiments: one declaration, found by the grid, the plan, the projection and the report."""

from __future__ import annotations

import json

import pytest

from kx_utils import get_profile
from kx_utils.experiments.registry import (
    Experiment,
    Notebook,
    UnknownExperiment,
    experiments,
    notebook_names,
    producer,
    registered,
)
from kx_utils.experiments.workload import Cost, Work
from kx_utils.orchestration import pipeline as pl
from kx_utils.orchestration import plan as planning
from kx_utils.orchestration.grid import grid_tasks, notebooks_needing
from kx_utils.orchestration.projection import LOW, Throughput, project
from kx_utils.report import Results


def toy_tasks(b):
    # one attack on a victim the paper's experiments train: the toy waits for that victim's task
    b.add("toy/cifar10", "kx_utils.experiments.attack:knockoff", "cifar10", after=(b.victim["cifar10"],), seed=7)


def toy_cost(profile, task):
    return Cost([Work("train", "mobilenet_v2", 32, 1_000_000, 64)])


TOY_NOTEBOOK = Notebook("07_toy", "a toy notebook of a test")
TOY = Experiment("toy_table", "07_toy", ("toy_table",), lambda p: f"Toy table: {p.transfer_budget:,} queries",
                 toy_tasks, toy_cost)


def test_a_toy_experiment_declared_once_is_in_the_grid_the_plan_the_projection_and_the_report():
    smoke = get_profile("smoke", data_root="/nonexistent")
    before = project(smoke, Throughput())
    with registered(TOY_NOTEBOOK, TOY):
        assert notebook_names()[-1] == "07_toy" and producer("toy_table") == "07_toy"
        # the grid: its task, in its notebook, after the victim it attacks; kept when only 07 is asked for
        tasks = {t.name: t for t in grid_tasks(smoke)}
        toy = tasks["toy/cifar10"]
        assert (toy.notebook, toy.experiment, toy.after, toy.kwargs) == ("07_toy", "toy_table", ("victim/cifar10",),
                                                                         {"seed": 7})
        assert {t.name for t in grid_tasks(smoke, ("07_toy",))} == {"toy/cifar10", "victim/cifar10"}
        assert notebooks_needing(list(tasks.values()), ["victim/cifar10"])[-1] == "07_toy"
        # the plan: its own line
        assert "07_toy: Toy table: 300 queries" in planning.plan(smoke).text()
        # the projection: its cost model, in its notebook (1e6 training images at the stated rate)
        with_toy = project(smoke, Throughput())
        rate = Throughput().images_per_s("train", "mobilenet_v2", 32, 64, LOW)
        assert with_toy.per_notebook[LOW]["07_toy"] == pytest.approx(1_000_000 / rate)
        assert with_toy.total(LOW) == pytest.approx(before.total(LOW) + 1_000_000 / rate)
        # the report: a result key of the toy is looked up in the toy notebook's document
        results = Results("smoke", {"07_toy": {"tables": {"toy_table": {"cifar10": {"surrogate_acc": 0.5}}}}})
        assert results.require("toy_table") == {"cifar10": {"surrogate_acc": 0.5}}
    # withdrawn after the block: nothing of it stays
    assert "07_toy" not in notebook_names() and "toy/cifar10" not in {t.name for t in grid_tasks(smoke)}
    with pytest.raises(UnknownExperiment, match="no experiment feeds 'toy_table'"):
        producer("toy_table")


def test_the_registry_refuses_what_would_make_two_sources_of_truth():
    with pytest.raises(UnknownExperiment, match="names notebook '08_nowhere', which is not declared"):
        with registered(Experiment("lost", "08_nowhere", (), lambda p: "", toy_tasks, toy_cost)):
            pass
    with pytest.raises(ValueError, match="an experiment named 'table2' is already declared"):
        with registered(Experiment("table2", "02_knockoff", (), lambda p: "")):
            pass
    with pytest.raises(ValueError, match=r"feeds \['table6'\], which 'table6' already feeds"):
        with registered(Experiment("table6_again", "04_architecture_and_output", ("table6",), lambda p: "")):
            pass
    assert [e.name for e in experiments()].count("table2") == 1  # a refused declaration leaves nothing behind


def test_every_result_key_the_report_reads_has_one_producer_and_every_notebook_a_file():
    from kx_utils.report.tables import TABLE_SPECS
    for spec in TABLE_SPECS:
        assert producer(spec.key) in notebook_names()
    for name in notebook_names():
        assert (pl.NOTEBOOK_DIR / f"{name}.ipynb").exists()
    assert list(pl.NOTEBOOKS) == list(notebook_names())


@pytest.mark.parametrize("name", ["smoke", "mini", "paper"])
def test_every_grid_task_names_its_experiment_and_that_experiments_notebook(name):
    tasks = grid_tasks(get_profile(name))
    by_name = {e.name: e for e in experiments()}
    for task in tasks:
        assert task.notebook == by_name[task.experiment].notebook
    # the same run in two tables is one task: in paper, Section 5 attacks at Table 2's budget and recipe, so
    # Table 5's surrogates and Table 6's probability column are Table 2's runs, made by 02 for 04
    if name == "paper":
        by_task = {t.name: t for t in tasks}
        assert not [n for n in by_task if n.startswith(("surrogate/table5/gtsrb/", "surrogate/table5/cifar10/",
                                                        "surrogate/table6/"))]
        assert "surrogate/table5/gtsrb_5l/seed0" in by_task  # a scratch victim: not in Table 2
        assert "04_architecture_and_output" in by_task["surrogate/table2/gtsrb/seed0"].also_for
    json.dumps([t.describe() for t in tasks])


def test_a_builder_resolves_each_settings_function_once_for_all_its_experiments():
    from kx_utils.experiments.registry import TaskBuilder
    calls = []

    def resolve(profile):
        calls.append(profile.name)
        return {"budget": profile.transfer_budget}

    builder = TaskBuilder(get_profile("smoke"))
    first, second = builder.resolved(resolve), builder.resolved(resolve)
    assert first is second and calls == ["smoke"]
    assert TaskBuilder(get_profile("mini")).resolved(resolve)["budget"] == get_profile("mini").transfer_budget
    assert calls == ["smoke", "mini"]  # a new builder (a new grid) resolves again
