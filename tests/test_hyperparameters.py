"""Notebook 05's experiment functions (kx_utils.experiments.hyperparameters)."""

import dataclasses

import pytest

from kx_utils.experiments import hyperparameters as H
from kx_utils.experiments.attack import KnockoffResult
from kx_utils.experiments.section5 import Section5Settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_run(seed=0, batch_size=64, budget=1000, epochs=5):
    return KnockoffResult(
        victim="cifar10", victim_name="CIFAR10-MNV2", victim_accuracy=0.8, surrogate_arch="mobilenet_v2",
        api={"mode": "probs"}, pool="imagenet", budget=budget, batch_size=batch_size, epochs=epochs,
        final_accuracy=0.5, best_accuracy=0.5, best_epoch=epochs, history=[], per_class_victim=[],
        per_class_surrogate=[], transfer_histogram=[], queries_sent=0, query_count=budget, refused=0,
        settings={"seed": seed})


@pytest.fixture
def settings(tiny_profile):
    """Sizes of a Table 7: 1,000 queries, 5 epochs at batch 64 (Table 2's recipe), batch sizes 16-256, control at
    256."""
    resolved = Section5Settings.resolve(tiny_profile)
    return dataclasses.replace(resolved, budget=1000,
                               recipe=tiny_profile.surrogate_recipe.replace(epochs=5, batch_size=64),
                               table7_victims=("cifar10",), table7_batch_sizes=(16, 64, 128, 256),
                               table7_control=256, table7_control_epochs=20)


def test_batch_size_runs_must_have_the_plans_seeds_and_sizes(tiny_profile, settings):
    H.check_batch_size_runs(tiny_profile, settings, "cifar10", 64, [fake_run(0), fake_run(1)])
    H.check_batch_size_runs(tiny_profile, settings, "cifar10", 16, [fake_run(0, 16)])  # table7_bs16: one seed
    with pytest.raises(RuntimeError, match=r"seeds \[0\], expected \[0, 1\]"):
        H.check_batch_size_runs(tiny_profile, settings, "cifar10", 64, [fake_run(0)])
    with pytest.raises(RuntimeError, match="4 epochs; expected 64, 1000, 5"):
        H.check_batch_size_runs(tiny_profile, settings, "cifar10", 64, [fake_run(0), fake_run(1, epochs=4)])


def test_equal_steps_control_must_match_batch_64s_steps(tiny_profile, settings):
    # 1,000 queries: 16 steps per epoch at 64, 4 at 256; 5 epochs at 64 = 80 steps = 20 epochs at 256
    row = {"name": "CIFAR10-MNV2", "steps_per_epoch": {"bs64": 16, "bs256": 4}}
    H.check_equal_steps_control(tiny_profile, settings, row, [fake_run(0, 256, epochs=20)])
    with pytest.raises(RuntimeError, match="256 for 84 steps; expected 256 for about 80"):  # off by a whole epoch
        H.check_equal_steps_control(tiny_profile, settings, row, [fake_run(0, 256, epochs=21)])
    # 300 queries: 5 steps per epoch at 64 (25 in 5 epochs), 2 at 256: 12 or 13 epochs are as near as it gets
    odd = {"name": "CIFAR10-MNV2", "steps_per_epoch": {"bs64": 5, "bs256": 2}}
    H.check_equal_steps_control(tiny_profile, settings, odd, [fake_run(0, 256, epochs=13)])
    with pytest.raises(RuntimeError, match="for 28 steps"):
        H.check_equal_steps_control(tiny_profile, settings, odd, [fake_run(0, 256, epochs=14)])
    with pytest.raises(RuntimeError, match=r"on seeds \[0\]"):
        H.check_equal_steps_control(tiny_profile, settings, row, None)
    no_control = dataclasses.replace(settings, table7_control=None, table7_control_epochs=None)
    H.check_equal_steps_control(tiny_profile, no_control, row, None)
    with pytest.raises(RuntimeError, match="where the plan has none"):
        H.check_equal_steps_control(tiny_profile, no_control, row, [fake_run(0, 256, epochs=20)])


def test_batch_size_summary_sets_the_best_batch_size_beside_the_papers():
    rows = {"gtsrb": {"name": "GTSRB-RN34", "best_batch_size": 64, "steps_per_epoch": {"bs64": 16, "bs256": 4},
                      "seeds_per_batch_size": {"bs64": 3, "bs256": 3}, "bs256_equal_steps": 0.8125,
                      "equal_steps_epochs": {"bs256": 20}},
            "mine": {"name": "Mine", "best_batch_size": 256, "steps_per_epoch": {"bs256": 4},
                     "seeds_per_batch_size": {"bs256": 1}}}
    paper = {"gtsrb": {"bs16": 0.927, "bs64": 0.924, "bs128": 0.947, "bs256": 0.726}}
    assert H.batch_size_summary(rows, paper) == {
        "GTSRB-RN34": {"best bs (ours)": 64, "best bs (paper)": 128, "steps/epoch bs64": 16, "steps/epoch bs256": 4,
                       "seeds bs64": 3, "seeds bs256": 3, "bs256 for 20 epochs (bs64's steps)": "81.2%"},
        "Mine": {"best bs (ours)": 256, "best bs (paper)": None, "steps/epoch bs256": 4, "seeds bs256": 1}}


def test_notes_name_what_table7_leaves_out(tiny_profile, settings):
    two = dataclasses.replace(settings, table7_batch_sizes=(16, 64), table7_control=None, budget=60, convergence_victims=(),
                              recipe=tiny_profile.surrogate_recipe, figure2_budget=60, figure2_victims=("cifar10",))
    assert H.notes(tiny_profile, two)[:4] == [
        "Table 7: batch sizes [128, 256] not run in this profile.",
        "Table 7: only victims cifar10.",
        "Table 7: Table 2's attack (60 queries, 2 epochs) at every batch size; its batch-16 column is Table 2's "
        "surrogates.",
        "Figure 2 / early stopping: 60 queries, 2 epochs, 10% of the queries held out as the attacker's validation "
        "set (the surrogate trains on the rest); victims cifar10."]
    notes = H.notes(tiny_profile, settings)
    assert notes[1] == "Table 7's equal-steps control (beyond the paper): " + H.RATIONALE["table7_equal_steps"]
    assert notes[2] == ("Table 7: Table 2's attack (1,000 queries, 5 epochs) at every batch size; its batch-64 "
                        "column is Table 2's surrogates.")
    assert notes[-2:] == ["Table 7: epochs fixed, so larger batches take fewer SGD steps (as in the paper).",
                          "Seeds: surrogate results are means over 2 seeds (0, 1); single seed (0) for: extra_formats, "
                          "table7, table7_bs16, table7_equal_steps, table7_convergence, budget_curves, defences, dawn."]
    converging = dataclasses.replace(two, convergence_victims=("cifar10",), convergence_budget=50,
                                     convergence_recipe=two.recipe.replace(epochs=9), convergence_patience=2)
    assert H.notes(tiny_profile, converging)[3] == (
        "Table 7, convergence protocol (beyond the paper's table, its advice in 5.2.1): victims cifar10, 50 queries, "
        "each batch size trained until the attacker's validation accuracy has not improved for 2 epochs (9 at most); "
        "the accuracy is the test accuracy at the epoch the attacker's validation picks. Claim 5 is decided on it.")


def test_table7_and_figure2_run_on_tiny_data(tiny_profile, settings, store):
    profile = tiny_profile.replace(surrogate_seeds=(0,))
    small = dataclasses.replace(settings, budget=60, recipe=profile.surrogate_recipe,
                                table7_batch_sizes=(16, 32), table7_control=None, figure2_victims=("cifar10",),
                                figure2_budget=60, figure2_recipe=profile.surrogate_recipe)
    seen = []
    rows = H.table7_rows(profile, small, store, on_result=lambda key, b, r: seen.append((key, b)))
    assert seen == [("cifar10", 16), ("cifar10", 32)]
    assert rows["cifar10"]["steps_per_epoch"] == {"bs16": 4, "bs32": 2}  # 60 queries
    figure2, early = H.figure2_entries(profile, small, store)
    assert len(figure2["cifar10"]["test_acc_per_epoch"]) == 2 and early["cifar10"]["final_epoch"] == 2
    assert early["cifar10"]["val_selected_acc"] <= early["cifar10"]["best_acc"]


def test_convergence_rows_score_each_batch_size_at_its_validation_epoch(tiny_profile, settings, monkeypatch):
    def converged(seed, batch_size, stopped, picked_acc, last_acc):
        history = [{"epoch": e + 1, "val_acc": 0.1 * (e + 1) if e + 1 <= stopped - 2 else 0.0} for e in range(stopped)]
        run = dataclasses.replace(fake_run(seed, batch_size, budget=200, epochs=12), history=history,
                                  final_accuracy=last_acc)
        return dataclasses.replace(run, val_selected_accuracy=picked_acc, val_selected_epoch=stopped - 2)
    made = {64: [converged(0, 64, 5, 0.40, 0.38)], 256: [converged(0, 256, 9, 0.46, 0.45)]}
    calls = []

    def knockoff_seeds(profile, key, experiment, batch_size, store=None, **attack):
        calls.append((key, experiment, batch_size, attack["patience"], attack["budget"], attack["recipe"].epochs))
        return made[batch_size]
    monkeypatch.setattr(H, "knockoff_seeds", knockoff_seeds)
    plan = dataclasses.replace(settings, table7_batch_sizes=(64, 256), convergence_victims=("cifar10",),
                               convergence_budget=200, convergence_recipe=settings.recipe.replace(epochs=12),
                               convergence_patience=2)
    row = H.convergence_rows(tiny_profile, plan)["cifar10"]
    assert calls == [("cifar10", "table7_convergence", 64, 2, 200, 12), ("cifar10", "table7_convergence", 256, 2, 200, 12)]
    assert (row["bs64"], row["bs256"], row["bs64_last"], row["bs256_last"]) == (0.40, 0.46, 0.38, 0.45)
    assert row["epochs_trained"] == {"bs64": [5], "bs256": [9]} and row["best_batch_size"] == 256
    assert (row["budget"], row["max_epochs"], row["patience"], row["seeds"]) == (200, 12, 2, [0])
    assert H.convergence_rows(tiny_profile, dataclasses.replace(plan, convergence_victims=())) == {}
    made[64] = [converged(0, 64, 13, 0.40, 0.38)]  # more epochs than the plan allows
    with pytest.raises(RuntimeError, match="trained 13 epochs"):
        H.convergence_rows(tiny_profile, plan)
