"""Notebook 02's tables (kx_utils.experiments.knockoff_tables): the checks on made-up runs, then the attack on tiny data."""

from __future__ import annotations

import pytest

from kx_utils.experiments import knockoff_tables as kt
from kx_utils.experiments.attack import KnockoffResult


def fake_run(final_acc: float, query_seed: int, seed: int = 0, budget: int = 60, victim_acc: float = 0.8
             ) -> KnockoffResult:
    """A KnockoffResult as one seed's Table 2 attack reports it (two epochs)."""
    return KnockoffResult(
        victim="cifar10", victim_name="CIFAR10-MNV2", victim_accuracy=victim_acc, surrogate_arch="mobilenet_v2",
        api={"mode": "probs"}, pool="imagenet", budget=budget, batch_size=16, epochs=2, final_accuracy=final_acc,
        best_accuracy=final_acc, best_epoch=2, history=[{"epoch": 1, "test_acc": 0.1}, {"epoch": 2, "test_acc": final_acc}],
        per_class_victim=[], per_class_surrogate=[], transfer_histogram=[], queries_sent=0, query_count=budget,
        refused=0, settings={"seed": seed, "query": {"seed": query_seed}})


def table2_row(**changes) -> dict:
    row = {"name": "CIFAR10-MNV2", "victim_acc": 0.8, "surrogate_acc": 0.5, "chance": 0.25, "queries": 60,
           "budget": 60, "seeds": [0, 1]}
    return {**row, **changes}


# ----------------------------------------------------------------- the checks, on made-up runs


def test_table2_row_check_raises_on_each_broken_guarantee(tiny_profile):
    runs = [fake_run(0.5, query_seed=0), fake_run(0.5, query_seed=1, seed=1)]
    kt.check_table2_row(tiny_profile, table2_row(), runs)  # budget 60, seeds (0, 1): all holds
    with pytest.raises(RuntimeError, match="59 queries for a budget of 60"):
        kt.check_table2_row(tiny_profile, table2_row(queries=59), runs)
    with pytest.raises(RuntimeError, match=r"ran seeds \[0\], the profile gives \[0, 1\]"):
        kt.check_table2_row(tiny_profile, table2_row(seeds=[0]), runs)
    shared = [fake_run(0.5, query_seed=3), fake_run(0.5, query_seed=3, seed=1)]
    with pytest.raises(RuntimeError, match="share transfer-set samples"):
        kt.check_table2_row(tiny_profile, table2_row(), shared)


def test_chance_check_applies_only_where_numbers_mean_something(tiny_profile, monkeypatch):
    runs = [fake_run(0.2, query_seed=0), fake_run(0.2, query_seed=1, seed=1)]
    at_chance = table2_row(surrogate_acc=0.25)
    kt.check_table2_row(tiny_profile, at_chance, runs)  # smoke: numbers are not held to chance
    monkeypatch.setattr(kt, "meaningful_numbers", lambda profile: True)
    with pytest.raises(RuntimeError, match="surrogate: surrogate accuracy 0.250 <= chance 0.250"):
        kt.check_table2_row(tiny_profile, at_chance, runs)
    # a victim only 1.2 times above chance (mini's Diabetic5) is not held to it
    kt.check_table2_row(tiny_profile, table2_row(victim_acc=0.3, surrogate_acc=0.2), runs)


def test_budget_curve_check_compares_the_seeds_both_ran(tiny_profile):
    table2 = [fake_run(0.5, 0), fake_run(0.7, 1, seed=1)]
    point = {"budget": 60, "surrogate_acc": 0.5, "recovery": 0.625, "seeds": 1}
    curve = {"points": {"30": {"budget": 30}, "60": point}}
    kt.check_budget_curve(tiny_profile, "cifar10", curve, table2)  # one seed: seed 0's run
    two = {**point, "surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.7], "seeds": 2}
    kt.check_budget_curve(tiny_profile, "cifar10", {"points": {"60": two}}, table2)
    with pytest.raises(RuntimeError, match=r"point at 60 queries \(\[0.5, 0.6\]\) is not Table 2's run"):
        kt.check_budget_curve(tiny_profile, "cifar10", {"points": {"60": {**two, "surrogate_acc_seeds": [0.5, 0.6]}}},
                              table2)
    with pytest.raises(RuntimeError, match=r"budgets \[60, 30\] are not in ascending order"):
        kt.check_budget_curve(tiny_profile, "cifar10", {"points": {"60": point, "30": {"budget": 30}}})
    kt.check_budget_curve(tiny_profile, "cifar10", {"points": {"30": {"budget": 30}}}, table2)  # no such point


def test_budget_curve_rows_are_one_row_per_victim_and_budget():
    curves = {"cifar10": {"name": "CIFAR10-MNV2", "victim_acc": 0.8, "points": {
        "30": {"budget": 30, "epochs": 2, "surrogate_acc": 0.4, "recovery": 0.5, "seeds": 1},
        "60": {"budget": 60, "epochs": 2, "surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.7], "recovery": 0.75,
               "seeds": 2}}}}
    assert kt.budget_curve_rows(curves) == {
        "cifar10 @ 30": {"name": "CIFAR10-MNV2", "budget": 30, "epochs": 2, "surrogate_acc": 0.4, "recovery": 0.5,
                         "seeds": 1},
        "cifar10 @ 60": {"name": "CIFAR10-MNV2", "budget": 60, "epochs": 2, "surrogate_acc": 0.6, "recovery": 0.75,
                         "seeds": 2}}


def test_notes_name_the_held_out_share_only_where_there_is_one(tiny_profile):
    held_out = tiny_profile.replace(surrogate_validation_fraction=0.25, surrogate_seeds=(7,))
    assert kt.knockoff_notes(held_out) == [
        "Table 2: the attacker holds 25% of its 60 queries out to watch its validation accuracy (the appendix's "
        "curves) and trains on the rest; the paper's attacker trains on all of them.",
        "Seeds: every surrogate result is from one seed (7)."]
    assert kt.knockoff_notes(held_out.replace(surrogate_validation_fraction=0.0)) == [
        "Seeds: every surrogate result is from one seed (7)."]


def test_a_rerun_that_queries_again_is_an_error(tiny_profile, monkeypatch):
    sent = fake_run(0.5, 0)
    sent.queries_sent = 60
    monkeypatch.setattr(kt, "knockoff", lambda *args, **kwargs: sent)
    with pytest.raises(RuntimeError, match="asked again sent 60 queries"):
        kt.check_rerun_is_cached(tiny_profile, "cifar10")


# ----------------------------------------------------------------- through the attack (tiny data)


def test_table2_and_budget_curve_on_tiny_data(tiny_profile, store, one_torch_thread):
    plan = tiny_profile.section5.replace(budget_curve_victims=("cifar10",), budget_curve_budgets=(30, 60),
                                         single_seed=("budget_curves",))
    profile = tiny_profile.replace(surrogate_validation_fraction=0.25, section5=plan)
    rows, results = kt.table2_rows(profile, ["cifar10"], store)
    row = rows["cifar10"]
    # the tiny CIFAR10 test set: 4 classes of 8 images
    assert (row["chance"], row["test_size"], row["seeds"], row["queries"]) == (0.25, 32, [0, 1], 60)
    assert row["queries_sent_now"] == 2 * 60  # each seed sent its own transfer set
    assert [r.final_accuracy for r in results["cifar10"]] == row["surrogate_acc_seeds"]
    curves = kt.table2_training_curves(results)
    assert curves["cifar10"]["final_acc_seeds"] == row["surrogate_acc_seeds"] and "val_acc_per_epoch" in curves["cifar10"]

    again, _ = kt.table2_rows(profile, ["cifar10"], store)
    assert again["cifar10"]["queries_sent_now"] == 0 and again["cifar10"]["surrogate_acc"] == row["surrogate_acc"]

    budget = kt.budget_curves(profile, results, store)
    points = budget["cifar10"]["points"]
    assert list(points) == ["30", "60"] and points["60"]["surrogate_acc"] == results["cifar10"][0].final_accuracy
    assert list(kt.budget_curve_rows(budget)) == ["cifar10 @ 30", "cifar10 @ 60"]
