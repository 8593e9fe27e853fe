"""Why a claim fails in this run: numbers from the results that bear on the failure.

A claim check (:mod:`kx_utils.report.checks`) says *that* a claim fails; the report also owes
the reader *why*.  Each diagnosis here reads the same results (and the run's profile settings)
and states what the failure rests on, as measured: which comparisons go against the claim, how
long the compared surrogates trained against the paper's schedule, a control that separates two
causes where the run has one (Table 7's equal-steps control), a threshold-free score beside a
thresholded one.  A diagnosis reports; it never changes a verdict.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

from .checks import DETECTOR_VICTIMS, OOD_SETS, batch_columns
from .noise import FAILS, Comparison, compare, point, rate, seeds_of
from .results import Getter, MissingData, Names, num, pct, test_size, value_of

Diagnosis = Callable[[Getter, Names, Mapping, list[Comparison]], str]

# the paper's surrogate schedule (Knockoff's, §3.1): 100,000 queries, 200 epochs at batch 64
PAPER_BUDGET, PAPER_EPOCHS, PAPER_BATCH = 100_000, 200, 64


def against(comparisons: Iterable[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.outcome == FAILS]


def _against_text(comparisons: list[Comparison]) -> str:
    bad = against(comparisons)
    if not bad:
        return "No single comparison goes clearly against the claim; the rule over victims makes it fail."
    return "Against the claim: " + "; ".join(c.text() for c in bad) + "."


def _steps(budget: int, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(budget / batch_size)


def _section5_schedule(settings: Mapping) -> tuple[int, int, int] | None:
    """(budget, epochs, batch size) of the Section 5 surrogates of the run's profile, if recorded."""
    plan, recipe = settings.get("section5") or {}, settings.get("surrogate_recipe") or {}
    budget = plan.get("budget") or settings.get("transfer_budget")
    epochs = plan.get("epochs") or recipe.get("epochs")
    batch = recipe.get("batch_size")
    if not all(isinstance(v, int) for v in (budget, epochs, batch)):
        return None
    return budget, epochs, batch


def _schedule_text(settings: Mapping, what: str) -> str:
    schedule = _section5_schedule(settings)
    if schedule is None:
        return ""
    budget, epochs, batch = schedule
    ours, paper = _steps(budget, epochs, batch), _steps(PAPER_BUDGET, PAPER_EPOCHS, PAPER_BATCH)
    return (f"{what} train on {budget:,} queries for {epochs} epochs at batch {batch}: {ours:,} SGD steps, "
            f"against the paper's {PAPER_BUDGET:,} queries for {PAPER_EPOCHS} epochs ({paper:,} steps, "
            f"{paper / ours:,.0f}x as many). ")


def _recoveries(get: Getter, names: Names, table_key: str, column: str, keys: Iterable[str]) -> str:
    """'Caltech-MNV2 0.27x (Table 2's longer runs: 0.75x)' for each victim with a recovery in both."""
    try:
        table = get(table_key)
    except MissingData:
        return ""
    try:
        table2 = get("table2")
    except MissingData:
        table2 = {}
    parts = []
    for key in keys:
        value = value_of(table.get(key), column)
        if value is None:
            continue
        longer = value_of(table2.get(key), "recovery")
        name = (table.get(key) or {}).get("name") or names.get(key, key)
        parts.append(f"{name} {value:.2f}x" + (f" (Table 2's longer runs: {longer:.2f}x)" if longer else ""))
    return "; ".join(parts)


def _undertrained(get: Getter, names: Names, settings: Mapping, table_key: str, column: str,
                  keys: Iterable[str], what: str) -> str:
    recoveries = _recoveries(get, names, table_key, column, keys)
    text = _schedule_text(settings, what)
    if recoveries:
        text += (f"They recover {recoveries} of their victims. Far from convergence, a difference between two "
                 "attack settings can be smaller than, or reversed by, a difference in how fast each learns.")
    return text.strip()


# ---------------------------------------------------------------- per claim


def label_only(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    keys = list(get("table6"))
    return " ".join([_against_text(comparisons),
                     _undertrained(get, names, settings, "table6", "probs_recovery", keys, "Table 6's surrogates")])


def scratch_victims(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    keys = ("gtsrb", "gtsrb_5l", "cifar10", "cifar10_9l")
    return " ".join([_against_text(comparisons),
                     _undertrained(get, names, settings, "table5", "recovery", keys, "Table 5's surrogates")])


def detector_baselines(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    """Where a baseline beats the detector at its operating point, whether it also ranks better without a
    threshold (AUROC), so a reader can tell a better score from a better-placed threshold."""
    parts = []
    for table_key, ood in OOD_SETS:
        try:
            table = get(table_key)
        except MissingData:
            continue
        for key in DETECTOR_VICTIMS:
            row = table.get(key) or {}
            label = f"{ood} {names.get(key, key)}"
            variant = "fair" if value_of(row, "odin_fair_tpr_at_ours") is not None else "published"
            for c in against(c for c in comparisons if c.label == label):
                column = {"MSP": "msp"}.get(c.right.label, f"{c.right.label.lower()}_{variant}")
                ours_auc, theirs_auc = value_of(row, "ours_auroc"), value_of(row, f"{column}_auroc")
                text = (f"{label}: {c.right.label} ({variant}) flags {c.right.shown()} of the OOD test images at our "
                        f"TNR {pct(value_of(row, 'ours_tnr'))}, ours {c.left.shown()}")
                if ours_auc is not None and theirs_auc is not None:
                    word = "also ranks better" if theirs_auc > ours_auc else "ranks no better"
                    text += (f"; without a threshold it {word}: AUROC {pct(theirs_auc)} against ours "
                             f"{pct(ours_auc)}")
                parts.append(text)
    if not parts:
        return _against_text(comparisons)
    return ("Where a baseline beats the detector: " + "; ".join(parts) + ". Fair baselines are tuned on "
            "held-out training images only, like the detector; the paper's baselines used the published "
            "protocol (tuned on a sample of the OOD test set).")


def caltech_weakest(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    return _against_text(comparisons)


def larger_batches(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    """Table 7 keeps the epochs fixed across batch sizes (the paper's protocol), so a larger batch takes
    fewer SGD steps; the equal-steps control trains the largest batch for batch 64's number of steps."""
    table, schedule = get("table7"), _section5_schedule(settings)
    parts, controls = [], []
    for key, row in table.items():
        sizes, per_epoch = batch_columns(row), row.get("steps_per_epoch") or {}
        epochs = value_of(row, "epochs") or (schedule[1] if schedule else None)
        name = row.get("name") or names.get(key, key)
        if epochs and per_epoch:
            steps = ", ".join(f"bs{b} {pct(v)} after {int(epochs * per_epoch[f'bs{b}']):,} steps"
                              for b, v in sorted(sizes.items()) if f"bs{b}" in per_epoch)
            parts.append(f"{name}: {steps}")
        for b_key, control_epochs in (row.get("equal_steps_epochs") or {}).items():
            b = int(b_key[2:])
            value = value_of(row, f"{b_key}_equal_steps")
            if value is None or 64 not in sizes:
                continue
            n = test_size(get, key, row, names)
            seeds = seeds_of(row, "bs64")
            ran = row.get("equal_steps_seeds") or []
            # like with like: batch 64 on the same seeds as the control (the first ones)
            if len(ran) == 1 and seeds:
                bs64 = point(seeds[0], n, f"bs64 (seed {ran[0]})")
            else:
                bs64 = rate(row, "bs64", n, "bs64")
            control = rate(row, f"{b_key}_equal_steps", n, f"bs{b} for {control_epochs} epochs")
            controls.append(compare(name, control, ">", bs64))
    text = ("Table 7 trains every batch size for the same number of epochs, as the paper does, so a larger "
            "batch takes fewer SGD steps: " + "; ".join(parts) + ". ") if parts else ""
    if controls:
        text += ("The control trains the largest batch size for batch 64's number of steps: " +
                 "; ".join(c.text() for c in controls) + ". ")
        level = [c for c in controls if c.outcome != FAILS]
        verdict = ("the step count, not the batch size, decides Table 7 here." if len(level) == len(controls) else
                   "even at equal steps the larger batch learns less at this budget." if not level else
                   "the step count explains those; for the others the larger batch learns less even at equal steps.")
        text += (f"At equal steps the larger batch is level with or above batch 64 for {len(level)} of "
                 f"{len(controls)} victims: {verdict}")
    if schedule:
        budget, epochs, _ = schedule
        text = text.rstrip() + (f" The paper's surrogates train {PAPER_EPOCHS} epochs on {PAPER_BUDGET:,} queries, "
                                f"where even batch 256 takes {_steps(PAPER_BUDGET, PAPER_EPOCHS, 256):,} steps; these "
                                f"train {epochs} epochs on {budget:,}.")
    return text.strip() or _against_text(comparisons)


def early_peaks(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    parts = []
    for key, row in get("figure2").items():
        curve = [a for a in (row.get("test_acc_per_epoch") or []) if num(a)]
        name = row.get("name") or names.get(key, key)
        if len(curve) >= 3 and any(c.label == name for c in against(comparisons)):
            parts.append(f"{name} still gains {100 * (curve[-1] - curve[-3]):+.1f} pp over its last two epochs "
                         f"(of {len(curve)})")
    text = _against_text(comparisons)
    if parts:
        text += (" " + "; ".join(parts) + ": a curve that is still rising at the end has not reached the "
                 "over-fitting the paper saw after far longer training.")
    return text


def in_distribution(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    return _against_text(comparisons)


def unrelated_queries(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    return " ".join([_against_text(comparisons),
                     _schedule_text(settings, "The surrogates of §5.1.3").strip()])


__all__ = ["Diagnosis", "against", "caltech_weakest", "detector_baselines", "early_peaks", "in_distribution",
           "label_only", "larger_batches", "scratch_victims", "unrelated_queries"]


def defences(get: Getter, names: Names, settings: Mapping, comparisons: list[Comparison]) -> str:
    """Notebook 07's claims: the comparisons against the claim, and the budget the attacks had."""
    schedule = _section5_schedule(settings)
    budget = f" Each surrogate is Table 2's attack ({schedule[0]:,} queries, {schedule[1]} epochs)." if schedule else ""
    return _against_text(comparisons) + budget
