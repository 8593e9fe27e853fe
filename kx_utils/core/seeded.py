"""Seeded draws of indices: which images enter a subset, a split or a transfer set.

Every draw is ``torch.randperm`` (or ``torch.randint``) on a fresh CPU ``torch.Generator`` seeded with the
caller's seed, so a draw depends on its seed and its size only (not on the device, nor on what else was
drawn before).  These draws choose what enters cached artifacts: the callers' seeds and the order of their
draws are part of the results (``tests/test_seeded.py`` pins the indices), so a caller changes neither.
A caller that draws several times from one stream (one class after another) passes its own ``generator``.
"""

from __future__ import annotations

import torch


def seeded_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def seeded_permutation(n: int, seed: int | None = None, *, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
    """A random order of ``0 .. n-1``: ``torch.randperm(n)`` drawn from ``generator``, or from a fresh
    generator seeded with ``seed``."""
    if (seed is None) == (generator is None):
        raise TypeError("seeded_permutation needs a seed or a generator (exactly one)")
    return torch.randperm(n, generator=generator if generator is not None else seeded_generator(seed))


def seeded_indices(n: int, k: int, seed: int, *, replace: bool = False) -> torch.Tensor:
    """``k`` indices into ``n`` items in the order drawn: the first ``k`` of :func:`seeded_permutation`
    (all ``n`` where ``k`` > ``n``), or with ``replace`` ``k`` uniform draws from ``0 .. n-1``."""
    if replace:
        return torch.randint(0, n, (k,), generator=seeded_generator(seed))
    return seeded_permutation(n, seed)[:k]


def seeded_split(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, rest)``: the first ``k`` of :func:`seeded_permutation` and the others, each in ascending
    order (a subset kept in the items' own order)."""
    order = seeded_permutation(n, seed)
    return torch.sort(order[:k]).values, torch.sort(order[k:]).values


def seeded_subset(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` of ``n`` indices, a seeded draw, in ascending order (the ``chosen`` of :func:`seeded_split`)."""
    return torch.sort(seeded_permutation(n, seed)[:k]).values
