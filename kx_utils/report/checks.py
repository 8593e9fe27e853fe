"""The checks behind the paper's claims: each compares measured numbers against their noise.

Every check takes a getter (``key -> table, figure or value``, ours or the paper's) and the
victims' names, and returns a :class:`Judgement`: *holds*, *fails* or *inconclusive*
(:mod:`kx_utils.report.noise`), an account of the numbers and the comparisons behind it.  A
check whose numbers are missing raises :class:`~kx_utils.report.results.MissingData`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..core import selection
from ..experiments.victims import CLEARLY_LEARNED, clearly_learned
from .noise import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Comparison,
    Measure,
    average,
    compare,
    every,
    most,
    point,
    rate,
    recovery,
    tally,
)
from .results import Getter, MissingData, Names, num, pct, test_size, value_of


@dataclass
class Judgement:
    """What a check found: the verdict, a one-paragraph account and the comparisons behind it."""

    verdict: str
    evidence: str
    comparisons: list[Comparison] = field(default_factory=list)


Check = Callable[[Getter, Names], Judgement]


def _measured(key: str, make: Callable[[], Measure]) -> Measure:
    """A measure, with a missing column or count reported as :class:`MissingData` of ``key``."""
    try:
        return make()
    except KeyError as exc:
        raise MissingData(key, None, f"no {exc.args[0]} in {key}") from None
    except ValueError as exc:
        raise MissingData(key, None, str(exc)) from None


def _judged(comparisons: list[Comparison], rule: Callable[[Iterable[str]], str], prefix: str = "",
            notes: Iterable[str] = ()) -> Judgement:
    text = "; ".join([c.text() for c in comparisons] + list(notes))
    return Judgement(rule(c.outcome for c in comparisons), f"{prefix}{tally(comparisons)} — {text}", comparisons)


def _name(names: Names, key: str, row: Mapping | None = None) -> str:
    return (row or {}).get("name") or names.get(key, key)


# ---------------------------------------------------------------- 1, 2: Tables 6 and 5


def at_chance(row: Mapping) -> bool:
    """Whether a row's victim is not clearly above its chance accuracy (the row's ``chance``; a row without one,
    as the paper's, is kept): its surrogates are no evidence for a claim about extraction."""
    chance, victim = value_of(row, "chance"), value_of(row, "victim_acc")
    return chance is not None and victim is not None and not clearly_learned(victim, chance)


def _left_out_at_chance(rows: Iterable[tuple[str, Mapping]], names: Names) -> list[str]:
    left = [_name(names, key, row) for key, row in rows if at_chance(row)]
    return [f"left out, the victim not clearly above chance (at most {CLEARLY_LEARNED}x): {', '.join(left)}"] \
        if left else []


def label_only_worse(get: Getter, names: Names) -> Judgement:
    table, comparisons = get("table6"), []
    for key, row in table.items():
        if value_of(row, "probs_acc") is None or value_of(row, "label_acc") is None or at_chance(row):
            continue
        n = test_size(get, key, row, names)
        label = _measured("table6", lambda: rate(row, "label_acc", n, "label-only"))
        probs = _measured("table6", lambda: rate(row, "probs_acc", n, "probabilities"))
        comparisons.append(compare(_name(names, key, row), label, "<", probs))
    if not comparisons:
        raise MissingData("table6", None, "no victim clearly above chance with both probs_acc and label_acc in "
                                          "Table 6")
    return _judged(comparisons, every, notes=_left_out_at_chance(table.items(), names))


def scratch_lower_recovery(get: Getter, names: Names) -> Judgement:
    table, comparisons, missing = get("table5"), [], []
    for scratch, pretrained in (("gtsrb_5l", "gtsrb"), ("cifar10_9l", "cifar10")):
        rows = table.get(scratch), table.get(pretrained)
        if any(value_of(r, "recovery") is None and not (r or {}).get("recovery_seeds") for r in rows):
            missing.append(f"{scratch}/{pretrained}")
            continue
        measures = [_measured("table5", lambda r=r, k=k: recovery(r, test_size(get, k, r, names), _name(names, k, r)))
                    for r, k in zip(rows, (scratch, pretrained))]
        comparisons.append(compare("recovery", measures[0], "<", measures[1]))
    if not comparisons:
        raise MissingData("table5", None, "no scratch/pretrained pair with recovery in Table 5")
    return _judged(comparisons, every, notes=[f"not measured: {', '.join(missing)}"] if missing else [])


# ---------------------------------------------------------------- 3, 4: Table 4

DETECTOR_BASELINES = (("msp", "MSP"), ("odin", "ODIN"), ("mahalanobis", "Mahalanobis"))
DETECTOR_VICTIMS = ("gtsrb", "diabetic5", "cifar10")
OOD_SETS = (("table4a", "ImageNet"), ("table4b", "OpenImages"))


def _measured_ood_tables(get: Getter, notes: list[str]):
    """(table key, Table 4 results, OOD set name) for each OOD test set measured; the others noted."""
    for table_key, ood in OOD_SETS:
        try:
            table = get(table_key)
        except MissingData:
            notes.append(f"{ood}: not measured")
            continue
        yield table_key, table, ood


def _count(row: Mapping, column: str, key: str) -> int:
    n = value_of(row, column)
    if not n:
        raise MissingData(key, None, f"no {column} (the number of test images behind its rates) in {key}")
    return int(n)


def _against_baselines(row: Mapping, table_key: str, ours: Measure, variant: str, label: str
                       ) -> list[Comparison]:
    """Ours against each baseline of one variant, each thresholded at our TNR, on the same OOD images."""
    n, out = _count(row, "ood_test", table_key), []
    for col, name in DETECTOR_BASELINES:
        column = col if col == "msp" else f"{col}_{variant}"
        if value_of(row, f"{column}_tpr_at_ours") is None:
            continue
        base = _measured(table_key, lambda: rate(row, f"{column}_tpr_at_ours", n, name, "OOD test images"))
        out.append(compare(label, ours, ">", base))
    return out


def _baselines_text(comparisons: list[Comparison]) -> str:
    marks = {HOLDS: "", INCONCLUSIVE: " (within the noise)", FAILS: " (beats ours)"}
    return ", ".join(f"{c.right.label} {c.right.shown()}{marks[c.outcome]}" for c in comparisons)


def detector_beats_baselines(get: Getter, names: Names) -> Judgement:
    """Judged on the fair baselines (tuned without OOD test data, like our detector); the published
    protocol (tuned on a sample of the OOD test set) is stated beside.  The paper's own numbers come
    from the published protocol, so its verdict is judged on those."""
    notes, comparisons, parts = [], [], []
    for table_key, table, ood in _measured_ood_tables(get, notes):
        for key in DETECTOR_VICTIMS:
            row = table.get(key)
            if value_of(row, "ours_tpr") is None:
                parts.append(f"{ood} {names.get(key, key)}: not measured")
                continue
            label = f"{ood} {names.get(key, key)}"
            ours = _measured(table_key, lambda: rate(row, "ours_tpr", _count(row, "ood_test", table_key), "ours",
                                                     "OOD test images"))
            has_fair = value_of(row, "odin_fair_tpr_at_ours") is not None
            variant = "fair" if has_fair else "published"
            judged = _against_baselines(row, table_key, ours, variant, label)
            comparisons += judged
            shown = _baselines_text(judged)
            text = (f"{label}: ours TPR {ours.shown()} at TNR {pct(value_of(row, 'ours_tnr'))} vs {variant} "
                    f"{shown or 'no baseline measured'}")
            if judged:
                text += f" (noise of the differences up to {max(c.noise for c in judged) * 100:.1f} pp)"
            if has_fair:
                published = _against_baselines(row, table_key, ours, "published", label)
                if published:
                    text += (f" [published protocol: {_baselines_text(published)}; "
                             f"{'also beaten' if all(c.outcome == HOLDS for c in published) else 'not all beaten'}]")
            parts.append(text)
    if not comparisons:
        raise MissingData("table4a", None, "no detector/baseline pair measured in Table 4")
    return Judgement(every(c.outcome for c in comparisons),
                     f"{tally(comparisons)} — " + "; ".join(parts + notes), comparisons)


def _balanced_accuracy(get: Getter, names: Names, table_key: str, key: str, row: Mapping) -> Measure:
    n_ood = _count(row, "ood_test", table_key)
    n_in = int(value_of(row, "in_test") or test_size(get, key, None, names))
    tpr = _measured(table_key, lambda: rate(row, "ours_tpr", n_ood, "TPR", "OOD test images"))
    tnr = _measured(table_key, lambda: rate(row, "ours_tnr", n_in, "TNR", "in-distribution test images"))
    return average(tpr, tnr, names.get(key, key))


def detector_weakest_on_caltech(get: Getter, names: Names) -> Judgement:
    notes, comparisons = [], []
    for table_key, table, ood in _measured_ood_tables(get, notes):
        score = {k: _balanced_accuracy(get, names, table_key, k, r) for k, r in table.items()
                 if value_of(r, "ours_tpr") is not None and value_of(r, "ours_tnr") is not None}
        if "caltech" not in score or len(score) < 2:
            notes.append(f"{ood}: Caltech or the other victims not measured")
            continue
        comparisons += [compare(ood, score["caltech"], "<", other) for k, other in score.items() if k != "caltech"]
    if not comparisons:
        raise MissingData("table4a", None, "Caltech and another victim needed in Table 4")
    return _judged(comparisons, every, "balanced accuracy (TPR + TNR) / 2: ", notes)


# ---------------------------------------------------------------- 5, 6: Table 7 and Figure 2


def batch_columns(row: Mapping) -> dict[int, float]:
    return {int(col[2:]): value for col, value in row.items()
            if col.startswith("bs") and col[2:].isdigit() and num(value)}


def _batch_size_comparisons(get: Getter, names: Names, table_key: str) -> list[Comparison]:
    comparisons = []
    for key, row in get(table_key).items():
        sizes = batch_columns(row)
        larger = {b: v for b, v in sizes.items() if b > 64}
        if 64 not in sizes or not larger:
            continue
        best = selection.best(larger, larger.get, ties="first")  # in the row's column order
        n = test_size(get, key, row, names)
        comparisons.append(compare(_name(names, key, row), _measured(table_key, lambda: rate(row, f"bs{best}", n,
                                                                                           f"bs{best}")),
                                   ">", _measured(table_key, lambda: rate(row, "bs64", n, "bs64"))))
    return comparisons


def larger_batches_help(get: Getter, names: Names) -> Judgement:
    """Claim 5, decided on Table 7's convergence protocol where it ran (every batch size trained until the
    attacker's validation accuracy stopped improving, scored at the epoch it picks), the paper's equal-epochs
    Table 7 stated beside; on the equal-epochs table alone where there is no convergence table (the paper's
    own 200 epochs converge)."""
    try:
        converged = _batch_size_comparisons(get, names, "table7_convergence")
    except MissingData:
        converged = []
    equal_epochs = _batch_size_comparisons(get, names, "table7")
    decided, protocol = (converged, "until convergence") if converged else (equal_epochs, "at equal epochs")
    if not decided:
        raise MissingData("table7", None, "no victim with bs64 and a batch size above 64 in Table 7 "
                                          "(the profile's batch_sizes)")
    helped = sum(c.outcome == HOLDS for c in decided)
    notes = []
    if converged and equal_epochs:
        side = _judged(equal_epochs, most)
        notes.append(f"beside it, at equal epochs (the paper's protocol): {side.verdict}, {side.evidence}")
    return _judged(decided, most, f"{protocol}, larger batches help {helped} of {len(decided)} victims clearly: ",
                   notes=notes)


def peaks_before_last_epoch(get: Getter, names: Names) -> Judgement:
    comparisons, notes, unclear = [], [], []
    for key, row in get("figure2").items():
        accs = [a for a in (row.get("test_acc_per_epoch") or []) if num(a)]
        if not accs:
            continue
        name = _name(names, key, row)
        if len(accs) < 2:
            notes.append(f"{name}: a single epoch, no earlier peak possible")
            unclear.append(INCONCLUSIVE)
            continue
        n = test_size(get, key, row, names)
        curves = [c for c in (row.get("test_acc_per_epoch_seeds") or []) if isinstance(c, list) and len(c) == len(accs)]
        earlier = selection.argmax(accs[:-1], ties="first")
        best = point(accs[earlier], n, f"best at epoch {earlier + 1} of {len(accs)}", [c[earlier] for c in curves])
        last = point(accs[-1], n, "last", [c[-1] for c in curves])
        comparisons.append(compare(name, best, ">", last))
    if not comparisons and not unclear:
        raise MissingData("figure2", None, "no accuracy per epoch in Figure 2's data")
    text = "; ".join([c.text() for c in comparisons] + notes)
    return Judgement(every([c.outcome for c in comparisons] + unclear), f"{tally(comparisons)} — {text}",
                     comparisons)


# ---------------------------------------------------------------- 7, 8, 9: Sections 5.1.3 and 5.2.2


def _control(section: Mapping, key: str, same_budget: str, plain: str, plain_budget: str, own_budget: str,
             n: int, favours_claim_if_larger: bool) -> tuple[Measure, str]:
    """The same-budget ImageNet control; else the plain ImageNet surrogate where its budget cannot favour the claim."""
    if value_of(section, same_budget) is not None:
        queries = value_of(section, own_budget)
        label = f"ImageNet, same budget{f' ({int(queries):,} queries)' if queries else ''}"
        return _measured(key, lambda: rate(section, same_budget, n, label)), ""
    b, own = value_of(section, plain_budget), value_of(section, own_budget)
    fair = b is not None and own is not None and (b >= own if favours_claim_if_larger else b <= own)
    if value_of(section, plain) is None or not fair:
        raise MissingData(key, None, f"no same-budget ImageNet control ({same_budget}), and the plain "
                                     f"{plain} has no query count that makes it a fair control")
    label = f"ImageNet ({int(b):,} queries)"
    return _measured(key, lambda: rate(section, plain, n, label)), \
        f" (control: the plain ImageNet surrogate, {int(b):,} against {int(own):,} queries)"


def in_distribution_beats_imagenet(get: Getter, names: Names) -> Judgement:
    s = get("section_5_2_2")
    n = test_size(get, "caltech", s, names)
    if value_of(s, "in_distribution_acc") is None:
        raise MissingData("section_5_2_2", None, "no in_distribution_acc in section_5_2_2")
    queries = value_of(s, "in_distribution_queries")
    ours = _measured("section_5_2_2", lambda: rate(s, "in_distribution_acc", n, "in-distribution" + (
        f" ({int(queries):,} queries)" if queries else "")))
    control, note = _control(s, "section_5_2_2", "imagenet_same_budget_acc", "imagenet_queries_acc",
                             "imagenet_queries_budget", "in_distribution_queries", n, favours_claim_if_larger=True)
    c = compare(names.get("caltech", "caltech"), ours, ">", control)
    plain = value_of(s, "imagenet_queries_acc")
    if value_of(s, "imagenet_same_budget_acc") is not None and plain is not None:
        budget = value_of(s, "imagenet_queries_budget")
        note += (f" [the paper's comparison, with unequal budgets: ImageNet surrogate of notebook 02 "
                 f"{pct(plain)}{f' on {int(budget):,} queries' if budget else ''}]")
    return Judgement(c.outcome, c.text() + note, [c])


def in_distribution_evades(get: Getter, names: Names) -> Judgement:
    s, key = get("section_5_2_2"), "section_5_2_2"
    for column in ("flagged_in_distribution", "flagged_benign", "flagged_imagenet"):
        if value_of(s, column) is None:
            raise MissingData(key, None, f"no {column} in {key}")
    n_in = _count(s, "in_distribution_queries", key)
    n_benign = _count(s, "benign_queries", key)
    n_imagenet = int(value_of(s, "unseen_imagenet_queries") or n_in)
    flagged_in = _measured(key, lambda: rate(s, "flagged_in_distribution", n_in, "in-distribution queries", "queries"))
    benign = _measured(key, lambda: rate(s, "flagged_benign", n_benign, "benign test images", "images"))
    imagenet = _measured(key, lambda: rate(s, "flagged_imagenet", n_imagenet, "unseen ImageNet queries", "queries"))
    like_benign = compare("flagged", flagged_in, "<", benign, claimed="in-distribution queries no more often than "
                                                                     "benign test images (within the noise or fewer)")
    caught = compare("flagged", imagenet, ">", flagged_in)
    if like_benign.outcome == FAILS:
        outcome, why = FAILS, "in-distribution queries are flagged clearly more often than benign images"
    elif caught.outcome == HOLDS:
        outcome, why = HOLDS, ("in-distribution queries are flagged no more often than benign images, unseen "
                               "ImageNet queries clearly more often")
    else:
        outcome, why = INCONCLUSIVE, ("in-distribution queries are flagged about as often as benign images, but "
                                      "the detector does not flag unseen ImageNet queries clearly more often")
    return Judgement(outcome, f"{why} — {like_benign.text()}; {caught.text()}", [like_benign, caught])


def unrelated_transfer_set_worse(get: Getter, names: Names) -> Judgement:
    s, key = get("section_5_1_3"), "section_5_1_3"
    n = test_size(get, "gtsrb", s, names)
    if value_of(s, "gtsrb_with_diabetic5_queries_acc") is None:
        raise MissingData(key, None, f"no gtsrb_with_diabetic5_queries_acc in {key}")
    queries = value_of(s, "budget")
    diabetic = _measured(key, lambda: rate(s, "gtsrb_with_diabetic5_queries_acc", n, "Diabetic5" + (
        f" ({int(queries):,} queries)" if queries else "")))
    control, note = _control(s, key, "gtsrb_with_imagenet_same_budget_acc", "gtsrb_with_imagenet_queries_acc",
                             "imagenet_budget", "budget", n, favours_claim_if_larger=False)
    c = compare(f"{names.get('gtsrb', 'gtsrb')} surrogate", diabetic, "<", control)
    plain = value_of(s, "gtsrb_with_imagenet_queries_acc")
    if value_of(s, "gtsrb_with_imagenet_same_budget_acc") is not None and plain is not None:
        budget = value_of(s, "imagenet_budget")
        note += (f" [the paper's comparison, with unequal budgets: ImageNet {pct(plain)}"
                 f"{f' on {int(budget):,} queries' if budget else ''}]")
    return Judgement(c.outcome, c.text() + note, [c])
