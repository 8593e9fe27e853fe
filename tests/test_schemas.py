"""One schema per table: the writer and the reader refuse rows that do not fit it, and the paper's numbers
are keyed by the same columns."""

from __future__ import annotations

import json

import pytest

from kx_utils import get_profile
from kx_utils.config.seeds import seeded
from kx_utils.experiments.registry import result_keys
from kx_utils.experiments.schemas import (
    SCHEMAS,
    ResultSchemaError,
    check_tables,
    schema_of,
)
from kx_utils.orchestration.run_results import CorruptResultsError, NotebookRun
from kx_utils.report.results import load_all, paper_results


def budget_row(**changes):
    row = {"name": "CIFAR10-MNV2", "budget": 300, "epochs": 2, "seeds": 2,
           **seeded("surrogate_acc", [0.5, 0.7]), **seeded("recovery", [0.6, 0.8])}
    return {**row, **changes}


def test_a_row_that_fits_passes_with_its_per_seed_values():
    row = budget_row()
    assert row["surrogate_acc_seeds"] == [0.5, 0.7]  # seeded() spells the per-seed column
    check_tables({"budget_curves": {"cifar10 @ 300": row}})


@pytest.mark.parametrize("row, message", [
    (budget_row(surrogate_accuracy=0.6), "unknown column 'surrogate_accuracy'"),
    ({k: v for k, v in budget_row().items() if k != "recovery"}, r"missing column\(s\) \['recovery'\]"),
    (budget_row(surrogate_acc=1.3), "surrogate_acc must be a fraction in \\[0, 1\\], got 1.3"),
    (budget_row(budget=-5), "budget must be a non-negative integer, got -5"),
    (budget_row(seeds=True), "seeds must be a non-negative integer, got True"),
    (budget_row(recovery=None), "recovery is null; it is always measured"),
    (budget_row(name_seeds=["a", "b"]), "unknown column 'name_seeds'"),  # name is not a mean over seeds
])
def test_a_row_that_does_not_fit_is_refused_naming_table_row_and_column(row, message):
    with pytest.raises(ResultSchemaError, match=r"budget_curves \(02_knockoff\) row 'cifar10 @ 300': " + message):
        check_tables({"budget_curves": {"cifar10 @ 300": row}}, "02_knockoff")


def test_pattern_columns_and_optional_columns():
    row = {"name": "GTSRB-MNV2", "victim_acc": 0.9, **seeded("bs64", [0.5, 0.6]), "bs256": 0.4,
           "bs256_equal_steps": 0.55, "equal_steps_seeds": [0], "best_batch_size": 64, "epochs": 6, "steps_per_epoch": {"bs64": 10},
           "seeds_per_batch_size": {"bs64": 2}}
    schema_of("table7").check({"gtsrb": row})
    with pytest.raises(ResultSchemaError, match="unknown column 'batch64'"):
        schema_of("table7").check({"gtsrb": {**row, "batch64": 0.5}})
    table6 = {"name": "CIFAR10-MNV2", "victim_acc": 0.9, "chance": 0.1, "probs_acc": 0.6, "probs_recovery": 0.66,
              "label_acc": 0.5, "label_recovery": 0.55, "top1_acc": None}  # top-1 not run: null is allowed
    schema_of("table6").check({"cifar10": table6})
    with pytest.raises(ResultSchemaError, match="label_acc is null"):
        schema_of("table6").check({"cifar10": {**table6, "label_acc": None}})


def test_every_table_has_a_schema_and_every_schema_a_producer():
    assert set(SCHEMAS) <= set(result_keys())
    with pytest.raises(ResultSchemaError, match="table 'table9' has no schema"):
        check_tables({"table9": {}})


def test_the_papers_numbers_are_keyed_by_the_columns_of_our_rows():
    tables = {key: rows for key, rows in paper_results().items() if key in SCHEMAS}
    assert {"table1", "table2", "table3", "table4a", "table4b", "table5", "table6", "table7"} <= set(tables)
    for key, rows in tables.items():
        SCHEMAS[key].check_paper(rows)
    with pytest.raises(ResultSchemaError, match=r"the paper's table5 row 'gtsrb': column\(s\) \['surrogate'\]"):
        SCHEMAS["table5"].check_paper({"gtsrb": {"surrogate": 0.9}})


def test_the_writer_refuses_a_table_that_does_not_fit_and_writes_nothing(tmp_path):
    run = NotebookRun("02_knockoff", get_profile("smoke"), runs=tmp_path)
    run.tables["budget_curves"] = {"cifar10 @ 300": budget_row(surrogate_acc="high")}
    with pytest.raises(ResultSchemaError, match="surrogate_acc must be a fraction"):
        run.save()
    assert not run.path.exists()
    run.tables["budget_curves"] = {"cifar10 @ 300": budget_row()}
    run.save()
    assert json.loads(run.path.read_text())["tables"]["budget_curves"]["cifar10 @ 300"]["surrogate_acc"] == 0.6


def test_the_report_refuses_a_document_written_with_other_columns(tmp_path):
    run = NotebookRun("02_knockoff", get_profile("smoke"), runs=tmp_path)
    run.tables["budget_curves"] = {"cifar10 @ 300": budget_row()}
    run.save()
    document = json.loads(run.path.read_text())
    row = document["tables"]["budget_curves"]["cifar10 @ 300"]
    row["accuracy"] = row.pop("surrogate_acc")  # a column renamed by other code
    run.path.write_text(json.dumps(document))
    with pytest.raises(CorruptResultsError, match=r"02_knockoff.json does not fit the tables' schema .*unknown "
                                                  r"column 'accuracy'.*--only 02_knockoff"):
        load_all("smoke", tmp_path)
