"""One schema per table: the columns each table's rows hold, checked where a notebook writes them and where
the report reads them, with the paper's numbers (:mod:`kx_utils.report.paper`) keyed by the same names.

A table is ``{row key: {column: value}}`` (a victim, a detector, a budget).  Its :class:`TableSchema` names
every column a row may hold and what kind of value it is; a column the schema does not know, a required
column that is missing or a value of the wrong kind is a :class:`ResultSchemaError` naming the table, the
row and the column.  So a renamed column cannot silently leave the report reading ``None``, and a results
file written by older code is refused with what to rerun rather than drawn half-empty.

``seeded=True`` marks a mean over seeds: the row may then also hold ``<column>_seeds``, the per-seed values
(:func:`kx_utils.config.seeds.seeded`; :func:`~kx_utils.config.seeds.seeds_column` spells its name).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..config.seeds import SEEDS_SUFFIX
from .ood_baselines import BASELINE_COLUMNS
from .section5 import EXTRA_FORMATS, PAPER_FORMATS


class ResultSchemaError(ValueError):
    """A table's rows do not match its schema; the message names the table, the row and the column."""


# what a column holds: a predicate on a value that is not None, and its description for the error
KINDS = {
    "fraction": (lambda v: _number(v) and -1e-9 <= v <= 1 + 1e-9, "a fraction in [0, 1]"),
    "ratio": (lambda v: _number(v) and v >= 0, "a non-negative number"),  # recovery may pass 1
    "number": (lambda v: _number(v), "a finite number"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
    "epoch": (lambda v: (isinstance(v, int) and not isinstance(v, bool))
              or (isinstance(v, list) and all(isinstance(e, int) for e in v)), "an epoch or one per seed"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "mapping": (lambda v: isinstance(v, dict), "an object"),
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Column:
    """One column: its name (a regular expression where ``pattern``), its kind (:data:`KINDS`), whether a
    row may lack it or hold None (``optional``: not measured there) and whether it is a mean over seeds."""

    name: str
    kind: str
    optional: bool = False
    seeded: bool = False
    pattern: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}")

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.name, name) is not None if self.pattern else name == self.name


@dataclass(frozen=True)
class TableSchema:
    """The columns of one table's rows; ``paper_only`` names columns only the paper's numbers hold (the
    Knockoff paper's own results beside Table 2, say)."""

    table: str
    columns: tuple[Column, ...]
    paper_only: tuple[str, ...] = ()

    def column(self, name: str) -> Column | None:
        """The column ``name`` is, or the seeded column whose per-seed values it holds."""
        for c in self.columns:
            if c.matches(name):
                return c
        if name.endswith(SEEDS_SUFFIX):
            base = self.column(name.removesuffix(SEEDS_SUFFIX))
            if base is not None and base.seeded:
                return Column(name, "list", optional=True)
        return None

    def check(self, rows: Mapping, where: str = "", complete: bool = True) -> None:
        """Raise :class:`ResultSchemaError` unless every row of ``rows`` fits this schema: only known columns,
        each of its kind, and (``complete``) every column that is always measured."""
        at = f" ({where})" if where else ""
        if not isinstance(rows, Mapping):
            raise ResultSchemaError(f"{self.table}{at}: rows must be an object row -> columns, "
                                    f"got {type(rows).__name__}")
        for key, row in rows.items():
            if not isinstance(row, Mapping):
                raise ResultSchemaError(f"{self.table}{at} row {key!r}: a row must be an object of columns, "
                                        f"got {type(row).__name__}")
            for name, value in row.items():
                column = self.column(name)
                if column is None:
                    raise ResultSchemaError(
                        f"{self.table}{at} row {key!r}: unknown column {name!r}; declare it in "
                        f"kx_utils/experiments/schemas.py (known: {', '.join(c.name for c in self.columns)})")
                ok, wanted = KINDS[column.kind]
                if value is None and not column.optional:
                    raise ResultSchemaError(f"{self.table}{at} row {key!r}: {name} is null; it is always measured")
                if value is not None and not ok(value):
                    raise ResultSchemaError(f"{self.table}{at} row {key!r}: {name} must be {wanted}, got {value!r}")
            missing = [c.name for c in self.columns if not c.optional and not c.pattern and c.name not in row]
            if complete and missing:
                raise ResultSchemaError(f"{self.table}{at} row {key!r}: missing column(s) {missing}")

    def check_paper(self, rows: Mapping[str, Mapping]) -> None:
        """Raise unless every column of the paper's numbers for this table is one of its columns."""
        for key, row in rows.items():
            unknown = [n for n in row if n not in self.paper_only and self.column(n) is None]
            if unknown:
                raise ResultSchemaError(f"the paper's {self.table} row {key!r}: column(s) {unknown} that "
                                        f"{self.table}'s rows do not hold")


def _columns(kind: str, names: Iterable[str], **flags) -> tuple[Column, ...]:
    return tuple(Column(n, kind, **flags) for n in names)


# the columns of a Knockoff row over seeds (kx_utils.experiments.section5.knockoff_row)
_KNOCKOFF_ROW = (
    Column("name", "text"), Column("victim_acc", "fraction"),
    Column("surrogate_acc", "fraction", seeded=True), Column("recovery", "ratio", seeded=True),
    Column("best_acc", "fraction", seeded=True), Column("best_recovery", "ratio", seeded=True),
    Column("best_epoch", "epoch"), *_columns("count", ("queries", "budget", "epochs", "queries_sent_now")),
    Column("seeds", "list"), Column("train_seconds", "number"),
    Column("val_selected_acc", "fraction", optional=True, seeded=True), Column("chance", "fraction"),
)
# the test images behind a row's accuracies, where the row states them (the report's test_size reads it,
# else Table 1's count of the victim's dataset)
_TEST_SIZE = Column("test_size", "count", optional=True)

# each baseline at the detector's operating point, at TNR 95%, and threshold-free (detection.table4_row)
_BASELINE_MEASURES = ("tpr_at_ours", "tpr_at_95", "auroc", "fpr_at_95tpr")
_TABLE4 = (
    *_columns("fraction", [f"ours_{m}" for m in ("tpr", "tnr", "auroc", "fpr_at_95tpr")]),
    Column("ours_tnr_kept_classes", "fraction", optional=True),  # None: every class dropped
    *_columns("fraction", [f"{method}_{m}" for method in BASELINE_COLUMNS for m in _BASELINE_MEASURES]),
    *_columns("count", ("classes_dropped", "classes", "in_test", "ood_test")),
)

SCHEMAS: dict[str, TableSchema] = {s.table: s for s in (
    TableSchema("table1", (Column("image_size", "text"), *_columns("count", ("classes", "train", "test")),
                           Column("name", "text"), Column("source", "text"),
                           Column("standin_note", "text", optional=True))),
    TableSchema("victims", (Column("name", "text"), Column("arch", "text"), Column("image_size", "count"),
                            Column("victim_acc", "fraction"), Column("chance", "fraction"),
                            Column("epochs", "count"), Column("train_seconds", "number"),
                            Column("from_cache", "flag"), Column("test_acc_per_epoch", "list"))),
    TableSchema("table2", (*_KNOCKOFF_ROW, Column("test_size", "count")),  # Table 2 always states it
                paper_only=("knockoff_victim_acc", "knockoff_surrogate_acc", "knockoff_recovery")),
    TableSchema("budget_curves", (Column("name", "text"), *_columns("count", ("budget", "epochs", "seeds")),
                                  Column("surrogate_acc", "fraction", seeded=True),
                                  Column("recovery", "ratio", seeded=True))),
    TableSchema("table3", (*_columns("fraction", ("tpr", "tnr", "auroc")),
                           Column("tnr_kept_classes", "fraction", optional=True),  # None: every class dropped
                           Column("tpr_openimages", "fraction", optional=True),
                           Column("arch", "text"), Column("pretrained", "flag"), Column("starred", "flag"),
                           Column("paper_row", "text", optional=True),
                           *_columns("count", ("classes_dropped", "train_in", "train_ood", "image_size",
                                               "in_test", "ood_test")),
                           Column("train_seconds", "number"), Column("cv_score", "number", optional=True),
                           Column("C", "number", optional=True), Column("detector", "text"))),
    TableSchema("table4a", _TABLE4),
    TableSchema("table4b", _TABLE4),
    TableSchema("filter", (*_columns("text", ("victim", "name", "detector", "action")),
                           *_columns("count", ("unseen_queries", "unseen_flagged", "transfer_queries",
                                               "transfer_flagged", "transfer_passed", "benign_queries",
                                               "benign_passed", "benign_flagged", "queries_sent")),
                           *_columns("fraction", ("transfer_flagged_rate", "benign_flagged_rate")),
                           Column("unseen_flagged_rate", "fraction", optional=True))),  # None: no unseen query
    TableSchema("table5", (*_KNOCKOFF_ROW, _TEST_SIZE)),
    TableSchema("table6", (
        Column("name", "text"), Column("victim_acc", "fraction"), Column("chance", "fraction"),
        *(Column(f"{f}_acc", "fraction", optional=f not in PAPER_FORMATS, seeded=True)
          for f in PAPER_FORMATS + EXTRA_FORMATS),
        *(Column(f"{f}_recovery", "ratio", optional=f not in PAPER_FORMATS, seeded=True)
          for f in PAPER_FORMATS + EXTRA_FORMATS),
        *(Column(f"{f}_same_targets_as", "text", optional=True) for f in PAPER_FORMATS + EXTRA_FORMATS),
        _TEST_SIZE)),
    TableSchema("table7", (
        Column("name", "text"), Column("victim_acc", "fraction"),
        Column(r"bs\d+", "fraction", seeded=True, pattern=True),
        Column(r"bs\d+_equal_steps", "fraction", seeded=True, pattern=True),
        Column("best_batch_size", "count"), Column("epochs", "count"),
        Column("steps_per_epoch", "mapping"), Column("seeds_per_batch_size", "mapping"),
        Column("equal_steps_epochs", "mapping", optional=True),
        Column("equal_steps_seeds", "list", optional=True),  # the seeds the equal-steps control ran on
        _TEST_SIZE)),
    TableSchema("table7_convergence", (
        Column("name", "text"), Column("victim_acc", "fraction"),
        Column(r"bs\d+", "fraction", seeded=True, pattern=True),  # at the validation-selected epoch
        Column(r"bs\d+_last", "fraction", seeded=True, pattern=True),
        Column("best_batch_size", "count"), Column("epochs_trained", "mapping"),
        *_columns("count", ("budget", "max_epochs", "patience")), Column("seeds", "list"), _TEST_SIZE)),
    # notebook 07 (beyond the paper; kx_utils.experiments.defences)
    TableSchema("defences", (
        *_columns("text", ("name", "defence", "family", "answers")), Column("strength", "number", optional=True),
        Column("victim_acc", "fraction"), Column("surrogate_acc", "fraction", seeded=True),
        Column("recovery", "ratio", seeded=True),
        *_columns("fraction", ("benign_acc", "top1_kept", "chance")), *_columns("ratio", ("l1", "kl")),
        *_columns("count", ("benign_queries", "budget")), Column("seeds", "list"), _TEST_SIZE)),
    TableSchema("dawn", (
        Column("name", "text"), Column("rate", "fraction"), *_columns("count", ("watermarked", "budget", "seed")),
        *_columns("fraction", ("agreement_suspect", "agreement_clean", "chance", "surrogate_acc", "clean_acc")))),
    TableSchema("prada", (
        *_columns("text", ("name", "client")), Column("flagged", "flag"),
        Column("first_flagged", "count", optional=True), *_columns("count", ("queries", "tests")),
        *_columns("number", ("min_w", "last_w"), optional=True), Column("delta", "fraction"))),
    TableSchema("adaptive", (
        *_columns("text", ("name", "reward")), *_columns("fraction", ("victim_acc", "chance")),
        Column("budget", "count"),
        Column("seeds", "list"),
        *_columns("fraction", ("random_acc", "adaptive_acc"), seeded=True),
        *_columns("ratio", ("random_recovery", "adaptive_recovery"), seeded=True),
        *_columns("count", ("random_classes_queried", "adaptive_classes_queried")), _TEST_SIZE)),
    TableSchema("early_stopping", (
        Column("name", "text"), Column("victim_acc", "fraction"), Column("final_epoch", "count"),
        *_columns("fraction", ("final_acc", "best_acc", "val_selected_acc"), seeded=True),
        Column("best_epoch", "epoch"), Column("val_selected_epoch", "epoch"),
        Column("gain_captured", "number", optional=True), _TEST_SIZE)),
)}


def schema_of(table: str) -> TableSchema:
    if table not in SCHEMAS:
        raise ResultSchemaError(f"table {table!r} has no schema; declare its columns in "
                                f"kx_utils/experiments/schemas.py (tables: {', '.join(SCHEMAS)})")
    return SCHEMAS[table]


def check_tables(tables: Mapping[str, Mapping], where: str = "", complete: bool = True) -> None:
    """Check every table of a results document against its schema (see :meth:`TableSchema.check`)."""
    for table, rows in tables.items():
        schema_of(table).check(rows, where, complete)
