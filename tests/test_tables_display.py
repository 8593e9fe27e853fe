"""kx_utils.report.side_by_side as a notebook reader sees them: readable headers, no column that is always empty,
and the Knockoff paper's own numbers as a table of their own."""

import re

from kx_utils.report import paper
from kx_utils.report.side_by_side import (
    formatted,
    measure_table,
    paper_table,
    side_by_side,
)


def _header_rows(frame) -> list[list[str]]:
    """The header rows of the HTML a notebook shows, as lists of cell texts."""
    head = formatted(frame).to_html().split("<tbody>")[0]
    return [re.findall(r"<th[^>]*>([^<]*)</th>", row) for row in head.split("<tr")[1:]]


TABLE1_OURS = {"cifar10": {"image_size": "32x32 / 32x32", "classes": 10, "train": 300, "test": 100}}


def test_a_measure_of_strings_gets_no_difference_column():
    frame = side_by_side(TABLE1_OURS, paper.TABLE1, ["image_size", "classes", "train"], rows=["cifar10"])
    assert list(frame.columns) == [("image_size", "paper"), ("image_size", "ours"),
                                   ("classes", "paper"), ("classes", "ours"), ("classes", "diff"),
                                   ("train", "paper"), ("train", "ours"), ("train", "diff")]
    assert frame.loc["cifar10", ("classes", "diff")] == 0  # 10 - 10
    assert frame.loc["cifar10", ("train", "diff")] == 300 - 50_000


def test_a_measure_not_measured_anywhere_gets_no_difference_column():
    ours = {"caltech": {"victim_acc": 0.7}, "cubs": {"victim_acc": 0.6}}
    frame = side_by_side(ours, paper.TABLE2, ["victim_acc", "surrogate_acc"], rows=["caltech", "cubs"])
    assert ("surrogate_acc", "diff") not in frame.columns
    assert ("surrogate_acc", "ours") in frame.columns  # the missing measure is still visibly empty
    assert frame.loc["caltech", ("victim_acc", "diff")] == 0.7 - 0.746


def test_one_comparable_row_keeps_the_difference_column_for_all():
    ours = {"caltech": {"recovery": 0.8}, "cubs": {}}
    frame = side_by_side(ours, paper.TABLE2, ["recovery"], rows=["caltech", "cubs"])
    assert frame.loc["caltech", ("recovery", "diff")] == 0.8 - 0.92
    assert frame.loc["cubs", ("recovery", "diff")] is None


def test_measure_table_without_any_two_numbers_has_no_difference_column():
    table = measure_table({"detector": "RN18*CV", "queries": 300}, {"detector": "RN34*CV"}, ["detector", "queries"])
    assert list(table.columns) == ["paper", "ours"]


def test_side_by_side_header_is_measures_over_their_sources():
    ours = {"caltech": {"surrogate_acc": 0.6, "surrogate_acc_seeds": [0.5, 0.7]}}
    rows = _header_rows(side_by_side(ours, paper.TABLE2, ["victim_acc", "surrogate_acc"], rows=["caltech"]))
    assert rows == [["", "victim_acc", "surrogate_acc"],  # no "measure" / "source" / "row" header rows
                    ["", "paper", "ours", "paper", "ours", "sd", "diff"]]


def test_measure_table_header_is_one_row():
    table = measure_table({"in_distribution_acc": 0.5}, {"in_distribution_acc": 0.711}, ["in_distribution_acc"])
    assert _header_rows(table) == [["", "paper", "ours", "diff"]]
    assert formatted(table).loc["in_distribution_acc", "diff"] == "-21.1 pp"


def test_formatted_keeps_the_frame_it_was_given():
    frame = side_by_side({"caltech": {"recovery": 0.8}}, paper.TABLE2, ["recovery"], rows=["caltech"])
    formatted(frame)
    assert frame.index.name == "row" and list(frame.columns.names) == ["measure", "source"]  # the report's CSV


def test_the_knockoff_papers_numbers_are_their_own_table():
    # Table 2's dagger columns, as printed in the paper
    assert paper.KNOCKOFF_TABLE2 == {
        "caltech": {"victim_acc": 0.788, "surrogate_acc": 0.754, "recovery": 0.96},
        "cubs": {"victim_acc": 0.765, "surrogate_acc": 0.680, "recovery": 0.89},
        "diabetic5": {"victim_acc": 0.581, "surrogate_acc": 0.477, "recovery": 0.82}}
    table = paper_table(paper.KNOCKOFF_TABLE2, ["victim_acc", "surrogate_acc", "recovery"],
                        names={"caltech": "Caltech-RN34", "cubs": "CUBS-RN34", "diabetic5": "Diabetic5-RN34"})
    shown = formatted(table)
    assert list(shown.index) == ["Caltech-RN34", "CUBS-RN34", "Diabetic5-RN34"]
    assert shown.loc["CUBS-RN34"].tolist() == ["76.5%", "68.0%", "0.89"]
    assert _header_rows(table) == [["", "victim_acc", "surrogate_acc", "recovery"]]


def test_paper_table_leaves_out_rows_without_a_number():
    table = paper_table(paper.TABLE2, ["knockoff_recovery"])
    assert list(table.index) == ["caltech", "cubs", "diabetic5"]  # GTSRB and CIFAR10: not in the Knockoff paper
    assert table["knockoff_recovery"].tolist() == [0.96, 0.89, 0.82]
