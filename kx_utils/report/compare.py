"""``python -m kx_utils compare OLD NEW``: whether two report folders hold the same numbers, CSV by CSV.

A refactor must change no number: run the same profile with the old code and the new one, then compare
their ``figures/<profile>/`` folders.  Each CSV is read as text cells; two cells are equal when their
text is, or when both are numbers within ``atol``.  Columns that measure wall time (their name holds
``seconds``) differ between any two runs and are left out unless ``--keep-times`` asks for them; what
was left out is printed too.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CsvComparison:
    name: str
    status: str  # "identical", "differs", "only in old", "only in new", "different shape"
    columns: dict[str, float | None] = field(default_factory=dict)  # differing column -> largest |diff|
    ignored: tuple[str, ...] = ()  # time columns left out

    def line(self) -> str:
        text = f"{self.name}: {self.status}"
        if self.columns:
            text += " in " + ", ".join(c if d is None else f"{c} (max |diff| {d:.3g})" for c, d in self.columns.items())
        if self.ignored:
            text += f" (time columns left out: {', '.join(self.ignored)})"
        return text


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def is_time_column(name: str) -> bool:
    return "seconds" in name


def compare_csv(old: Path, new: Path, atol: float = 0.0, keep_times: bool = False) -> CsvComparison:
    """Compare one CSV of two runs, cell by cell (the first row is the header, the first column the row key)."""
    a, b = _read(old), _read(new)
    if not a or not b or a[0] != b[0] or len(a) != len(b) or [r[:1] for r in a] != [r[:1] for r in b]:
        return CsvComparison(old.name, "different shape",
                             {"header" if (a[:1] != b[:1]) else "rows": None})
    header = a[0]
    ignored = tuple(c for c in header if is_time_column(c) and not keep_times)
    differing: dict[str, float | None] = {}
    for row_a, row_b in zip(a[1:], b[1:]):
        for column, x, y in zip(header, row_a, row_b):
            if column in ignored or x == y:
                continue
            u, v = _number(x), _number(y)
            if u is not None and v is not None and abs(u - v) <= atol:
                continue
            gap = abs(u - v) if u is not None and v is not None else None
            previous = differing.get(column, 0.0)
            differing[column] = None if gap is None or previous is None else max(previous, gap)
    return CsvComparison(old.name, "differs" if differing else "identical", differing, ignored)


def compare_folders(old: str | Path, new: str | Path, atol: float = 0.0,
                    keep_times: bool = False) -> list[CsvComparison]:
    """Every CSV of either folder, compared (by file name)."""
    old, new = Path(old), Path(new)
    for folder in (old, new):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder: pass two report folders, e.g. figures/mini and "
                                    "a copy of it made by the other code")
    names = sorted({p.name for p in old.glob("*.csv")} | {p.name for p in new.glob("*.csv")})
    out = []
    for name in names:
        if not (new / name).is_file():
            out.append(CsvComparison(name, "only in old"))
        elif not (old / name).is_file():
            out.append(CsvComparison(name, "only in new"))
        else:
            out.append(compare_csv(old / name, new / name, atol, keep_times))
    return out


def main(old: str, new: str, atol: float = 0.0, keep_times: bool = False) -> int:
    """Print one line per CSV; 0 when every CSV is identical, 1 otherwise."""
    results = compare_folders(old, new, atol, keep_times)
    for r in results:
        print(r.line())
    same = sum(r.status == "identical" for r in results)
    print(f"{same} of {len(results)} CSVs identical" + (f" (numbers within {atol:g})" if atol else ""))
    return 0 if same == len(results) else 1
