"""python -m kx_utils compare: two report folders, CSV by CSV."""

from __future__ import annotations

from kx_utils.__main__ import main
from kx_utils.report.compare import compare_folders

HEADER = "row,surrogate_acc.ours,train_seconds,best_epoch.ours\n"


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_identical_numbers_with_other_wall_times_are_identical(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "table2.csv", HEADER + 'Caltech,0.581666,78.1,"[5, 5, 6]"\n')
    write(new, "table2.csv", HEADER + 'Caltech,0.581666,80.4,"[5, 5, 6]"\n')
    [result] = compare_folders(old, new)
    assert (result.status, result.ignored) == ("identical", ("train_seconds",))
    assert main(["compare", str(old), str(new)]) == 0
    assert "1 of 1 CSVs identical" in capsys.readouterr().out
    assert compare_folders(old, new, keep_times=True)[0].columns == {"train_seconds": 2.3000000000000114}


def test_a_changed_number_a_changed_text_and_a_missing_file_are_reported(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "table2.csv", HEADER + 'Caltech,0.581666,78.1,"[5, 5, 6]"\nCUBS,0.49,85,"[5]"\n')
    write(new, "table2.csv", HEADER + 'Caltech,0.581670,78.1,"[5, 6, 6]"\nCUBS,0.50,85,"[5]"\n')
    write(old, "table7.csv", HEADER)
    by_name = {r.name: r for r in compare_folders(old, new)}
    assert by_name["table2.csv"].status == "differs"
    assert by_name["table2.csv"].columns["best_epoch.ours"] is None  # text: no distance
    assert abs(by_name["table2.csv"].columns["surrogate_acc.ours"] - 0.01) < 1e-9  # the largest gap of the column
    assert by_name["table7.csv"].status == "only in old"
    assert compare_folders(old, new, atol=0.02)[0].columns == {"best_epoch.ours": None}
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "table2.csv: differs in surrogate_acc.ours (max |diff| 0.01), best_epoch.ours" in out
    assert "0 of 2 CSVs identical" in out


def test_rows_in_another_order_or_another_header_are_a_different_shape(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "t.csv", "row,a\nx,1\ny,2\n")
    write(new, "t.csv", "row,a\ny,2\nx,1\n")
    assert compare_folders(old, new)[0].status == "different shape"
    assert main(["compare", str(old), str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
