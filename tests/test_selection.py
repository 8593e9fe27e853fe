"""kx_utils.core.selection: the largest score with its tie rule, and the picks of the package that use it."""

from __future__ import annotations

import math
import random

import pytest
import torch

from kx_utils.core.selection import argmax, best
from kx_utils.core.train import best_epoch


def _lists(seed: int, n: int = 200):
    rng = random.Random(seed)
    for _ in range(n):
        yield [rng.choice([0.1, 0.2, 0.3, 0.3, math.nan]) for _ in range(rng.randint(1, 9))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_is_the_builtin_max_and_a_function_is_max_over_a_tuple(seed):
    for values in _lists(seed):
        assert argmax(values) == max(range(len(values)), key=values.__getitem__)
        assert argmax(values, ties="first") == max(range(len(values)), key=lambda i: (values[i], -i))
        rows = [{"v": v, "epoch": e} for v, e in zip(values, random.Random(seed).sample(range(1, 20), len(values)))]
        assert best(rows, lambda r: r["v"], ties=lambda r: r["epoch"]) is max(rows, key=lambda r: (r["v"], -r["epoch"]))


def test_the_tie_rules_by_hand():
    assert argmax([1, 3, 3, 2]) == 1 and argmax([1, 3, 3, 2], ties="last") == 2
    assert best([64, 256, 16, 128], {64: 0.5, 256: 0.7, 16: 0.7, 128: 0.6}.get, ties=lambda b: b) == 16
    assert best([64, 256, 16, 128], {64: 0.5, 256: 0.7, 16: 0.7, 128: 0.6}.get) == 256
    assert best([2, 7, 7]) == 7
    with pytest.raises(ValueError, match="no items"):
        best([])
    with pytest.raises(ValueError, match="unknown tie rule"):
        argmax([1], ties="lowest")


def test_best_epoch_takes_the_earliest_of_tied_epochs_in_any_order():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}, {"epoch": 3, "val_acc": 0.7},
               {"epoch": 4}, {"epoch": 5, "val_acc": 0.6}]
    assert best_epoch(history, "val_acc")["epoch"] == 2
    assert best_epoch(list(reversed(history)), "val_acc")["epoch"] == 2


def test_the_tuning_grid_and_the_noise_size_keep_the_earliest_of_tied_points():
    from kx_utils.core.detectors.baselines import Mahalanobis, choose_odin
    gen = torch.Generator().manual_seed(0)
    s_in, s_ood = torch.rand(40, generator=gen), torch.rand(40, generator=gen) + 0.5
    # ODIN: pairs (1, 0) and (10, 0) score alike and better than (1000, 0): the first in the grid's order wins
    pair, criteria = choose_odin({(1000.0, 0.0): s_ood, (1.0, 0.0): s_in, (10.0, 0.0): s_in},
                                 {(1000.0, 0.0): s_in, (1.0, 0.0): s_ood, (10.0, 0.0): s_ood}, 0.95)
    assert pair == (1.0, 0.0) and criteria[(1.0, 0.0)] == criteria[(10.0, 0.0)] > criteria[(1000.0, 0.0)]
    scores_in, scores_ood = torch.randn(30, 2, generator=gen), torch.randn(30, 2, generator=gen) + 1.5
    maha = Mahalanobis(torch.nn.Linear(1, 1))
    # the same layer scores at three noise sizes: the same criterion, so the smallest size is kept
    maha.fit_ensemble_scores({e: scores_in for e in (0.002, 0.0, 0.001)}, {e: scores_ood for e in (0.002, 0.0, 0.001)})
    assert maha.epsilon == 0.0 and len(set(maha.criteria.values())) == 1
    # a strictly better criterion at a larger size wins
    maha.fit_ensemble_scores({0.0: scores_in, 0.001: scores_in}, {0.0: scores_ood, 0.001: scores_ood + 3})
    assert maha.epsilon == 0.001 and maha.criteria[0.001] > maha.criteria[0.0]
