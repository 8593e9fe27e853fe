"""Training until the attacker's validation accuracy stops improving (fit's patience), Section 5.2.1's advice."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kx_utils.core.recipe import Recipe
from kx_utils.core.train import epochs_without_improvement, fit


def test_epochs_without_improvement_count_from_the_earliest_best_epoch():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}, {"epoch": 3, "val_acc": 0.7},
               {"epoch": 4, "val_acc": 0.6}]
    assert epochs_without_improvement(history, "val_acc") == 2  # epoch 2 is the best, two epochs ago
    assert epochs_without_improvement(history[:2], "val_acc") == 0


def linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def data():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 4, 4), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 3, (24,), generator=gen)


def test_patience_stops_once_the_validation_accuracy_stalls_and_scores_the_last_epoch_on_every_set():
    images, labels = data()
    # a learning rate this small changes no prediction: the validation accuracy stays where it starts, so
    # epoch 1 stays the best and two stale epochs later (epoch 3 of at most 8) training stops
    recipe = Recipe(epochs=8, batch_size=8, lr=1e-12, momentum=0.0, weight_decay=0.0)
    history = fit(linear_model(), images, labels, recipe, device="cpu", progress=False, patience=2,
                  eval_sets={"val": (images[:8], labels[:8]), "test": (images, labels)}, evaluate_every_epoch=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all("val_acc" in row for row in history)  # the monitored set: every epoch
    assert ["test_acc" in row for row in history] == [False, False, True]  # the others: the last epoch trained
    # without patience the same run trains every epoch
    assert len(fit(linear_model(), images, labels, recipe, device="cpu", progress=False,
                   eval_sets={"val": (images[:8], labels[:8])})) == 8


def test_patience_needs_the_set_it_watches():
    images, labels = data()
    with pytest.raises(ValueError, match="patience=2 watches 'val_acc', but the eval sets are \\['test'\\]"):
        fit(linear_model(), images, labels, Recipe(epochs=2, batch_size=8), device="cpu", progress=False,
            patience=2, eval_sets={"test": (images, labels)})


def test_knockoff_stops_early_only_with_a_validation_split(tiny_profile):
    from kx_utils.experiments.attack import knockoff
    with pytest.raises(ValueError, match="pass validation_fraction > 0"):
        knockoff(tiny_profile, "cifar10", patience=2)


def test_knockoff_with_patience_keys_and_trains_at_most_its_epochs(tiny_profile, tiny_data):
    from kx_utils.experiments.attack import knockoff
    recipe = tiny_profile.surrogate_recipe.replace(epochs=4)
    result = knockoff(tiny_profile, "cifar10", recipe=recipe, validation_fraction=0.25, patience=1)
    assert result.settings["patience"] == 1 and 1 <= result.epochs_trained <= 4 == result.epochs
    assert "test_acc" in result.history[-1] and result.final_accuracy == result.history[-1]["test_acc"]
    plain = knockoff(tiny_profile, "cifar10", recipe=recipe, validation_fraction=0.25)
    assert "patience" not in plain.settings and plain.epochs_trained == 4
