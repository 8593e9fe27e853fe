"""The report's tables: which measures each paper table compares, built side by side with the paper's.

:data:`TABLE_SPECS` lists Tables 1-7 and the single-number experiments of Sections 5.1.3
and 5.2.2; :func:`build_tables` builds each one that the results allow as a DataFrame
(:func:`kx_utils.report.side_by_side.side_by_side`, or :func:`kx_utils.report.side_by_side.measure_table` for the
sections), and :func:`frame_to_csv` / :func:`frame_to_markdown` write them: CSV holds raw
values (fractions), Markdown percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import pandas as pd

from ..experiments.section5 import EXTRA_FORMATS
from . import paper
from .checks import at_chance, batch_columns
from .results import DATA_NOT_PRESENT, MissingData, Results, paper_results, victim_names
from .side_by_side import measure_table, side_by_side, to_markdown

# Table 4 in long form: one row per victim and method, so every method fits beside the paper
TABLE4_METHODS = (("ours", "ours"), ("msp", "MSP"), ("odin_published", "ODIN (published)"),
                  ("odin_fair", "ODIN (fair)"), ("mahalanobis_published", "Mahalanobis (published)"),
                  ("mahalanobis_fair", "Mahalanobis (fair)"))


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    columns: tuple[str, ...]  # compared with the paper (for a section: its measures, in order)
    extra: tuple[str, ...] = ()  # ours only
    paper_only: tuple[str, ...] = ()
    caption: str = ""
    # (ours, paper's rows, row names) -> (ours, paper's rows, row order or None, row names, spec)
    prepare: Callable | None = None
    section_victim: str | None = None  # a single experiment on one victim: one row per measure


def _table1_inputs(ours, paper_rows, names, spec):
    from ..data.catalog import DATASETS

    names = {k: DATASETS[k].paper_name if k in DATASETS else k for k in {*ours, *paper_rows}}
    return ours, paper_rows, None, names, spec


def _table3_inputs(ours, paper_rows, names, spec):
    """Table 3's rows differ between profiles: each of our rows names the paper row it stands in for."""
    paper_rows, names, used = {}, {}, set()
    for key, row in ours.items():
        counterpart = row.get("paper_row") or (key if key in paper.TABLE3 else None)
        names[key] = key if counterpart in (None, key) else f"{key} (paper: {counterpart})"
        if counterpart in paper.TABLE3:
            paper_rows[key] = paper.TABLE3[counterpart]
            used.add(counterpart)
    keys = list(ours)
    for key, row in paper.TABLE3.items():
        if key not in used and key not in ours:
            paper_rows[key], names[key] = row, f"{key} (paper only)"
            keys.append(key)
    return ours, paper_rows, keys, names, spec


def table4_long(table: Mapping[str, Mapping]) -> dict[str, dict]:
    """Table 4's victim rows as ``<victim>/<method>`` rows with columns tnr, tpr_at_ours, tpr_at_95,
    auroc, fpr_at_95tpr (and classes_dropped on the detector's row)."""
    out = {}
    for key, row in table.items():
        for method, _ in TABLE4_METHODS:
            if method == "ours":
                cells = {"tnr": row.get("ours_tnr"), "tpr_at_ours": row.get("ours_tpr"),
                         "classes_dropped": row.get("classes_dropped")}
            else:
                cells = {"tpr_at_ours": row.get(f"{method}_tpr_at_ours"),
                         "tpr_at_95": row.get(f"{method}_tpr_at_95")}
            cells.update(auroc=row.get(f"{method}_auroc"), fpr_at_95tpr=row.get(f"{method}_fpr_at_95tpr"))
            if any(v is not None for v in cells.values()):
                out[f"{key}/{method}"] = cells
    return out


def _table4_inputs(ours, paper_rows, names, spec):
    ours_long, paper_long = table4_long(ours), table4_long(paper_rows)
    victims = list(dict.fromkeys([*paper_rows, *ours]))
    keys = [f"{v}/{m}" for v in victims for m, _ in TABLE4_METHODS if f"{v}/{m}" in {**paper_long, **ours_long}]
    labels = dict(TABLE4_METHODS)
    row_names = {k: f"{names.get(k.split('/')[0], k.split('/')[0])} · {labels[k.split('/')[1]]}" for k in keys}
    return ours_long, paper_long, keys, row_names, spec


def _table7_inputs(ours, paper_rows, names, spec):
    sizes = sorted({b for table in (ours, paper_rows) for r in table.values() for b in batch_columns(r)})
    controls = tuple(sorted({c for r in ours.values() for c in r if c.startswith("bs") and c.endswith(EQUAL_STEPS)},
                            key=lambda c: int(c[2:-len(EQUAL_STEPS)])))
    return ours, paper_rows, None, names, replace(spec, columns=("victim_acc", *(f"bs{b}" for b in sizes)),
                                                  extra=controls)


EQUAL_STEPS = "_equal_steps"


TABLE4_CAPTION = (
    "One row per victim and method. tpr_at_ours: the share of OOD test images flagged, each baseline thresholded "
    "at our detector's TNR (the `tnr` of the victim's `ours` row; for `ours`, its own TPR); tpr_at_95: the "
    "baseline thresholded at TNR 95%. auroc and fpr_at_95tpr (the share of benign test images flagged when 95% "
    "of the OOD images are) need no threshold. *published*: ODIN/Mahalanobis tuned on a validation sample of the "
    "test sets, as the authors' code (the paper's baseline numbers come from that code); *fair*: tuned without "
    "OOD test data, like our detector. Mahalanobis is Lee et al.'s multi-layer ensemble. classes_dropped: "
    "classes the starred detector leaves out (audited overlap with ImageNet-1k).")
TABLE4_COLUMNS = ("tnr", "tpr_at_ours", "tpr_at_95")
TABLE4_EXTRA = ("auroc", "fpr_at_95tpr", "classes_dropped")

TABLE_SPECS = (
    TableSpec("table1", "Table 1 — datasets", ("image_size", "classes", "train", "test"),
              extra=("source",), caption="As loaded in this profile (the stand-ins of $KX_DATA in mini/smoke).",
              prepare=_table1_inputs),
    TableSpec("table2", "Table 2 — the Knockoff attack",
              ("victim_acc", "surrogate_acc", "recovery"), extra=("best_acc", "best_epoch", "queries"),
              paper_only=("knockoff_victim_acc", "knockoff_surrogate_acc", "knockoff_recovery"),
              caption="surrogate_acc is the last epoch; best_acc/best_epoch are test-selected (optimistic). "
                      "knockoff_* are the Knockoff paper's own numbers, as the paper quotes them."),
    TableSpec("table3", "Table 3 — choosing the detector (CUBS vs ImageNet)", ("tpr", "tnr"),
              extra=("auroc", "tnr_kept_classes", "classes_dropped"),
              caption="TPR: ImageNet flagged; TNR: CUBS test passed, the same test images for every row "
                      "(tnr_kept_classes: on the classes the starred rows keep). A row 'X (paper: Y)' is our "
                      "model X standing in for the paper's Y.", prepare=_table3_inputs),
    TableSpec("table4a", "Table 4a — detector vs baselines, ImageNet as OOD test set", TABLE4_COLUMNS,
              extra=TABLE4_EXTRA, caption=TABLE4_CAPTION, prepare=_table4_inputs),
    TableSpec("table4b", "Table 4b — detector vs baselines, OpenImages as OOD test set", TABLE4_COLUMNS,
              extra=TABLE4_EXTRA, caption="As Table 4a, with OpenImages as the OOD test set.",
              prepare=_table4_inputs),
    TableSpec("table5", "Table 5 — pretrained vs scratch victims", ("victim_acc", "surrogate_acc", "recovery")),
    TableSpec("table6", "Table 6 — probability vectors vs predicted class",
              ("victim_acc", "probs_acc", "probs_recovery", "label_acc", "label_recovery"),
              extra=tuple(f"{f}_{m}" for f in EXTRA_FORMATS for m in ("acc", "recovery")),
              caption="The top-k and rounded columns are ours only (the paper names these outputs, §5.1.2, "
                      "without numbers)."),
    TableSpec("table7", "Table 7 — surrogate accuracy per batch size", ("victim_acc",),
              caption="Batch size 64 is Knockoff's recommended setting. Every batch size trains the same number "
                      "of epochs, as in the paper. bs<b>_equal_steps (ours only, a control the paper does not run): "
                      "batch size b trained for as many SGD steps as batch 64 (its epochs scaled up), on the "
                      "seeds the run names.", prepare=_table7_inputs),
    TableSpec("section_5_1_3", "Section 5.1.3 — an unrelated transfer set (GTSRB victim)",
              ("victim_acc", "gtsrb_with_diabetic5_queries_acc", "budget", "gtsrb_with_imagenet_queries_acc",
               "imagenet_budget", "gtsrb_with_imagenet_same_budget_acc", "diabetic5_recovery",
               "diabetic5_predicted_classes"),
              section_victim="gtsrb",
              caption="The paper compares its 70% (Diabetic5 queries, count not given) with Table 2's GTSRB "
                      "surrogate (100,000 ImageNet queries). budget: our Diabetic5 queries; "
                      "gtsrb_with_imagenet_queries_acc: notebook 02's surrogate (imagenet_budget queries); "
                      "gtsrb_with_imagenet_same_budget_acc: as many ImageNet queries as Diabetic5 ones — the "
                      "control claim 9 is decided on."),
    TableSpec("section_5_2_2", "Section 5.2.2 — in-distribution queries (Caltech victim)",
              ("victim_acc", "in_distribution_acc", "in_distribution_recovery", "in_distribution_queries",
               "chosen_batch_size", "chosen_epochs", "imagenet_queries_acc", "imagenet_queries_budget",
               "imagenet_same_budget_acc", "imagenet_same_budget_batch_size", "imagenet_same_budget_epochs",
               "flagged_in_distribution", "flagged_benign", "flagged_imagenet", "benign_queries",
               "unseen_imagenet_queries"),
              section_victim="caltech",
              caption="The paper compares its tuned in-distribution attacker (380 Bing images for each of 256 "
                      "classes) with Table 2's ImageNet surrogate (100,000 queries). imagenet_queries_acc: "
                      "notebook 02's surrogate; imagenet_same_budget_acc: the same validation grid on as many "
                      "ImageNet queries as in-distribution ones — the control claim 7 is decided on. flagged_*: "
                      "the share the detector flags of the in-distribution queries, of the victim's benign test "
                      "images (benign_queries) and of as many ImageNet queries no detector trained on (claim 8)."),
)
OURS_ONLY_TABLES = (
    ("victims", "Victims as trained (01_victims)"),
    ("budget_curves", "Recovery against the query budget (02; beyond the paper)"),
    ("table7_convergence", "Table 7 until convergence: every batch size trained until the attacker's validation "
                           "accuracy stops improving, scored at the epoch it picks (05; beyond the paper's table)"),
    ("early_stopping", "Early stopping: last, test-selected and validation-selected epochs (05)"),
    ("filter", "The detector as a filter in front of the API (03)"),
)

# notebook 07's tables (beyond the paper): key, title, caption
DEFENCE_TABLES = (
    ("defences", "Defences against the Knockoff attacker: what the attacker keeps, what the honest client loses",
     "Every surrogate is Table 2's attack against the defended API (the undefended and label-only rows are Table 2's "
     "and Table 6's own runs). surrogate_acc / recovery: the attacker's; benign_acc: the top-1 accuracy of the "
     "answers an honest client gets for the victim's test images (benign_queries of them); top1_kept: the share "
     "whose top-1 class is the undefended one; l1 / kl: the mean distance of the returned vectors to the true ones."),
    ("dawn", "DAWN: the watermark on the extracted surrogate against a clean surrogate",
     "agreement_*: the share of the watermarked queries (watermarked of budget) on which a model predicts the "
     "watermark's wrong class. suspect: the surrogate extracted from the watermarking API; clean: the same queries, "
     "seed and recipe with undefended answers (the false-positive baseline); chance: 1 / (classes - 1)."),
    ("prada", "PRADA on Knockoff's query stream and on honest clients",
     "Each client sends queries queries; PRADA flags it once the Shapiro-Wilk statistic W of its minimum-distance "
     "set falls below delta (first_flagged: the query it happened at; tests: how many normality tests ran). "
     "knockoff: Table 2's transfer set in the order sent; benign_random / benign_sorted: the victim's test images in "
     "random order and sorted by class."),
    ("adaptive", "Knockoff's adaptive sampling against random sampling, at equal budgets",
     "Both attackers train Table 2's recipe on budget queries of the same pool; the adaptive one picks them with "
     "the gradient bandit of Orekondy et al. over WordNet's tree above the pool's classes (reward: reward). "
     "*_classes_queried: the pool classes the first seed's transfer set drew from."),
)


def comparison_frame(ours: Mapping[str, Mapping], paper_rows: Mapping[str, Mapping], spec: TableSpec,
                     names: Mapping[str, str], rows: list[str] | None = None) -> pd.DataFrame:
    """``side_by_side`` plus ours-only and paper-only columns (those with at least one value)."""
    keys = rows if rows is not None else list(dict.fromkeys([*paper_rows, *ours]))
    frame = side_by_side(ours, paper_rows, spec.columns, names=names, rows=keys)
    for col in spec.extra:
        values = [(ours.get(k) or {}).get(col) for k in keys]
        if any(v is not None for v in values):
            frame[(col, "ours")] = pd.Series(values, index=frame.index, dtype=object)
    for col in spec.paper_only:
        values = [(paper_rows.get(k) or {}).get(col) for k in keys]
        if any(v is not None for v in values):
            frame[(col, "paper")] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def section_frame(ours: Mapping, paper_row: Mapping, spec: TableSpec) -> pd.DataFrame:
    """A single experiment: one row per measure of ``spec`` that either side has."""
    shown = [m for m in spec.columns if ours.get(m) is not None or paper_row.get(m) is not None]
    return measure_table(ours, paper_row, shown)


def ours_only_frame(found: Mapping[str, Mapping]) -> pd.DataFrame:
    """A table of ours only (no paper column): one row per key, the columns that hold no list or mapping."""
    frame = pd.DataFrame.from_dict(found, orient="index", dtype=object)
    frame = frame[[c for c in frame.columns if not any(isinstance(v, (list, dict)) for v in frame[c])]]
    frame.index.name = "row"
    return frame


AT_CHANCE_MARK = " (at chance)"


def at_chance_victims(results: Results) -> list[str]:
    """The victims whose own accuracy is not clearly above chance (notebook 01's ``victims`` table): their rows
    stay in every table, marked, and no claim over every victim counts them."""
    victims = results.find("victims") or {}
    return [key for key, row in victims.items() if isinstance(row, dict) and at_chance(row)]


def build_tables(results: Results) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The side-by-side tables that can be built, and for each missing one why it is missing; a victim at chance
    (:func:`at_chance_victims`) is named with :data:`AT_CHANCE_MARK`."""
    tables, missing = {}, {}
    marked = at_chance_victims(results)
    names = {key: name + AT_CHANCE_MARK if key in marked else name for key, name in victim_names(results).items()}
    paper_side = paper_results()
    for spec in TABLE_SPECS:
        try:
            ours = results.require(spec.key)
        except MissingData as exc:
            missing[spec.key] = exc.describe().replace("not evaluated", "not produced")
            continue
        paper_rows = paper_side.get(spec.key, {})
        if spec.section_victim:
            tables[spec.key] = section_frame(ours, paper_rows, spec)
            continue
        row_names, rows = dict(names), None
        if spec.prepare:
            ours, paper_rows, rows, row_names, spec = spec.prepare(ours, paper_rows, row_names, spec)
        frame = comparison_frame(ours, paper_rows, spec, row_names, rows)
        tables[spec.key] = mark_not_present(frame, not_present_rows(results, row_names, spec.key))
    for key in [k for k, _ in OURS_ONLY_TABLES] + [k for k, _, _ in DEFENCE_TABLES]:
        found = results.find(key)
        if isinstance(found, dict) and found and all(isinstance(r, dict) for r in found.values()):
            tables[key] = ours_only_frame(found)
    return tables, missing


# tables whose victims the profile's plan chooses (None there: every victim), so that a row the plan
# leaves out is not said to lack its data
PLANNED_VICTIMS = {"table7": lambda settings: (settings.get("section5") or {}).get("table7_victims")}


def not_present_rows(results: Results, row_names: Mapping[str, str], table: str = "") -> set[str]:
    """The shown names of the rows whose data was not present: victims (``diabetic5``, and Table 4's
    ``diabetic5/<method>``) or datasets (Table 1) the notebooks ran without, among those the table covers."""
    from ..experiments.victims import VICTIMS

    absent = set(results.data_not_present)
    keys = absent | {k for k, spec in VICTIMS.items() if spec.dataset in absent}
    planned = PLANNED_VICTIMS[table](results.profile_settings()) if table in PLANNED_VICTIMS else None
    if planned is not None:
        keys &= set(planned)
    return {name for row, name in row_names.items() if row.split("/")[0] in keys}


def mark_not_present(frame: pd.DataFrame, rows: set[str]) -> pd.DataFrame:
    """Our cells of ``rows`` read "data not present" (the paper's stay beside them)."""
    shown = [r for r in frame.index if r in rows]
    if not shown:
        return frame
    frame = frame.copy()
    ours = [c for c in frame.columns if isinstance(c, tuple) and c[1] != "paper"]
    for row in shown:
        for col in ours:
            frame.loc[row, col] = DATA_NOT_PRESENT if col[1] == "ours" else None
    return frame


def _csv_cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def frame_to_csv(frame: pd.DataFrame) -> str:
    """Raw values (fractions), one header row: ``measure.paper``, ``measure.ours``, ``measure.diff``."""
    flat = frame.copy().astype(object)
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [".".join(str(p) for p in c) for c in flat.columns]
    return flat.map(_csv_cell).to_csv()


def frame_to_markdown(frame: pd.DataFrame) -> str:
    """Percentages for rates, percentage points for their differences (:func:`kx_utils.report.side_by_side.to_markdown`)."""
    return to_markdown(frame)
