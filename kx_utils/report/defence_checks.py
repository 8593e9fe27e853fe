"""The checks behind the claims about defences (notebook 07, beyond the paper's tables): the paper's §6 and the
works it cites, each a comparison of measured numbers against their noise, as :mod:`kx_utils.report.checks`.

The rows are notebook 07's tables (:mod:`kx_utils.experiments.defences`): ``defences`` (one row per defended
API: the attacker's surrogate and the honest client's utility), ``dawn``, ``prada`` and ``adaptive``.
"""

from __future__ import annotations

from typing import Mapping

from .checks import Judgement, _judged
from .noise import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Measure,
    compare,
    every,
    point,
    rate,
    recovery,
)
from .results import Getter, MissingData, Names, value_of

TOP1_KEPT = 0.99  # a perturbation "keeps the honest client's top-1 class" on at least this share of its answers


def _rows(get: Getter, key: str, **match) -> list[tuple[str, Mapping]]:
    return [(k, r) for k, r in get(key).items() if all(r.get(c) == v for c, v in match.items())]


def _victim(key: str) -> str:
    return key.split("/")[0]


def _n(row: Mapping) -> int:
    n = value_of(row, "test_size") or value_of(row, "benign_queries")
    if not n:
        raise MissingData("defences", None, "a defences row without test_size")
    return int(n)


def _label(row: Mapping) -> str:
    return row["defence"] if row["family"] == "label-only" else f"{row['defence']} ({row['answers']})"


def _undefended(get: Getter, victim: str, mode: str = "probs") -> Mapping:
    for key, row in _rows(get, "defences", family="none" if mode == "probs" else "label-only", answers=mode):
        if _victim(key) == victim:
            return row
    raise MissingData("defences", None, f"no undefended {mode} row for {victim}")


def _keeps_top1(row: Mapping) -> bool:
    return (value_of(row, "top1_kept") or 0) >= TOP1_KEPT


def perturbations_do_not_prevent(get: Getter, names: Names) -> Judgement:
    """§6: restricting answers to classes or perturbing them does not prevent Knockoff: every deployable
    perturbation (the honest client keeps its top-1 class) leaves the surrogate clearly above chance."""
    comparisons, notes = [], []
    for key, row in get("defences").items():
        if row["family"] in ("none", "dawn"):
            continue
        if not _keeps_top1(row):
            notes.append(f"{row['name']} {_label(row)} left out: it changes the honest client's top-1 class on "
                         f"{1 - row['top1_kept']:.0%} of the answers")
            continue
        chance = Measure(row["chance"], "chance", 0.0, "the victim's most frequent test class")
        comparisons.append(compare(f"{row['name']} {_label(row)}", rate(row, "surrogate_acc", _n(row), "surrogate"),
                                   ">", chance))
    if not comparisons:
        raise MissingData("defences", None, "no perturbation that keeps the honest client's top-1 class")
    return _judged(comparisons, every, notes=notes)


def reverse_sigmoid_hurts(get: Getter, names: Names) -> Judgement:
    """Lee et al. 2019: reverse sigmoid keeps the top-1 class and lowers a probability-trained surrogate's
    accuracy, at every strength tried."""
    comparisons, notes = [], []
    rows = _rows(get, "defences", family="reverse_sigmoid", answers="probs")
    if not rows:
        raise MissingData("defences", None, "no reverse-sigmoid row with probability answers")
    for key, row in rows:
        base, n = _undefended(get, _victim(key)), _n(row)
        comparisons.append(compare(f"{row['name']} {row['defence']}", rate(row, "surrogate_acc", n, "defended"), "<",
                                   rate(base, "surrogate_acc", n, "undefended")))
        if not _keeps_top1(row):
            notes.append(f"{row['defence']} changes the top-1 class of {1 - row['top1_kept']:.1%} of the answers")
    judgement = _judged(comparisons, every, notes=notes)
    if notes:  # the claim is that it costs the attacker *while* the honest client keeps its top-1 class
        judgement.verdict = FAILS
    return judgement


def mad_beats_reverse_sigmoid(get: Getter, names: Names) -> Judgement:
    """Orekondy et al. 2020: at no more distortion of the answers (L1), MAD costs the attacker more recovery than
    reverse sigmoid: every (MAD, reverse sigmoid) pair of one victim with L1(MAD) <= L1(reverse sigmoid)."""
    comparisons = []
    mads = _rows(get, "defences", family="mad", answers="probs")
    sigmoids = _rows(get, "defences", family="reverse_sigmoid", answers="probs")
    for mk, m in mads:
        for rk, r in sigmoids:
            if _victim(mk) == _victim(rk) and m["l1"] <= r["l1"] + 1e-9:
                n = _n(m)
                comparisons.append(compare(f"{m['name']} L1 {m['l1']:.2f} vs {r['l1']:.2f}",
                                           recovery(m, n, m["defence"]), "<", recovery(r, n, r["defence"])))
    if not comparisons:
        raise MissingData("defences", None, "no MAD row at or below a reverse-sigmoid row's L1 distortion")
    return _judged(comparisons, every)


def label_only_costs_most(get: Getter, names: Names) -> Judgement:
    """Label-only answers cost the attacker more than every perturbation of the probability vector that keeps
    the honest client's top-1 class (both leave the benign top-1 accuracy as it is)."""
    comparisons = []
    for key, row in get("defences").items():
        if row["family"] in ("reverse_sigmoid", "mad") and row["answers"] == "probs" and _keeps_top1(row):
            label, n = _undefended(get, _victim(key), "label"), _n(row)
            comparisons.append(compare(row["name"], recovery(label, n, "label-only"), "<",
                                       recovery(row, n, row["defence"])))
    if not comparisons:
        raise MissingData("defences", None, "no top-1-preserving perturbation beside a label-only row")
    return _judged(comparisons, every)


def prada_misses_knockoff(get: Getter, names: Names) -> Judgement:
    """§6 (and PRADA's own scope): PRADA does not flag the Knockoff attacker's natural-image queries.  Holds when
    no Knockoff stream is flagged; fails when one is flagged while the same victim's honest client in random
    order is not (PRADA tells them apart); inconclusive when both are flagged (it flags natural images at all)."""
    table, lines, outcomes = get("prada"), [], []
    victims = sorted({_victim(k) for k in table})
    for v in victims:
        knock, benign = table.get(f"{v}/knockoff"), table.get(f"{v}/benign_random")
        if knock is None or benign is None:
            continue
        flagged = knock["flagged"]
        outcome = HOLDS if not flagged else (INCONCLUSIVE if benign["flagged"] else FAILS)
        outcomes.append(outcome)
        when = f"flagged at query {knock['first_flagged']:,}" if flagged else "not flagged"
        lines.append(f"{knock['name']}: Knockoff {when} of {knock['queries']:,} (lowest W {_w(knock)}), honest "
                     f"random {'flagged' if benign['flagged'] else 'not flagged'} (lowest W {_w(benign)})")
    if not outcomes:
        raise MissingData("prada", None, "no victim with both a Knockoff and a benign stream")
    delta = next(iter(table.values()))["delta"]
    return Judgement(every(outcomes), f"{outcomes.count(HOLDS)} of {len(outcomes)} victims' Knockoff streams not "
                                      f"flagged (delta {delta:g}) — " + "; ".join(lines))


def _w(row: Mapping) -> str:
    return f"{row['min_w']:.3f}" if value_of(row, "min_w") is not None else "no test"


def dawn_survives(get: Getter, names: Names) -> Judgement:
    """Szyller et al. (and §6): DAWN watermarks the Knockoff surrogate: it agrees with the watermark's wrong
    classes clearly more often than a clean surrogate trained alike (binomial on the watermarked queries)."""
    comparisons = []
    for key, row in get("dawn").items():
        n = int(row["watermarked"])
        suspect = point(row["agreement_suspect"], n, "extracted surrogate", what="watermarked queries")
        clean = point(row["agreement_clean"], n, "clean surrogate", what="watermarked queries")
        comparisons.append(compare(f"{row['name']} r={100 * row['rate']:g}%", suspect, ">", clean))
    if not comparisons:
        raise MissingData("dawn", None, "no DAWN row")
    return _judged(comparisons, every)


def adaptive_beats_random(get: Getter, names: Names) -> Judgement:
    """Orekondy et al. 2019 (§6.2): the adaptive strategy extracts a better surrogate than random sampling at
    the same budget, for every victim it was run against."""
    comparisons = []
    for key, row in get("adaptive").items():
        n = int(value_of(row, "test_size") or 0) or None
        comparisons.append(compare(f"{row['name']}, {row['budget']:,} queries",
                                   rate(row, "adaptive_acc", n, "adaptive"), ">", rate(row, "random_acc", n, "random")))
    if not comparisons:
        raise MissingData("adaptive", None, "no adaptive row")
    return _judged(comparisons, every)


__all__ = ["adaptive_beats_random", "dawn_survives", "label_only_costs_most",
           "mad_beats_reverse_sigmoid", "perturbations_do_not_prevent", "prada_misses_knockoff",
           "reverse_sigmoid_hurts"]
