"""``figures/<profile>/``: the paper's tables and figures, side by side with ours, and the claims check.

Everything here is regenerated from the notebooks' JSON results
(``runs/<profile>/<notebook>.json``), never from their printed output:

* ``table1`` ... ``table7`` (``table4a``, ``table4b``) and the two single-number
  experiments of Sections 5.1.3 and 5.2.2, each as CSV (fractions) and Markdown
  (percentages), with the paper's value, ours and the difference;
* ``figure1`` and ``figure2`` as PNG and PDF;
* ``report.md``: the tables, the figures, the claims check, the stand-ins of the
  profile, its deviations from the paper, the machine, library versions and wall times.

A notebook whose results are missing leaves its parts out, and the report says
how to produce them.  The folder is built aside and swapped in whole, so a crash
never leaves a half-written folder that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pandas as pd

from . import paper
from .artifacts import REPO_ROOT, atomic_write_text
from .pipeline import NOTEBOOKS, format_seconds, load_state, run_dir
from .profiles import get_profile
from .results import results_path
from .tables import side_by_side, to_markdown

# where each result lives: key -> notebook (looked up in its tables, figures and values)
PRODUCER = {
    "table1": "01_victims", "victims": "01_victims",
    "table2": "02_knockoff", "knockoff": "02_knockoff",
    "table3": "03_detection", "table4a": "03_detection", "table4b": "03_detection", "filter": "03_detection",
    "table5": "04_architecture_and_output", "table6": "04_architecture_and_output",
    "figure1": "04_architecture_and_output", "section_5_1_3": "04_architecture_and_output",
    "table7": "05_hyperparameters", "figure2": "05_hyperparameters", "early_stopping": "05_hyperparameters",
    "section_5_2_2": "06_in_distribution",
}
MINI_BUDGET_SECONDS = 90 * 60  # the issue's limit for a whole mini run on the 2-core machine


def default_output(profile_name: str) -> Path:
    return REPO_ROOT / "figures" / profile_name


# ---------------------------------------------------------------- loading


class MissingData(LookupError):
    """A number a table or claim needs is not in the results (or not in the paper)."""

    def __init__(self, key: str, notebook: str | None = None, detail: str = ""):
        self.key, self.notebook, self.detail = key, notebook, detail
        super().__init__(f"{key}{': ' + detail if detail else ''}")

    def describe(self) -> str:
        if self.notebook:
            return f"not evaluated (missing {self.notebook}{': ' + self.detail if self.detail else ''})"
        return f"not evaluated ({self.key} missing{': ' + self.detail if self.detail else ''})"


@dataclass
class Results:
    """The JSON documents of one profile's notebooks, and the pipeline's state."""

    profile: str
    documents: dict[str, dict]
    state: dict = field(default_factory=dict)
    folder: Path | None = None  # where the documents were read

    @property
    def missing_notebooks(self) -> list[str]:
        return [nb for nb in NOTEBOOKS if nb not in self.documents]

    def find(self, key: str):
        """The table, figure or value ``key`` of the notebook that produces it, or None."""
        doc = self.documents.get(PRODUCER[key])
        if doc is None:
            return None
        for part in ("tables", "figures", "values"):
            found = (doc.get(part) or {}).get(key)
            if found is not None:
                return found
        return None

    def require(self, key: str):
        found = self.find(key)
        if found is None:
            notebook = PRODUCER[key]
            detail = "" if notebook not in self.documents else f"it has no {key}"
            raise MissingData(key, notebook, detail)
        return found

    def profile_settings(self) -> dict:
        for nb in NOTEBOOKS:
            settings = self.documents.get(nb, {}).get("profile_settings")
            if settings:
                return settings
        return get_profile(self.profile).as_dict()


def load_all(profile_name: str, runs: str | os.PathLike | None = None) -> Results:
    """Every notebook result of ``profile_name`` that exists; unreadable files count as missing."""
    import json

    get_profile(profile_name)  # an unknown profile is an error here, not an empty report
    documents = {}
    for nb in NOTEBOOKS:
        path = results_path(nb, profile_name, runs)
        if path.is_file():
            try:
                with open(path) as f:
                    documents[nb] = json.load(f)
            except (OSError, ValueError):
                continue
    return Results(profile_name, documents, load_state(profile_name, runs), run_dir(profile_name, runs))


def paper_results() -> dict:
    """The paper's numbers under the same keys as ours, for the paper's side of the claims check."""
    return {
        "table1": paper.TABLE1, "table2": paper.TABLE2, "table3": paper.TABLE3,
        "table4a": paper.TABLE4A, "table4b": paper.TABLE4B, "table5": paper.TABLE5,
        "table6": paper.TABLE6, "table7": paper.TABLE7,
        # 5.1.3 compares its 70% with Table 2's GTSRB surrogate trained on ImageNet queries
        "section_5_1_3": {**paper.SECTION_5_1_3,
                          "gtsrb_with_imagenet_queries_acc": paper.TABLE2["gtsrb"]["surrogate_acc"],
                          "victim_acc": paper.TABLE2["gtsrb"]["victim_acc"]},
        "section_5_2_2": {**paper.SECTION_5_2_2, "victim_acc": paper.TABLE2["caltech"]["victim_acc"]},
    }


def _paper_getter(key: str):
    found = paper_results().get(key)
    if found is None:
        raise MissingData(key, None, "the paper gives no numbers")
    return found


# ---------------------------------------------------------------- names


def victim_names(results: Results) -> dict[str, str]:
    """Victim key -> this profile's name (``CIFAR10-MNV2``), from the results, else the profile."""
    from .victims import VICTIMS, victim_name

    profile = get_profile(results.profile)
    profile = profile.replace(backbone=results.profile_settings().get("backbone") or profile.backbone)
    names = {k: victim_name(profile, k) for k in VICTIMS}
    for key in ("victims", "table2", "table5", "table6", "table7", "figure2", "early_stopping"):
        for row_key, row in (results.find(key) or {}).items():
            if isinstance(row, dict) and row.get("name"):
                names[row_key] = row["name"]
    return names


def paper_victim_names() -> dict[str, str]:
    from .victims import VICTIMS, victim_name

    return {k: victim_name(get_profile("paper"), k) for k in VICTIMS}


# ---------------------------------------------------------------- claims


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value) -> str:
    return f"{100 * value:.1f}%" if _num(value) else "n/a"


def _value(row: Mapping | None, column: str):
    value = (row or {}).get(column)
    return value if _num(value) else None


Getter = Callable[[str], object]
Names = Mapping[str, str]


@dataclass(frozen=True)
class Claim:
    number: int
    source: str  # where in the paper
    statement: str  # the paper's qualitative claim
    definition: str  # the check, precisely
    check: Callable[[Getter, Names], tuple[bool | None, str]]
    paper_statement: str | None = None  # for claims the paper states without numbers


@dataclass
class ClaimResult:
    claim: Claim
    holds: bool | None
    evidence: str
    paper_holds: bool | None
    paper_evidence: str


def verdict(holds: bool | None) -> str:
    return {True: "holds", False: "fails", None: "not evaluated"}[holds]


def _label_only_worse(get: Getter, names: Names):
    table = get("table6")
    parts, holds = [], True
    for key, row in table.items():
        probs, label = _value(row, "probs_acc"), _value(row, "label_acc")
        if probs is None or label is None:
            continue
        ok = label < probs
        holds &= ok
        parts.append(f"{names.get(key, key)} label-only {pct(label)} {'<' if ok else '≥'} probabilities {pct(probs)}")
    if not parts:
        raise MissingData("table6", PRODUCER["table6"], "no victim with both probs_acc and label_acc")
    return holds, "; ".join(parts)


def _scratch_lower_recovery(get: Getter, names: Names):
    table = get("table5")
    parts, holds, missing = [], True, []
    for scratch, pretrained in (("gtsrb_5l", "gtsrb"), ("cifar10_9l", "cifar10")):
        s, p = _value(table.get(scratch), "recovery"), _value(table.get(pretrained), "recovery")
        if s is None or p is None:
            missing.append(f"{scratch}/{pretrained}")
            continue
        ok = s < p
        holds &= ok
        parts.append(f"{names.get(scratch, scratch)} {s:.2f}x {'<' if ok else '≥'} "
                     f"{names.get(pretrained, pretrained)} {p:.2f}x")
    if not parts:
        raise MissingData("table5", PRODUCER["table5"], "no scratch/pretrained pair with recovery")
    if missing:
        parts.append(f"not measured: {', '.join(missing)}")
    return holds, "; ".join(parts)


DETECTOR_BASELINES = (("msp", "MSP"), ("odin", "ODIN"), ("mahalanobis", "Mahalanobis"))
DETECTOR_VICTIMS = ("gtsrb", "diabetic5", "cifar10")
OOD_SETS = (("table4a", "ImageNet"), ("table4b", "OpenImages"))


def _measured_ood_tables(get: Getter, parts: list[str]):
    """(Table 4 results, OOD set name) for each OOD test set measured; the others noted in ``parts``."""
    for table_key, ood in OOD_SETS:
        try:
            table = get(table_key)
        except MissingData:
            parts.append(f"{ood}: not measured")
            continue
        yield table, ood


def _detector_beats_baselines(get: Getter, names: Names):
    parts, holds, evaluated = [], True, 0
    for table, ood in _measured_ood_tables(get, parts):
        for key in DETECTOR_VICTIMS:
            row = table.get(key)
            ours = _value(row, "ours_tpr")
            if ours is None:
                parts.append(f"{ood} {names.get(key, key)}: not measured")
                continue
            shown = []
            for col, label in DETECTOR_BASELINES:
                base = _value(row, f"{col}_tpr_at_ours")
                if base is None:
                    continue
                ok = ours >= base
                holds &= ok
                evaluated += 1
                shown.append(f"{label} {pct(base)}{'' if ok else ' (beats ours)'}")
            parts.append(f"{ood} {names.get(key, key)}: ours TPR {pct(ours)} at TNR {pct(_value(row, 'ours_tnr'))}"
                         f" vs {', '.join(shown) or 'no baseline measured'}")
    if not evaluated:
        raise MissingData("table4a", PRODUCER["table4a"], "no detector/baseline pair measured")
    return holds, "; ".join(parts)


def _detector_weakest_on_caltech(get: Getter, names: Names):
    parts, holds, evaluated = [], True, 0
    for table, ood in _measured_ood_tables(get, parts):
        score = {k: (_value(r, "ours_tpr") + _value(r, "ours_tnr")) / 2 for k, r in table.items()
                 if _value(r, "ours_tpr") is not None and _value(r, "ours_tnr") is not None}
        if "caltech" not in score or len(score) < 2:
            parts.append(f"{ood}: Caltech or the other victims not measured")
            continue
        others = {k: v for k, v in score.items() if k != "caltech"}
        runner_up = min(others, key=others.get)
        ok = score["caltech"] < others[runner_up]
        holds &= ok
        evaluated += 1
        parts.append(f"{ood}: {names.get('caltech', 'caltech')} {pct(score['caltech'])} "
                     f"{'<' if ok else '≥'} lowest other {names.get(runner_up, runner_up)} {pct(others[runner_up])}")
    if not evaluated:
        raise MissingData("table4a", PRODUCER["table4a"], "Caltech and another victim needed")
    return holds, "; ".join(parts)


def _batch_columns(row: Mapping) -> dict[int, float]:
    out = {}
    for col, value in row.items():
        if col.startswith("bs") and col[2:].isdigit() and _num(value):
            out[int(col[2:])] = value
    return out


def _larger_batches_help(get: Getter, names: Names):
    table = get("table7")
    parts, helped, evaluated = [], 0, 0
    for key, row in table.items():
        sizes = _batch_columns(row)
        larger = {b: v for b, v in sizes.items() if b > 64}
        if 64 not in sizes or not larger:
            continue
        best = max(larger, key=larger.get)
        ok = larger[best] > sizes[64]
        helped += ok
        evaluated += 1
        parts.append(f"{names.get(key, key)} {pct(larger[best])} (bs{best}) {'>' if ok else '≤'} "
                     f"{pct(sizes[64])} (bs64)")
    if not evaluated:
        raise MissingData("table7", PRODUCER["table7"], "no victim with bs64 and a batch size above 64 "
                                                         "(the profile's batch_sizes)")
    holds = helped > evaluated / 2
    return holds, f"larger batches help {helped} of {evaluated} victims: " + "; ".join(parts)


def _peaks_before_last_epoch(get: Getter, names: Names):
    figure = get("figure2")
    parts, holds = [], True
    for key, row in figure.items():
        accs = [a for a in (row.get("test_acc_per_epoch") or []) if _num(a)]
        if not accs:
            continue
        name = row.get("name") or names.get(key, key)
        if len(accs) < 2:
            holds = False
            parts.append(f"{name}: a single epoch, no earlier peak possible")
            continue
        earlier = max(range(len(accs) - 1), key=lambda i: accs[i])
        ok = accs[earlier] > accs[-1]
        holds &= ok
        parts.append(f"{name}: best {pct(accs[earlier])} at epoch {earlier + 1} of {len(accs)} "
                     f"{'>' if ok else '≤'} last {pct(accs[-1])}")
    if not parts:
        raise MissingData("figure2", PRODUCER["figure2"], "no accuracy per epoch")
    return holds, "; ".join(parts)


def _need(section: Mapping, column: str, key: str):
    value = _value(section, column)
    if value is None:
        raise MissingData(key, PRODUCER.get(key), f"no {column}")
    return value


def _in_distribution_beats_imagenet(get: Getter, names: Names):
    s = get("section_5_2_2")
    ours, imagenet = _need(s, "in_distribution_acc", "section_5_2_2"), _need(s, "imagenet_queries_acc", "section_5_2_2")
    ok = ours > imagenet
    return ok, (f"{names.get('caltech', 'caltech')}: in-distribution queries {pct(ours)} "
                f"{'>' if ok else '≤'} ImageNet queries {pct(imagenet)}")


def _in_distribution_evades(get: Getter, names: Names):
    s = get("section_5_2_2")
    flagged_in = _need(s, "flagged_in_distribution", "section_5_2_2")
    flagged_imagenet = _need(s, "flagged_imagenet", "section_5_2_2")
    ok = flagged_in < flagged_imagenet
    text = (f"detector flags {pct(flagged_in)} of the in-distribution queries "
            f"{'<' if ok else '≥'} {pct(flagged_imagenet)} of the ImageNet queries")
    try:  # context: how often the same detector flags the victim's own benign test images
        tnr = _value(get("table4a").get("caltech"), "ours_tnr")
        if tnr is not None:
            text += f" (benign Caltech test images flagged: {pct(1 - tnr)})"
    except MissingData:
        pass
    return ok, text


def _unrelated_transfer_set_worse(get: Getter, names: Names):
    s = get("section_5_1_3")
    diabetic = _need(s, "gtsrb_with_diabetic5_queries_acc", "section_5_1_3")
    imagenet = _need(s, "gtsrb_with_imagenet_queries_acc", "section_5_1_3")
    ok = diabetic < imagenet
    return ok, (f"{names.get('gtsrb', 'gtsrb')} surrogate with Diabetic5 queries {pct(diabetic)} "
                f"{'<' if ok else '≥'} with ImageNet queries {pct(imagenet)}")


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Table 6, §5.1.2", "Answering with the predicted class only gives a worse surrogate than "
          "answering with the probability vector, for every victim.",
          "label_acc < probs_acc for every victim in Table 6 with both numbers.", _label_only_worse),
    Claim(2, "Table 5, §5.1.1", "Victims trained from scratch for their task are extracted less well "
          "(lower recovery) than victims fine-tuned from a pretrained model.",
          "recovery(GTSRB-5L) < recovery(GTSRB pretrained) and recovery(CIFAR10-9L) < "
          "recovery(CIFAR10 pretrained) in Table 5 (each measured pair).", _scratch_lower_recovery),
    Claim(3, "Table 4, §4.3", "The detector beats MSP (Baseline), ODIN and Mahalanobis at equal TNR on "
          "GTSRB, Diabetic5 and CIFAR10.",
          "for GTSRB, Diabetic5 and CIFAR10, in Table 4a (ImageNet) and 4b (OpenImages): ours_tpr >= "
          "msp/odin/mahalanobis_tpr_at_ours (each baseline thresholded at our TNR). A tie counts as not "
          "beaten: the paper itself bolds a 99%/99% tie with Mahalanobis (Diabetic5, OpenImages).",
          _detector_beats_baselines),
    Claim(4, "Table 4, §4.3", "The detector is weakest on Caltech (most overlap with ImageNet/OpenImages).",
          "Caltech has the strictly lowest balanced accuracy (ours_tpr + ours_tnr) / 2 of the detector "
          "among the victims of Table 4a, and of Table 4b.", _detector_weakest_on_caltech),
    Claim(5, "Table 7, §5.2.1", "Larger batch sizes help most victims.",
          "for more than half of the victims of Table 7, the best accuracy at a batch size above 64 "
          "(bs128, bs256 where trained) is strictly higher than at bs64.", _larger_batches_help),
    Claim(6, "Figure 2, §5.2.1", "Every surrogate peaks before the last epoch (all would benefit from "
          "early stopping).",
          "for every victim of Figure 2, the best test accuracy of epochs 1..E-1 is strictly higher than "
          "the last epoch's (E = epochs trained).", _peaks_before_last_epoch,
          paper_statement="stated for all three victims (Figure 2: 'All models would benefit from early "
                          "stopping'); the paper prints no per-epoch numbers"),
    Claim(7, "§5.2.2", "In-distribution queries give a better surrogate than ImageNet queries.",
          "in_distribution_acc > imagenet_queries_acc (the Caltech victim; Acc of the surrogate on the "
          "victim's test set).", _in_distribution_beats_imagenet),
    Claim(8, "§5.2.2", "In-distribution queries evade the detector.",
          "flagged_in_distribution < flagged_imagenet: the detector flags a smaller fraction of the "
          "in-distribution queries than of the ImageNet queries.", _in_distribution_evades,
          paper_statement="stated without a number ('adversarial queries may not be detected at all')"),
    Claim(9, "§5.1.3", "An unrelated transfer set (Diabetic5 queries against the GTSRB victim) gives a "
          "worse surrogate than ImageNet queries.",
          "gtsrb_with_diabetic5_queries_acc < gtsrb_with_imagenet_queries_acc.",
          _unrelated_transfer_set_worse),
)


def _evaluate(claim: Claim, get: Getter, names: Names, statement: str | None = None):
    try:
        return claim.check(get, names)
    except MissingData as exc:
        if statement:
            return None, statement
        return None, exc.describe()


def check_claims(results: Results) -> list[ClaimResult]:
    """Every claim of :data:`CLAIMS`, on our results and on the paper's numbers."""
    ours_names, paper_names = victim_names(results), paper_victim_names()
    out = []
    for claim in CLAIMS:
        holds, evidence = _evaluate(claim, results.require, ours_names)
        p_holds, p_evidence = _evaluate(claim, _paper_getter, paper_names, claim.paper_statement)
        out.append(ClaimResult(claim, holds, evidence, p_holds, p_evidence))
    return out


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    columns: tuple[str, ...]  # compared with the paper
    extra: tuple[str, ...] = ()  # ours only
    paper_only: tuple[str, ...] = ()
    caption: str = ""


TABLE_SPECS = (
    TableSpec("table1", "Table 1 — datasets", ("image_size", "classes", "train", "test"),
              extra=("source",), caption="As loaded in this profile (the stand-ins of $KX_DATA in mini/smoke)."),
    TableSpec("table2", "Table 2 — the Knockoff attack",
              ("victim_acc", "surrogate_acc", "recovery"), extra=("best_acc", "best_epoch", "queries"),
              paper_only=("knockoff_victim_acc", "knockoff_surrogate_acc", "knockoff_recovery"),
              caption="surrogate_acc is the last epoch; best_acc/best_epoch are test-selected (optimistic). "
                      "knockoff_* are the Knockoff paper's own numbers, as the paper quotes them."),
    TableSpec("table3", "Table 3 — choosing the detector (CUBS vs ImageNet)", ("tpr", "tnr"),
              caption="TPR: ImageNet flagged; TNR: CUBS test passed. A row 'X (paper: Y)' is our model X "
                      "standing in for the paper's Y."),
    TableSpec("table4a", "Table 4a — detector vs baselines, ImageNet as OOD test set",
              ("ours_tpr", "ours_tnr", "msp_tpr_at_ours", "odin_tpr_at_ours", "mahalanobis_tpr_at_ours",
               "msp_tpr_at_95", "odin_tpr_at_95", "mahalanobis_tpr_at_95"),
              caption="*_tpr_at_ours: the baseline thresholded at our TNR; *_tpr_at_95: at TNR 95%."),
    TableSpec("table4b", "Table 4b — detector vs baselines, OpenImages as OOD test set",
              ("ours_tpr", "ours_tnr", "msp_tpr_at_ours", "odin_tpr_at_ours", "mahalanobis_tpr_at_ours",
               "msp_tpr_at_95", "odin_tpr_at_95", "mahalanobis_tpr_at_95")),
    TableSpec("table5", "Table 5 — pretrained vs scratch victims", ("victim_acc", "surrogate_acc", "recovery")),
    TableSpec("table6", "Table 6 — probability vectors vs predicted class",
              ("victim_acc", "probs_acc", "probs_recovery", "label_acc", "label_recovery"),
              extra=("top1_acc", "top1_recovery", "top3_acc", "top3_recovery", "rounded_acc", "rounded_recovery"),
              caption="The top-k and rounded columns are ours only (the paper names these outputs, §5.1.2, "
                      "without numbers)."),
    TableSpec("table7", "Table 7 — surrogate accuracy per batch size", ("victim_acc",),
              caption="Batch size 64 is Knockoff's recommended setting."),
    TableSpec("section_5_1_3", "Section 5.1.3 — an unrelated transfer set (GTSRB victim)",
              ("gtsrb_with_diabetic5_queries_acc", "gtsrb_with_imagenet_queries_acc", "victim_acc"),
              extra=("budget",), caption="The paper's ImageNet value is its Table 2 GTSRB surrogate."),
    TableSpec("section_5_2_2", "Section 5.2.2 — in-distribution queries (Caltech victim)",
              ("in_distribution_acc", "in_distribution_recovery", "imagenet_queries_acc", "victim_acc",
               "chosen_batch_size", "chosen_epochs"),
              extra=("flagged_in_distribution", "flagged_imagenet"),
              caption="flagged_*: fraction of the queries the detector flags (ours only; the paper gives "
                      "no number)."),
)
OURS_ONLY_TABLES = (
    ("victims", "Victims as trained (01_victims)"),
    ("early_stopping", "Early stopping: last, test-selected and validation-selected epochs (05)"),
    ("filter", "The detector as a filter in front of the API (03)"),
)


def comparison_frame(ours: Mapping[str, Mapping], paper_rows: Mapping[str, Mapping], spec: TableSpec,
                     names: Mapping[str, str], rows: list[str] | None = None) -> pd.DataFrame:
    """``side_by_side`` plus ours-only and paper-only columns (those with at least one value)."""
    keys = rows if rows is not None else list(dict.fromkeys([*paper_rows, *ours]))
    frame = side_by_side(ours, paper_rows, spec.columns, names=names, rows=keys)
    for col in spec.extra:
        values = [(ours.get(k) or {}).get(col) for k in keys]
        if any(v is not None for v in values):
            frame[(col, "ours")] = values
    for col in spec.paper_only:
        values = [(paper_rows.get(k) or {}).get(col) for k in keys]
        if any(v is not None for v in values):
            frame[(col, "paper")] = values
    return frame


def _table3_inputs(ours: dict) -> tuple[dict, dict, list[str], dict]:
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
    return ours, paper_rows, keys, names


def build_tables(results: Results) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The side-by-side tables that can be built, and for each missing one why it is missing."""
    tables, missing = {}, {}
    names = victim_names(results)
    paper_side = paper_results()
    for spec in TABLE_SPECS:
        try:
            ours = results.require(spec.key)
        except MissingData as exc:
            missing[spec.key] = exc.describe().replace("not evaluated", "not produced")
            continue
        paper_rows = paper_side.get(spec.key, {})
        row_names, rows = dict(names), None
        if spec.key.startswith("section_"):
            victim = "gtsrb" if spec.key == "section_5_1_3" else "caltech"
            ours, paper_rows = {victim: ours}, {victim: paper_rows}
        if spec.key == "table1":
            from .data import DATASETS
            row_names = {k: DATASETS[k].paper_name if k in DATASETS else k for k in {*ours, *paper_rows}}
        if spec.key == "table3":
            ours, paper_rows, rows, row_names = _table3_inputs(ours)
        if spec.key == "table7":
            sizes = sorted({b for table in (ours, paper_rows) for r in table.values() for b in _batch_columns(r)})
            spec = TableSpec(spec.key, spec.title, ("victim_acc", *(f"bs{b}" for b in sizes)),
                             caption=spec.caption)
        tables[spec.key] = comparison_frame(ours, paper_rows, spec, row_names, rows)
    for key, _ in OURS_ONLY_TABLES:
        found = results.find(key)
        if isinstance(found, dict) and found and all(isinstance(r, dict) for r in found.values()):
            frame = pd.DataFrame.from_dict(found, orient="index")
            frame = frame[[c for c in frame.columns if not isinstance(frame[c].iloc[0], (list, dict))]]
            frame.index.name = "row"
            tables[key] = frame
    return tables, missing


def frame_to_csv(frame: pd.DataFrame) -> str:
    """Raw values (fractions), one header row: ``measure.paper``, ``measure.ours``, ``measure.diff``."""
    flat = frame.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [".".join(str(p) for p in c) for c in flat.columns]
    return flat.to_csv(float_format="%.6g")


def frame_to_markdown(frame: pd.DataFrame) -> str:
    if isinstance(frame.columns, pd.MultiIndex):
        return to_markdown(frame)
    shown = frame.astype(object).where(frame.notna(), "")
    lines = ["| " + " | ".join([frame.index.name or ""] + [str(c) for c in shown.columns]) + " |",
             "|" + "---|" * (len(shown.columns) + 1)]
    for idx, row in shown.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: nothing changes the backend of a notebook that imports this
    return fig


def _gap_indices(data: Mapping, classes: list[str], victim: list[float], surrogate: list[float]) -> list[int]:
    given = data.get("largest_gaps")
    if given is None:  # two, as the paper's Figure 1 marks "deer" and "horse"
        order = sorted(range(len(classes)), key=lambda i: victim[i] - surrogate[i], reverse=True)
        return order[:2]
    out = []
    for g in given:
        if isinstance(g, dict):
            g = g.get("index", g.get("class"))
        if isinstance(g, bool):
            continue
        if isinstance(g, int) and 0 <= g < len(classes):
            out.append(g)
        elif isinstance(g, str) and g in classes:
            out.append(classes.index(g))
    return out


def figure1(data: Mapping, victim_label: str | None = None):
    """Transfer-set histogram per predicted class, with per-class accuracy of victim and surrogate."""
    classes = [str(c) for c in data["classes"]]
    histogram = list(data["histogram"])
    victim, surrogate = list(data["per_class_victim"]), list(data["per_class_surrogate"])
    if not (len(classes) == len(histogram) == len(victim) == len(surrogate)):
        raise ValueError("figure1: classes, histogram and per-class accuracies differ in length "
                         f"({len(classes)}, {len(histogram)}, {len(victim)}, {len(surrogate)})")
    gaps = set(_gap_indices(data, classes, victim, surrogate))
    x = list(range(len(classes)))
    fig = _new_figure(max(6.0, 0.55 * len(classes)), 4.6)
    ax = fig.add_subplot()
    ax.bar(x, histogram, color=["#f4a582" if i in gaps else "#bababa" for i in x],
                  label="transfer-set queries per predicted class")
    ax.set_ylabel("queries in the transfer set")
    ax.set_xticks(x, classes, rotation=45 if len(classes) <= 20 else 90, ha="right", fontsize=8)
    for i, tick in enumerate(ax.get_xticklabels()):
        if i in gaps:
            tick.set_fontweight("bold")
    acc = ax.twinx()
    acc.plot(x, victim, "o-", color="#2166ac", label="victim Acc per class")
    acc.plot(x, surrogate, "s--", color="#b2182b", label="surrogate Acc per class")
    acc.set_ylim(0, 1.05)
    acc.set_ylabel("test accuracy per class")
    from matplotlib.patches import Patch

    handles = [Patch(color="#bababa", label="transfer-set queries per predicted class"),
               Patch(color="#f4a582", label="class with one of the largest accuracy gaps"), *acc.get_lines()]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=2)
    name = victim_label or data.get("victim", "")
    ax.set_title(f"Figure 1 — {name}: transfer set and per-class accuracy (bold: largest gaps)", fontsize=9)
    return fig


def figure2(data: Mapping):
    """Surrogate test accuracy over epochs per victim, the best epoch marked."""
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    for key, row in data.items():
        accs = list(row.get("test_acc_per_epoch") or [])
        if not accs:
            continue
        epochs = list(range(1, len(accs) + 1))
        line, = ax.plot(epochs, accs, marker="." if len(accs) > 30 else "o", markersize=3,
                        label=row.get("name", key))
        best = row.get("best_epoch") or (max(epochs, key=lambda e: accs[e - 1]))
        best_acc = accs[best - 1] if 1 <= best <= len(accs) else max(accs)
        ax.plot([best], [best_acc], marker="*", markersize=14, color=line.get_color(),
                markeredgecolor="black", linestyle="none")
        ax.annotate(f"epoch {best}: {best_acc:.1%}", (best, best_acc), textcoords="offset points",
                    xytext=(4, 6), fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.12)
    ax.set(xlabel="epoch", ylabel="Acc(F_A) on the victim's test set",
           title="Figure 2 — surrogate accuracy over epochs (star: best epoch)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return fig


def _save_figure(fig, folder: Path, stem: str) -> list[str]:
    # no timestamps in the files: a rerun on the same results gives the same bytes
    fig.savefig(folder / f"{stem}.png", dpi=150, metadata={"Software": None})
    fig.savefig(folder / f"{stem}.pdf", metadata={"CreationDate": None})
    return [f"{stem}.png", f"{stem}.pdf"]


# ---------------------------------------------------------------- report.md


def _environment_lines(results: Results) -> list[str]:
    keys, per_nb = [], {}
    for nb in NOTEBOOKS:
        env = results.documents.get(nb, {}).get("environment")
        if env:
            per_nb[nb] = env
            keys += [k for k in env if k not in keys]
    lines = ["| item | value |", "|---|---|"]
    for key in keys:
        values = {}
        for nb, env in per_nb.items():
            values.setdefault(str(env.get(key)), []).append(nb[:2])
        shown = next(iter(values)) if len(values) == 1 else "; ".join(
            f"{v} ({', '.join(nbs)})" for v, nbs in values.items())
        lines.append(f"| {key} | {shown} |")
    import matplotlib
    import papermill

    lines.append(f"| report: python, pandas, matplotlib, papermill | {platform.python_version()}, "
                 f"{pd.__version__}, {matplotlib.__version__}, {papermill.__version__} |")
    if not per_nb:
        lines.insert(0, "No notebook results, so no record of the machine that ran them.\n")
    return lines


def _runs_since_empty_cache(runs: list[dict]) -> list[dict]:
    """The ``reproduce`` commands since the last one that started from an empty cache."""
    starts = [i for i, r in enumerate(runs) if r.get("cache_files_at_start") == 0]
    return runs[starts[-1]:] if starts else []


def _wall_time_lines(results: Results) -> list[str]:
    notebooks = results.state.get("notebooks", {})
    lines = ["| notebook | pipeline status | wall time (papermill) | notebook's own timer | results written |",
             "|---|---|---|---|---|"]
    total_pm, total_nb, complete = 0.0, 0.0, True
    for nb in NOTEBOOKS:
        entry, doc = notebooks.get(nb, {}), results.documents.get(nb)
        pm, own = entry.get("wall_seconds"), (doc or {}).get("wall_seconds")
        status = entry.get("status", "not run by the pipeline" if doc else "not run")
        if doc and status in ("failed", "interrupted", "running"):
            status += " (the results shown are from an earlier run)"
        if entry.get("status") == "finished" and pm is not None:
            total_pm += pm
        else:
            complete = False
        total_nb += own or 0
        lines.append(f"| {nb} | {status} | {format_seconds(pm) if entry.get('status') == 'finished' else ''} | "
                     f"{format_seconds(own)} | {(doc or {}).get('created', 'missing')} |")
    lines.append(f"| **total** | | {format_seconds(total_pm) if complete else 'incomplete'} | "
                 f"{format_seconds(total_nb)} | |")
    summary = []
    if complete:
        summary.append(f"**Total wall time of the six notebooks: {format_seconds(total_pm)}** "
                       "(sum of their last pipeline runs).")
        if results.profile == "mini":
            within = "within" if total_pm <= MINI_BUDGET_SECONDS else "over"
            summary.append(f"The issue's limit for a mini run on the 2-core machine is 90 minutes: {within}.")
    runs = results.state.get("invocations", [])
    if runs:
        last = runs[-1]
        cache = ("an empty cache" if last.get("cache_files_at_start") == 0
                 else f"a cache holding {last.get('cache_files_at_start')} files")
        summary.append(
            f"Last `reproduce` command: started {last.get('started')}, {last.get('status')}, "
            f"{format_seconds(last.get('wall_seconds'))}; ran {', '.join(last.get('ran') or []) or 'nothing'}; "
            f"reused {', '.join(last.get('reused') or []) or 'nothing'}; started from {cache} "
            f"({last.get('cache_root')}).")
        chain = _runs_since_empty_cache(runs)
        if chain and chain[-1].get("status") == "finished" and complete:
            total = sum(r.get("wall_seconds") or 0 for r in chain)
            line = (f"**From an empty cache to all six notebooks: {format_seconds(total)}** of compute over "
                    f"{len(chain)} `reproduce` command(s) started {chain[0].get('started')}; failed or "
                    "interrupted attempts count, the time between commands does not.")
            if results.profile == "mini":
                line += f" Within the 90-minute limit: {'yes' if total <= MINI_BUDGET_SECONDS else 'no'}."
            summary.append(line)
        one_command = [r for r in runs if r.get("status") == "finished" and r.get("only") is None
                       and len(r.get("ran") or []) == len(NOTEBOOKS)]
        if one_command:
            r = one_command[-1]
            fresh = "from an empty cache" if r.get("cache_files_at_start") == 0 else "with a warm cache"
            summary.append(f"Latest single command that ran all six notebooks: {format_seconds(r.get('wall_seconds'))} "
                           f"{fresh} (started {r.get('started')}).")
    else:
        summary.append("No pipeline state (the notebooks were not run by `python -m kx_utils reproduce`): "
                       "only the notebooks' own timers are known.")
    return summary + [""] + lines


def _standin_lines(settings: Mapping) -> list[str]:
    from .data import DATASETS
    from .models import SHORT_NAMES

    standins = settings.get("standins", False)
    sizes = settings.get("image_size", {})
    lines = ["| paper dataset | paper size | in this profile | px | note |", "|---|---|---|---|---|"]
    for key, info in DATASETS.items():
        where = f"`{info.standin}`" if standins else f"`{info.folder}`"
        note = info.standin_note if standins else "the paper's dataset"
        counts = f"{info.paper_classes or '—'} classes, {info.paper_train or '—'} / {info.paper_test or '—'}"
        lines.append(f"| {info.paper_name} ({counts}) | {info.paper_size} | {where} | {sizes.get(key, '')} | {note} |")

    def arch(name):
        return f"{name} ({SHORT_NAMES.get(name, name)})"

    def recipe(r):
        r = r or {}
        return f"{r.get('epochs')} epochs, batch {r.get('batch_size')}, {r.get('optimizer')} lr {r.get('lr')}"

    lines += ["", "| paper model / setting | in this profile |", "|---|---|",
              f"| ResNet34, ImageNet-pretrained victims (Caltech, CUBS, Diabetic5, GTSRB, CIFAR10) | "
              f"{arch(settings.get('backbone'))}, {recipe(settings.get('victim_recipe'))} |",
              f"| GTSRB-5L, CIFAR10-9L from scratch, 32 px, Adam | {settings.get('scratch_image_size')} px, "
              f"{recipe(settings.get('scratch_recipe'))} |",
              f"| ResNet34 surrogate, 200 epochs, batch 64 | {arch(settings.get('surrogate_arch'))}, "
              f"{recipe(settings.get('surrogate_recipe'))} |",
              f"| 100,000 ImageNet queries | {settings.get('transfer_budget')} queries |",
              f"| detectors from scratch RN18, RN34 | {', '.join(settings.get('detector_scratch_archs') or [])}, "
              f"{recipe(settings.get('detector_recipe'))} |",
              f"| detectors RN18/34/101/152*CV (frozen + logistic regression) | "
              f"{', '.join(arch(a) for a in settings.get('detector_cv_archs') or [])}, "
              f"{settings.get('cv_folds')}-fold CV |",
              f"| ImageNet 90,000 / 10,000 and OpenImages 20,000 for detection | "
              f"{settings.get('detector_ood_train') or 'all'} / {settings.get('detector_ood_test') or 'all'} and "
              f"{settings.get('openimages_test') or 'all'} |",
              f"| 380 Bing images per Caltech class (§5.2.2) | {settings.get('in_distribution_per_class') or 'all'} "
              f"per class |",
              f"| batch sizes 16, 64, 128, 256 (Table 7) | {', '.join(map(str, settings.get('batch_sizes') or []))} |"]
    return lines


@dataclass
class ReportOutcome:
    folder: Path
    files: list[str]
    claims: list[ClaimResult]
    missing_notebooks: list[str]
    missing_parts: dict[str, str]

    def summary(self) -> str:
        counts = {v: sum(1 for c in self.claims if c.holds is k) for k, v in
                  ((True, "hold"), (False, "fail"), (None, "not evaluated"))}
        text = (f"{self.folder}: report.md and {len(self.files) - 1} table/figure files; claims: "
                f"{counts['hold']} hold, {counts['fail']} fail, {counts['not evaluated']} not evaluated")
        if self.missing_notebooks:
            text += f"; missing results of {', '.join(self.missing_notebooks)}"
        return text


def _shown_path(path: Path | None) -> str:
    if path is None:
        return "runs/"
    try:
        return f"{Path(path).resolve().relative_to(REPO_ROOT)}/"
    except ValueError:
        return f"{path}/"


def _missing_hint(profile: str, notebook: str) -> str:
    return f"`python -m kx_utils reproduce --profile {profile} --only {notebook}`"


def render_report(results: Results, tables: dict[str, pd.DataFrame], missing: dict[str, str],
                  claims: list[ClaimResult], figures: dict[str, str]) -> str:
    settings = results.profile_settings()
    profile = results.profile
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    md = [f"# kx reproduction report — profile `{profile}`", "",
          f"Paper: *{paper.PAPER_TITLE}* ({paper.PAPER_AUTHORS}).", "",
          f"Generated {now} by `python -m kx_utils report --profile {profile}` from the notebooks' JSON "
          f"results in `{_shown_path(results.folder)}` (never from their printed output). Accuracies and rates are "
          "percentages; `diff` is ours minus the paper's (percentage points for rates).", "",
          f"Profile `{profile}`: {settings.get('description', '')}", ""]
    have = [nb for nb in NOTEBOOKS if nb in results.documents]
    md.append(f"Results present: {len(have)} of {len(NOTEBOOKS)} notebooks.")
    if results.missing_notebooks:
        md += ["", "**Missing** (the parts that need them are left out or marked *not evaluated*):", ""]
        md += [f"- `{nb}` — produce it with {_missing_hint(profile, nb)}" for nb in results.missing_notebooks]
    md += ["", "## Claims check", "",
           "Each qualitative claim of the paper, written as a check over the results. *Paper* applies the "
           "same check to the paper's own numbers.", "",
           "| # | claim | source | ours | paper |", "|---|---|---|---|---|"]
    for c in claims:
        md.append(f"| {c.claim.number} | {c.claim.statement} | {c.claim.source} | **{verdict(c.holds)}** | "
                  f"{verdict(c.paper_holds) if c.paper_holds is not None or not c.claim.paper_statement else 'stated'} |")
    md.append("")
    for c in claims:
        md += [f"### Claim {c.claim.number}: {verdict(c.holds)} — {c.claim.statement}", "",
               f"- Check: {c.claim.definition}",
               f"- Ours: {c.evidence}",
               f"- Paper: {verdict(c.paper_holds) + ' — ' if c.paper_holds is not None else ''}{c.paper_evidence}",
               ""]
    md += ["## Tables", ""]
    for spec in TABLE_SPECS:
        md += [f"### {spec.title}", ""]
        if spec.key in tables:
            if spec.caption:
                md += [spec.caption, ""]
            md += [frame_to_markdown(tables[spec.key]), "", f"Files: `{spec.key}.csv`, `{spec.key}.md`.", ""]
        else:
            md += [f"*{missing[spec.key]}* — produce it with {_missing_hint(profile, PRODUCER[spec.key])}.", ""]
    extra = [(k, t) for k, t in OURS_ONLY_TABLES if k in tables]
    if extra:
        md += ["## Other measurements (ours only)", ""]
        for key, title in extra:
            md += [f"### {title}", "", frame_to_markdown(tables[key]), "", f"Files: `{key}.csv`, `{key}.md`.", ""]
    md += ["## Figures", ""]
    for key, caption in (("figure1", "Figure 1 — the CIFAR10 victim: histogram of the transfer set's predicted "
                                     "classes (bars) and per-class test accuracy of victim and surrogate; the "
                                     "classes with the largest gaps are in bold."),
                         ("figure2", "Figure 2 — Acc(F_A) over the training epochs against the Caltech, CIFAR10 "
                                     "and GTSRB-5L victims; the star marks the best epoch.")):
        if key in figures:
            md += [f"![{caption}]({key}.png)", "", f"{caption} Files: `{key}.png`, `{key}.pdf`.", ""]
        else:
            md += [f"*{caption.split(' — ')[0]}: {figures.get(key + '_missing', 'not produced')}* — produce it "
                   f"with {_missing_hint(profile, PRODUCER[key])}.", ""]
    md += ["## Stand-ins in this profile", ""] + _standin_lines(settings) + [""]
    md += ["## Deviations from the paper", ""]
    notes = list(settings.get("notes") or [])
    md += [f"- {n}" for n in notes] or ["- none: this profile uses the paper's settings."]
    nb_notes = [(nb, n) for nb in NOTEBOOKS for n in results.documents.get(nb, {}).get("notes") or []]
    if nb_notes:
        md += ["", "Notes written by the notebooks:", ""] + [f"- `{nb}`: {n}" for nb, n in nb_notes]
    md += ["", "## Wall time", ""] + _wall_time_lines(results)
    md += ["", "## Machine and library versions", ""] + _environment_lines(results) + [""]
    return "\n".join(md)


def _clean_leftovers(out: Path) -> None:
    for leftover in out.parent.glob(f".{out.name}.*"):
        if leftover.is_dir() and (".building-" in leftover.name or ".old-" in leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


def write_report(profile_name: str, runs: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None) -> ReportOutcome:
    """Regenerate ``figures/<profile>/`` (or ``out``) from the results of ``profile_name``."""
    results = load_all(profile_name, runs)
    out = Path(out) if out is not None else default_output(profile_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        files = []
        tables, missing = build_tables(results)
        for key, frame in tables.items():
            atomic_write_text(building / f"{key}.csv", frame_to_csv(frame))
            atomic_write_text(building / f"{key}.md", frame_to_markdown(frame) + "\n")
            files += [f"{key}.csv", f"{key}.md"]
        figures = {}
        names = victim_names(results)
        for key, draw in (("figure1", lambda d: figure1(d, names.get(d.get("victim"), d.get("victim")))),
                          ("figure2", figure2)):
            try:
                data = results.require(key)
            except MissingData as exc:
                figures[key + "_missing"] = exc.describe().replace("not evaluated", "not produced")
                continue
            files += _save_figure(draw(data), building, key)
            figures[key] = f"{key}.png"
        claims = check_claims(results)
        atomic_write_text(building / "report.md", render_report(results, tables, missing, claims, figures))
        files.append("report.md")
        os.chmod(building, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(building, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ReportOutcome(out, files, claims, results.missing_notebooks, missing)


def claims_text(claims: Iterable[ClaimResult]) -> str:
    """The claims check as plain text, for the terminal."""
    return "\n".join(f"  {c.claim.number}. {verdict(c.holds):13s} {c.claim.statement}" for c in claims)
