"""kx_utils.core.seeded: every seeded draw of the package through one helper, drawing exactly what the
call sites drew before it (the expressions they were written with are repeated here), and pinned."""

from __future__ import annotations

import pytest
import torch

from kx_utils.core.seeded import (
    seeded_generator,
    seeded_indices,
    seeded_permutation,
    seeded_split,
    seeded_subset,
)
from kx_utils.data.datasets import ImageSet, per_class_indices
from kx_utils.experiments.attack import sample_transfer_set
from kx_utils.experiments.detection_sets import split_off

SEEDS = (0, 1, 7, 101, 211, 214, 2**31 + 5)
SIZES = ((1, 1), (10, 3), (10, 10), (97, 40), (1000, 999))


def _gen(seed):  # the call sites' own expression, before the helper
    return torch.Generator().manual_seed(seed)


def _images(n: int, classes: int = 3) -> ImageSet:
    return ImageSet(torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
                    torch.arange(n) % classes, [f"c{i}" for i in range(classes)], "set", [f"f{i}" for i in range(n)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,k", SIZES)
def test_each_helper_draws_what_the_old_expression_drew(seed, n, k):
    old_order = torch.randperm(n, generator=_gen(seed))
    assert torch.equal(seeded_permutation(n, seed), old_order)
    assert torch.equal(seeded_indices(n, k, seed), old_order[:k])
    assert torch.equal(seeded_indices(n, k, seed, replace=True), torch.randint(0, n, (k,), generator=_gen(seed)))
    assert torch.equal(seeded_subset(n, k, seed), torch.sort(old_order[:k]).values)
    chosen, rest = seeded_split(n, k, seed)
    assert torch.equal(chosen, torch.sort(old_order[:k]).values) and torch.equal(rest, torch.sort(old_order[k:]).values)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_call_sites_draw_what_they_drew_before(seed):
    # attack.sample_transfer_set (without and with replacement)
    assert torch.equal(sample_transfer_set(120, 60, seed), torch.randperm(120, generator=_gen(seed))[:60])
    assert torch.equal(sample_transfer_set(10, 50, seed, replace=True),
                       torch.randint(0, 10, (50,), generator=_gen(seed)))
    # ImageSet.capped (attack.attacker_pool's pool_size cap, detection_sets' ImageNet / OpenImages test caps,
    # the scratch detectors' training caps at seed + 1 and seed + 2)
    images = _images(50)
    old_keep = torch.sort(torch.randperm(50, generator=_gen(seed))[:17]).values
    assert images.capped(17, seed).files == [images.files[i] for i in old_keep.tolist()]
    assert images.capped(None, seed) is images and images.capped(50, seed) is images
    # detection_sets.split_off: the published-protocol validation samples
    sample, rest = split_off(images, 0.1, seed)
    order = torch.randperm(50, generator=_gen(seed))
    assert sample.files == [images.files[i] for i in torch.sort(order[:5]).values.tolist()]
    assert rest.files == [images.files[i] for i in torch.sort(order[5:]).values.tolist()]
    # datasets.per_class_indices: one generator, class after class
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2, 2, 0, 1])
    gen, old = _gen(seed), []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        old.append(members[torch.randperm(len(members), generator=gen)[:3]])
    assert torch.equal(per_class_indices(labels, 3, seed), torch.sort(torch.cat(old)).values)


def test_the_draws_are_pinned():
    """What the package's cached artifacts were drawn with (torch 2.x's CPU randperm): a change of the
    helpers or of torch that draws other images fails here before it silently changes a result."""
    assert seeded_permutation(10, 0).tolist() == [4, 1, 7, 5, 3, 9, 0, 8, 6, 2]
    assert seeded_permutation(10, 3).tolist() == [6, 0, 3, 7, 8, 5, 1, 9, 2, 4]
    assert seeded_indices(10, 6, 0, replace=True).tolist() == [4, 9, 3, 0, 3, 9]
    assert seeded_subset(12, 5, 101).tolist() == [1, 2, 3, 4, 11]
    assert sample_transfer_set(10, 4, 0).tolist() == [4, 1, 7, 5]


def test_a_shared_generator_continues_its_stream():
    gen = seeded_generator(5)
    first, second = seeded_permutation(6, generator=gen), seeded_permutation(6, generator=gen)
    again = _gen(5)
    assert torch.equal(first, torch.randperm(6, generator=again)) and torch.equal(second, torch.randperm(6, generator=again))
    assert not torch.equal(first, second)
    with pytest.raises(TypeError, match="exactly one"):
        seeded_permutation(6)
    with pytest.raises(TypeError, match="exactly one"):
        seeded_permutation(6, 1, generator=gen)
