"""How a claim's comparisons are judged: the difference against the measured noise.

A :class:`Measure` is one measured number with its standard error; :func:`compare` judges
the difference of two measures in the claim's direction as *clear* (:data:`HOLDS`),
*against* the claim (:data:`FAILS`) or *within the noise* (:data:`INCONCLUSIVE`), and
:func:`every` / :func:`most` combine the comparisons of a claim over several victims.
:data:`NOISE_RULE` states the rule for report.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..config.seeds import seeds_column
from .results import num, value_of

HOLDS, FAILS, INCONCLUSIVE, NOT_EVALUATED = "holds", "fails", "inconclusive", "not evaluated"
MARGIN = 2.0  # a difference within MARGIN x noise is inconclusive

NOISE_RULE = (
    "Each claim is checked by comparing measured numbers. A comparison's **margin** is the difference in the "
    "direction the claim states; its **noise** is one standard deviation of that difference. Where both numbers "
    "carry per-seed values (`<column>_seeds` in the results, one value per independent training run, paired by "
    "position), the noise is the standard deviation of the per-seed differences; where only one side, or sides of "
    "different lengths, carry seeds, it is √(sd₁² + sd₂²) of each side's spread over its seeds. Otherwise it is "
    "binomial on the number of test images (or queries) behind each rate: √(p(1−p)/n) for a rate p measured on "
    "n images, √(se₁² + se₂²) for the difference of two rates (both on the same n test images for two surrogates "
    "of one victim), r·√((se_A/Acc_A)² + (se_V/Acc_V)²) for a recovery r = Acc(F_A)/Acc(F_V), and "
    "½·√(se_TPR² + se_TNR²) for a balanced accuracy. A comparison is **clear** when the margin is at least "
    f"{MARGIN:g} × its noise, **against** the claim when it is at least {MARGIN:g} × its noise the other way, and "
    "**within the noise** otherwise (a zero difference always is). A claim resting on one comparison *holds* when "
    "it is clear, *fails* when it is against and is *inconclusive* within the noise. A claim over several victims "
    "(\"for every victim\") *fails* when any comparison is against, is *inconclusive* when none is against but one "
    "is within the noise, and *holds* when all are clear; \"most victims\" holds when more than half are clear and "
    "fails when it would not hold even with every within-the-noise victim counted as clear. Test-set sizes come "
    "from the results: a row's `test_size`, else the test count of the victim's dataset in Table 1 (01_victims); "
    "Table 4's rows carry `in_test` and `ood_test`, Section 5.2.2 its query counts. The paper's side uses the "
    "paper's sizes (Table 1; 10,000 ImageNet and 20,000 OpenImages test images, §4.2.1).")

WORDS = {HOLDS: "clear", FAILS: "against", INCONCLUSIVE: "within the noise"}


@dataclass(frozen=True)
class Measure:
    """One measured number, what it is, and its standard error (the noise of a single reading)."""

    value: float
    label: str  # what it is: "label-only", "bs128", "ImageNet, same budget"
    se: float
    how: str  # where the error comes from: "binomial, 1749 test images", "sd over 3 seeds"
    seeds: tuple[float, ...] = ()
    unit: str = "rate"  # "rate": shown in percent, differences in pp; "ratio": recovery, shown as 0.80x
    n: int | None = None  # the count a binomial error rests on

    def shown(self) -> str:
        return show(self.value, self.unit)


def show(value: float, unit: str) -> str:
    return f"{100 * value:.1f}%" if unit == "rate" else f"{value:.2f}x"


def show_difference(value: float, unit: str, signed: bool = True) -> str:
    if unit == "rate":
        return f"{100 * value:+.1f} pp" if signed else f"{100 * value:.1f} pp"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def binomial_se(p: float, n: int) -> float:
    """Standard error of a rate ``p`` measured on ``n`` items: sqrt(p (1 - p) / n)."""
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n)


def seeds_of(row: Mapping | None, column: str) -> tuple[float, ...]:
    """The per-seed values ``<column>_seeds`` of a row (at least two numbers), else ()."""
    values = (row or {}).get(seeds_column(column))
    if isinstance(values, (list, tuple)):
        values = tuple(float(v) for v in values if num(v))
        if len(values) >= 2:
            return values
    return ()


def _from_seeds(value: float | None, seeds: Sequence[float], label: str, unit: str) -> Measure:
    value = statistics.fmean(seeds) if value is None else value
    return Measure(value, label, statistics.stdev(seeds), f"sd over {len(seeds)} seeds", tuple(seeds), unit)


def rate(row: Mapping, column: str, n: int | None, label: str, what: str = "test images") -> Measure:
    """The rate ``row[column]`` (or the mean of its seeds), with its spread over seeds or binomial on ``n``."""
    value, seeds = value_of(row, column), seeds_of(row, column)
    if seeds:
        return _from_seeds(value, seeds, label, "rate")
    if value is None:
        raise KeyError(column)
    if not n:
        raise ValueError(f"{label}: no count of {what} for a binomial error")
    return Measure(value, label, binomial_se(value, n), f"binomial, {n:,} {what}", n=n)


def point(value: float, n: int, label: str, seeds: Sequence[float] = (), what: str = "test images") -> Measure:
    """A rate not stored under its own column (a point of a curve), with the same noise rules as :func:`rate`."""
    if len(seeds) >= 2:
        return _from_seeds(value, seeds, label, "rate")
    return Measure(value, label, binomial_se(value, n), f"binomial, {n:,} {what}", n=n)


def recovery(row: Mapping, n: int, label: str, surrogate: str = "surrogate_acc", victim: str = "victim_acc",
             column: str = "recovery") -> Measure:
    """Acc(F_A) / Acc(F_V): spread over ``recovery_seeds``, else the delta method on the two binomial errors."""
    value, seeds = value_of(row, column), seeds_of(row, column)
    if seeds:
        return _from_seeds(value, seeds, label, "ratio")
    s, v = value_of(row, surrogate), value_of(row, victim)
    if s is None or v is None or v == 0:
        raise KeyError(f"{surrogate} and {victim} (the noise of a recovery needs both)")
    value = s / v if value is None else value
    se = value * math.sqrt((binomial_se(s, n) / s) ** 2 + (binomial_se(v, n) / v) ** 2) if s > 0 else \
        binomial_se(s, n) / v
    return Measure(value, label, se, f"delta method, binomial on {n:,} test images", unit="ratio")


def average(a: Measure, b: Measure, label: str) -> Measure:
    """(a + b) / 2, e.g. a balanced accuracy (TPR + TNR) / 2."""
    if a.seeds and len(a.seeds) == len(b.seeds):
        return _from_seeds((a.value + b.value) / 2, [(x + y) / 2 for x, y in zip(a.seeds, b.seeds)], label, a.unit)
    if a.n and b.n:
        how = f"½·√(se²+se²), binomial, {a.n:,} + {b.n:,} images"
    else:
        how = f"½·√(se²+se²): {a.how}; {b.how}"
    return Measure((a.value + b.value) / 2, label, 0.5 * math.hypot(a.se, b.se), how, unit=a.unit)


@dataclass(frozen=True)
class Comparison:
    """``left op right`` as a claim states it, judged against the noise of the difference."""

    label: str  # whose numbers: "Caltech-MNV2", "ImageNet GTSRB-MNV2"
    left: Measure
    op: str  # "<" or ">": the relation the claim states
    right: Measure
    margin: float  # the difference in the claim's direction (> 0: the claim's way)
    noise: float
    how: str
    outcome: str  # HOLDS (clear), FAILS (against), INCONCLUSIVE (within the noise)
    claimed: str | None = None  # the relation in words, where "left op right" would mislead

    @property
    def unit(self) -> str:
        return self.left.unit

    @property
    def relation(self) -> str:
        return self.claimed or f"{self.left.label} {self.op} {self.right.label}"

    @property
    def word(self) -> str:
        return WORDS[self.outcome]

    def values(self) -> str:
        actual = "<" if self.left.value < self.right.value else ">" if self.left.value > self.right.value else "="
        return f"{self.left.label} {self.left.shown()} {actual} {self.right.label} {self.right.shown()}"

    def text(self) -> str:
        return (f"{self.label}: {self.values()} (margin {show_difference(self.margin, self.unit)}, noise "
                f"{show_difference(self.noise, self.unit, signed=False)}: {self.word})")


def compare(label: str, left: Measure, op: str, right: Measure, claimed: str | None = None) -> Comparison:
    """Judge the claim ``left op right`` (op ``<`` or ``>``) against the noise of ``left - right``."""
    if op not in ("<", ">"):
        raise ValueError(f"op must be '<' or '>', not {op!r}")
    margin = (left.value - right.value) if op == ">" else (right.value - left.value)
    if left.seeds and len(left.seeds) == len(right.seeds):
        differences = [a - b for a, b in zip(left.seeds, right.seeds)]
        noise, how = statistics.stdev(differences), f"sd of the {len(differences)} per-seed differences"
    else:
        noise = math.hypot(left.se, right.se)
        if left.how == right.how:
            how = f"√(se²+se²), {left.how}"
        elif left.how.startswith("½") and right.how.startswith("½"):
            how = f"√(se²+se²) of two balanced accuracies: {left.how.split(', ', 1)[1]}; {right.how.split(', ', 1)[1]}"
        else:
            how = f"√(se²+se²): {left.how}; {right.how}"
    if margin > 0 and margin >= MARGIN * noise:
        outcome = HOLDS
    elif margin < 0 and -margin >= MARGIN * noise:
        outcome = FAILS
    else:
        outcome = INCONCLUSIVE
    return Comparison(label, left, op, right, margin, noise, how, outcome, claimed)


def every(outcomes: Iterable[str]) -> str:
    """A claim "for every ...": fails if any comparison is against, inconclusive if any is within the noise."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("no comparison to judge")
    if FAILS in outcomes:
        return FAILS
    return INCONCLUSIVE if INCONCLUSIVE in outcomes else HOLDS


def most(outcomes: Iterable[str]) -> str:
    """A claim "for most ...": holds with more than half clear; fails if not even counting the unclear ones."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("no comparison to judge")
    clear, unclear = outcomes.count(HOLDS), outcomes.count(INCONCLUSIVE)
    if clear > len(outcomes) / 2:
        return HOLDS
    return FAILS if clear + unclear <= len(outcomes) / 2 else INCONCLUSIVE


def tally(comparisons: Sequence[Comparison]) -> str:
    counts = [(sum(c.outcome == o for c in comparisons), WORDS[o]) for o in (HOLDS, INCONCLUSIVE, FAILS)]
    return ", ".join(f"{n} {word}" for n, word in counts if n)
