"""kx_utils.report.side_by_side: the standard deviation over seeds (``<measure>_seeds``) beside the mean."""

import math
import statistics

import pytest

from kx_utils.report.side_by_side import (
    formatted,
    measure_table,
    seed_sd,
    side_by_side,
    to_markdown,
)

# ---------------------------------------------------------------- seed_sd


def test_seed_sd_is_the_sample_standard_deviation():
    # 0.5, 0.6, 0.7: mean 0.6, squared deviations 0.01 + 0 + 0.01, / (n - 1) = 0.01 -> sd 0.1
    assert seed_sd({"test_acc_seeds": [0.5, 0.6, 0.7]}, "test_acc") == pytest.approx(0.1)
    # two values a, b: |a - b| / sqrt(2)
    assert seed_sd({"recovery_seeds": [1.0, 2.0]}, "recovery") == pytest.approx(1 / math.sqrt(2))
    values = [0.31, 0.35, 0.29, 0.4]
    assert seed_sd({"x_seeds": values}, "x") == pytest.approx(statistics.stdev(values))


def test_seed_sd_none_without_two_numbers():
    assert seed_sd({"test_acc_seeds": [0.5]}, "test_acc") is None
    assert seed_sd({"test_acc_seeds": []}, "test_acc") is None
    assert seed_sd({"test_acc": 0.5}, "test_acc") is None
    assert seed_sd({}, "test_acc") is None
    assert seed_sd(None, "test_acc") is None
    assert seed_sd({"test_acc_seeds": None}, "test_acc") is None


def test_seed_sd_ignores_non_numbers():
    assert seed_sd({"a_seeds": [0.5, None]}, "a") is None
    assert seed_sd({"a_seeds": [0.5, float("nan"), "x"]}, "a") is None
    assert seed_sd({"a_seeds": [1.0, None, 3.0]}, "a") == pytest.approx(statistics.stdev([1.0, 3.0]))


def test_seed_sd_of_equal_values_is_zero():
    assert seed_sd({"a_seeds": [0.4, 0.4, 0.4]}, "a") == 0.0


def test_seed_sd_looks_at_the_named_column_only():
    row = {"a_seeds": [0.1, 0.3], "b_seeds": [1.0, 5.0]}
    assert seed_sd(row, "a") == pytest.approx(statistics.stdev([0.1, 0.3]))
    assert seed_sd(row, "b") == pytest.approx(statistics.stdev([1.0, 5.0]))


# ---------------------------------------------------------------- side_by_side

PAPER = {"caltech": {"surrogate_acc": 0.70, "recovery": 0.90},
         "cifar10": {"surrogate_acc": 0.80, "recovery": 0.95}}


def test_side_by_side_without_seeds_has_no_sd_column():
    ours = {"caltech": {"surrogate_acc": 0.65, "recovery": 0.85},
            "cifar10": {"surrogate_acc": 0.75, "recovery": 0.90, "surrogate_acc_seeds": [0.75]}}
    frame = side_by_side(ours, PAPER, ["surrogate_acc", "recovery"])
    assert list(frame.columns) == [("surrogate_acc", "paper"), ("surrogate_acc", "ours"), ("surrogate_acc", "diff"),
                                   ("recovery", "paper"), ("recovery", "ours"), ("recovery", "diff")]
    assert "sd" not in frame.columns.get_level_values("source")


def test_side_by_side_adds_sd_column_only_for_the_seeded_measure():
    ours = {"caltech": {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.6, 0.7], "recovery": 0.85},
            "cifar10": {"surrogate_acc": 0.75, "recovery": 0.90}}
    frame = side_by_side(ours, PAPER, ["surrogate_acc", "recovery"])
    assert list(frame.columns) == [("surrogate_acc", "paper"), ("surrogate_acc", "ours"), ("surrogate_acc", "sd"),
                                   ("surrogate_acc", "diff"),
                                   ("recovery", "paper"), ("recovery", "ours"), ("recovery", "diff")]
    assert frame.loc["caltech", ("surrogate_acc", "sd")] == pytest.approx(0.1)
    # a row of the seeded measure without seeds: an empty sd cell
    assert frame.loc["cifar10", ("surrogate_acc", "sd")] is None
    # ours stays the stored mean, diff is ours minus the paper's
    assert frame.loc["caltech", ("surrogate_acc", "ours")] == pytest.approx(0.6)
    assert frame.loc["caltech", ("surrogate_acc", "diff")] == pytest.approx(-0.1)


def test_side_by_side_sd_column_for_a_row_only_in_ours():
    ours = {"stand_in": {"recovery": 1.5, "recovery_seeds": [1.0, 2.0]}}
    frame = side_by_side(ours, PAPER, ["recovery"])
    assert ("recovery", "sd") in frame.columns
    assert frame.loc["stand_in", ("recovery", "sd")] == pytest.approx(1 / math.sqrt(2))
    assert frame.loc["stand_in", ("recovery", "paper")] is None
    assert frame.loc["caltech", ("recovery", "sd")] is None


def test_side_by_side_seeds_in_paper_do_not_add_sd():
    paper = {"caltech": {"recovery": 0.9, "recovery_seeds": [0.8, 1.0]}}
    ours = {"caltech": {"recovery": 0.85}}
    frame = side_by_side(ours, paper, ["recovery"])
    assert ("recovery", "sd") not in frame.columns


def test_side_by_side_sd_only_counts_listed_rows():
    ours = {"caltech": {"recovery": 0.85},
            "hidden": {"recovery": 0.5, "recovery_seeds": [0.4, 0.6]}}
    frame = side_by_side(ours, PAPER, ["recovery"], rows=["caltech", "cifar10"])
    assert ("recovery", "sd") not in frame.columns
    frame = side_by_side(ours, PAPER, ["recovery"], rows=["caltech", "hidden"])
    assert ("recovery", "sd") in frame.columns


def test_side_by_side_single_seed_list_is_not_enough():
    ours = {"caltech": {"recovery": 0.85, "recovery_seeds": [0.85]},
            "cifar10": {"recovery": 0.9, "recovery_seeds": [0.9, None]}}
    frame = side_by_side(ours, PAPER, ["recovery"])
    assert ("recovery", "sd") not in frame.columns


# ---------------------------------------------------------------- formatted


def test_formatted_sd_of_a_rate_in_percentage_points():
    ours = {"caltech": {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.6, 0.7]},
            "cifar10": {"surrogate_acc": 0.75}}
    shown = formatted(side_by_side(ours, PAPER, ["surrogate_acc"]))
    assert shown.loc["caltech", ("surrogate_acc", "sd")] == "±10.0 pp"
    assert shown.loc["cifar10", ("surrogate_acc", "sd")] == ""
    assert shown.loc["caltech", ("surrogate_acc", "ours")] == "60.0%"
    assert shown.loc["caltech", ("surrogate_acc", "diff")] == "-10.0 pp"


def test_formatted_sd_of_a_non_rate_with_two_decimals():
    ours = {"caltech": {"recovery": 0.85, "recovery_seeds": [0.8, 0.9]}}
    shown = formatted(side_by_side(ours, PAPER, ["recovery"]))
    # stdev([0.8, 0.9]) = 0.0707...
    assert shown.loc["caltech", ("recovery", "sd")] == "±0.07"
    assert shown.loc["caltech", ("recovery", "ours")] == "0.85"
    assert shown.loc["cifar10", ("recovery", "sd")] == ""


def test_to_markdown_has_the_sd_header_and_cell():
    ours = {"caltech": {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.6, 0.7]}}
    text = to_markdown(side_by_side(ours, PAPER, ["surrogate_acc"]))
    header = text.splitlines()[0]
    assert "surrogate_acc sd" in header
    assert header.index("surrogate_acc ours") < header.index("surrogate_acc sd") < header.index("surrogate_acc diff")
    assert "±10.0 pp" in text


# ---------------------------------------------------------------- measure_table


def test_measure_table_without_seeds_has_no_sd_column():
    ours = {"surrogate_acc": 0.6, "recovery": 0.85, "recovery_seeds": [0.85]}
    table = measure_table(ours, {"surrogate_acc": 0.7, "recovery": 0.9}, ["surrogate_acc", "recovery"])
    assert list(table.columns) == ["paper", "ours", "diff"]


def test_measure_table_with_seeds_gains_an_sd_column():
    ours = {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.6, 0.7], "recovery": 0.85}
    table = measure_table(ours, {"surrogate_acc": 0.7, "recovery": 0.9}, ["surrogate_acc", "recovery"])
    assert list(table.columns) == ["paper", "ours", "sd", "diff"]
    assert table.loc["surrogate_acc", "sd"] == pytest.approx(0.1)
    assert table.loc["recovery", "sd"] is None
    assert table.loc["surrogate_acc", "diff"] == pytest.approx(-0.1)


def test_measure_table_formatted_sd_by_row_measure():
    ours = {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.6, 0.7],
            "recovery": 0.85, "recovery_seeds": [0.8, 0.9]}
    shown = formatted(measure_table(ours, {"surrogate_acc": 0.7, "recovery": 0.9}, ["surrogate_acc", "recovery"]))
    assert shown.loc["surrogate_acc", "sd"] == "±10.0 pp"
    assert shown.loc["recovery", "sd"] == "±0.07"
    assert shown.loc["surrogate_acc", "diff"] == "-10.0 pp"
