"""kx_utils.config.seeds: which seeds an experiment runs, and the mean / per-seed columns of its rows."""

import statistics

import pytest

from kx_utils.config.profiles import get_profile
from kx_utils.config.seeds import (
    SEEDED_EXPERIMENTS,
    mean_curve,
    seeded,
    seeded_columns,
    seeds_for,
)


def _profile(seeds=(0, 1, 2), single=("table7_bs16",)):
    p = get_profile("smoke")
    return p.replace(surrogate_seeds=seeds, section5=p.section5.replace(single_seed=single))


# ---------------------------------------------------------------- seeded


def test_seeded_two_or_more_values_give_mean_and_seeds():
    out = seeded("test_acc", [0.5, 0.6, 0.7])
    assert set(out) == {"test_acc", "test_acc_seeds"}
    assert out["test_acc"] == pytest.approx(0.6)
    assert out["test_acc_seeds"] == [0.5, 0.6, 0.7]
    assert isinstance(out["test_acc_seeds"], list)


def test_seeded_two_values():
    assert seeded("recovery", [1.0, 2.0]) == {"recovery": 1.5, "recovery_seeds": [1.0, 2.0]}


def test_seeded_single_value_has_no_seeds_column():
    assert seeded("test_acc", [0.42]) == {"test_acc": 0.42}


def test_seeded_none_anywhere_gives_none_only():
    assert seeded("test_acc", [0.5, None, 0.7]) == {"test_acc": None}
    assert seeded("test_acc", [None]) == {"test_acc": None}
    assert seeded("test_acc", [None, 0.3]) == {"test_acc": None}


def test_seeded_empty_gives_none():
    assert seeded("x", []) == {"x": None}


def test_seeded_accepts_a_tuple_and_returns_a_list_copy():
    values = (3, 5)
    out = seeded("n", values)
    assert out == {"n": 4.0, "n_seeds": [3, 5]}


# ---------------------------------------------------------------- seeded_columns


def test_seeded_columns_one_row_of_means_with_seeds():
    rows = [{"final_acc": 0.2, "recovery": 0.4, "other": "x"},
            {"final_acc": 0.4, "recovery": 0.8, "other": "y"}]
    out = seeded_columns(rows, ["final_acc", "recovery"])
    assert set(out) == {"final_acc", "final_acc_seeds", "recovery", "recovery_seeds"}
    assert out["final_acc"] == pytest.approx(0.3)
    assert out["recovery"] == pytest.approx(0.6)
    assert out["final_acc_seeds"] == [0.2, 0.4]
    assert out["recovery_seeds"] == [0.4, 0.8]
    assert "other" not in out


def test_seeded_columns_missing_or_none_column_is_none():
    rows = [{"a": 1.0, "b": 2.0}, {"a": 3.0}]
    out = seeded_columns(rows, ["a", "b"])
    assert out == {"a": 2.0, "a_seeds": [1.0, 3.0], "b": None}


def test_seeded_columns_single_row_has_no_seeds():
    assert seeded_columns([{"a": 0.25, "b": 7}], ["a", "b"]) == {"a": 0.25, "b": 7}


# ---------------------------------------------------------------- mean_curve


def test_mean_curve_is_epoch_wise():
    assert mean_curve([[0.1, 0.2, 0.3], [0.3, 0.4, 0.8]]) == pytest.approx([0.2, 0.3, 0.55])
    assert mean_curve([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]]) == pytest.approx([2.0, 5.0])


def test_mean_curve_of_one_curve_is_the_curve():
    assert mean_curve([[0.5, 0.25]]) == [0.5, 0.25]


def test_mean_curve_different_lengths_raise():
    with pytest.raises(ValueError, match="different lengths"):
        mean_curve([[0.1, 0.2], [0.1, 0.2, 0.3]])


# ---------------------------------------------------------------- seeds_for


def test_each_profile_runs_its_seeds_and_its_single_seed_experiments_on_the_first_only():
    """The profiles' plans (config/profiles.py), through seeds_for: paper one seed, smoke two, mini three; in
    smoke and mini the extra formats, Table 7 beyond Table 2's batch size, its controls and
    the budget curves and 07's defended APIs on seed 0 (Table 5's scratch victims, Table 6's label-only column and 07's adaptive attacker on all of them)."""
    single = ("extra_formats", "table7", "table7_bs16", "table7_equal_steps", "table7_convergence",
              "budget_curves", "defences", "dawn")
    expected = {"paper": ((0,), ()), "smoke": ((0, 1), single), "mini": ((0, 1, 2), single)}
    for name, (seeds, limited) in expected.items():
        p = get_profile(name)
        assert {e: seeds_for(p, e) for e in SEEDED_EXPERIMENTS} == {
            e: seeds[:1] if e in limited else seeds for e in SEEDED_EXPERIMENTS}, name
    # a profile that names neither runs the dataclasses' defaults: seed 0, no experiment limited
    from kx_utils.config.schema import Profile, Section5Plan
    assert Profile.__dataclass_fields__["surrogate_seeds"].default == (0,)
    assert Section5Plan.__dataclass_fields__["single_seed"].default == ()


def test_seeds_for_all_seeds_by_default():
    p = _profile()
    assert seeds_for(p, "table2") == (0, 1, 2)
    assert seeds_for(p, "figure2") == (0, 1, 2)
    assert seeds_for(p, "table7") == (0, 1, 2)


def test_seeds_for_single_seed_experiment_runs_the_first_seed_only():
    p = _profile(seeds=(5, 1, 2))
    assert seeds_for(p, "table7_bs16") == (5,)
    assert seeds_for(p, "table7") == (5, 1, 2)  # only the named experiment is limited


def test_seeds_for_several_single_seed_experiments():
    p = _profile(single=("figure2", "budget_curves"))
    assert seeds_for(p, "figure2") == (0,)
    assert seeds_for(p, "budget_curves") == (0,)
    assert seeds_for(p, "table7_bs16") == (0, 1, 2)


def test_seeds_for_one_seed_profile():
    p = _profile(seeds=(3,), single=())
    assert seeds_for(p, "table5") == (3,)


def test_seeds_for_returns_a_tuple_when_given_a_list():
    p = _profile(seeds=[0, 1])
    assert seeds_for(p, "table6") == (0, 1)


def test_seeds_for_every_known_experiment_is_accepted():
    p = _profile()
    for experiment in SEEDED_EXPERIMENTS:
        expected = (0,) if experiment == "table7_bs16" else (0, 1, 2)
        assert seeds_for(p, experiment) == expected


def test_seeds_for_unknown_experiment_raises():
    with pytest.raises(ValueError, match="unknown experiment"):
        seeds_for(_profile(), "table99")
    with pytest.raises(ValueError):
        seeds_for(_profile(), "")


def test_seeded_mean_matches_statistics():
    values = [0.61, 0.58, 0.66]
    assert seeded("a", values)["a"] == pytest.approx(statistics.fmean(values))


def test_every_seeded_draw_has_its_own_stream_and_an_unknown_one_is_refused():
    from kx_utils.config.seeds import SEED_OFFSETS, stream_seed
    offsets = list(SEED_OFFSETS.values())
    assert len(set(offsets)) == len(offsets) and 0 not in offsets  # 0: the profile's own seed (the test caps)
    assert stream_seed(5, "validation_in") == 5 + 213 and stream_seed(3, "attacker_validation") == 4
    with pytest.raises(ValueError, match="unknown seed stream 'validation'; valid: scratch_detector_in"):
        stream_seed(0, "validation")
