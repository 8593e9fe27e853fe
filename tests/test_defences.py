"""The defences of kx_utils.core.defences, each against hand-computed values or a property its paper states."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kx_utils.core.defences import (
    MAD,
    Dawn,
    Prada,
    ReverseSigmoid,
    distortion,
    mad_jacobian,
    mad_perturb,
    mad_target,
    prada_stream,
    reverse_sigmoid,
)

# ---------------------------------------------------------------- reverse sigmoid


def _reverse_sigmoid_by_hand(y, beta, gamma):
    sig = lambda z: 1 / (1 + math.exp(-z))
    r = [beta * (sig(gamma * math.log(p / (1 - p))) - 0.5) for p in y]
    perturbed = [min(1.0, max(0.0, p - ri)) for p, ri in zip(y, r)]
    return [p / sum(perturbed) for p in perturbed]


@pytest.mark.parametrize("beta, gamma", [(1.0, 0.1), (0.5, 0.5), (2.0, 0.2)])
def test_reverse_sigmoid_is_lee_et_als_formula(beta, gamma):
    y = [0.7, 0.2, 0.1]
    got = reverse_sigmoid(torch.tensor([y], dtype=torch.float64), beta, gamma)[0].tolist()
    assert got == pytest.approx(_reverse_sigmoid_by_hand(y, beta, gamma), abs=1e-12)
    assert sum(got) == pytest.approx(1.0)


def test_reverse_sigmoid_flattens_the_vector_and_checks_its_input():
    probs = torch.softmax(torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3, 1)
    out = ReverseSigmoid(beta=0.5, gamma=0.1)(probs)
    assert torch.allclose(out.sum(1), torch.ones(50)) and (out >= 0).all()
    assert (out.max(1).values <= probs.max(1).values + 1e-6).all()  # the top probability loses mass
    assert (out.min(1).values >= probs.min(1).values - 1e-6).all()  # ... and the smallest gains it
    with pytest.raises(ValueError, match="beta > 0 and gamma > 0"):
        reverse_sigmoid(probs, 0.0, 0.1)
    with pytest.raises(ValueError, match="N x K"):
        reverse_sigmoid(probs[0], 1.0, 0.1)


def test_distortion_of_hand_made_answers():
    original = torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0]], dtype=torch.float64)
    returned = torch.tensor([[0.25, 0.75, 0.0], [0.9, 0.1, 0.0]], dtype=torch.float64)
    d = distortion(original, returned)
    assert d["l1"] == pytest.approx((0.5 + 0.0) / 2)
    assert d["kl"] == pytest.approx((0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2)
    assert d["top1_kept"] == 0.5  # the first row's argmax moves from class 0 (first of a tie) to class 1


# ---------------------------------------------------------------- MAD


def test_mad_jacobian_is_the_last_layers_nll_gradient():
    torch.manual_seed(0)
    head = nn.Linear(4, 3).double()
    f = torch.randn(4, dtype=torch.float64)
    p = torch.softmax(head(f), 0)
    rows = []
    for k in range(3):
        (grad,) = torch.autograd.grad(-torch.log_softmax(head(f), 0)[k], head.weight)
        rows.append(grad.flatten())
    G = mad_jacobian(f, p.detach())
    assert torch.allclose(G, torch.stack(rows), atol=1e-12)
    y = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)  # on the simplex: G^T y = (p - y) f^T
    assert torch.allclose(G.t() @ y, torch.outer(p.detach() - y, f).flatten(), atol=1e-12)


def test_mad_oracles_pick_the_vertex_their_objective_prefers():
    y = torch.tensor([[0.6, 0.1, 0.3]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64)
    # the unnormalised objective ||y~ - y||^2 is largest at the least likely class
    assert mad_target(y, p, "extreme", "surrogate").tolist() == [[0.0, 1.0, 0.0]]
    # the angular one, computed the long way through G (any features: they cancel)
    f = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    G = mad_jacobian(f, p[0])
    v = G.t() @ y[0]
    angles = []
    for k in range(3):
        u = G.t() @ torch.eye(3, dtype=torch.float64)[k]
        angles.append(float(((u / u.norm() - v / v.norm()) ** 2).sum()))
    best = max(range(3), key=lambda k: angles[k])
    assert mad_target(y, p, "extreme", "angular")[0].argmax().item() == best
    with pytest.raises(ValueError, match="proxy's probabilities equal the answer"):
        mad_target(y, y, "extreme", "angular")


def test_mad_moves_each_answer_by_its_l1_budget():
    y = torch.tensor([[0.6, 0.1, 0.3]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    out = mad_perturb(y, target, epsilon=0.9)  # ||y - y*||_1 = 1.8: alpha = 0.5
    assert out.tolist()[0] == pytest.approx([0.3, 0.55, 0.15], abs=1e-6)
    assert mad_perturb(y, target, epsilon=5.0).tolist() == target.tolist()  # alpha capped at 1
    assert torch.equal(mad_perturb(y, target, epsilon=0.0), y)


@pytest.mark.parametrize("k", [5, 12])  # every subset, then the authors' greedy search
def test_mad_argmax_keeps_the_top1_class_within_the_budget(k):
    g = torch.Generator().manual_seed(k)
    y = torch.softmax(torch.randn(20, k, generator=g, dtype=torch.float64) * 2, 1)
    p = torch.softmax(torch.randn(20, k, generator=g, dtype=torch.float64), 1)
    target = mad_target(y, p, "argmax", "angular")
    assert torch.equal(target.argmax(1), y.argmax(1)) and torch.allclose(target.sum(1), torch.ones(20, dtype=y.dtype))
    out = mad_perturb(y, target, 0.5)
    assert torch.equal(out.argmax(1), y.argmax(1))
    assert ((out - y).abs().sum(1) <= 0.5 + 1e-6).all()


def test_mad_transform_runs_the_proxy_on_the_queries():
    torch.manual_seed(0)
    proxy = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    images = torch.rand(6, 3, 2, 2)
    probs = torch.softmax(torch.randn(6, 4), 1)
    defence = MAD(proxy, epsilon=0.4, device="cpu")
    out = defence(probs, images)
    assert ((out - probs).abs().sum(1) <= 0.4 + 1e-5).all() and torch.allclose(out.sum(1), torch.ones(6))
    assert not torch.allclose(out, probs) and defence.describe()["epsilon"] == 0.4
    with pytest.raises(ValueError, match="differ in shape"):
        defence.perturb(probs, probs[:, :3])


# ---------------------------------------------------------------- PRADA


def test_prada_grows_its_sets_and_thresholds_as_the_authors_code():
    prada = Prada()
    for x in ([0.0], [3.0], [1.0]):
        prada.observe(torch.tensor(x), 0)
    assert [m.item() for m in prada.growing[0]] == [0.0, 3.0, 1.0]
    assert prada.distances[0] == [3.0, 1.0]  # the first query of a class records no distance
    mean, sd = 4 / 3, math.sqrt(42 / 27)  # of the members' distances 0, 3, 1
    assert prada.thresholds[0] == pytest.approx(mean - sd)
    prada.observe(torch.tensor([1.05]), 0)  # 0.05 from its nearest member: below the threshold, not added
    assert len(prada.growing[0]) == 3 and prada.distances[0][-1] == pytest.approx(0.05)
    prada.observe(torch.tensor([5.0]), 1)  # a new class starts its own set
    assert len(prada.growing[1]) == 1 and 1 not in prada.distances


def test_prada_flags_a_stream_of_small_perturbations_not_natural_queries():
    g = torch.Generator().manual_seed(0)
    natural = torch.randn(400, 16, generator=g)
    classes = torch.randint(0, 2, (400,), generator=g)
    benign = prada_stream(natural, classes)
    assert benign["statistics"] and benign["first_flagged"] is None
    # a perturbation-based attacker: a few seeds, then many small steps around them (bimodal distances)
    seeds = torch.randn(40, 16, generator=g)
    steps = seeds.repeat(9, 1) + 0.01 * torch.randn(360, 16, generator=g)
    attack = prada_stream(torch.cat([seeds, steps]), torch.randint(0, 2, (400,), generator=g))
    assert attack["first_flagged"] is not None and attack["first_flagged"] <= 400
    assert min(w for _, w in attack["statistics"]) < 0.9 < min(w for _, w in benign["statistics"])
    with pytest.raises(ValueError, match="predicted classes"):
        prada_stream(natural, classes[:10])


# ---------------------------------------------------------------- DAWN


def test_dawn_watermarks_a_keyed_share_with_wrong_classes():
    g = torch.Generator().manual_seed(0)
    queries = torch.randint(0, 256, (2000, 3, 4, 4), dtype=torch.uint8, generator=g)
    dawn = Dawn(b"secret", rate=0.1)
    mask = dawn.selected(queries)
    assert torch.equal(mask, dawn.selected(queries))  # the same query, the same decision
    assert 200 - 3 * math.sqrt(2000 * 0.1 * 0.9) < mask.sum() < 200 + 3 * math.sqrt(2000 * 0.1 * 0.9)
    assert not torch.equal(mask, Dawn(b"other", rate=0.1).selected(queries))
    probs = torch.softmax(torch.randn(2000, 5, generator=g), 1)
    answers, marked = dawn.answers(queries, probs)
    assert torch.equal(marked, mask)
    assert torch.equal(answers[~mask], probs[~mask])  # the rest answered truthfully
    wrong = dawn.wrong_classes(queries[mask], probs[mask].argmax(1), 5)
    assert torch.equal(answers[mask].argmax(1), wrong) and (wrong != probs[mask].argmax(1)).all()
    assert torch.allclose(answers[mask].sort(1).values, probs[mask].sort(1).values)  # a swap: the same values
    assert Dawn.agreement(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="rate must be in"):
        Dawn(b"k", rate=0.0).selected(queries)
    with pytest.raises(ValueError, match="no watermarked query"):
        Dawn.agreement(torch.tensor([]), torch.tensor([]))


# ---------------------------------------------------------------- against ART's postprocessors


def test_answer_transforms_agree_with_arts_postprocessors():
    """kx's reverse sigmoid and API formats against ART 1.20.1 (requirements.txt), on the same vectors."""
    from art.defences.postprocessor import ClassLabels, HighConfidence, Rounded
    from art.defences.postprocessor import ReverseSigmoid as ArtReverseSigmoid

    from kx_utils.core.api import format_answers
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 10, generator=g, dtype=torch.float64) * 2, 1)
    for beta, gamma in ((1.0, 0.1), (0.3, 0.5)):
        ours = reverse_sigmoid(probs, beta, gamma).numpy()
        theirs = ArtReverseSigmoid(beta=beta, gamma=gamma)(probs.numpy())
        assert abs(ours - theirs).max() < 1e-12
    for decimals in (1, 2):
        assert (format_answers(probs, "rounded", decimals=decimals).numpy() == Rounded(decimals=decimals)(probs.numpy())).all()
    # ART 1.20.1's ClassLabels marks every row's argmax column in every row of a batch (its open pull request
    # #2824, "Fix ClassLabels predictions for batches"): compared one row at a time, where it is right
    labels = format_answers(probs, "label").numpy()
    assert all((labels[i:i + 1] == ClassLabels()(probs[i:i + 1].numpy())).all() for i in range(len(probs)))
    # top-k is HighConfidence where the cutoff falls between the k-th and the (k+1)-th probability of every row
    top3 = torch.tensor([[0.3, 0.25, 0.2] + [0.25 / 7] * 7])[:, torch.randperm(10, generator=g)].double()
    assert (format_answers(top3, "topk", k=3).numpy() == HighConfidence(cutoff=0.1)(top3.numpy())).all()
