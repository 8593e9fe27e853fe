"""Side-by-side tables: the paper's number, ours, and the difference, as pandas DataFrames.

Used by the notebooks to show a table and by the report to write it as CSV and Markdown.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd

RATE_SUFFIXES = ("_acc", "_tpr", "_tnr", "tpr", "tnr", "_at_ours", "_at_95")


def is_rate(column: str) -> bool:
    """Columns holding accuracies or rates (fractions shown as percentages)."""
    return column.endswith(RATE_SUFFIXES) or column.startswith("bs")


def _num(value):
    return value if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)) \
        else None


def side_by_side(ours: Mapping[str, Mapping], paper: Mapping[str, Mapping], columns: Iterable[str],
                 names: Mapping[str, str] | None = None, rows: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per key, three columns per measure: ``(measure, "paper" | "ours" | "diff")``.

    ``diff`` is ours minus the paper's, where both are numbers.  Keys missing on
    one side show as empty cells, so a stand-in row without a paper counterpart
    still appears.
    """
    columns = list(columns)
    keys = list(rows) if rows is not None else list(dict.fromkeys([*paper.keys(), *ours.keys()]))
    records, index = [], []
    for key in keys:
        p, o = paper.get(key, {}), ours.get(key, {})
        rec = {}
        for col in columns:
            pv, ov = p.get(col), o.get(col)
            rec[(col, "paper")] = pv
            rec[(col, "ours")] = ov
            rec[(col, "diff")] = (ov - pv) if _num(pv) is not None and _num(ov) is not None else None
        records.append(rec)
        index.append((names or {}).get(key, key))
    frame = pd.DataFrame(records, index=pd.Index(index, name="row"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["measure", "source"])
    return frame


def format_cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and is_rate(column):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with rates as percentages (differences in percentage points) for display."""
    out = frame.copy().astype(object)
    for col in frame.columns:
        measure = col[0] if isinstance(col, tuple) else col
        source = col[1] if isinstance(col, tuple) else ""
        for idx in frame.index:
            v = frame.at[idx, col]
            if source == "diff" and isinstance(v, float) and is_rate(measure) and not math.isnan(v):
                out.at[idx, col] = f"{100 * v:+.1f} pp"
            else:
                out.at[idx, col] = format_cell(measure, v)
    return out


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``formatted(frame)`` (no extra dependency)."""
    shown = formatted(frame)
    headers = [" ".join(str(p) for p in c) if isinstance(c, tuple) else str(c) for c in shown.columns]
    lines = ["| " + " | ".join([shown.index.name or ""] + headers) + " |",
             "|" + "---|" * (len(headers) + 1)]
    for idx, row in shown.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)
