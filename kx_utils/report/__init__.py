"""``figures/<profile>/``: the paper's tables and figures, side by side with ours, and the claims check.

Everything here is regenerated from the notebooks' JSON results
(``runs/<profile>/<notebook>.json``), never from their printed output:

* ``table1`` ... ``table7`` (``table4a``, ``table4b``) and the single-experiment tables of
  Sections 5.1.3 and 5.2.2, each as CSV (fractions) and Markdown (percentages), with the
  paper's value, ours and the difference (:mod:`.tables`);
* ``figure1`` and ``figure2``, the budget curves and the appendix's Table 2 training curves as
  PNG and PDF (:mod:`.figures`; the notebooks show the same figures);
* ``report.md`` (:mod:`.markdown`): the claims check — each qualitative claim of the paper
  judged *holds*, *fails* or *inconclusive* against the measured noise (:mod:`.claims`,
  :mod:`.checks`, :mod:`.noise`) — the tables, the figures, the stand-ins of the profile, its deviations from
  the paper, the machine, library versions and wall times.

A notebook whose results are missing leaves its parts out, and the report says how to
produce them; a results file that cannot be read is an error naming it (:mod:`.results`).
The folder is built aside and swapped in whole (:mod:`.writer`).
"""

from __future__ import annotations

from ..orchestration.run_results import CorruptResultsError
from .claims import (
    CLAIMS,
    Claim,
    ClaimResult,
    Judgement,
    check_claims,
    claims_text,
    verdict,
)
from .figures import (
    budget_curves,
    defence_tradeoffs,
    figure1,
    figure2,
    save_figure,
    table2_curves,
)
from .markdown import render_report
from .noise import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOISE_RULE,
    NOT_EVALUATED,
    Comparison,
    Measure,
    compare,
)
from .results import (
    MissingData,
    Results,
    load_all,
    paper_results,
    victim_names,
)
from .tables import (
    OURS_ONLY_TABLES,
    TABLE_SPECS,
    TableSpec,
    build_tables,
    frame_to_csv,
    frame_to_markdown,
)
from .writer import ReportOutcome, default_output, write_report

__all__ = [
    "CLAIMS", "Claim", "ClaimResult", "Comparison", "CorruptResultsError", "FAILS", "HOLDS", "INCONCLUSIVE",
    "Judgement", "Measure", "MissingData", "NOISE_RULE", "NOT_EVALUATED", "OURS_ONLY_TABLES",
    "ReportOutcome", "Results", "TABLE_SPECS", "TableSpec", "budget_curves", "build_tables", "defence_tradeoffs", "check_claims", "claims_text",
    "compare", "default_output", "figure1", "figure2", "frame_to_csv", "frame_to_markdown", "load_all",
    "paper_results", "render_report", "save_figure", "table2_curves", "verdict", "victim_names", "write_report",
]
