"""Surrogate results over several seeds: which seeds an experiment runs, and their mean and spread.

A seed fixes everything random in one attack: the transfer-set sample, the surrogate's
initial head and the batch order (the victims stay fixed).  A profile names its seeds
(``Profile.surrogate_seeds``) and the experiments that, for time, run on the first seed
only (``Section5Plan.single_seed``).  Tables store the mean over seeds in a column and the
per-seed values beside it as ``<column>_seeds``, which the report turns into ± sd and the
claims check into the noise of a comparison (:mod:`kx_utils.report.noise`).
"""

from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Sequence

from .profiles import SEEDED_EXPERIMENTS, Profile


def seeds_for(profile: Profile, experiment: str) -> tuple[int, ...]:
    """The seeds ``experiment`` runs in ``profile``: all of them, or the first where the plan says so."""
    if experiment not in SEEDED_EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; valid: {', '.join(SEEDED_EXPERIMENTS)}")
    seeds = tuple(profile.surrogate_seeds)
    return seeds[:1] if experiment in profile.section5.single_seed else seeds


def seeded(column: str, values: Sequence[float | None]) -> dict:
    """``{column: mean}``, plus ``{column}_seeds`` when there are two or more values.

    ``None`` anywhere (a measure not taken for some seed) gives ``{column: None}``.
    """
    if not values or any(v is None for v in values):
        return {column: None}
    out = {column: statistics.fmean(values)}
    if len(values) >= 2:
        out[f"{column}_seeds"] = list(values)
    return out


def seeded_columns(rows: Sequence[Mapping], columns: Iterable[str]) -> dict:
    """Per-seed rows (one mapping per seed, same columns) -> one row of means with ``_seeds`` beside."""
    out: dict = {}
    for column in columns:
        out.update(seeded(column, [row.get(column) for row in rows]))
    return out


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """The epoch-by-epoch mean of equally long curves."""
    lengths = {len(c) for c in curves}
    if len(lengths) != 1:
        raise ValueError(f"curves of different lengths {sorted(lengths)} cannot be averaged epoch by epoch")
    return [statistics.fmean(values) for values in zip(*curves)]


def seeds_note(profile: Profile) -> str:
    """What the report says about seeds in this profile."""
    seeds = tuple(profile.surrogate_seeds)
    if len(seeds) == 1:
        return f"every surrogate result is from one seed ({seeds[0]})"
    single = [e for e in profile.section5.single_seed]
    text = f"surrogate results are means over {len(seeds)} seeds ({', '.join(map(str, seeds))})"
    if single:
        text += f"; single seed ({seeds[0]}) for: {', '.join(single)}"
    return text
