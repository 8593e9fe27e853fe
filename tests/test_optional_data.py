"""A run without its optional data (mini's Diabetic5 stand-in, which needs a Kaggle account): the
victims it skips, what the notebooks record, the report's "data not present" rows and the
``%%needs_data`` cell magic."""

from __future__ import annotations

import json

import pytest

from kx_utils import get_profile
from kx_utils.data import catalog as kc
from kx_utils.data import datasets as kd
from kx_utils.experiments.victims import PRETRAINED_VICTIMS, VICTIMS, available_victims
from kx_utils.orchestration.run_results import NotebookRun
from kx_utils.report import Results, build_tables, check_claims, write_report
from tests.conftest import write_image_folder

DIABETIC_SPLITS = ("diabetic_retinopathy/train", "diabetic_retinopathy/test")


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return root


def test_only_an_absent_optional_dataset_is_left_out(data_root):
    mini = get_profile("mini", data_root=str(data_root))
    assert kc.absent_optional_datasets(True, data_root) == {"diabetic5": kc.DATASETS["diabetic5"].standin_optional}
    assert available_victims(mini) == tuple(k for k in VICTIMS if k != "diabetic5")
    assert available_victims(mini, PRETRAINED_VICTIMS) == ("caltech", "cubs", "gtsrb", "cifar10")
    # the paper profile may go without nothing: a missing Diabetic5 stays in, to fail with its own error
    assert available_victims(get_profile("paper", data_root=str(data_root))) == tuple(VICTIMS)
    write_image_folder(data_root / DIABETIC_SPLITS[0], classes=2, per_class=1)
    assert "diabetic5" not in available_victims(mini)  # one split is not the dataset
    write_image_folder(data_root / DIABETIC_SPLITS[1], classes=2, per_class=1)
    assert available_victims(mini) == tuple(VICTIMS) and kc.absent_optional_datasets(True, data_root) == {}


def test_without_any_data_folder_every_optional_dataset_is_absent(monkeypatch, tmp_path):
    monkeypatch.delenv("KX_DATA", raising=False)
    monkeypatch.setattr(kc, "DEFAULT_DATA_ROOT", tmp_path / "nowhere")
    assert set(kc.absent_optional_datasets(True)) == {"diabetic5"}
    assert kc.absent_optional_datasets(False) == {}


def test_the_default_data_folder_is_used_when_kx_data_is_not_set(monkeypatch, tmp_path):
    monkeypatch.delenv("KX_DATA", raising=False)
    monkeypatch.setattr(kc, "DEFAULT_DATA_ROOT", tmp_path / "data")
    with pytest.raises(kc.DatasetNotFoundError, match="python -m kx_utils data fetch --profile mini"):
        kc.data_root()
    (tmp_path / "data").mkdir()
    assert kc.data_root() == tmp_path / "data"


def test_a_missing_standin_says_how_to_fetch_it_and_diabetic5_how_to_get_it(data_root):
    with pytest.raises(kc.DatasetNotFoundError, match="python -m kx_utils data fetch --profile mini"):
        kd.split_folder("gtsrb", "train", standins=True, root=data_root)
    with pytest.raises(kc.DatasetNotFoundError, match="needs a Kaggle account"):
        kd.split_folder("diabetic5", "train", standins=True, root=data_root)


def test_a_notebook_run_records_the_data_it_went_without(data_root, tmp_path):
    run = NotebookRun("02_knockoff", get_profile("mini", data_root=str(data_root)), runs=tmp_path / "runs")
    run.save()
    document = json.loads(run.path.read_text())
    assert document["data_not_present"] == {"diabetic5": kc.DATASETS["diabetic5"].standin_optional}
    write_image_folder(data_root / DIABETIC_SPLITS[0], classes=2, per_class=1)
    write_image_folder(data_root / DIABETIC_SPLITS[1], classes=2, per_class=1)
    run = NotebookRun("02_knockoff", get_profile("mini", data_root=str(data_root)), runs=tmp_path / "runs")
    run.save()
    assert json.loads(run.path.read_text())["data_not_present"] == {}


def _document(notebook, tables=None, values=None, absent=None):
    return {"notebook": notebook, "profile": "mini", "tables": tables or {}, "figures": {}, "values": values or {},
            "notes": [], "profile_settings": {}, "data_not_present": absent or {}}


def test_the_report_marks_the_rows_of_absent_data_and_does_not_evaluate_what_needs_it(tmp_path, monkeypatch):
    absent = {"diabetic5": "needs a Kaggle account"}
    table2 = {"gtsrb": {"name": "GTSRB-MNV2", "victim_acc": 0.9, "surrogate_acc": 0.5, "recovery": 0.55}}
    table1 = {"gtsrb": {"name": "GTSRB", "image_size": "48x48", "classes": 43, "train": 100, "test": 50}}
    table4 = {"gtsrb": {"ours_tpr": 0.9, "ours_tnr": 0.9, "ood_test": 100, "in_test": 50}}
    table7 = {"gtsrb": {"name": "GTSRB-MNV2", "victim_acc": 0.9, "bs64": 0.5}}
    docs = {"01_victims": _document("01_victims", {"table1": table1}, absent=absent),
            "05_hyperparameters": _document("05_hyperparameters", {"table7": table7}, absent=absent),
            "02_knockoff": _document("02_knockoff", {"table2": table2}, absent=absent),
            "03_detection": _document("03_detection", {"table4a": table4}, absent=absent),
            "04_architecture_and_output": _document("04_architecture_and_output", absent=absent)}
    results = Results("mini", docs)
    tables, missing = build_tables(results)
    t2 = tables["table2"]
    diabetic = next(row for row in t2.index if row.startswith("Diabetic5"))
    assert t2.loc[diabetic, ("surrogate_acc", "ours")] == "data not present"
    assert t2.loc[diabetic, ("surrogate_acc", "paper")] == pytest.approx(0.593)  # the paper's stays
    assert t2.loc[diabetic, ("surrogate_acc", "diff")] is None
    assert t2.loc["GTSRB-MNV2", ("surrogate_acc", "ours")] == 0.5
    assert tables["table1"].loc["Diabetic5", ("train", "ours")] == "data not present"
    t4 = tables["table4a"]
    assert all(t4.loc[row, ("tnr", "ours")] == "data not present" for row in t4.index if row.startswith("Diabetic5"))
    assert missing["section_5_1_3"] == "not produced (data not present: Diabetic5)"
    # Table 7's victims are the profile's plan: mini's leaves Diabetic5 out, so its row stays empty as it
    # would with the data present ...
    assert tables["table7"].loc[diabetic, ("bs64", "ours")] is None
    # ... and a plan of every victim (the paper's, None) says its data is not present
    docs["01_victims"]["profile_settings"] = {"section5": {"table7_victims": None}}
    assert build_tables(Results("mini", docs))[0]["table7"].loc[diabetic, ("bs64", "ours")] == "data not present"
    docs["01_victims"]["profile_settings"] = {}
    claim9 = next(c for c in check_claims(results) if "5.1.3" in c.claim.source)
    assert "data not present: Diabetic5" in claim9.evidence

    monkeypatch.setenv("KX_RUNS", str(tmp_path / "runs"))
    (tmp_path / "runs" / "mini").mkdir(parents=True)
    for name, doc in docs.items():
        (tmp_path / "runs" / "mini" / f"{name}.json").write_text(json.dumps(doc))
    report = (write_report("mini", out=tmp_path / "fig").folder / "report.md").read_text()
    assert "**Data not present:** Diabetic5" in report and "needs a Kaggle account" in report
    assert "*not produced (data not present: Diabetic5)*\n" in report  # no "produce it with" for missing data
    table2_md = report.split("### Table 2")[1].split("### ")[0]
    (row,) = [line for line in table2_md.splitlines() if line.startswith("| Diabetic5-MNV2 |")]
    assert row.startswith("| Diabetic5-MNV2 | 71.1% | data not present |  | 59.3% | data not present |")


# ---------------------------------------------------------------- %%needs_data


@pytest.fixture
def shell(data_root):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns["P"] = get_profile("mini", data_root=str(data_root))
    assert shell.run_cell("%load_ext kx_utils.orchestration.cells").success
    return shell


def test_a_cell_that_needs_absent_optional_data_is_skipped_with_the_reason(shell, capsys):
    shell.user_ns.pop("x", None)
    assert shell.run_cell("%%needs_data P diabetic5\nx = 1").success
    assert "x" not in shell.user_ns
    assert capsys.readouterr().out.startswith("skipped: Diabetic5 data not present (the Kaggle")


def test_a_cell_whose_data_is_there_runs_and_its_errors_fail_the_cell(shell, data_root):
    for split in DIABETIC_SPLITS:
        write_image_folder(data_root / split, classes=2, per_class=1)
    assert shell.run_cell("%%needs_data P diabetic5\nx = 41 + 1").success and shell.user_ns["x"] == 42
    result = shell.run_cell("%%needs_data P gtsrb\nraise ValueError('from the cell')")
    assert not result.success and str(result.error_in_exec) == "from the cell"


def test_needs_data_names_its_usage(shell):
    result = shell.run_cell("%%needs_data diabetic5\nx = 1")
    assert not result.success and "usage: %%needs_data <profile variable> <dataset>" in str(result.error_in_exec)
    result = shell.run_cell("%%needs_data Q diabetic5\nx = 1")
    assert not result.success and "no variable 'Q' holds the profile" in str(result.error_in_exec)
