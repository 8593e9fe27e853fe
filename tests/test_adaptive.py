"""The adaptive (gradient-bandit) sampling strategy of Knockoff Nets: rewards, the update rule, learning,
sampling without replacement, hierarchies, seeding and the driver."""

from __future__ import annotations

import math

import pytest
import torch

from kx_utils.core.adaptive import (
    AdaptiveSampler,
    adaptive_transfer_set,
    certainty_reward,
    diversity_reward,
    loss_reward,
)

Y = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.3, 0.6]], dtype=torch.float64)


def test_certainty_reward_is_the_top_two_margin():
    assert torch.allclose(certainty_reward(Y), torch.tensor([0.5, 0.0, 0.3], dtype=torch.float64))


def test_diversity_reward_against_the_recent_mean():
    recent = torch.tensor([[0.5, 0.5, 0.0], [0.3, 0.1, 0.6]], dtype=torch.float64)  # mean 0.4 0.3 0.3
    # row 0: 0.3 + 0 + 0; row 1: 0 + 0.1 + 0; row 2: 0 + 0 + 0.3
    assert torch.allclose(diversity_reward(Y, recent), torch.tensor([0.3, 0.1, 0.3], dtype=torch.float64))
    assert torch.allclose(diversity_reward(Y, Y[:0]), torch.ones(3, dtype=torch.float64))  # no history


def test_loss_reward_is_soft_cross_entropy():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    expected = -(0.7 * math.log(0.5) + 0.2 * math.log(0.25) + 0.1 * math.log(0.25))
    assert loss_reward(Y[:1], logits).item() == pytest.approx(expected)
    assert loss_reward(Y[:1], logits + 3.0).item() == pytest.approx(expected)  # logits, not probabilities


def test_gradient_bandit_update_on_three_arms():
    sampler = AdaptiveSampler(torch.tensor([0, 0, 1, 1, 2, 2]), reward="cert", learning_rate=0.5)
    first = sampler.update(torch.tensor([0]), Y[:1], None)  # its own baseline: nothing moves
    assert first.item() == pytest.approx(0.5) and torch.all(sampler.preferences == 0)
    sampler.update(torch.tensor([1]), Y[2:3], None)  # r = 0.3, r̄ = 0.5, π = 1/3 each
    step = 0.5 * (0.3 - 0.5)
    expected = torch.tensor([-step / 3, step * (1 - 1 / 3), -step / 3, 0.0], dtype=torch.float64)
    assert torch.allclose(sampler.preferences, expected)
    assert sampler.baseline == pytest.approx(0.4)
    p = torch.softmax(expected[:3], 0)
    assert torch.allclose(sampler.policy(), p)


def test_diversity_in_the_sampler_uses_the_previous_window():
    rewards = [AdaptiveSampler(torch.tensor([0, 1, 2]), reward="div", diversity_window=w).update(
        torch.tensor([0, 1, 2]), Y, None) for w in (1, 2)]
    assert torch.allclose(rewards[0], torch.tensor([1.0, 0.3, 0.4], dtype=torch.float64))
    assert torch.allclose(rewards[1], torch.tensor([1.0, 0.3, 0.45], dtype=torch.float64))


def test_all_sums_the_running_z_scores_of_the_three_rewards():
    sampler = AdaptiveSampler(torch.tensor([0, 1, 2]), reward="all")
    # first query: no spread yet, 0; second: each reward is ±1 z from the mean of two (loss ties, 0):
    # cert 0.5 -> 0.3 (-1), div 1 -> 0.6 (-1), loss log 3 -> log 3 (0)
    rewards = sampler.update(torch.tensor([0, 1]), Y[[0, 2]], torch.zeros(2, 3))
    assert torch.allclose(rewards, torch.tensor([0.0, -2.0], dtype=torch.float64))


def fake_victim(labels, confident_class=-1, seed=0):
    """Answers: sharp for images of ``confident_class``, flat-ish (random) for the others."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.softmax(0.1 * torch.randn(len(labels), 5, generator=gen, dtype=torch.float64), 1)
    sharp = torch.full((len(labels), 5), 0.025, dtype=torch.float64)
    sharp[:, 2] = 0.9
    table = torch.where((labels == confident_class)[:, None], sharp, flat)
    return lambda indices: table[indices]


def test_the_bandit_learns_the_rewarding_class():
    labels = torch.arange(5).repeat_interleave(1000)  # no class runs out within the budget
    sampler = AdaptiveSampler(labels, reward="cert", seed=1)
    out = adaptive_transfer_set(sampler, fake_victim(labels, confident_class=2), budget=300, batch_size=8)
    counts = torch.bincount(out["actions"], minlength=5)
    assert out["policy"][2] > 2 * 0.2
    assert counts[2] == counts.max() and counts[2] > 2 * counts[[0, 1, 3, 4]].max()


def test_without_a_rewarding_class_the_policy_stays_near_uniform():
    labels = torch.arange(5).repeat_interleave(1000)
    sampler = AdaptiveSampler(labels, reward="cert", seed=1)
    out = adaptive_transfer_set(sampler, fake_victim(labels), budget=300, batch_size=8)
    counts = torch.bincount(out["actions"], minlength=5)
    assert counts.max() < 2 * counts.min()
    assert torch.all((out["policy"] - 0.2).abs() < 0.05)


def test_no_repeats_and_exhausted_leaves_are_never_chosen():
    labels = torch.tensor([0] * 3 + [1] * 30 + [2] * 30)
    sampler = AdaptiveSampler(labels, reward="cert", seed=0)
    seen = []
    for _ in range(12):
        indices, actions = sampler.select(5)
        assert torch.all(labels[indices] == actions)
        seen += indices.tolist()
        if (labels[torch.tensor(seen)] == 0).sum() == 3:
            assert sampler.policy()[0] == 0 and sampler.policy().sum().item() == pytest.approx(1.0)
    assert len(seen) == len(set(seen)) == 60
    rest, _ = sampler.select(3)
    assert len(set(seen) | set(rest.tolist())) == 63
    with pytest.raises(ValueError, match="only 0 unused"):
        sampler.select(1)


def test_budget_over_the_pool_names_both():
    sampler = AdaptiveSampler(torch.tensor([0, 1, 1, 2]), reward="cert")
    with pytest.raises(ValueError, match=r"budget 5 exceeds the pool size 4"):
        adaptive_transfer_set(sampler, lambda i: torch.eye(3)[i], budget=5, batch_size=2)


def test_loss_reward_without_logits_says_what_to_pass():
    sampler = AdaptiveSampler(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="surrogate_logits"):
        sampler.update(torch.tensor([0]), Y[:1], None)


def test_a_two_level_hierarchy_multiplies_along_the_path():
    # leaves 0,1 under node 4; leaves 2,3 under node 5; root 6
    labels = torch.arange(4).repeat_interleave(10)
    sampler = AdaptiveSampler(labels, parents=[4, 4, 5, 5, 6, 6, -1], reward="cert").reset()
    sampler.preferences[:] = torch.tensor([0.0, math.log(3.0), 0.0, 0.0, math.log(2.0), 0.0, 0.0])
    # root: node 4 with 2/3, node 5 with 1/3; under 4: 1/4, 3/4; under 5: 1/2, 1/2
    expected = torch.tensor([2 / 3 * 1 / 4, 2 / 3 * 3 / 4, 1 / 6, 1 / 6], dtype=torch.float64)
    assert torch.allclose(sampler.policy(), expected) and sampler.policy().sum() == pytest.approx(1.0)
    # the update moves the inner node and the leaf on the path, and the siblings at both levels
    before = sampler.preferences.clone()
    sampler.update(torch.tensor([1]), Y[:1], None)
    sampler.update(torch.tensor([1]), Y[2:3], None)
    moved = (sampler.preferences != before).nonzero().flatten().tolist()
    assert moved == [0, 1, 4, 5]
    counts = torch.bincount(adaptive_transfer_set(sampler, lambda i: Y[i % 3], 30, 4)["actions"], minlength=4)
    assert counts.sum() == 30


def test_a_bad_hierarchy_is_refused():
    with pytest.raises(ValueError, match="leaves exactly 0..1"):
        AdaptiveSampler(torch.tensor([0, 1]), parents=[2, 3, 3, -1, 3]).reset()


def run(seed):
    labels = torch.arange(5).repeat_interleave(20)
    sampler = AdaptiveSampler(labels, seed=seed)
    return adaptive_transfer_set(sampler, fake_victim(labels, 2), 60, 7,
                                 surrogate_step=lambda i, a: torch.zeros(len(i), 5))


def test_same_seed_same_queries_different_seed_different():
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["rewards"], b["rewards"])
    assert not torch.equal(a["indices"], c["indices"])


def test_the_driver_sends_exactly_the_budget_with_a_partial_last_batch():
    labels = torch.arange(3).repeat_interleave(10)
    sent, steps = [], []

    def query(indices):
        sent.append(len(indices))
        return torch.softmax(torch.randn(len(indices), 3, generator=torch.Generator().manual_seed(0)), 1)

    def surrogate_step(indices, answers):
        steps.append(len(indices))
        return torch.zeros(len(indices), 3)

    out = adaptive_transfer_set(AdaptiveSampler(labels), query, budget=23, batch_size=5,
                                surrogate_step=surrogate_step)
    assert sent == steps == [5, 5, 5, 5, 3]
    assert len(out["indices"]) == len(out["actions"]) == len(out["rewards"]) == 23
    assert out["answers"].shape == (23, 3) and out["policy"].sum().item() == pytest.approx(1.0)
    assert len(set(out["indices"].tolist())) == 23
