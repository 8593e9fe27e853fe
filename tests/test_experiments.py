import math

import pytest
import torch

from kx_utils.config.schema import Section5Plan
from kx_utils.experiments.attack import KnockoffResult, knockoff
from kx_utils.experiments.in_distribution import (
    flagged_share,
    in_distribution_budget,
    select_by_validation,
    validation_grid,
)
from kx_utils.experiments.section5 import (
    attack_formats,
    batch_size_rows,
    curve_entry,
    early_stopping_row,
    equal_steps_control,
    equal_steps_epochs,
    figure1_data,
    format_row,
    knockoff_row,
    largest_gaps,
    section5_plan,
    transfer_answers,
)


def fake_result(test_accs, val_accs=None, victim_acc=0.8):
    """A KnockoffResult with a made-up history, as knockoff would report it."""
    history = [{"epoch": i + 1, "test_acc": t} for i, t in enumerate(test_accs)]
    val = None
    if val_accs is not None:
        for row, v in zip(history, val_accs):
            row["val_acc"] = v
        val = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    best = max(history, key=lambda r: (r["test_acc"], -r["epoch"]))
    return KnockoffResult(
        victim="cifar10", victim_name="CIFAR10-MNV2", victim_accuracy=victim_acc, surrogate_arch="mobilenet_v2",
        api={"mode": "probs"}, pool="imagenet", budget=100, batch_size=64, epochs=len(history),
        final_accuracy=history[-1]["test_acc"], best_accuracy=best["test_acc"], best_epoch=best["epoch"],
        history=history, per_class_victim=[0.9, 0.8, 0.7], per_class_surrogate=[0.5, 0.8, 0.6],
        transfer_histogram=[50, 30, 20], queries_sent=0, query_count=100, refused=0,
        val_selected_accuracy=None if val is None else val["test_acc"],
        val_selected_epoch=None if val is None else val["epoch"])


# ----------------------------------------------------------------- pure helpers


def test_largest_gaps_orders_by_victim_minus_surrogate_and_skips_missing_classes():
    victim = [0.9, 0.8, 0.7, float("nan"), 0.6]
    surrogate = [0.85, 0.4, 0.3, 0.0, 0.6]
    # gaps: 0.05, 0.4, 0.4, (nan), 0.0 -> the tie between classes 1 and 2 keeps the lower index first
    assert largest_gaps(victim, surrogate, 2) == [1, 2]
    assert largest_gaps(victim, surrogate, 10) == [1, 2, 0, 4]
    with pytest.raises(ValueError, match="one entry per class"):
        largest_gaps([0.1, 0.2], [0.1], 1)


def test_figure1_data_names_the_largest_gaps():
    result = fake_result([0.5, 0.6])
    data = figure1_data(result, ["cat", "dog", "emu"], n_gaps=2)
    assert data["largest_gaps"] == ["cat", "emu"] and data["largest_gap_indices"] == [0, 2]
    assert data["histogram"] == [50, 30, 20] and data["classes"] == ["cat", "dog", "emu"]
    with pytest.raises(ValueError, match="class names"):
        figure1_data(result, ["cat", "dog"])


def test_select_by_validation_takes_the_best_cell_earliest_epoch_then_first_batch_size():
    histories = {
        16: [{"epoch": 1, "val_acc": 0.4, "test_acc": 0.30}, {"epoch": 2, "val_acc": 0.6, "test_acc": 0.50},
             {"epoch": 3, "val_acc": 0.6, "test_acc": 0.55}],
        64: [{"epoch": 1, "val_acc": 0.5, "test_acc": 0.40}, {"epoch": 2, "val_acc": 0.6, "test_acc": 0.45}],
        128: [{"epoch": 1, "val_acc": 0.3, "test_acc": 0.70}],
    }
    batch_size, row = select_by_validation(histories)
    assert (batch_size, row["epoch"], row["test_acc"]) == (16, 2, 0.50)  # not the test-best cell (bs 128)
    histories[64][1]["val_acc"] = 0.61
    assert select_by_validation(histories)[0] == 64
    with pytest.raises(ValueError, match="validation_fraction"):
        select_by_validation({16: [{"epoch": 1, "test_acc": 0.3}]})
    with pytest.raises(ValueError, match="empty"):
        select_by_validation({})


def test_early_stopping_row_measures_the_share_of_the_gain_captured():
    # test accuracy peaks at epoch 2 (0.7), ends at 0.5; validation peaks at epoch 3 (test 0.6)
    result = fake_result([0.4, 0.7, 0.6, 0.5], val_accs=[0.3, 0.5, 0.55, 0.52])
    row = early_stopping_row(result)
    assert (row["best_epoch"], row["val_selected_epoch"], row["final_epoch"]) == (2, 3, 4)
    assert row["val_selected_acc"] == 0.6 and row["final_acc"] == 0.5
    assert row["gain_captured"] == pytest.approx((0.6 - 0.5) / (0.7 - 0.5))
    no_gain = early_stopping_row(fake_result([0.4, 0.6], val_accs=[0.5, 0.4]))
    assert no_gain["gain_captured"] is None and no_gain["val_selected_acc"] == 0.4  # stopping early hurt here
    with pytest.raises(ValueError, match="validation_fraction"):
        early_stopping_row(fake_result([0.4, 0.6]))


def test_curve_entry_keeps_the_per_epoch_curves():
    entry = curve_entry(fake_result([0.4, 0.7, 0.6], val_accs=[0.3, 0.5, 0.55]))
    assert entry["test_acc_per_epoch"] == [0.4, 0.7, 0.6] and entry["val_acc_per_epoch"] == [0.3, 0.5, 0.55]
    assert (entry["best_epoch"], entry["best_acc"], entry["final_acc"], entry["val_selected_epoch"]) == (2, 0.7, 0.6, 3)
    assert "val_acc_per_epoch" not in curve_entry(fake_result([0.4, 0.7]))


def test_flagged_share_counts_one_flag_per_image():
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    images[:3] = 255
    assert flagged_share(lambda x: x.flatten(1).float().mean(1) > 100, images) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="one bool per image"):
        flagged_share(lambda x: torch.ones(3, dtype=torch.bool), images)


def test_section5_plan_applies_changes_and_rejects_unknown_ones(tiny_profile):
    plan = section5_plan(tiny_profile, figure2_epochs=7, grid_batch_sizes=[16, 32], table7_victims=None)
    assert isinstance(plan, Section5Plan)
    assert plan.figure2_epochs == 7 and plan.grid_batch_sizes == (16, 32)
    assert plan.table7_victims == ("cifar10", "gtsrb_5l")  # None keeps smoke's value
    assert section5_plan(tiny_profile) == tiny_profile.section5  # no change: the profile's own plan
    with pytest.raises(ValueError, match="figure2_epochs"):
        section5_plan(tiny_profile, figure_epochs=3)


def test_section5_plan_is_the_profiles_own_whatever_its_name(tiny_profile):
    from kx_utils import get_profile

    renamed = tiny_profile.replace(name="my_run")  # once fell back to mini's plan
    assert section5_plan(renamed) == get_profile("smoke").section5 != get_profile("mini").section5
    assert section5_plan(get_profile("paper")).imagenet_control is False
    assert section5_plan(get_profile("mini", section5={"grid_epochs": 4})).grid_epochs == 4


def test_in_distribution_budget_is_per_class_times_classes_capped_by_the_pool(tiny_profile):
    assert in_distribution_budget(tiny_profile.replace(in_distribution_per_class=4), 10, 1000) == 40
    assert in_distribution_budget(tiny_profile.replace(in_distribution_per_class=400), 10, 1000) == 1000
    assert in_distribution_budget(tiny_profile.replace(in_distribution_per_class=None), 10, 1351) == 1351


# ----------------------------------------------------------------- through the attack (tiny data)


def test_transfer_answers_share_knockoffs_cache(tiny_profile, store):
    answered = transfer_answers(tiny_profile, "cifar10", mode="topk", k=3, store=store)
    assert answered["queries"] == tiny_profile.transfer_budget
    assert ((answered["answers"] > 0).sum(1) <= 3).all()
    result = knockoff(tiny_profile, "cifar10", mode="topk", k=3, store=store)
    assert result.queries_sent == 0 and result.query_count == tiny_profile.transfer_budget
    knockoff(tiny_profile, "cifar10", mode="rounded", decimals=1, store=store)
    again = transfer_answers(tiny_profile, "cifar10", mode="rounded", decimals=1, store=store)
    assert again["queries"] == 0
    assert torch.equal(again["answers"], (again["answers"] * 10).round() / 10)  # one decimal
    everything = tiny_profile.replace(attacker_pool_split="all")  # the pool split follows the profile
    answered_all = transfer_answers(everything, "cifar10", mode="label", budget="all", store=store)
    assert answered_all["queries"] == 120 + 24  # tiny_imagenet train + val
    assert knockoff(everything, "cifar10", mode="label", budget="all", store=store).queries_sent == 0


def test_attack_formats_reuses_the_label_surrogate_for_top1_only(tiny_profile, store):
    outcomes = attack_formats(tiny_profile, "cifar10", ("probs", "label", "top1", "top3"), store=store)
    assert outcomes["top1"].same_targets_as == "label"
    assert outcomes["top1"].result is outcomes["label"].result
    assert outcomes["top3"].same_targets_as is None and outcomes["probs"].same_targets_as is None
    assert outcomes["top3"].result.api == {"mode": "topk", "k": 3}
    trained = list((store.root / "surrogate").glob("*.pt"))
    assert len(trained) == 3  # probs, label, top3: top-1 trained nothing
    row = format_row(outcomes)
    assert row["top1_acc"] == row["label_acc"] and row["top1_same_targets_as"] == "label"
    assert row["rounded_acc"] is None and row["rounded_recovery"] is None
    assert row["top3_recovery"] == pytest.approx(row["top3_acc"] / row["victim_acc"])
    with pytest.raises(ValueError, match="valid: probs"):
        attack_formats(tiny_profile, "cifar10", ("logits",), store=store)


def test_batch_size_rows_reuse_the_default_surrogate_and_run_each_seed(tiny_profile, store):
    profile = tiny_profile.replace(surrogate_seeds=(0, 1),
                                   section5=tiny_profile.section5.replace(single_seed=("table7_bs16",)))
    default = knockoff(profile, "cifar10", store=store)  # batch size 16, seed 0: the profile's recipe
    seen = []
    rows, results = batch_size_rows(profile, ["cifar10"], [16, 32], store=store,
                                    on_result=lambda k, b, r: seen.append((b, r.settings["seed"], r.from_cache)))
    # batch size 16 is the recipe's, so its column is Table 2's runs, on Table 2's seeds (seed 0's is the default
    # surrogate, reused) although table7_bs16 is single-seed in this plan; 32 runs both seeds of table7
    assert seen == [(16, 0, True), (16, 1, False), (32, 0, False), (32, 1, False)]
    row = rows["cifar10"]
    assert row["bs16_seeds"][0] == default.final_accuracy and len(row["bs16_seeds"]) == 2
    accs = [r.final_accuracy for r in results["cifar10"][32]]
    assert row["bs32"] == pytest.approx(sum(accs) / 2) and row["bs32_seeds"] == accs
    assert all(r.batch_size == 32 for r in results["cifar10"][32])
    assert row["steps_per_epoch"] == {"bs16": math.ceil(60 / 16), "bs32": math.ceil(60 / 32)}
    assert row["seeds_per_batch_size"] == {"bs16": 2, "bs32": 2}
    assert row["best_batch_size"] == (16 if row["bs16"] >= row["bs32"] else 32)


def test_equal_steps_epochs_match_batch_64s_step_count():
    assert equal_steps_epochs(1000, 256, 5) == 20  # 5 x 16 steps = 20 x 4
    assert equal_steps_epochs(1000, 128, 5) == 10  # 5 x 16 = 10 x 8
    assert equal_steps_epochs(300, 128, 2) == 3  # 2 x 5 = 10 steps; 3 x 3 = 9 is the nearest
    assert equal_steps_epochs(64, 256, 1) == 1


def test_equal_steps_control_retrains_the_largest_batch_size_only_beside_batch_64():
    assert equal_steps_control((16, 64, 128, 256), True) == 256
    assert equal_steps_control((256, 64), True) == 256
    assert equal_steps_control((16, 64, 128, 256), False) is None  # the control is off
    assert equal_steps_control((16, 128, 256), True) is None  # no batch 64 to match
    assert equal_steps_control((16, 64), True) is None  # nothing larger than 64 (smoke's sizes)
    assert equal_steps_control((), True) is None


def test_batch_size_rows_add_the_equal_steps_control_for_the_largest_batch(tiny_profile, store):
    profile = tiny_profile.replace(surrogate_seeds=(0, 1), section5=tiny_profile.section5.replace(
        single_seed=("table7_equal_steps",), table7_equal_steps=True))
    recipe = profile.surrogate_recipe.replace(epochs=1)
    seen = []
    rows, results = batch_size_rows(profile, ["cifar10"], [64, 128], store=store, equal_steps=True, recipe=recipe,
                                    on_result=lambda k, b, r: seen.append((b, r.epochs, r.settings["seed"])))
    # 60 queries: one step per epoch at 64 and at 128, so the control trains as many epochs as bs64 (1)
    assert seen[-1] == (128, 1, 0) and len(results["cifar10"]["equal_steps"]) == 1
    row = rows["cifar10"]
    assert row["equal_steps_epochs"] == {"bs128": 1} and row["equal_steps_seeds"] == [0]
    assert row["bs128_equal_steps"] == results["cifar10"]["equal_steps"][0].final_accuracy
    assert row["epochs"] == 1 and "bs128_equal_steps_seeds" not in row
    # without the flag, or without a batch size above 64, there is no control
    plain, _ = batch_size_rows(profile, ["cifar10"], [64, 128], store=store, recipe=recipe)
    assert "equal_steps_epochs" not in plain["cifar10"]
    small, _ = batch_size_rows(profile, ["cifar10"], [32, 64], store=store, equal_steps=True, recipe=recipe)
    assert "equal_steps_epochs" not in small["cifar10"]


def test_seeded_rows_average_the_seeds_and_keep_each():
    a = fake_result([0.4, 0.7, 0.6], val_accs=[0.3, 0.5, 0.55])
    b = fake_result([0.2, 0.5, 0.5], val_accs=[0.4, 0.45, 0.5])
    entry = curve_entry([a, b])
    assert entry["test_acc_per_epoch"] == pytest.approx([0.3, 0.6, 0.55])
    assert entry["test_acc_per_epoch_seeds"] == [[0.4, 0.7, 0.6], [0.2, 0.5, 0.5]]
    assert (entry["best_epoch"], entry["final_acc"]) == (2, pytest.approx(0.55))
    assert entry["val_acc_per_epoch"] == pytest.approx([0.35, 0.475, 0.525]) and entry["val_selected_epoch"] == [3, 3]
    row = early_stopping_row([a, b])
    assert row["final_acc"] == pytest.approx(0.55) and row["final_acc_seeds"] == [0.6, 0.5]
    assert row["best_acc"] == pytest.approx(0.6) and row["best_acc_seeds"] == [0.7, 0.5]
    assert row["val_selected_acc_seeds"] == [0.6, 0.5]
    assert row["gain_captured"] == pytest.approx(0.0)  # validation stops at the last epoch for both seeds
    knock = knockoff_row([a, b])
    assert knock["surrogate_acc"] == pytest.approx(0.55) and knock["recovery_seeds"] == [0.6 / 0.8, 0.5 / 0.8]
    assert knock["best_acc_seeds"] == [0.7, 0.5] and knock["best_epoch"] == [2, 2]
    single = knockoff_row([a])
    assert single["surrogate_acc"] == 0.6 and "surrogate_acc_seeds" not in single and single["best_epoch"] == 2
    with pytest.raises(ValueError, match="different lengths"):
        curve_entry([a, fake_result([0.5, 0.6])])


def test_format_row_averages_each_format_over_the_seeds_that_ran_it():
    from kx_utils.experiments.section5 import FormatOutcome

    seed0 = {"probs": FormatOutcome(fake_result([0.6]), None), "label": FormatOutcome(fake_result([0.4]), None),
             "top3": FormatOutcome(fake_result([0.5]), None)}
    seed1 = {"probs": FormatOutcome(fake_result([0.8]), None), "label": FormatOutcome(fake_result([0.2]), None)}
    row = format_row([seed0, seed1])
    assert row["probs_acc"] == pytest.approx(0.7) and row["probs_acc_seeds"] == [0.6, 0.8]
    assert row["label_recovery_seeds"] == [pytest.approx(0.5), pytest.approx(0.25)]
    assert row["top3_acc"] == 0.5 and "top3_acc_seeds" not in row  # one seed ran it
    assert row["rounded_acc"] is None


def test_budget_curve_reuses_table2_runs_at_the_profiles_budget(tiny_profile, store):
    from kx_utils.experiments.section5 import budget_curve, table2_attack

    profile = tiny_profile.replace(surrogate_validation_fraction=0.25)
    table2 = knockoff(profile, "cifar10", store=store, **table2_attack(profile))
    seen = []
    curve = budget_curve(profile, "cifar10", [20, 60], store=store,
                         on_result=lambda k, b, r: seen.append((r.budget, r.from_cache)))
    assert seen == [(20, False), (60, True)]
    assert list(curve["points"]) == ["20", "60"]
    assert curve["points"]["60"]["surrogate_acc"] == table2.final_accuracy
    assert curve["points"]["20"]["recovery"] == pytest.approx(curve["points"]["20"]["surrogate_acc"]
                                                              / curve["victim_acc"])


def test_validation_grid_chooses_on_validation_and_reports_that_cells_test_accuracy(tiny_profile, store):
    grid = validation_grid(tiny_profile, "cifar10", batch_sizes=[16, 32], epochs=3, validation_fraction=0.25,
                           store=store)
    assert set(grid["grid"]) == {"bs16", "bs32"}
    cells = grid["grid"]
    assert all(len(c["val_acc_per_epoch"]) == 3 for c in cells.values())
    best_val = max(max(c["val_acc_per_epoch"]) for c in cells.values())
    chosen = cells[f"bs{grid['chosen_batch_size']}"]
    assert grid["chosen_val_acc"] == best_val == chosen["val_acc_per_epoch"][grid["chosen_epochs"] - 1]
    assert grid["test_acc"] == chosen["test_acc_per_epoch"][grid["chosen_epochs"] - 1]
    for b, result in grid["results"].items():
        assert result.epochs == 3 and result.batch_size == b and result.val_selected_epoch is not None
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_grid(tiny_profile, "cifar10", batch_sizes=[16], epochs=2, validation_fraction=0.0, store=store)
