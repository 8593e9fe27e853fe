import pytest
import torch

from kx_utils.core.api import PredictionAPI
from kx_utils.experiments.attack import (
    BudgetError,
    attacker_pool,
    knockoff,
    query_settings,
    query_victim,
    sample_transfer_set,
)
from kx_utils.experiments.victims import get_victim, victim_name
from kx_utils.runtime.artifacts import ArtifactStore


def is_count_of(accuracy: float, n: int) -> bool:
    """``accuracy`` is k/n for a whole number k: an accuracy measured on exactly n items."""
    return abs(accuracy * n - round(accuracy * n)) < 1e-4


def test_transfer_set_sampling_is_seeded_and_never_repeats():
    a = sample_transfer_set(100, 40, seed=7)
    assert torch.equal(a, sample_transfer_set(100, 40, seed=7))
    assert not torch.equal(a, sample_transfer_set(100, 40, seed=8))
    assert len(set(a.tolist())) == 40  # no image twice
    assert sorted(sample_transfer_set(100, 100, seed=7).tolist()) == list(range(100))  # the whole pool, once each


def test_budget_larger_than_pool_is_an_error_unless_replacement_is_asked_for():
    with pytest.raises(BudgetError, match="replace=True"):
        sample_transfer_set(10, 11, seed=0)
    with_replacement = sample_transfer_set(10, 50, seed=0, replace=True)
    assert len(with_replacement) == 50
    assert sorted(set(with_replacement.tolist())) == list(range(10))  # 50 draws over a pool of 10 (seed 0)


def test_victim_is_trained_once_then_loaded(tiny_profile):
    # the scratch CIFAR10-9L learns 4 colour-coded classes reliably in a few steps; a pretrained
    # MobileNetV2 at 16 px does not (its batch-norm statistics need more steps than a test allows)
    first = get_victim(tiny_profile, "cifar10_9l")
    second = get_victim(tiny_profile, "cifar10_9l")
    assert not first.from_cache and second.from_cache
    assert first.test_accuracy == second.test_accuracy
    assert first.test_accuracy > 0.75  # chance is 0.25
    assert torch.equal(next(first.model.parameters()), next(second.model.parameters()))
    assert victim_name(tiny_profile, "cifar10") == "CIFAR10-MNV2"
    assert victim_name(tiny_profile, "cifar10_9l") == "CIFAR10-9L"


def test_answers_are_queried_once_and_reused(tiny_profile, store):
    victim = get_victim(tiny_profile, "cifar10")
    pool = attacker_pool(tiny_profile, size=16, store=store)
    api = PredictionAPI(victim.model, device="cpu")
    settings = query_settings(tiny_profile, victim, "imagenet", "train", 30, 0, False, api.describe())
    first = query_victim(tiny_profile, victim, api, pool, settings, store, seed=0)
    assert api.query_count == 30 and first["queries"] == 30
    second = query_victim(tiny_profile, victim, api, pool, settings, store, seed=0)
    assert api.query_count == 30 and second["queries"] == 0  # no new query on the rerun
    assert torch.equal(first["answers"], second["answers"])
    assert first["answers"].sum(1).tolist() == pytest.approx([1.0] * 30, abs=1e-5)


def test_knockoff_end_to_end_and_cached(tiny_profile):
    result = knockoff(tiny_profile, "cifar10")
    assert result.query_count == result.queries_sent == tiny_profile.transfer_budget
    assert len(result.history) == tiny_profile.surrogate_recipe.epochs
    test_accs = [row["test_acc"] for row in result.history]
    assert result.final_accuracy == test_accs[-1]  # the headline is the last epoch, not the best
    assert (result.best_accuracy, result.best_epoch) == (max(test_accs), test_accs.index(max(test_accs)) + 1)
    assert result.recovery == pytest.approx(result.final_accuracy / result.victim_accuracy)
    # the test set holds 8 images of each of the 4 classes: each accuracy is a count of 32, and the
    # final model's per-class accuracies average to the last epoch's accuracy
    assert all(is_count_of(acc, 32) for acc in test_accs)
    assert len(result.per_class_surrogate) == 4
    assert all(is_count_of(acc, 8) for acc in result.per_class_surrogate)
    assert sum(result.per_class_surrogate) / 4 == pytest.approx(result.final_accuracy)
    # the histogram counts the victim's predicted class over the queries it answered
    answers = ArtifactStore(tiny_profile.cache_root).load("answers", result.settings["query"])["answers"]
    assert result.transfer_histogram == torch.bincount(answers.argmax(1), minlength=4).tolist()
    assert sum(result.transfer_histogram) == tiny_profile.transfer_budget
    again = knockoff(tiny_profile, "cifar10")
    assert again.from_cache and again.queries_sent == 0
    assert again.final_accuracy == result.final_accuracy


def test_label_only_attack_trains_on_one_hot_answers(tiny_profile, store):
    result = knockoff(tiny_profile, "cifar10", mode="label", store=store)
    assert result.api == {"mode": "label"}
    answers = store.load("answers", result.settings["query"])["answers"]
    assert set(answers.unique().tolist()) <= {0.0, 1.0} and (answers.sum(1) == 1).all()


def test_validation_split_reports_the_validation_selected_epoch(tiny_profile):
    result = knockoff(tiny_profile, "cifar10", validation_fraction=0.25)
    assert "val_acc" in result.history[0]
    chosen = max(result.history, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert result.val_selected_epoch == chosen["epoch"]
    assert result.val_selected_accuracy == chosen["test_acc"]
    # a quarter of the 60 queries is held out: every validation accuracy is a count of 15
    assert all(is_count_of(row["val_acc"], 15) for row in result.history)
    assert result.settings["validation_fraction"] == 0.25


def test_pool_budget_error_through_the_attack(tiny_profile):
    with pytest.raises(BudgetError):
        knockoff(tiny_profile, "cifar10", budget=10_000)
    assert knockoff(tiny_profile, "cifar10", budget="all").budget == 120


def test_pool_of_all_splits_concatenates_them(tiny_profile, store):
    train = attacker_pool(tiny_profile, split="train", size=16, store=store)
    everything = attacker_pool(tiny_profile, split="all", size=16, store=store)
    assert len(everything) == len(train) + 24  # tiny_imagenet/val holds 6 x 4 images
    assert torch.equal(everything.images[:len(train)], train.images)


def test_clearly_learned_needs_a_margin_over_chance():
    from kx_utils.experiments.victims import clearly_learned
    assert clearly_learned(0.66, 0.011) and clearly_learned(0.82, 0.10)
    assert not clearly_learned(0.374, 0.330)  # mini's Diabetic5 stand-in


def test_a_run_without_a_test_curve_is_the_same_run_with_one(tiny_profile, store, monkeypatch):
    """Table 2's surrogate answers Tables 5 and 6's probability-vector request: one run, one key's work."""
    with_curve = knockoff(tiny_profile, "cifar10", store=store, recipe=tiny_profile.surrogate_recipe.replace(epochs=3))
    import kx_utils.experiments.attack as ka
    monkeypatch.setattr(ka, "_train_surrogate", lambda *a, **k: pytest.fail("trained the same surrogate twice"))
    without = knockoff(tiny_profile, "cifar10", store=store, recipe=tiny_profile.surrogate_recipe.replace(epochs=3),
                       test_curve=False)
    assert without.from_cache and without.final_accuracy == with_curve.final_accuracy
    # scored after its last epoch only, as a run without the curve would be
    assert ["test_acc" in row for row in without.history] == [False, False, True]
    assert (without.best_accuracy, without.best_epoch) == (with_curve.final_accuracy, 3)
    monkeypatch.undo()
    # and the weights are what a run without the curve trains (scoring draws no random number)
    alone = knockoff(tiny_profile, "cifar10", store=ArtifactStore(tiny_profile.cache_root + "-alone"),
                     recipe=tiny_profile.surrogate_recipe.replace(epochs=3), test_curve=False)
    plain = lambda history: [{k: v for k, v in row.items() if k != "train_seconds"} for row in history]
    assert plain(alone.history) == plain(without.history)


def test_replacing_one_image_of_the_victims_data_makes_the_victim_and_its_surrogates_stale(tiny_profile, tiny_data):
    from PIL import Image

    from kx_utils.data.datasets import forget_remembered
    from kx_utils.experiments.attack import surrogate_settings
    from kx_utils.experiments.victims import victim_settings
    before_victim, before_surrogate = victim_settings(tiny_profile, "cifar10"), surrogate_settings(tiny_profile, "cifar10")
    target = sorted((tiny_data / "cifar10" / "test" / "class_00").iterdir())[0]
    original = target.read_bytes()
    try:
        Image.new("RGB", (16, 16), (0, 0, 255)).save(target)  # same name, other pixels
        forget_remembered()
        assert victim_settings(tiny_profile, "cifar10") != before_victim
        assert surrogate_settings(tiny_profile, "cifar10") != before_surrogate
    finally:
        target.write_bytes(original)
        forget_remembered()
    # the content, not the file's time or place: the same bytes give the same key again
    assert victim_settings(tiny_profile, "cifar10") == before_victim


def test_a_pool_of_every_split_keeps_same_named_images_of_two_splits_apart(tiny_profile, store):
    everything = attacker_pool(tiny_profile, split="all", size=16, store=store)
    assert len(set(everything.files)) == len(everything)  # tiny_imagenet's train and val share file names
    assert {f.split("/")[0] for f in everything.files} == {"train", "val"}


def test_the_candidate_speed_ups_enter_a_surrogates_key_only_where_on(tiny_profile, tiny_data):
    from kx_utils.experiments.attack import surrogate_settings
    default = surrogate_settings(tiny_profile, "cifar10")
    assert "precision" not in default and "batch_norm" not in default  # every stored surrogate keeps its key
    bf16 = surrogate_settings(tiny_profile.replace(surrogate_precision="bf16_pointwise"), "cifar10")
    frozen = surrogate_settings(tiny_profile.replace(surrogate_batch_norm="frozen"), "cifar10")
    assert bf16 == {**default, "precision": "bf16_pointwise"} and frozen == {**default, "batch_norm": "frozen"}
