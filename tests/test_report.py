"""The report: side-by-side tables, figures, the claims check, and missing results, on synthetic JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kx_utils import ProfileError, paper
from kx_utils import report as rp
from kx_utils.report import CLAIMS, Results, check_claims, load_all, write_report


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
        nb = rp.PRODUCER[key]
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


# ---------------------------------------------------------------- claims, one case each way


T4_GOOD = {"ours_tpr": 0.95, "ours_tnr": 0.94, "msp_tpr_at_ours": 0.4, "odin_tpr_at_ours": 0.5,
           "mahalanobis_tpr_at_ours": 0.95}
CLAIM_CASES = [
    (1, {"table6": {"caltech": {"probs_acc": 0.6, "label_acc": 0.4}, "gtsrb": {"probs_acc": 0.9, "label_acc": 0.8}}},
     {"table6": {"caltech": {"probs_acc": 0.6, "label_acc": 0.4}, "gtsrb": {"probs_acc": 0.9, "label_acc": 0.9}}}),
    (2, {"table5": {"gtsrb": {"recovery": 0.9}, "gtsrb_5l": {"recovery": 0.8},
                    "cifar10": {"recovery": 0.7}, "cifar10_9l": {"recovery": 0.6}}},
     {"table5": {"gtsrb": {"recovery": 0.9}, "gtsrb_5l": {"recovery": 0.8},
                 "cifar10": {"recovery": 0.6}, "cifar10_9l": {"recovery": 0.7}}}),
    (3, {"table4a": {k: T4_GOOD for k in ("gtsrb", "diabetic5", "cifar10")}},
     {"table4a": {"gtsrb": T4_GOOD, "diabetic5": T4_GOOD,
                  "cifar10": {**T4_GOOD, "odin_tpr_at_ours": 0.96}}}),
    (4, {"table4a": {"caltech": {"ours_tpr": 0.6, "ours_tnr": 0.6}, "cubs": {"ours_tpr": 0.9, "ours_tnr": 0.5}}},
     {"table4a": {"caltech": {"ours_tpr": 0.6, "ours_tnr": 0.6}, "cubs": {"ours_tpr": 0.9, "ours_tnr": 0.2}}}),
    (5, {"table7": {"a": {"bs64": 0.5, "bs128": 0.6, "bs256": 0.4}, "b": {"bs64": 0.5, "bs256": 0.51},
                    "c": {"bs64": 0.5, "bs128": 0.4}}},
     {"table7": {"a": {"bs64": 0.5, "bs128": 0.6}, "b": {"bs64": 0.5, "bs256": 0.5},
                 "c": {"bs64": 0.5, "bs128": 0.4}}}),
    (6, {"figure2": {"caltech": {"test_acc_per_epoch": [0.3, 0.6, 0.5]}, "cifar10": {"test_acc_per_epoch": [0.7, 0.6]}}},
     {"figure2": {"caltech": {"test_acc_per_epoch": [0.3, 0.6, 0.5]}, "cifar10": {"test_acc_per_epoch": [0.6, 0.6]}}}),
    (7, {"section_5_2_2": {"in_distribution_acc": 0.7, "imagenet_queries_acc": 0.6}},
     {"section_5_2_2": {"in_distribution_acc": 0.6, "imagenet_queries_acc": 0.6}}),
    (8, {"section_5_2_2": {"flagged_in_distribution": 0.1, "flagged_imagenet": 0.6}},
     {"section_5_2_2": {"flagged_in_distribution": 0.7, "flagged_imagenet": 0.6}}),
    (9, {"section_5_1_3": {"gtsrb_with_diabetic5_queries_acc": 0.5, "gtsrb_with_imagenet_queries_acc": 0.8}},
     {"section_5_1_3": {"gtsrb_with_diabetic5_queries_acc": 0.85, "gtsrb_with_imagenet_queries_acc": 0.8}}),
]


@pytest.mark.parametrize("number, holding, failing", CLAIM_CASES, ids=[f"claim{c[0]}" for c in CLAIM_CASES])
def test_each_claim_holds_and_fails_on_constructed_results(number, holding, failing):
    good = claim_result(number, **holding)
    bad = claim_result(number, **failing)
    assert good.holds is True, good.evidence
    assert bad.holds is False, bad.evidence


def test_every_claim_is_tested_both_ways():
    assert sorted(c[0] for c in CLAIM_CASES) == [c.number for c in CLAIMS]


def test_claim_evidence_carries_the_numbers():
    result = claim_result(1, table6={"caltech": {"name": "Caltech-X", "probs_acc": 0.6, "label_acc": 0.4}})
    assert "Caltech-X label-only 40.0% < probabilities 60.0%" in result.evidence
    result = claim_result(5, table7={"gtsrb": {"bs64": 0.5, "bs128": 0.6, "bs256": 0.55}})
    assert "60.0% (bs128) > 50.0% (bs64)" in result.evidence and "1 of 1" in result.evidence


def test_claims_on_the_papers_own_numbers_hold_where_the_paper_gives_numbers():
    by_number = {c.claim.number: c for c in check_claims(Results("smoke", {}))}
    for number in (1, 2, 3, 4, 5, 7, 9):
        assert by_number[number].paper_holds is True, by_number[number].paper_evidence
    for number in (6, 8):  # stated in the text without numbers
        assert by_number[number].paper_holds is None and "stated" in by_number[number].paper_evidence
    assert "Diabetic5-RN34" in by_number[3].paper_evidence  # the 99% / 99% tie counts as not beaten


def test_a_claim_whose_notebook_is_missing_is_not_evaluated():
    results = Results("smoke", {"01_victims": document("01_victims")})
    by_number = {c.claim.number: c for c in check_claims(results)}
    assert by_number[6].holds is None
    assert by_number[6].evidence == "not evaluated (missing 05_hyperparameters)"
    assert by_number[9].evidence == "not evaluated (missing 04_architecture_and_output)"


def test_a_claim_whose_data_the_notebook_did_not_write_says_so():
    result = claim_result(5, table7={"gtsrb": {"bs16": 0.5, "bs64": 0.6}})  # smoke: no batch size > 64
    assert result.holds is None and "no victim with bs64 and a batch size above 64" in result.evidence


# ---------------------------------------------------------------- missing results, figures, the folder


def test_missing_notebooks_leave_parts_out_and_say_how_to_produce_them(runs, tmp_path):
    table1 = {"cifar10": {"image_size": "32x32", "classes": 10, "train": 300, "test": 100, "name": "CIFAR10"}}
    write_documents(runs, {"01_victims": document("01_victims", tables={"table1": table1})})
    outcome = write_report("smoke", out=tmp_path / "fig")
    files = {p.name for p in outcome.folder.iterdir()}
    assert {"table1.csv", "table1.md", "report.md"} <= files
    assert not {"table2.csv", "figure1.png", "figure2.pdf"} & files
    assert outcome.missing_notebooks == list(rp.NOTEBOOKS[1:])
    text = (outcome.folder / "report.md").read_text()
    assert "`python -m kx_utils reproduce --profile smoke --only 05_hyperparameters`" in text
    assert "not evaluated (missing 05_hyperparameters)" in text
    assert "Figure 2: not produced (missing 05_hyperparameters)" in text
    assert int(read_csv(outcome.folder / "table1.csv")["CIFAR10"]["train.ours"]) == 300


def test_no_results_at_all_still_gives_a_report(runs, tmp_path):
    outcome = write_report("smoke", out=tmp_path / "fig")
    assert outcome.files == ["report.md"]
    assert all(c.holds is None for c in outcome.claims)
    assert "Results present: 0 of 6 notebooks" in (outcome.folder / "report.md").read_text()


def test_an_unknown_profile_is_an_error(runs):
    with pytest.raises(ProfileError, match="valid profiles"):
        load_all("huge")


FIGURE1 = {"victim": "cifar10", "classes": ["plane", "car", "deer", "horse"], "histogram": [40, 30, 2, 3],
           "per_class_victim": [0.9, 0.9, 0.8, 0.85], "per_class_surrogate": [0.85, 0.88, 0.3, 0.5],
           "largest_gaps": ["deer", "horse"]}
FIGURE2 = {"caltech": {"name": "Caltech-MNV2", "test_acc_per_epoch": [0.2, 0.5, 0.4], "best_epoch": 2,
                       "best_acc": 0.5, "final_acc": 0.4}}


def test_figures_are_written_as_png_and_pdf(runs, tmp_path):
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
    assert rp._gap_indices(computed, computed["classes"], computed["per_class_victim"],
                           computed["per_class_surrogate"]) == [2, 3]
    with pytest.raises(ValueError, match="differ in length"):
        rp.figure1({**FIGURE1, "histogram": [1, 2]})


def test_the_folder_is_replaced_whole_and_a_crash_keeps_the_previous_one(runs, tmp_path, monkeypatch):
    out = tmp_path / "fig"
    out.mkdir()
    (out / "stale.csv").write_text("old")
    write_report("smoke", out=out)
    assert not (out / "stale.csv").exists() and (out / "report.md").is_file()
    before = (out / "report.md").read_text()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rp, "render_report", crash)
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
    assert "started from an empty cache" in text
    assert "`caltech101`" in text and "Caltech-101" in text  # the stand-in of Caltech-256 in smoke
    assert "| torch | 2.14.1 |" in text
    assert "MobileNetV2" in text  # the profile's notes: its deviations from the paper


def test_time_from_an_empty_cache_sums_every_command_since(runs, tmp_path):
    from kx_utils.pipeline import NOTEBOOKS
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
    assert "From an empty cache to all six notebooks: 15m00s** of compute over 2" in text
