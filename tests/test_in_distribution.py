"""Notebook 06's experiment functions (kx_utils.experiments.in_distribution) and its grid figure."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from kx_utils.experiments import in_distribution as D
from kx_utils.experiments.section5 import Section5Settings
from kx_utils.report.figures import validation_grid_curves


def fake_grid(test_acc, batch_size=64, chosen_epochs=2, val_acc=0.5):
    """A two-epoch validation_grid result whose chosen cell is its only one."""
    cell = {"batch_size": batch_size, "val_acc_per_epoch": [val_acc - 0.1, val_acc],
            "test_acc_per_epoch": [test_acc - 0.1, test_acc]}
    return {"chosen_batch_size": batch_size, "chosen_epochs": chosen_epochs, "chosen_val_acc": val_acc,
            "test_acc": test_acc, "grid": {f"bs{batch_size}": cell}}


@pytest.fixture
def settings(tiny_profile):
    return dataclasses.replace(Section5Settings.resolve(tiny_profile), grid_batch_sizes=(64,), grid_epochs=2,
                               imagenet_control=True)


def attack_of(grids, controls, budget=100):
    return D.InDistributionAttack(seeds=tuple(range(len(grids))), budget=budget, pool_classes=10, victim_acc=0.8,
                                  grids=grids, controls=controls,
                                  imagenet={"surrogate_acc": 0.45, "surrogate_acc_seeds": [0.4, 0.5], "budget": 300})


DETECTION = {"detector": "binary", "flagged": {"in_distribution": 0.1, "unseen_imagenet": 0.9, "benign": 0.05},
             "counts": {"in_distribution": 100, "unseen_imagenet": 80, "benign": 40}}


def test_check_grid_cells_wants_every_batch_size_and_epoch():
    D.check_grid_cells(fake_grid(0.6), [64], 2)
    with pytest.raises(RuntimeError, match=r"expected batch sizes \[64, 128\]"):
        D.check_grid_cells(fake_grid(0.6), [64, 128], 2)
    with pytest.raises(RuntimeError, match="2 validation and 2 test accuracies for 3 epochs"):
        D.check_grid_cells(fake_grid(0.6), [64], 3)


def test_section_5_2_2_values_average_the_seeds_and_keep_the_first_grid(tiny_profile, settings, monkeypatch):
    monkeypatch.setattr(D, "transfer_answers", lambda *args, **kwargs: {"queries": 0})
    grids = [fake_grid(0.6, 64), fake_grid(0.4, 128, chosen_epochs=1)]
    values = D.section_5_2_2_values(tiny_profile, settings, attack_of(grids, [fake_grid(0.3), fake_grid(0.5)]),
                                    DETECTION)
    assert values["in_distribution_acc"] == pytest.approx(0.5) and values["in_distribution_acc_seeds"] == [0.6, 0.4]
    assert values["in_distribution_recovery_seeds"] == [pytest.approx(0.75), pytest.approx(0.5)]  # / 0.8
    assert values["chosen_batch_size"] == [64, 128] and values["chosen_epochs"] == [2, 1]
    assert values["imagenet_queries_acc_seeds"] == [0.4, 0.5] and values["imagenet_queries_budget"] == 300
    assert values["imagenet_same_budget_acc"] == pytest.approx(0.4) and values["imagenet_same_budget_batch_size"] == [64, 64]
    assert (values["flagged_imagenet"], values["unseen_imagenet_queries"], values["benign_queries"]) == (0.9, 80, 40)
    assert values["validation_grid"] is grids[0]["grid"] and values["seeds"] == [0, 1]
    one = D.section_5_2_2_values(tiny_profile, settings, attack_of(grids[:1], []), DETECTION)
    assert one["chosen_batch_size"] == 64 and "in_distribution_acc_seeds" not in one
    assert "imagenet_same_budget_acc" not in one  # no control grid
    with pytest.raises(RuntimeError, match="judged 100 of 90 in-distribution queries"):
        D.section_5_2_2_values(tiny_profile, settings, attack_of(grids[:1], [], budget=90), DETECTION)
    monkeypatch.setattr(D, "transfer_answers", lambda *args, **kwargs: {"queries": 100})
    with pytest.raises(RuntimeError, match="cache was not reused"):
        D.section_5_2_2_values(tiny_profile, settings, attack_of(grids[:1], []), DETECTION)


def test_in_distribution_attack_runs_the_control_only_where_planned(tiny_profile, settings, monkeypatch):
    calls = []
    monkeypatch.setattr(D, "get_victim", lambda profile, key, store=None: SimpleNamespace(name="Caltech-MNV2", test_accuracy=0.8))
    monkeypatch.setattr(D, "in_distribution_setup", lambda profile, store=None: (SimpleNamespace(classes=range(4)), 12))
    monkeypatch.setattr(D, "knockoff_seeds", lambda *args, **kwargs: [])
    monkeypatch.setattr(D, "knockoff_row", lambda runs: {"surrogate_acc": 0.45, "budget": 300})
    monkeypatch.setattr(D, "in_distribution_grid", lambda profile, seed, pool, batch_sizes, epochs, store=None:
                        calls.append((pool, seed)) or fake_grid(0.2 if pool == "bing" else 0.1))
    attack = D.in_distribution_attack(tiny_profile, settings)
    assert calls == [("bing", 0), ("bing", 1), ("imagenet", 0), ("imagenet", 1)]
    assert (attack.budget, attack.pool_classes, attack.victim_acc, len(attack.controls)) == (12, 4, 0.8, 2)
    calls.clear()
    assert D.in_distribution_attack(tiny_profile, dataclasses.replace(settings, imagenet_control=False)).controls == []
    assert calls == [("bing", 0), ("bing", 1)]
    # outside smoke, the tuned surrogate must beat chance: 0.2 against always answering class 0 of [0, 0, 1, 2]
    monkeypatch.setattr(D, "meaningful_numbers", lambda profile: True)
    monkeypatch.setattr(D, "victim_data", lambda *args: (None, SimpleNamespace(labels=torch.tensor([0, 0, 1, 2]))))
    with pytest.raises(RuntimeError, match=r"Caltech-MNV2 tuned in-distribution: surrogate accuracy 0.200 <= chance 0.500"):
        D.in_distribution_attack(tiny_profile, settings)


def test_notes_give_the_pool_the_grid_and_the_unseen_imagenet_images(tiny_profile, settings):
    notes = D.notes(tiny_profile, settings, attack_of([fake_grid(0.6)], []), DETECTION)
    assert notes == [
        "5.2.2: 100 in-distribution queries (the Caltech-101 stand-in's pool split, about 10 per class; the paper: "
        "380 Bing images per class), against 300 ImageNet queries for notebook 02's surrogate.",
        "5.2.2: grid of batch sizes [64] x 2 epochs with 10% of the queries held out; the transfer set is sampled "
        "uniformly, not per class.",
        "5.2.2: the detector is compared on the 80 ImageNet images it never saw (all of them), not on 100 like the "
        "in-distribution queries: detector_ood_share=0.1 leaves no more unseen.",
        "Seeds: surrogate results are means over 2 seeds (0, 1); single seed (0) for: extra_formats, table7, "
        "table7_bs16, table7_equal_steps, table7_convergence, budget_curves, defences, dawn."]


def test_validation_grid_curves_show_the_control_beside_and_star_the_choice():
    grid = fake_grid(0.6, chosen_epochs=2)
    fig = validation_grid_curves(grid, fake_grid(0.3), reference_acc=0.45)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.lines[:2]] == [[0.4, 0.5], [pytest.approx(0.5), 0.6]]
    assert ax.collections[0].get_offsets().tolist() == [[2.0, 0.6]]  # the choice, at its test accuracy
    assert list(ax.lines[2].get_ydata()) == [0.45, 0.45]  # notebook 02's surrogate
    assert len(validation_grid_curves(grid).axes) == 1
