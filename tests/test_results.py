"""kx_utils.orchestration.run_results.NotebookRun: where a notebook's results go, and what its last line shows."""

from kx_utils import get_profile
from kx_utils.orchestration.run_results import NotebookRun, read_results


def test_save_writes_the_document_at_run_path_and_shows_nothing(tmp_path):
    run = NotebookRun("02_knockoff", get_profile("smoke"), runs=tmp_path)
    row = {"name": "CIFAR10-MNV2", "budget": 300, "epochs": 2, "seeds": 1, "surrogate_acc": 0.5, "recovery": 0.6}
    run.tables["budget_curves"] = {"cifar10 @ 300": row}
    assert run.path == tmp_path.resolve() / "smoke" / "02_knockoff.json"
    assert not run.path.exists()
    # a notebook ending in run.save() displays its value: None displays nothing (a Path, the machine's path)
    assert run.save() is None
    document = read_results(run.path)
    assert document["notebook"] == "02_knockoff" and document["profile"] == "smoke"
    assert document["tables"] == {"budget_curves": {"cifar10 @ 300": row}}


def test_run_path_follows_kx_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("KX_RUNS", str(tmp_path / "elsewhere"))
    run = NotebookRun("01_victims", get_profile("smoke"))
    assert run.path == (tmp_path / "elsewhere" / "smoke" / "01_victims.json").resolve()
