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

from .schema import SEEDED_EXPERIMENTS, Profile

# Every seeded draw beside an attack's own, as an offset from the profile's seed, in one table: two draws
# that shared a stream by accident would pick correlated subsets.  The values are the ones every stored
# result was drawn with; changing one changes the data of the experiments that use it.
SEED_OFFSETS = {
    "scratch_detector_in": 1,  # a scratch detector's capped in-distribution training images
    "scratch_detector_ood": 2,  # ... and its capped OOD training images
    "defender_share": 101,  # the order of ImageNet's train split: the defender's share comes first
    "validation_imagenet": 211,  # the "published" protocol's validation sample of the ImageNet test set
    "validation_openimages": 212,  # ... of the Open Images test set
    "validation_in": 213,  # ... of the victim's test set
    "baseline_tuning": 214,  # the "fair" tuning images, out of the victim's training set
    "prada_benign": 215,  # the order of an honest client's test images (notebook 07's PRADA streams)
}
# offsets from an attack's own seed
ATTACK_SEED_OFFSETS = {
    "attacker_validation": 1,  # the queries the attacker holds out for validation
}


def stream_seed(seed: int, stream: str) -> int:
    """The seed of the draw ``stream`` (:data:`SEED_OFFSETS` or :data:`ATTACK_SEED_OFFSETS`) from ``seed``."""
    offsets = {**SEED_OFFSETS, **ATTACK_SEED_OFFSETS}
    if stream not in offsets:
        raise ValueError(f"unknown seed stream {stream!r}; valid: {', '.join(offsets)}")
    return seed + offsets[stream]


def seeds_for(profile: Profile, experiment: str) -> tuple[int, ...]:
    """The seeds ``experiment`` runs in ``profile``: all of them, or the first where the plan says so."""
    if experiment not in SEEDED_EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; valid: {', '.join(SEEDED_EXPERIMENTS)}")
    seeds = tuple(profile.surrogate_seeds)
    return seeds[:1] if experiment in profile.section5.single_seed else seeds


SEEDS_SUFFIX = "_seeds"


def seeds_column(column: str) -> str:
    """The name of ``column``'s per-seed values in a row (the one place that spelling is made)."""
    return column + SEEDS_SUFFIX


def seeded(column: str, values: Sequence[float | None]) -> dict:
    """``{column: mean}``, plus ``{column}_seeds`` when there are two or more values.

    ``None`` anywhere (a measure not taken for some seed) gives ``{column: None}``.
    """
    if not values or any(v is None for v in values):
        return {column: None}
    out = {column: statistics.fmean(values)}
    if len(values) >= 2:
        out[seeds_column(column)] = list(values)
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
