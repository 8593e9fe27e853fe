"""The report: side-by-side tables, figures, the claims check with its noise, and missing results.

Everything runs on synthetic JSON documents, except the last test (marked ``notebooks``), which
builds the report from the real documents of a smoke run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from kx_utils import ProfileError
from kx_utils import report as rp
from kx_utils.experiments.registry import producer
from kx_utils.orchestration.pipeline import NOTEBOOKS
from kx_utils.report import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_EVALUATED,
    OURS_ONLY_TABLES,
    TABLE_SPECS,
    CorruptResultsError,
    Results,
    check_claims,
    load_all,
    paper,
    write_report,
)
from kx_utils.report import figures as rp_figures
from kx_utils.report import writer as rp_writer
from kx_utils.runtime.artifacts import REPO_ROOT
from tests import defence_tables as dt


def document(notebook: str, tables=None, figures=None, values=None, wall=12.0) -> dict:
    return {"notebook": notebook, "profile": "smoke", "created": "2025-01-01T00:00:00+00:00",
            "wall_seconds": wall, "environment": {"python": "3.11.0", "torch": "2.14.1", "cpu_count": 2},
            "profile_settings": {}, "tables": tables or {}, "figures": figures or {},
            "values": values or {}, "notes": []}


def write_documents(runs: Path, docs: dict[str, dict], profile: str = "smoke") -> None:
    folder = runs / profile
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {row["row"]: row for row in csv.DictReader(f)}


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("KX_RUNS", str(root))
    return root


def claim_result(number: int, **sources) -> rp.ClaimResult:
    """Claim ``number`` evaluated on results holding ``sources`` (key -> data), each in its notebook."""
    docs: dict[str, dict] = {}
    for key, data in sources.items():
        nb = producer(key)
        part = "figures" if key.startswith("figure") else "values" if key.startswith("section") else "tables"
        docs.setdefault(nb, document(nb))[part][key] = data
    return next(c for c in check_claims(Results("smoke", docs)) if c.claim.number == number)


# ---------------------------------------------------------------- tables


def test_table2_csv_and_markdown_hold_paper_ours_and_difference(runs, tmp_path):
    table2 = {"caltech": {"name": "Caltech-MNV2", "victim_acc": 0.70, "surrogate_acc": 0.60,
                          "recovery": 0.60 / 0.70, "best_acc": 0.62, "best_epoch": 2, "queries": 300}}
    write_documents(runs, {"02_knockoff": document("02_knockoff", tables={"table2": table2})})
    out = write_report("smoke", out=tmp_path / "fig").folder

    rows = read_csv(out / "table2.csv")
    row = rows["Caltech-MNV2"]
    assert float(row["surrogate_acc.paper"]) == pytest.approx(paper.TABLE2["caltech"]["surrogate_acc"])
    assert float(row["surrogate_acc.ours"]) == pytest.approx(0.60)
    assert float(row["surrogate_acc.diff"]) == pytest.approx(0.60 - 0.685)
    assert float(row["recovery.diff"]) == pytest.approx(0.60 / 0.70 - 0.92, abs=1e-5)
    assert float(row["best_acc.ours"]) == pytest.approx(0.62)  # an ours-only column
    assert float(row["knockoff_recovery.paper"]) == pytest.approx(0.96)  # a paper-only column
    # the paper's other victims stay as rows, with our side empty
    assert rows["CUBS-MNV2"]["surrogate_acc.ours"] == "" and rows["CUBS-MNV2"]["surrogate_acc.paper"] == "0.548"

    md = (out / "table2.md").read_text()
    assert "| Caltech-MNV2 |" in md and "68.5%" in md and "60.0%" in md and "-8.5 pp" in md
    assert md in (out / "report.md").read_text()


def test_table3_rows_stand_in_for_the_papers_rows_and_paper_only_rows_remain(runs, tmp_path):
    table3 = {"RN18": {"tpr": 0.80, "tnr": 0.70, "paper_row": "RN18"},
              "MNV2*CV": {"tpr": 0.91, "tnr": 0.88, "paper_row": "RN101*CV"},
              "EffL0*CV": {"tpr": 0.85, "tnr": 0.86, "paper_row": None}}
    write_documents(runs, {"03_detection": document("03_detection", tables={"table3": table3})})
    rows = read_csv(write_report("smoke", out=tmp_path / "fig").folder / "table3.csv")
    assert float(rows["RN18"]["tpr.paper"]) == pytest.approx(0.86)
    standin = rows["MNV2*CV (paper: RN101*CV)"]
    assert float(standin["tpr.paper"]) == pytest.approx(0.93)
    assert float(standin["tnr.diff"]) == pytest.approx(0.88 - 0.93)
    assert rows["EffL0*CV"]["tpr.paper"] == "" and float(rows["EffL0*CV"]["tpr.ours"]) == pytest.approx(0.85)
    assert float(rows["RN152*CV (paper only)"]["tpr.paper"]) == pytest.approx(0.93)
    assert "RN101*CV (paper only)" not in rows  # it has a stand-in


def test_table6_keeps_ours_only_columns_and_table7_takes_our_batch_sizes(runs, tmp_path):
    table6 = {"gtsrb": {"victim_acc": 0.9, "probs_acc": 0.8, "probs_recovery": 0.8 / 0.9, "label_acc": 0.7,
                        "label_recovery": 0.7 / 0.9, "top1_acc": 0.75, "top1_recovery": 0.75 / 0.9,
                        "top3_acc": None, "top3_recovery": None, "rounded_acc": None, "rounded_recovery": None}}
    table7 = {"gtsrb": {"victim_acc": 0.9, "bs16": 0.5, "bs64": 0.6, "bs512": 0.7}}
    write_documents(runs, {
        "04_architecture_and_output": document("04_architecture_and_output", tables={"table6": table6}),
        "05_hyperparameters": document("05_hyperparameters", tables={"table7": table7})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    t6 = read_csv(out / "table6.csv")["GTSRB-MNV2"]
    assert float(t6["top1_acc.ours"]) == pytest.approx(0.75)
    assert "top3_acc.ours" not in t6  # never measured: no empty column
    assert float(t6["label_acc.diff"]) == pytest.approx(0.7 - 0.916)
    t7 = read_csv(out / "table7.csv")["GTSRB-MNV2"]
    assert float(t7["bs512.ours"]) == pytest.approx(0.7) and t7["bs512.paper"] == ""
    assert float(t7["bs256.paper"]) == pytest.approx(0.726) and t7["bs256.ours"] == ""


def test_a_victim_at_chance_is_marked_in_every_table_and_the_report_says_why(runs, tmp_path):
    victims = {"diabetic5": {"name": "Diabetic5-MNV2", "victim_acc": 0.40, "chance": 0.33},
               "gtsrb": {"name": "GTSRB-MNV2", "victim_acc": 0.9, "chance": 0.024}}
    table6 = {k: {"name": r["name"], "victim_acc": r["victim_acc"], "chance": r["chance"], "probs_acc": 0.35,
                  "probs_recovery": 0.35 / r["victim_acc"], "label_acc": 0.3, "label_recovery": 0.3 / r["victim_acc"]}
              for k, r in victims.items()}
    write_documents(runs, {
        "01_victims": document("01_victims", tables={"victims": victims}),
        "04_architecture_and_output": document("04_architecture_and_output", tables={"table6": table6})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    rows = read_csv(out / "table6.csv")
    assert "Diabetic5-MNV2 (at chance)" in rows and "GTSRB-MNV2" in rows
    report = (out / "report.md").read_text()
    assert "Rows marked *(at chance)* (Diabetic5-MNV2): the victim itself is not clearly above chance" in report


def test_table4_is_one_row_per_victim_and_method_with_both_protocols_and_auroc(runs, tmp_path):
    row = {"ours_tpr": 0.95, "ours_tnr": 0.94, "ours_auroc": 0.97, "ours_fpr_at_95tpr": 0.08,
           "classes_dropped": 3, "in_test": 300, "ood_test": 200}
    for method, tpr in (("msp", 0.4), ("odin_fair", 0.5), ("odin_published", 0.6), ("mahalanobis_fair", 0.7),
                        ("mahalanobis_published", 0.8)):
        row.update({f"{method}_tpr_at_ours": tpr, f"{method}_tpr_at_95": tpr / 2, f"{method}_auroc": tpr + 0.1,
                    f"{method}_fpr_at_95tpr": 1 - tpr})
    write_documents(runs, {"03_detection": document("03_detection", tables={"table4a": {"gtsrb": row}})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    rows = read_csv(out / "table4a.csv")
    assert float(rows["GTSRB-MNV2 · ours"]["tpr_at_ours.ours"]) == pytest.approx(0.95)
    assert float(rows["GTSRB-MNV2 · ours"]["tnr.paper"]) == pytest.approx(0.99)
    assert float(rows["GTSRB-MNV2 · ours"]["auroc.ours"]) == pytest.approx(0.97)
    # the paper's baseline numbers are the published protocol's
    published = rows["GTSRB-MNV2 · ODIN (published)"]
    assert float(published["tpr_at_ours.paper"]) == pytest.approx(paper.TABLE4A["gtsrb"]["odin_published_tpr_at_ours"])
    assert float(published["tpr_at_ours.diff"]) == pytest.approx(0.6 - 0.56)
    fair = rows["GTSRB-MNV2 · Mahalanobis (fair)"]
    assert fair["tpr_at_ours.paper"] == "" and float(fair["fpr_at_95tpr.ours"]) == pytest.approx(0.3)
    assert float(rows["GTSRB-MNV2 · MSP"]["tpr_at_95.ours"]) == pytest.approx(0.2)
    assert "Caltech-MNV2 · MSP" in rows  # the paper's other victims stay, our side empty
    md = (out / "table4a.md").read_text()
    assert "| GTSRB-MNV2 · ours | 99.0% | 94.0% | -5.0 pp |" in md
    assert "| 97.0% | 8.0% | 3 |" in md  # auroc and fpr_at_95tpr as percentages, classes_dropped a count
    assert len(md.splitlines()[0].split("|")) <= 16  # readable: a dozen columns, not two dozen


def test_section_tables_list_measures_with_the_same_budget_controls(runs, tmp_path):
    s522 = {"in_distribution_acc": 0.5, "in_distribution_recovery": 0.75, "imagenet_queries_acc": 0.45,
            "imagenet_queries_budget": 6000, "imagenet_same_budget_acc": 0.4, "in_distribution_queries": 1351,
            "victim_acc": 0.66, "flagged_in_distribution": 0.672, "flagged_imagenet": 0.977, "flagged_benign": 0.656,
            "benign_queries": 1749, "chosen_batch_size": 128, "chosen_epochs": 7, "validation_grid": {"bs64": {}}}
    s513 = {"gtsrb_with_diabetic5_queries_acc": 0.09, "gtsrb_with_imagenet_queries_acc": 0.38,
            "gtsrb_with_imagenet_same_budget_acc": 0.3, "budget": 1830, "imagenet_budget": 6000, "victim_acc": 0.93}
    write_documents(runs, {
        "06_in_distribution": document("06_in_distribution", values={"section_5_2_2": s522}),
        "04_architecture_and_output": document("04_architecture_and_output", values={"section_5_1_3": s513})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    with open(out / "section_5_2_2.csv") as f:
        rows = {r["measure"]: r for r in csv.DictReader(f)}
    assert float(rows["imagenet_same_budget_acc"]["ours"]) == pytest.approx(0.4)
    assert float(rows["in_distribution_queries"]["paper"]) == 380 * 256
    assert float(rows["imagenet_queries_acc"]["paper"]) == pytest.approx(0.685)
    assert "validation_grid" not in rows
    md = (out / "section_5_2_2.md").read_text()
    for line in ("| flagged_in_distribution |  | 67.2% |  |", "| flagged_benign |  | 65.6% |  |",
                 "| imagenet_same_budget_acc |  | 40.0% |  |", "| in_distribution_acc | 71.1% | 50.0% | -21.1 pp |"):
        assert line in md
    md = (out / "section_5_1_3.md").read_text()
    assert "| gtsrb_with_imagenet_same_budget_acc |  | 30.0% |  |" in md and "| budget |  | 1830 |  |" in md


def test_ours_only_tables_show_rates_as_percentages_and_counts_as_integers(runs, tmp_path):
    filter_rows = {"caltech": {"name": "Caltech-MNV2", "benign_queries": 1749, "benign_flagged": 1147,
                               "benign_flagged_rate": 0.6558, "unseen_flagged_rate": None}}
    victims = {"caltech": {"name": "Caltech-MNV2", "victim_acc": 0.664, "chance": 0.011, "epochs": 10,
                           "test_acc_per_epoch": [0.5, 0.6]}}
    write_documents(runs, {"03_detection": document("03_detection", tables={"filter": filter_rows}),
                           "01_victims": document("01_victims", tables={"victims": victims})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    assert "| caltech | Caltech-MNV2 | 1749 | 1147 | 65.6% |  |" in (out / "filter.md").read_text()
    assert "| caltech | Caltech-MNV2 | 66.4% | 1.1% | 10 |" in (out / "victims.md").read_text()


# ---------------------------------------------------------------- claims: holds, fails, inconclusive

N = 1000  # test images behind every synthetic rate: a binomial noise of about 1-2 pp, 2 sd about 3-4.5 pp


def t5(victim_acc, surrogate_acc, n=N):
    return {"victim_acc": victim_acc, "surrogate_acc": surrogate_acc, "recovery": surrogate_acc / victim_acc,
            "test_size": n}


def t6(probs, label, n=N):
    return {"probs_acc": probs, "label_acc": label, "test_size": n}


def t4(tpr, tnr, **baselines):
    return {"ours_tpr": tpr, "ours_tnr": tnr, "in_test": N, "ood_test": N, **baselines}


def bs(**columns):
    return {**{k.replace("_", ""): v for k, v in columns.items()}, "test_size": N}


T4_GOOD = t4(0.95, 0.94, msp_tpr_at_ours=0.4, odin_fair_tpr_at_ours=0.5, mahalanobis_fair_tpr_at_ours=0.80,
             odin_published_tpr_at_ours=0.6, mahalanobis_published_tpr_at_ours=0.97)
S522 = {"test_size": N, "in_distribution_queries": N, "benign_queries": N}
S513 = {"test_size": N}

# (claim, results where it holds, where it fails, where it is within the noise)
CLAIM_CASES = [
    (1, {"table6": {"caltech": t6(0.6, 0.4), "gtsrb": t6(0.9, 0.8)}},
     {"table6": {"caltech": t6(0.6, 0.4), "gtsrb": t6(0.85, 0.95)}},
     {"table6": {"caltech": t6(0.6, 0.4), "gtsrb": t6(0.9, 0.89)}}),
    (2, {"table5": {"gtsrb": t5(0.9, 0.81), "gtsrb_5l": t5(0.9, 0.63), "cifar10": t5(0.9, 0.72),
                    "cifar10_9l": t5(0.8, 0.48)}},
     {"table5": {"gtsrb": t5(0.9, 0.81), "gtsrb_5l": t5(0.9, 0.63), "cifar10": t5(0.9, 0.54),
                 "cifar10_9l": t5(0.8, 0.64)}},
     {"table5": {"gtsrb": t5(0.9, 0.81), "gtsrb_5l": t5(0.9, 0.63), "cifar10": t5(0.9, 0.72),
                 "cifar10_9l": t5(0.8, 0.632)}}),
    (3, {"table4a": {k: T4_GOOD for k in ("gtsrb", "diabetic5", "cifar10")}},
     {"table4a": {"gtsrb": T4_GOOD, "diabetic5": T4_GOOD, "cifar10": {**T4_GOOD, "odin_fair_tpr_at_ours": 0.99}}},
     {"table4a": {"gtsrb": T4_GOOD, "diabetic5": T4_GOOD,
                  "cifar10": {**T4_GOOD, "mahalanobis_fair_tpr_at_ours": 0.945}}}),
    (4, {"table4a": {"caltech": t4(0.6, 0.6), "cubs": t4(0.9, 0.5)}},
     {"table4a": {"caltech": t4(0.6, 0.6), "cubs": t4(0.9, 0.2)}},
     {"table4a": {"caltech": t4(0.6, 0.6), "cubs": t4(0.9, 0.32)}}),
    (5, {"table7": {"a": bs(bs64=0.5, bs128=0.6, bs256=0.4), "b": bs(bs64=0.5, bs256=0.62),
                    "c": bs(bs64=0.5, bs128=0.4)}},
     {"table7": {"a": bs(bs64=0.5, bs128=0.6), "b": bs(bs64=0.5, bs256=0.4), "c": bs(bs64=0.5, bs128=0.4)}},
     {"table7": {"a": bs(bs64=0.5, bs128=0.6), "b": bs(bs64=0.5, bs256=0.51), "c": bs(bs64=0.5, bs128=0.4)}}),
    (6, {"figure2": {"caltech": {"test_acc_per_epoch": [0.3, 0.6, 0.5], "test_size": N},
                     "cifar10": {"test_acc_per_epoch": [0.7, 0.6], "test_size": N}}},
     {"figure2": {"caltech": {"test_acc_per_epoch": [0.3, 0.6, 0.5], "test_size": N},
                  "cifar10": {"test_acc_per_epoch": [0.5, 0.6], "test_size": N}}},
     {"figure2": {"caltech": {"test_acc_per_epoch": [0.3, 0.6, 0.5], "test_size": N},
                  "cifar10": {"test_acc_per_epoch": [0.6, 0.6], "test_size": N}}}),
    (7, {"section_5_2_2": {**S522, "in_distribution_acc": 0.7, "imagenet_same_budget_acc": 0.6}},
     {"section_5_2_2": {**S522, "in_distribution_acc": 0.5, "imagenet_same_budget_acc": 0.6}},
     {"section_5_2_2": {**S522, "in_distribution_acc": 0.61, "imagenet_same_budget_acc": 0.6}}),
    (8, {"section_5_2_2": {**S522, "flagged_in_distribution": 0.1, "flagged_benign": 0.1, "flagged_imagenet": 0.6}},
     {"section_5_2_2": {**S522, "flagged_in_distribution": 0.7, "flagged_benign": 0.1, "flagged_imagenet": 0.9}},
     {"section_5_2_2": {**S522, "flagged_in_distribution": 0.1, "flagged_benign": 0.1,
                        "flagged_imagenet": 0.11}}),
    (9, {"section_5_1_3": {**S513, "gtsrb_with_diabetic5_queries_acc": 0.5, "gtsrb_with_imagenet_same_budget_acc": 0.8}},
     {"section_5_1_3": {**S513, "gtsrb_with_diabetic5_queries_acc": 0.85,
                        "gtsrb_with_imagenet_same_budget_acc": 0.8}},
     {"section_5_1_3": {**S513, "gtsrb_with_diabetic5_queries_acc": 0.79,
                        "gtsrb_with_imagenet_same_budget_acc": 0.8}}),
    # notebook 07 (tests/defence_tables.py): the undefended surrogate 70% on three seeds, RS 60% at L1 1.2, MAD 40%
    (10, {"defences": dt.defences()}, {"defences": dt.defences(label_acc=0.05)},
     {"defences": dt.defences(label_acc=0.1)}),
    (11, {"defences": dt.defences()}, {"defences": dt.defences(rs_acc=0.75)},
     {"defences": dt.defences(rs_acc=0.698)}),
    (12, {"defences": dt.defences()}, {"defences": dt.defences(mad_acc=0.70)},
     {"defences": dt.defences(mad_acc=0.60)}),
    (13, {"defences": dt.defences(label_acc=0.30)}, {"defences": dt.defences(label_acc=0.65)},
     {"defences": dt.defences(label_acc=0.40)}),
    (15, {"dawn": dt.dawn(0.6)}, {"dawn": dt.dawn(0.0, clean=0.3)}, {"dawn": dt.dawn(0.08)}),
    (16, {"adaptive": dt.adaptive([0.55, 0.56, 0.54])}, {"adaptive": dt.adaptive([0.45, 0.44, 0.46])},
     {"adaptive": dt.adaptive([0.52, 0.47, 0.51])}),
]


@pytest.mark.parametrize("number, holding, failing, within", CLAIM_CASES, ids=[f"claim{c[0]}" for c in CLAIM_CASES])
def test_each_claim_holds_fails_and_is_inconclusive_on_constructed_results(number, holding, failing, within):
    good, bad, unclear = (claim_result(number, **sources) for sources in (holding, failing, within))
    assert good.verdict == HOLDS and good.holds is True, good.evidence
    assert bad.verdict == FAILS and bad.holds is False, bad.evidence
    assert unclear.verdict == INCONCLUSIVE and unclear.holds is None, unclear.evidence
    assert "within the noise" in unclear.evidence and "noise" in good.evidence
    # every fail is explained (kx_utils.report.diagnoses): at least by the comparisons that go against it
    assert good.diagnosis is None and unclear.diagnosis is None
    against = [c for c in bad.comparisons if c.outcome == FAILS]
    assert bad.diagnosis and all(c.label in bad.diagnosis for c in against), bad.diagnosis


def test_a_failing_table7_is_explained_by_its_step_counts_and_the_equal_steps_control():
    row = {**bs(bs64=0.40, bs256=0.10), "name": "Caltech-X", "epochs": 5,
           "steps_per_epoch": {"bs64": 16, "bs256": 4}, "bs64_seeds": [0.42, 0.40, 0.38],
           "bs256_equal_steps": 0.41, "equal_steps_epochs": {"bs256": 20}, "equal_steps_seeds": [0]}
    result = claim_result(5, table7={"caltech": row})
    assert result.verdict == FAILS
    why = result.diagnosis
    assert "bs64 40.0% after 80 steps, bs256 10.0% after 20 steps" in why
    # the control is paired with batch 64's run on the same seed (0.42, not the mean 0.40): 41 - 42 = -1 pp,
    # binomial noise sqrt(2 * 0.42 * 0.58 / N) ~ 2.2 pp: level within the noise
    assert "Caltech-X: bs256 for 20 epochs 41.0% < bs64 (seed 0) 42.0% (margin -1.0 pp" in why
    assert "level with or above batch 64 for 1 of 1 victims: the step count, not the batch size" in why
    # a control far below batch 64 says the larger batch learns less per step
    worse = claim_result(5, table7={"caltech": {**row, "bs256_equal_steps": 0.2}})
    assert "for 0 of 1 victims: even at equal steps the larger batch learns less at this budget" in worse.diagnosis


def test_a_baseline_beating_the_detector_is_checked_without_a_threshold_too():
    cifar = {**T4_GOOD, "mahalanobis_fair_tpr_at_ours": 0.99, "ours_auroc": 0.97, "mahalanobis_fair_auroc": 0.99}
    result = claim_result(3, table4a={"gtsrb": T4_GOOD, "diabetic5": T4_GOOD, "cifar10": cifar})
    assert result.verdict == FAILS
    assert ("ImageNet CIFAR10-MNV2: Mahalanobis (fair) flags 99.0% of the OOD test images at our TNR 94.0%, ours 95.0%; "
            "without a threshold it also ranks better: AUROC 99.0% against ours 97.0%") in result.diagnosis
    lower = claim_result(3, table4a={"gtsrb": T4_GOOD, "diabetic5": T4_GOOD,
                                     "cifar10": {**cifar, "mahalanobis_fair_auroc": 0.90}})
    assert "it ranks no better: AUROC 90.0% against ours 97.0%" in lower.diagnosis


def test_every_claim_is_tested_all_three_ways():
    # claim 14 (PRADA) is a verdict on flags, without a noise model: tests/test_defence_harness.py tests its three ways
    assert sorted([c[0] for c in CLAIM_CASES] + [14]) == [c.number for c in CLAIMS]


def test_the_noise_is_binomial_on_the_test_set_size():
    result = claim_result(1, table6={"caltech": {**t6(0.6, 0.4), "name": "Caltech-X"}})
    (c,) = result.comparisons
    assert c.margin == pytest.approx(0.2)
    assert c.noise == pytest.approx(math.sqrt(2 * 0.6 * 0.4 / N))
    assert "binomial, 1,000 test images" in c.how
    assert "Caltech-X: label-only 40.0% < probabilities 60.0% (margin +20.0 pp, noise 2.2 pp: clear)" in result.evidence
    # the same gap on ten test images is within the noise
    assert claim_result(1, table6={"caltech": t6(0.6, 0.4, n=10)}).verdict == INCONCLUSIVE


def test_the_test_set_size_comes_from_table1_when_the_row_has_none():
    table6 = {"cifar10": {"probs_acc": 0.6, "label_acc": 0.55}}
    table1 = {"cifar10": {"classes": 10, "train": 500, "test": 10_000}}
    assert claim_result(1, table6=table6, table1=table1).verdict == HOLDS  # 5 pp on 10,000 images: clear
    assert claim_result(1, table6=table6, table1={"cifar10": {**table1["cifar10"], "test": 100}}).verdict == INCONCLUSIVE
    missing = claim_result(1, table6=table6)
    assert missing.verdict == NOT_EVALUATED and "no test-set size for CIFAR10-MNV2" in missing.evidence


def test_per_seed_values_replace_the_binomial_noise():
    # 1.8 pp on 1,000 images is within the binomial noise, but every seed agrees: clear
    row = {"probs_acc": 0.61, "label_acc": 0.5917, "probs_acc_seeds": [0.60, 0.62, 0.61],
           "label_acc_seeds": [0.58, 0.605, 0.59], "test_size": N}
    (c,) = claim_result(1, table6={"caltech": row}).comparisons
    assert c.outcome == HOLDS and c.how == "sd of the 3 per-seed differences"
    assert c.noise == pytest.approx(0.002887, abs=1e-5)
    assert claim_result(1, table6={"caltech": {k: v for k, v in row.items() if "seeds" not in k}}).verdict \
        == INCONCLUSIVE
    # seeds on one side only: that side's spread, the other side's binomial error
    (c,) = claim_result(1, table6={"caltech": {**row, "label_acc_seeds": None}}).comparisons
    assert "sd over 3 seeds" in c.how and "binomial" in c.how
    # per-seed curves for Figure 2
    curves = {"test_acc_per_epoch": [0.5, 0.6, 0.58], "test_acc_per_epoch_seeds": [[0.5, 0.6, 0.58], [0.5, 0.61, 0.6]],
              "test_size": N}
    (c,) = claim_result(6, figure2={"caltech": curves}).comparisons
    assert c.how == "sd of the 2 per-seed differences" and c.outcome == HOLDS


def test_claims_over_several_victims_fail_on_one_clear_failure_even_beside_unclear_ones():
    table6 = {"caltech": t6(0.6, 0.59), "gtsrb": t6(0.8, 0.9), "cifar10": t6(0.9, 0.5)}
    result = claim_result(1, table6=table6)
    assert result.verdict == FAILS and "1 clear, 1 within the noise, 1 against" in result.evidence


def test_claim1_leaves_out_a_victim_at_chance_and_says_so():
    at_chance = {**t6(0.33, 0.34), "victim_acc": 0.40, "chance": 0.33, "name": "Diabetic5-X"}  # 1.2x chance
    learned = {**t6(0.6, 0.4), "victim_acc": 0.66, "chance": 0.011}
    result = claim_result(1, table6={"caltech": learned, "diabetic5": at_chance})
    assert result.verdict == HOLDS and len(result.comparisons) == 1
    assert "left out, the victim not clearly above chance" in result.evidence and "Diabetic5-X" in result.evidence
    # the same row, its victim clearly above chance, counts and fails the claim
    counted = claim_result(1, table6={"caltech": learned, "diabetic5": {**at_chance, **t6(0.30, 0.38),
                                                                         "chance": 0.2}})
    assert counted.verdict == FAILS and "left out" not in counted.evidence


def test_claim5_is_decided_until_convergence_with_equal_epochs_stated_beside():
    equal_epochs = {"a": bs(bs64=0.5, bs256=0.3), "b": bs(bs64=0.5, bs256=0.3)}  # fewer steps: worse
    converged = {"a": bs(bs64=0.5, bs256=0.6), "b": bs(bs64=0.5, bs256=0.62)}
    result = claim_result(5, table7=equal_epochs, table7_convergence=converged)
    assert result.verdict == HOLDS, result.evidence
    assert result.evidence.startswith("until convergence, larger batches help 2 of 2")
    assert "at equal epochs (the paper's protocol): fails" in result.evidence
    assert claim_result(5, table7=equal_epochs, table7_convergence={}).verdict == FAILS  # none ran: equal epochs
    assert claim_result(5, table7=converged, table7_convergence=equal_epochs).verdict == FAILS


def test_a_claims_seeds_are_counted_from_its_measures():
    from kx_utils.report.markdown import claim_seeds
    from kx_utils.report.noise import Measure, compare
    three = Measure(0.5, "a", 0.01, "sd over 3 seeds", (0.49, 0.5, 0.51))
    one = Measure(0.3, "b", 0.02, "binomial, 1000 test images", n=1000)
    assert claim_seeds([compare("x", one, "<", three)]) == "1 and 3"
    assert claim_seeds([compare("x", three, ">", three)]) == "3" and claim_seeds([]) == "-"


def test_claim3_is_judged_on_the_fair_baselines_and_states_the_published_ones():
    # the published Mahalanobis (tuned on OOD test data) beats ours in T4_GOOD; the fair one does not
    result = claim_result(3, table4a={k: T4_GOOD for k in ("gtsrb", "diabetic5", "cifar10")})
    assert result.verdict == HOLDS
    assert "vs fair MSP 40.0%, ODIN 50.0%, Mahalanobis 80.0%" in result.evidence
    assert "Mahalanobis 97.0% (beats ours)" in result.evidence and "not all beaten" in result.evidence
    assert len(result.comparisons) == 9  # the fair baselines only


def test_claim7_and_claim9_are_decided_on_the_same_budget_controls():
    # more ImageNet queries make ImageNet look better: the control with as many queries decides
    s = {**S522, "in_distribution_acc": 0.6, "imagenet_queries_acc": 0.7, "imagenet_queries_budget": 6000,
         "imagenet_same_budget_acc": 0.5}
    result = claim_result(7, section_5_2_2=s)
    assert result.verdict == HOLDS and "ImageNet, same budget (1,000 queries) 50.0%" in result.evidence
    assert "the paper's comparison, with unequal budgets" in result.evidence and "70.0% on 6,000" in result.evidence
    # without the control, the plain surrogate counts only with at least as many queries
    plain = {k: v for k, v in s.items() if k != "imagenet_same_budget_acc"}
    result = claim_result(7, section_5_2_2=plain)
    assert result.verdict == FAILS and "plain ImageNet surrogate, 6,000 against 1,000 queries" in result.evidence
    assert claim_result(7, section_5_2_2={**plain, "imagenet_queries_budget": 500}).verdict == NOT_EVALUATED
    assert claim_result(7, section_5_2_2={**plain, "imagenet_queries_budget": None}).verdict == NOT_EVALUATED
    s = {**S513, "gtsrb_with_diabetic5_queries_acc": 0.3, "gtsrb_with_imagenet_queries_acc": 0.9,
         "gtsrb_with_imagenet_same_budget_acc": 0.32, "budget": 1830, "imagenet_budget": 6000}
    result = claim_result(9, section_5_1_3=s)
    assert result.verdict == INCONCLUSIVE and "Diabetic5 (1,830 queries) 30.0%" in result.evidence
    plain = {k: v for k, v in s.items() if k != "gtsrb_with_imagenet_same_budget_acc"}
    assert claim_result(9, section_5_1_3=plain).verdict == NOT_EVALUATED  # 6,000 > 1,830 ImageNet queries


def test_claim8_compares_in_distribution_queries_with_benign_images_and_unseen_imagenet():
    fewer = claim_result(8, section_5_2_2={**S522, "flagged_in_distribution": 0.05, "flagged_benign": 0.1,
                                           "flagged_imagenet": 0.6})
    assert fewer.verdict == HOLDS
    result = claim_result(8, section_5_2_2={**S522, "flagged_in_distribution": 0.672, "flagged_benign": 0.656,
                                            "flagged_imagenet": 0.977, "in_distribution_queries": 1351,
                                            "benign_queries": 1749})
    assert result.verdict == HOLDS
    assert "in-distribution queries 67.2% > benign test images 65.6%" in result.evidence
    assert "binomial, 1,351 queries; binomial, 1,749 images" in result.comparisons[0].how
    # flagged far more than benign images: caught, whatever ImageNet does
    assert claim_result(8, section_5_2_2={**S522, "flagged_in_distribution": 0.5, "flagged_benign": 0.1,
                                          "flagged_imagenet": 0.3}).verdict == FAILS


def test_claims_on_the_papers_own_numbers():
    by_number = {c.claim.number: c for c in check_claims(Results("smoke", {}))}
    for number in (1, 2, 4, 5, 7):
        assert by_number[number].paper_verdict == HOLDS, by_number[number].paper_evidence
    # the paper's Diabetic5 detector ties Mahalanobis at 99% on OpenImages: within the noise of 20,000 images
    assert by_number[3].paper_verdict == INCONCLUSIVE
    assert "OpenImages Diabetic5-RN34" in by_number[3].paper_evidence
    assert "Mahalanobis 99.0% (within the noise)" in by_number[3].paper_evidence
    for number in (6, 8, 9):  # stated in the text without the numbers the check needs
        assert by_number[number].paper_verdict == NOT_EVALUATED and "stated" in by_number[number].paper_evidence
    assert "20,000 OOD test images" in by_number[3].paper_comparisons[-1].how


def test_a_claim_whose_notebook_is_missing_is_not_evaluated():
    results = Results("smoke", {"01_victims": document("01_victims")})
    by_number = {c.claim.number: c for c in check_claims(results)}
    assert by_number[6].verdict == NOT_EVALUATED and by_number[6].holds is None
    assert by_number[6].evidence == "not evaluated (missing 05_hyperparameters)"
    assert by_number[9].evidence == "not evaluated (missing 04_architecture_and_output)"


def test_a_claim_whose_data_the_notebook_did_not_write_says_so():
    result = claim_result(5, table7={"gtsrb": bs(bs16=0.5, bs64=0.6)})  # smoke: no batch size > 64
    assert result.verdict == NOT_EVALUATED and "no victim with bs64 and a batch size above 64" in result.evidence
    result = claim_result(8, section_5_2_2={**S522, "flagged_in_distribution": 0.1, "flagged_imagenet": 0.6})
    assert result.evidence == "not evaluated (no flagged_benign in section_5_2_2)"
    results = Results("smoke", {"06_in_distribution": document("06_in_distribution")})
    assert check_claims(results)[6].evidence == "not evaluated (06_in_distribution has no section_5_2_2)"


def test_report_states_the_rule_and_the_numbers_and_noise_of_each_claim(runs, tmp_path):
    write_documents(runs, {"04_architecture_and_output": document(
        "04_architecture_and_output", tables={"table6": {"caltech": {**t6(0.6, 0.59), "name": "Caltech-X"}}})})
    outcome = write_report("smoke", out=tmp_path / "fig")
    text = (outcome.folder / "report.md").read_text()
    assert "### How verdicts are decided" in text and rp.NOISE_RULE in text
    assert "| 1 | Answering with the predicted class only" in text and "| **inconclusive** |" in text
    assert ("| Caltech-X | label-only < probabilities | 59.0% vs 60.0% | +1.0 pp | 2.2 pp | "
            "√(se²+se²), binomial, 1,000 test images | within the noise |") in text
    assert "1 inconclusive" in outcome.summary()
    assert rp.claims_text(outcome.claims).splitlines()[0].startswith("  1. inconclusive")


# ---------------------------------------------------------------- missing and corrupt results, figures, the folder


def test_missing_notebooks_leave_parts_out_and_say_how_to_produce_them(runs, tmp_path):
    table1 = {"cifar10": {"image_size": "32x32", "classes": 10, "train": 300, "test": 100, "name": "CIFAR10"}}
    write_documents(runs, {"01_victims": document("01_victims", tables={"table1": table1})})
    outcome = write_report("smoke", out=tmp_path / "fig")
    files = {p.name for p in outcome.folder.iterdir()}
    assert {"table1.csv", "table1.md", "report.md"} <= files
    assert not {"table2.csv", "figure1.png", "figure2.pdf"} & files
    assert outcome.missing_notebooks == list(NOTEBOOKS[1:])
    text = (outcome.folder / "report.md").read_text()
    assert "`python -m kx_utils reproduce --profile smoke --only 05_hyperparameters`" in text
    assert "not evaluated (missing 05_hyperparameters)" in text
    assert "Figure 2: not produced (missing 05_hyperparameters)" in text
    assert int(read_csv(outcome.folder / "table1.csv")["CIFAR10"]["train.ours"]) == 300


def test_no_results_at_all_still_gives_a_report(runs, tmp_path):
    outcome = write_report("smoke", out=tmp_path / "fig")
    assert outcome.files == ["report.md"]
    assert all(c.verdict == NOT_EVALUATED for c in outcome.claims)
    assert "Results present: 0 of 7 notebooks" in (outcome.folder / "report.md").read_text()


def test_an_unknown_profile_is_an_error(runs):
    with pytest.raises(ProfileError, match="valid profiles"):
        load_all("huge")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"tables": [1]})])
def test_a_corrupt_results_file_is_an_error_naming_it_not_a_missing_notebook(runs, tmp_path, content):
    folder = runs / "smoke"
    folder.mkdir(parents=True)
    (folder / "03_detection.json").write_text(content)
    with pytest.raises(CorruptResultsError, match="03_detection.json"):
        write_report("smoke", out=tmp_path / "fig")
    assert not (tmp_path / "fig").exists()


FIGURE1 = {"victim": "cifar10", "classes": ["plane", "car", "deer", "horse"], "histogram": [40, 30, 2, 3],
           "per_class_victim": [0.9, 0.9, 0.8, 0.85], "per_class_surrogate": [0.85, 0.88, 0.3, 0.5],
           "largest_gaps": ["deer", "horse"]}
FIGURE2 = {"caltech": {"name": "Caltech-MNV2", "test_acc_per_epoch": [0.2, 0.5, 0.4], "best_epoch": 2,
                       "best_acc": 0.5, "final_acc": 0.4, "val_acc_per_epoch": [0.3, 0.45, 0.5],
                       "val_selected_epoch": 3},
           "cifar10": {"name": "CIFAR10-MNV2", "test_acc_per_epoch": [0.5, 0.6, 0.62], "best_epoch": 3,
                       "test_acc_per_epoch_seeds": [[0.5, 0.6, 0.62], [0.48, 0.62, 0.6]]}}


def test_figures_are_written_as_png_and_pdf_and_the_same_bytes_again(runs, tmp_path):
    write_documents(runs, {
        "04_architecture_and_output": document("04_architecture_and_output", figures={"figure1": FIGURE1}),
        "05_hyperparameters": document("05_hyperparameters", figures={"figure2": FIGURE2})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    for stem in ("figure1", "figure2"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    text = (out / "report.md").read_text()
    assert "![Figure 1" in text and "(figure1.png)" in text and "(figure2.png)" in text
    first = (out / "figure2.png").read_bytes()
    assert (write_report("smoke", out=tmp_path / "fig").folder / "figure2.png").read_bytes() == first


def test_figure1_marks_the_given_gaps_or_the_two_largest():
    fig = rp.figure1(FIGURE1)
    bold = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["deer", "horse"]
    computed = {k: v for k, v in FIGURE1.items() if k != "largest_gaps"}
    assert rp_figures.gap_indices(computed, computed["classes"], computed["per_class_victim"],
                                  computed["per_class_surrogate"]) == [2, 3]
    with pytest.raises(ValueError, match="differ in length"):
        rp.figure1({**FIGURE1, "histogram": [1, 2]})


def test_figure2_draws_every_victim_with_its_best_and_validation_epochs():
    fig = rp.figure2(FIGURE2)
    (ax,) = fig.axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["Caltech-MNV2", "CIFAR10-MNV2"] and "validation-selected epoch" in labels
    assert any(len(c.get_paths()) for c in ax.collections)  # the band of one sd over CIFAR10's two seeds


BUDGET_CURVES = {"cifar10": {"name": "CIFAR10-MNV2", "points": {
    "150": {"budget": 150, "recovery": 0.3, "recovery_seeds": [0.25, 0.35]},
    "300": {"budget": 300, "recovery": 0.4, "recovery_seeds": [0.38, 0.42]}}}}


@pytest.mark.parametrize("draw", [lambda: rp.table2_curves(FIGURE2), lambda: rp.figure2(FIGURE2),
                                  lambda: rp.budget_curves(BUDGET_CURVES, {"cifar10": 0.75})],
                         ids=["table2_curves", "figure2", "budget_curves"])
def test_notebook_figures_keep_their_legend_off_the_curves(draw):
    fig = draw()
    fig.canvas.draw()
    (ax,) = fig.axes
    assert ax.get_legend() is None and len(fig.legends) == 1  # the one legend is the figure's, beside the axes
    legend, plot = fig.legends[0].get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= plot.x1 or legend.y1 <= plot.y0, (legend, plot)


def test_epoch_axes_tick_whole_epochs_only():
    # 3 epochs: matplotlib's default locator would tick 1.0, 1.25, 1.5, ...
    for fig in (rp.table2_curves(FIGURE2), rp.figure2(FIGURE2)):
        fig.canvas.draw()
        (ax,) = fig.axes
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == [1, 2, 3]


def test_the_folder_is_replaced_whole_and_a_crash_keeps_the_previous_one(runs, tmp_path, monkeypatch):
    out = tmp_path / "fig"
    out.mkdir()
    (out / "stale.csv").write_text("old")
    write_report("smoke", out=out)
    assert not (out / "stale.csv").exists() and (out / "report.md").is_file()
    before = (out / "report.md").read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rp_writer, "render_report", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report("smoke", out=out)
    assert (out / "report.md").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".fig")] == []


def test_report_lists_standins_wall_times_and_environment(runs, tmp_path):
    write_documents(runs, {"01_victims": document("01_victims", wall=75.0)})
    state = {"profile": "smoke", "invocations": [{"started": "t0", "status": "finished", "wall_seconds": 80.0,
                                                  "ran": ["01_victims"], "reused": [], "only": ["01_victims"],
                                                  "cache_files_at_start": 0, "cache_root": "/c"}],
             "notebooks": {"01_victims": {"status": "finished", "wall_seconds": 78.0}}}
    (runs / "smoke" / "pipeline.json").write_text(json.dumps(state))
    text = (write_report("smoke", out=tmp_path / "fig").folder / "report.md").read_text()
    assert "| 01_victims | finished | 1m18s | 1m15s |" in text
    assert "started from an empty cache (`$KX_CACHE`, outside the repository)" in text
    assert "`caltech101`" in text and "Caltech-101" in text  # the stand-in of Caltech-256 in smoke
    assert "| torch | 2.14.1 |" in text
    assert "MobileNetV2" in text  # the profile's notes: its deviations from the paper


def test_nothing_written_holds_an_absolute_path_or_speaks_of_issues(runs, tmp_path):
    from kx_utils.orchestration.pipeline import NOTEBOOKS
    docs = {nb: document(nb, wall=10.0) for nb in NOTEBOOKS}
    docs["01_victims"]["notes"] = [f"decoded images cached in {REPO_ROOT / '.kx_cache' / 'decoded'}"]
    docs["03_detection"]["tables"]["filter"] = {"caltech": {"detector": f"{tmp_path}/runs/x", "benign_queries": 3}}
    write_documents(runs, docs, profile="mini")
    state = {"profile": "mini", "invocations": [
        {"started": "t0", "status": "finished", "wall_seconds": 3000.0, "cache_files_at_start": 0,
         "ran": list(NOTEBOOKS), "reused": [], "only": None, "cache_root": str(REPO_ROOT / ".kx_cache")}],
        "notebooks": {nb: {"status": "finished", "wall_seconds": 500.0} for nb in NOTEBOOKS}}
    (runs / "mini" / "pipeline.json").write_text(json.dumps(state))
    out = write_report("mini", out=tmp_path / "fig").folder
    text = (out / "report.md").read_text()
    assert "started from an empty cache (.kx_cache)" in text and "cached in .kx_cache/decoded" in text
    assert ("**From an empty cache to all seven notebooks: 50m00s** of compute over 1 `reproduce` command(s) started "
            "t0; failed or interrupted attempts count, the time between commands does not. Within the project's "
            "target for a mini run: 2h45m on a 2-core CPU: yes.") in text
    assert "results in `$KX_RUNS/mini/`" in text
    for path in out.iterdir():
        if path.suffix in (".md", ".csv"):
            content = path.read_text()
            assert str(REPO_ROOT) not in content and str(tmp_path) not in content, path.name
            assert "issue" not in content.lower(), path.name


@pytest.mark.parametrize("seconds, verdict", [(165 * 60, "yes"), (165 * 60 + 1, "no")])
def test_the_mini_target_is_judged_on_the_whole_chain(runs, tmp_path, seconds, verdict):
    """2h45m is the line: a chain of two commands that sums to one second more is over it."""
    write_documents(runs, {nb: document(nb, wall=10.0) for nb in NOTEBOOKS}, profile="mini")
    state = {"profile": "mini", "invocations": [
        {"started": "t0", "status": "failed", "wall_seconds": 600.0, "cache_files_at_start": 0,
         "ran": ["01_victims"], "reused": []},
        {"started": "t1", "status": "finished", "wall_seconds": seconds - 600.0, "cache_files_at_start": 9,
         "ran": list(NOTEBOOKS[1:]), "reused": ["01_victims"]}],
        "notebooks": {nb: {"status": "finished", "wall_seconds": 100.0} for nb in NOTEBOOKS}}
    (runs / "mini" / "pipeline.json").write_text(json.dumps(state))
    text = (write_report("mini", out=tmp_path / "fig").folder / "report.md").read_text()
    assert f"target for a mini run: 2h45m on a 2-core CPU: {verdict}." in text


def test_time_from_an_empty_cache_sums_every_command_since(runs, tmp_path):
    write_documents(runs, {nb: document(nb, wall=10.0) for nb in NOTEBOOKS})
    state = {"profile": "smoke", "invocations": [
        {"started": "t-1", "status": "finished", "wall_seconds": 999.0, "cache_files_at_start": 0},
        {"started": "t0", "status": "failed", "wall_seconds": 600.0, "cache_files_at_start": 0,
         "ran": ["01_victims"], "reused": []},
        {"started": "t1", "status": "finished", "wall_seconds": 300.0, "cache_files_at_start": 50,
         "ran": list(NOTEBOOKS[1:]), "reused": ["01_victims"]}],
        "notebooks": {nb: {"status": "finished", "wall_seconds": 100.0} for nb in NOTEBOOKS}}
    (runs / "smoke" / "pipeline.json").write_text(json.dumps(state))
    text = (write_report("smoke", out=tmp_path / "fig").folder / "report.md").read_text()
    # the failed first attempt counts, the earlier unrelated run does not
    assert "From an empty cache to all seven notebooks: 15m00s** of compute over 2" in text


# ---------------------------------------------------------------- the real documents of a smoke run


@pytest.mark.notebooks
def test_the_report_of_a_smoke_run_evaluates_every_claim_and_writes_every_table(smoke_grid, tmp_path):
    """Builds the report from the JSON of the six notebooks run on ``smoke`` (on the cache of the smoke grid,
    tests/conftest.py, with batch sizes 64 and 128 so that claim 5 has something to judge): every key the
    report reads must be where the notebooks write it."""
    runs = smoke_grid.runs
    outcome = write_report("smoke", runs=runs, out=tmp_path / "fig")

    assert outcome.missing_notebooks == [] and outcome.missing_parts == {}
    not_evaluated = {c.claim.number: c.evidence for c in outcome.claims if c.verdict == NOT_EVALUATED}
    assert not_evaluated == {}
    # each verdict rests on numbers and their noise; PRADA's (claim 14) on whether it flagged each client
    assert all(c.comparisons for c in outcome.claims if c.claim.number != 14)
    assert next(c for c in outcome.claims if c.claim.number == 14).verdict != NOT_EVALUATED
    files = set(outcome.files)
    expected = {f"{key}.{ext}" for key in [s.key for s in TABLE_SPECS] + [k for k, _ in OURS_ONLY_TABLES]
                for ext in ("csv", "md")}
    expected |= {f"figure{i}.{ext}" for i in (1, 2) for ext in ("png", "pdf")}
    assert expected <= files, sorted(expected - files)
    text = (outcome.folder / "report.md").read_text()
    assert "not produced" not in text and "not evaluated (" not in text
    assert str(REPO_ROOT) not in text and str(tmp_path) not in text


def test_a_new_report_keeps_the_benchmark_another_command_wrote_and_drops_its_own_old_files(runs, tmp_path):
    write_documents(runs, {"02_knockoff": document("02_knockoff", tables={"table2": {}})})
    out = write_report("smoke", out=tmp_path / "fig").folder
    (out / "bench.md").write_text("# measured by bench\n")
    (out / "stale_table.md").write_text("from an older report\n")
    outcome = write_report("smoke", out=tmp_path / "fig")
    assert (outcome.folder / "bench.md").read_text() == "# measured by bench\n"
    assert "bench.md" in outcome.files
    assert not (outcome.folder / "stale_table.md").exists()


def test_a_grid_run_is_timed_as_one_command_and_a_warm_cache_is_not_judged(runs, tmp_path):
    docs = {nb: document(nb, wall=10.0) for nb in NOTEBOOKS}
    write_documents(runs, docs, profile="mini")
    grid = {"started": "t0", "cache_files_at_start": 0, "wall_seconds": 3600.0, "status": "finished"}
    state = {"profile": "mini", "invocations": [
        {"started": "t0", "status": "finished", "wall_seconds": 3660.0, "cache_files_at_start": 0, "grid": grid,
         "ran": list(NOTEBOOKS), "reused": [], "only": None, "cache_root": "/c"}],
        "notebooks": {nb: {"status": "finished", "wall_seconds": 10.0} for nb in NOTEBOOKS}}
    (runs / "mini" / "pipeline.json").write_text(json.dumps(state))
    text = (write_report("mini", out=tmp_path / "fig").folder / "report.md").read_text()
    # the notebooks' 70 seconds are not the run's time: the grid's hour is, and the target is judged on both
    assert "**Total wall time of the seven notebooks: 1m10s** (sum of their last pipeline runs; they loaded" in text
    assert "1h01m00s (the experiment grid first: 1h00m00s, finished)" in text
    assert "**From an empty cache to all seven notebooks: 1h01m00s**" in text and "2-core CPU: yes." in text
    state["invocations"][0].update(cache_files_at_start=1350, grid={**grid, "cache_files_at_start": 1350})
    (runs / "mini" / "pipeline.json").write_text(json.dumps(state))
    text = (write_report("mini", out=tmp_path / "fig2").folder / "report.md").read_text()
    assert "No run from an empty cache to all seven notebooks is recorded here" in text and "yes." not in text
