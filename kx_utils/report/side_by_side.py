"""Side-by-side tables: the paper's number, ours, and the difference, as pandas DataFrames.

Used by the notebooks to show a table and by the report to write it as CSV and Markdown.
Accuracies and rates are stored as fractions and shown as percentages (differences in
percentage points); :func:`is_rate` decides which columns hold them, by name.  A column
that could only ever be empty (a difference of two strings) is left out.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping

import pandas as pd

from ..config.seeds import seeds_column

# a column is a rate (a fraction shown as a percentage) when its name ends with one of these ...
RATE_SUFFIXES = ("_acc", "_tpr", "_tnr", "tpr", "tnr", "_at_ours", "_at_95", "auroc", "_fpr_at_95tpr", "_rate",
                 "_kept_classes", "_all_classes", "chance")
# ... or starts with one of these: Table 7's bs<batch size> columns, the shares of queries a detector flags
RATE_PREFIXES = ("bs", "flagged_")
MEASURE_INDEX = "measure"  # the index name of a table with one row per measure (measure_table)


def is_rate(column: str) -> bool:
    """Columns holding accuracies or rates (fractions shown as percentages)."""
    return column.endswith(RATE_SUFFIXES) or column.startswith(RATE_PREFIXES)


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value)) else None


def _difference(ours, paper):
    return (ours - paper) if _num(paper) is not None and _num(ours) is not None else None


def seed_sd(row: Mapping | None, column: str) -> float | None:
    """The standard deviation of ``row[seeds_column(column)]`` (the per-seed values), when it has two or more."""
    values = [v for v in ((row or {}).get(seeds_column(column)) or []) if _num(v) is not None]
    return statistics.stdev(values) if len(values) >= 2 else None


def side_by_side(ours: Mapping[str, Mapping], paper: Mapping[str, Mapping], columns: Iterable[str],
                 names: Mapping[str, str] | None = None, rows: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per key, three columns per measure: ``(measure, "paper" | "ours" | "diff")``.

    ``diff`` is ours minus the paper's, where both are numbers; a measure without any row
    where both are (Table 1's image sizes, or one not measured) gets no ``diff``.  A measure measured on
    several seeds (``<measure>_seeds`` in a row of ours; ``ours`` is then their mean)
    gets a fourth column, ``(measure, "sd")``, their standard deviation.  Keys missing on
    one side show as empty cells, so a stand-in row without a paper counterpart
    still appears.  Cells keep their Python values (counts stay integers).
    """
    columns = list(columns)
    keys = list(rows) if rows is not None else list(dict.fromkeys([*paper.keys(), *ours.keys()]))
    seeded = {col for col in columns if any(seed_sd(ours.get(k), col) is not None for k in keys)}
    compared = {col for col in columns if any(_difference((ours.get(k) or {}).get(col), (paper.get(k) or {}).get(col))
                                              is not None for k in keys)}
    records, index = [], []
    for key in keys:
        p, o = paper.get(key) or {}, ours.get(key) or {}
        rec = {}
        for col in columns:
            pv, ov = p.get(col), o.get(col)
            rec[(col, "paper")] = pv
            rec[(col, "ours")] = ov
            if col in seeded:
                rec[(col, "sd")] = seed_sd(o, col)
            if col in compared:
                rec[(col, "diff")] = _difference(ov, pv)
        records.append(rec)
        index.append((names or {}).get(key, key))
    frame = pd.DataFrame(records, index=pd.Index(index, name="row"), dtype=object)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["measure", "source"])
    return frame


def measure_table(ours: Mapping, paper: Mapping, measures: Iterable[str]) -> pd.DataFrame:
    """A single experiment's numbers, one row per measure: ``paper``, ``ours`` and ``diff``
    (``sd`` where a measure has per-seed values; ``diff`` only where some measure has two numbers)."""
    measures = list(measures)
    records = [{"paper": paper.get(m), "ours": ours.get(m), "sd": seed_sd(ours, m),
                "diff": _difference(ours.get(m), paper.get(m))} for m in measures]
    columns = ["paper", "ours"] + [c for c in ("sd", "diff") if any(r[c] is not None for r in records)]
    return pd.DataFrame(records, index=pd.Index(measures, name=MEASURE_INDEX), columns=columns, dtype=object)


def paper_table(rows: Mapping[str, Mapping], columns: Iterable[str], names: Mapping[str, str] | None = None
                ) -> pd.DataFrame:
    """Numbers quoted from a paper alone, one column per measure: no ``ours`` or ``diff`` to fill.

    Only the keys with at least one of ``columns`` become rows, labelled by ``names``.
    """
    columns = list(columns)
    keys = [k for k, row in rows.items() if any(row.get(c) is not None for c in columns)]
    return pd.DataFrame([{c: rows[k].get(c) for c in columns} for k in keys],
                        index=pd.Index([(names or {}).get(k, k) for k in keys]), columns=columns, dtype=object)


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and is_rate(column):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_spread(column: str, value) -> str:
    """A standard deviation over seeds: ± percentage points for rates."""
    if _num(value) is None:
        return ""
    return f"±{100 * value:.1f} pp" if is_rate(column) else f"±{value:.2f}"


def format_difference(column: str, value) -> str:
    """Ours minus the paper's: percentage points for rates, signed numbers otherwise."""
    if _num(value) is None:
        return format_cell(column, value)
    if isinstance(value, float) and is_rate(column):
        return f"{100 * value:+.1f} pp"
    return f"{value:+.2f}" if isinstance(value, float) else f"{value:+d}"


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy for display: rates as percentages (differences in percentage points), and a header
    of the measures over their ``paper | ours | sd | diff`` columns, without level or index names
    (a notebook would otherwise show them as extra header rows: "measure", "source", "row").

    The measure of a cell is its column's (its ``(measure, source)`` column of
    :func:`side_by_side`), or its row's in a :func:`measure_table`.
    """
    out = frame.copy().astype(object)
    out.columns.names = [None] * out.columns.nlevels
    out.index.name = None
    by_row = frame.index.name == MEASURE_INDEX
    for col in frame.columns:
        measure = col[0] if isinstance(col, tuple) else col
        source = col[1] if isinstance(col, tuple) else col
        for i, idx in enumerate(frame.index):
            v = frame.iloc[i][col]
            m = str(idx) if by_row else str(measure)
            shown = {"diff": format_difference, "sd": format_spread}.get(source, format_cell)
            out.iloc[i, frame.columns.get_loc(col)] = shown(m, v)
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``formatted(frame)`` (no extra dependency)."""
    shown = formatted(frame)
    headers = [" ".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in shown.columns]
    lines = ["| " + " | ".join([frame.index.name or ""] + headers) + " |",
             "|" + "---|" * (len(headers) + 1)]
    for idx, row in shown.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)
