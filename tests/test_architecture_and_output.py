"""Notebook 04's experiment functions (kx_utils.experiments.architecture_and_output) and its bar chart."""

import dataclasses

import pytest

from kx_utils.experiments import architecture_and_output as A
from kx_utils.experiments.attack import KnockoffResult
from kx_utils.experiments.section5 import FormatOutcome, Section5Settings
from kx_utils.report.figures import recovery_by_format

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_result(acc=0.5, *, victim_acc=0.8, pool="imagenet", budget=100, seed=0, histogram=(50, 30, 20)):
    """A KnockoffResult as knockoff reports it, with a made-up one-epoch history."""
    return KnockoffResult(
        victim="gtsrb", victim_name="GTSRB-RN34", victim_accuracy=victim_acc, surrogate_arch="mobilenet_v2",
        api={"mode": "probs"}, pool=pool, budget=budget, batch_size=64, epochs=1, final_accuracy=acc,
        best_accuracy=acc, best_epoch=1, history=[{"epoch": 1, "test_acc": acc}],
        per_class_victim=[0.9, 0.8, 0.7], per_class_surrogate=[0.5, 0.8, 0.6], transfer_histogram=list(histogram),
        queries_sent=0, query_count=sum(histogram), refused=0, settings={"seed": seed})


@pytest.fixture
def settings(tiny_profile):
    """The tiny profile's Section 5 sizes, cut to the one victim its data holds and to its pool."""
    resolved = Section5Settings.resolve(tiny_profile)
    return dataclasses.replace(resolved, budget=60, recipe=tiny_profile.surrogate_recipe, table5_victims=("cifar10",),
                               table6_victims=("cifar10",), extra_format_victims=())


def test_require_above_chance_holds_only_clearly_learned_victims():
    from kx_utils.experiments.victims import require_above_chance
    row = {"name": "CIFAR10-MNV2", "victim_acc": 0.9}
    require_above_chance(row, 0.25, {"probs": 0.3, "top3": None})  # None: not measured
    with pytest.raises(RuntimeError, match=r"CIFAR10-MNV2 label: surrogate accuracy 0.250 <= chance 0.250"):
        require_above_chance(row, 0.25, {"probs": 0.3, "label": 0.25})
    # a victim at 1.5 x chance or below (mini's Diabetic5 stand-in) is not held to it
    require_above_chance({"name": "Diabetic5", "victim_acc": 0.375}, 0.25, {"probs": 0.1})


def test_table6_formats_adds_the_extra_columns_for_the_planned_victims_and_seeds(tiny_profile, settings):
    profile = tiny_profile.replace(section5=tiny_profile.section5.replace(single_seed=("extra_formats",)))
    extra = dataclasses.replace(settings, extra_format_victims=("cifar10",))
    assert A.table6_formats(profile, extra, "cifar10", 0) == ("probs", "label", "top1", "top3", "rounded")
    assert A.table6_formats(profile, extra, "cifar10", 1) == ("probs", "label")  # extra_formats: seed 0 only
    assert A.table6_formats(profile, extra, "caltech", 0) == ("probs", "label")


def test_check_format_outcomes_requires_the_budget_the_seed_and_top1_reuse():
    good = {"probs": FormatOutcome(fake_result(seed=3), None), "label": FormatOutcome(fake_result(seed=3), None)}
    good["top1"] = FormatOutcome(good["label"].result, "label")
    A.check_format_outcomes("gtsrb", 3, good, 100)
    with pytest.raises(RuntimeError, match="expected 100 on seed 4"):
        A.check_format_outcomes("gtsrb", 4, good, 100)
    with pytest.raises(RuntimeError, match="expected 90 on seed 3"):
        A.check_format_outcomes("gtsrb", 3, good, 90)
    with pytest.raises(RuntimeError, match="top-1 targets equal neither"):
        A.check_format_outcomes("gtsrb", 3, {**good, "top1": FormatOutcome(fake_result(seed=3), None)}, 100)


def test_section_5_1_3_values_averages_the_seeds_beside_table5(tiny_profile, settings, monkeypatch):
    pairs = {0: (fake_result(0.4, pool="diabetic5", budget=100), fake_result(0.6, budget=100)),
             1: (fake_result(0.2, pool="diabetic5", budget=100, histogram=(100, 0, 0)), fake_result(0.8, budget=100))}
    monkeypatch.setattr(A, "section_5_1_3_pair", lambda profile, seed, recipe, store=None: pairs[seed])
    table5 = {"gtsrb": {"surrogate_acc": 0.7, "surrogate_acc_seeds": [0.6, 0.8], "budget": 200}}
    values = A.section_5_1_3_values(tiny_profile, settings, table5)  # smoke: seeds 0 and 1
    assert values["gtsrb_with_diabetic5_queries_acc"] == pytest.approx(0.3)
    assert values["gtsrb_with_diabetic5_queries_acc_seeds"] == [0.4, 0.2]
    assert values["gtsrb_with_imagenet_same_budget_acc"] == pytest.approx(0.7)
    assert values["diabetic5_recovery_seeds"] == [pytest.approx(0.5), pytest.approx(0.25)]  # acc / 0.8
    assert values["gtsrb_with_imagenet_queries_acc_seeds"] == [0.6, 0.8]
    assert (values["victim_acc"], values["budget"], values["imagenet_budget"]) == (0.8, 100, 200)
    assert values["diabetic5_predicted_classes"] == 3  # the first seed's histogram: every class gets queries
    pairs[1] = (pairs[1][0], fake_result(0.8, budget=90))  # a control of another budget
    with pytest.raises(RuntimeError, match="control budget 90"):
        A.section_5_1_3_values(tiny_profile, settings, table5)


def test_notes_say_what_departs_from_table2(tiny_profile, settings):
    assert A.notes(tiny_profile, settings) == [
        "Tables 5-6: Table 2's attack (60 queries, 2 epochs, 10% held out as the attacker's validation set); the "
        "probability-vector surrogates and Table 5's pretrained rows are Table 2's runs. 5.1.3: Table 2's recipe.",
        "Table 6: top-1 answers, renormalised, are the one-hot labels of A_c; the notebook checks the "
        "transfer sets are identical and reuses A_c's surrogate for the top1 column.",
        "Table 6: no top-k or rounded column in this profile.",
        "Seeds: surrogate results are means over 2 seeds (0, 1); single seed (0) for: extra_formats, table7, "
        "table7_bs16, table7_equal_steps, table7_convergence, budget_curves, defences, dawn."]
    some = dataclasses.replace(settings, extra_format_victims=("cifar10", "caltech"))
    notes = A.notes(tiny_profile, some, {"budget": 1830})
    assert notes[0] == ("5.1.3: all 1830 images of the Diabetic5 stand-in's train split were queried (the paper does "
                        "not give its count); ImageNet control with the same budget.")
    assert notes[3] == "Table 6: top-k and rounded columns only for cifar10, caltech."


def test_table6_formats_run_label_only_on_its_own_seeds(tiny_profile, settings):
    profile = tiny_profile.replace(section5=tiny_profile.section5.replace(single_seed=()))
    assert A.table6_formats(profile, settings, "cifar10", 1) == ("probs", "label")  # every seed
    assert A.table6_formats(tiny_profile, settings, "cifar10", 0) == ("probs", "label")
    assert A.table6_formats(tiny_profile, settings, "cifar10", 1) == ("probs", "label")  # smoke: on both seeds
    one = tiny_profile.replace(section5=tiny_profile.section5.replace(single_seed=("table6_label",)))
    assert A.table6_formats(one, settings, "cifar10", 1) == ("probs",)  # label-only on seed 0 only


def test_probability_runs_must_be_table2s_attack(tiny_profile):
    from kx_utils.experiments.attack import surrogate_settings
    s5 = Section5Settings.resolve(tiny_profile)
    key = surrogate_settings(tiny_profile, "cifar10", seed=1, **s5.attack)
    A.check_table2_runs(tiny_profile, "cifar10", [dataclasses.replace(fake_result(seed=1), settings=key)])
    assert key["test_curve"] is False and key["validation_fraction"] == tiny_profile.surrogate_validation_fraction
    other = surrogate_settings(tiny_profile, "cifar10", seed=1, **{**s5.attack, "validation_fraction": 0.0})
    with pytest.raises(RuntimeError, match=r"settings differ in \['validation_fraction'\]"):
        A.check_table2_runs(tiny_profile, "cifar10", [dataclasses.replace(fake_result(seed=1), settings=other)])


def test_tables_5_and_6_share_their_surrogates_and_figure1_counts_the_queries(tiny_profile, settings, store):
    profile = tiny_profile.replace(surrogate_seeds=(0,))
    table5 = A.table5_rows(profile, settings, store)
    row = table5["cifar10"]
    assert (row["queries"], row["seeds"], row["chance"]) == (60, [0], 0.25)  # 4 classes of 8 test images
    table6, outcomes = A.table6_rows(profile, settings, store, table5=table5)
    assert table6["cifar10"]["probs_acc"] == row["surrogate_acc"] and table6["cifar10"]["chance"] == 0.25
    assert list(outcomes["cifar10"][0]) == ["probs", "label"]
    assert outcomes["cifar10"][0]["probs"].result.from_cache  # Table 5's surrogate, not trained again
    entry = A.figure1_entry(profile, outcomes, 2, store)
    assert sum(entry["histogram"]) == 60 and len(entry["largest_gaps"]) == 2
    with pytest.raises(RuntimeError, match="should share it"):
        A.table6_rows(profile, settings, store, table5={"cifar10": {**row, "surrogate_acc": row["surrogate_acc"] + 0.01}})


def test_recovery_by_format_draws_one_bar_per_measured_format():
    rows = {"gtsrb": {"name": "GTSRB-RN34", "probs_recovery": 0.9, "label_recovery": 0.5, "top1_recovery": 0.5,
                      "top3_recovery": None, "rounded_recovery": None},
            "cifar10": {"name": "CIFAR10-MNV2", "probs_recovery": 0.8, "label_recovery": 0.4, "top1_recovery": 0.4,
                        "top3_recovery": 0.7, "rounded_recovery": 0.75}}
    ax = recovery_by_format(rows).axes[0]
    heights = {(round(p.get_x() + p.get_width() / 2, 2), round(p.get_height(), 2)) for p in ax.patches}
    # formats probs, top3, rounded, top1, label at offsets -2..2 x 0.16 around each victim's index
    assert heights == {(-0.32, 0.9), (0.16, 0.5), (0.32, 0.5), (0.68, 0.8), (0.84, 0.7), (1.0, 0.75), (1.16, 0.4),
                       (1.32, 0.4)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GTSRB-RN34", "CIFAR10-MNV2"]
