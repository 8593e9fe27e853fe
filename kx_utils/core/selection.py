"""The largest of several scores, with the tie rule said out loud.

Every "best" the package picks (the best epoch of a history, the CV backbone of Table 4, a tuning grid's
point, Table 7's best batch size in the report...) goes through :func:`best`, whose ``ties`` names what
wins among equal scores:

- ``"first"`` (the default): the earliest item in the given order — exactly the builtin ``max`` (an item
  replaces the one held only when its score is strictly greater);
- ``"last"``: the latest of the tied items;
- a function of the item: among the tied items, the one for which it is smallest (then the earliest), e.g.
  ``ties=lambda row: row["epoch"]`` for the earliest epoch whatever the order of the rows.

Equal means what Python's tuple comparison takes for equal (the same object, or ``==``), so ``ties=f`` picks
what ``max(items, key=lambda i: (key(i), -f(i)))`` picks.  Scores that compare as neither greater nor equal
(NaN) never replace the item held, as with ``max``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence, TypeVar, Union

T = TypeVar("T")
TieRule = Union[str, Callable[[Any], Any]]
TIE_RULES = ("first", "last")


def best(items: Iterable[T], key: Callable[[T], Any] | None = None, *, ties: TieRule = "first") -> T:
    """The item of ``items`` with the largest ``key(item)`` (the item itself without ``key``), the tie
    rule ``ties`` (the module's list) deciding among equal scores.  No items: ``ValueError``."""
    if not callable(ties) and ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; valid: {', '.join(TIE_RULES)}, or a function of the item")
    score = key or (lambda item: item)
    held, held_score, empty = None, None, True
    for item in items:
        s = score(item)
        if empty:
            held, held_score, empty = item, s, False
        elif s > held_score or ((s is held_score or s == held_score)
                                and (ties == "last" or (callable(ties) and ties(item) < ties(held)))):
            held, held_score = item, s
    if empty:
        raise ValueError("best() of no items")
    return held


def argmax(values: Sequence, *, ties: TieRule = "first") -> int:
    """The index of the largest of ``values`` (``ties``: as :func:`best`'s; a function gets the index)."""
    return best(range(len(values)), values.__getitem__, ties=ties)
