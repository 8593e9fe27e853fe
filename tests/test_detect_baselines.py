"""MSP, ODIN and Mahalanobis (kx_utils.core.detectors.baselines) and stage features (kx_utils.core.detectors.layers)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from kx_utils.core.detectors.baselines import (
    MSP,
    ODIN,
    Mahalanobis,
    ensemble_scores,
    fit_layer_ensemble,
    odin_grid,
)
from kx_utils.core.detectors.layers import stage_features, stage_names
from kx_utils.core.models import build_model


class LinearToy(nn.Module):
    """logits = W x for images N x 3 x 1 x 1."""

    def __init__(self, weight):
        super().__init__()
        self.lin = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, x):
        return self.lin(x.flatten(1))


class Unit(nn.Module):
    """A 'model' with one parameter (its device); the stages come from a fake layers_fn."""

    def __init__(self):
        super().__init__()
        self.one = nn.Parameter(torch.ones(()))


def one_stage(model, x, upto=None):
    return [x.flatten(1) * model.one]


def two_stages(model, x, upto=None):  # images N x 4 x 1 x 1: stage 0 = dims 0-1, stage 1 = dims 2-3
    flat = x.flatten(1) * model.one
    stages = [flat[:, :2], flat[:, 2:]]
    return stages if upto is None else stages[:upto + 1]


def images_of(points) -> torch.Tensor:
    points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    return points.reshape(points.shape[0], points.shape[1], 1, 1)


def softmax_max(logits) -> float:
    exps = [math.exp(v) for v in logits]
    return max(exps) / sum(exps)


# ---------------------------------------------------------------- MSP and ODIN

def test_msp_is_one_minus_the_largest_softmax():
    model = LinearToy(2 * torch.eye(3))
    x = images_of([[0.2, 0.5, 0.1], [0.7, 0.0, 0.3]])
    expected = [1 - softmax_max([0.4, 1.0, 0.2]), 1 - softmax_max([1.4, 0.0, 0.6])]
    scores = MSP(model, batch_size=1).fit().score(x)
    assert scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-6)
    # uint8 images are read as pixels / 255
    assert torch.allclose(MSP(model).score((x * 255).round().to(torch.uint8)), scores, atol=1e-2)


def test_odin_without_temperature_or_noise_is_msp_and_its_noise_raises_the_max_softmax():
    model = LinearToy(2 * torch.eye(3))
    x = images_of([[0.2, 0.9, 0.1], [0.6, 0.1, 0.2]])
    msp = MSP(model).score(x)
    assert torch.allclose(ODIN(model, temperature=1.0, epsilon=0.0).score(x), msp, atol=1e-7)

    moved = ODIN(model, temperature=1.0, epsilon=0.05).score(x)
    assert (moved < msp - 1e-3).all()  # the input moved towards its predicted class
    # by hand: sign(grad log S_1) = (-, +, -) for W = 2I, so x' = (0.15, 0.95, 0.05)
    assert moved[0].item() == pytest.approx(1 - softmax_max([0.3, 1.9, 0.1]), abs=1e-6)
    # temperature 2 divides the logits at x' by 2
    t2 = ODIN(model, temperature=2.0, epsilon=0.05).score(x)
    assert t2[0].item() == pytest.approx(1 - softmax_max([0.15, 0.95, 0.05]), abs=1e-6)
    assert all(p.grad is None for p in model.parameters()) and not model.training

    grid = odin_grid(model, x, temperatures=[1.0, 2.0], epsilons=[0.0, 0.05], batch_size=1)
    assert set(grid) == {(1.0, 0.0), (1.0, 0.05), (2.0, 0.0), (2.0, 0.05)}
    assert torch.allclose(grid[(1.0, 0.05)], moved) and torch.allclose(grid[(2.0, 0.05)], t2)
    with pytest.raises(ValueError):
        odin_grid(model, x, [0.0], [0.0])


def test_odin_tuned_keeps_the_pair_that_separates_the_tuning_sets_best():
    from kx_utils.core.detectors.rates import tpr_at_tnr
    model = LinearToy(4 * torch.eye(3))
    gen = torch.Generator().manual_seed(0)
    confident = images_of(torch.eye(3)[torch.randint(0, 3, (30,), generator=gen)] * 0.8
                          + 0.1 * torch.rand(30, 3, generator=gen))
    flat = images_of(0.4 + 0.2 * torch.rand(30, 3, generator=gen))  # near-equal logits: out of distribution
    odin = ODIN.tuned(model, confident, flat, temperatures=[1.0, 1000.0], epsilons=[0.0, 0.01], tnr=0.9)
    assert set(odin.criteria) == {(1.0, 0.0), (1.0, 0.01), (1000.0, 0.0), (1000.0, 0.01)}
    grid_in, grid_ood = odin_grid(model, confident, [1.0, 1000.0], [0.0, 0.01]), odin_grid(model, flat, [1.0, 1000.0], [0.0, 0.01])
    for pair, tpr in odin.criteria.items():
        assert tpr == tpr_at_tnr(grid_in[pair], grid_ood[pair], 0.9)
    chosen = (odin.temperature, odin.epsilon)
    assert odin.criteria[chosen] == max(odin.criteria.values()) > 0.5
    assert torch.equal(odin.score(flat), grid_ood[chosen])


# ---------------------------------------------------------------- Mahalanobis

def test_mahalanobis_gaussians_and_distances_equal_the_hand_computed_values():
    # class 0: (0,0), (2,0) -> mean (1,0); class 1: (0,2), (2,4) -> mean (1,3)
    # centred: (-1,0), (1,0), (-1,-1), (1,1) -> covariance [[4,2],[2,2]] / 4, precision [[2,-2],[-2,4]]
    train = images_of([[0, 0], [2, 0], [0, 2], [2, 4]])
    maha = Mahalanobis(Unit(), shrinkage="empirical", layers_fn=one_stage).fit(train, torch.tensor([0, 0, 1, 1]))
    (g,) = maha.gaussians
    assert torch.allclose(g.means, torch.tensor([[1.0, 0.0], [1.0, 3.0]], dtype=torch.float64))
    assert torch.allclose(g.covariance, torch.tensor([[1.0, 0.5], [0.5, 0.5]], dtype=torch.float64))
    assert torch.allclose(g.precision, torch.tensor([[2.0, -2.0], [-2.0, 4.0]], dtype=torch.float64))
    assert g.means.dtype == torch.float64

    points = images_of([[1, 1], [1.5, 1]])
    # (1,1): to class 0 (0,1) -> 4, to class 1 (0,-2) -> 16; (1.5,1): (0.5,1) -> 2.5, (0.5,-2) -> 20.5
    assert torch.allclose(g.distances(points.flatten(1)),
                          torch.tensor([[4.0, 16.0], [2.5, 20.5]], dtype=torch.float64))
    assert torch.allclose(maha.layer_scores(points, 0.0), torch.tensor([[4.0], [2.5]]))
    # pre-processing at (1.5,1): the gradient of the distance to class 0 is 2P(0.5,1) = (-2,6), so
    # x' = x - 0.1 sign = (1.6, 0.9), whose distance (0.6,0.9) falls to 0.72 - 2.16 + 3.24 = 1.8
    assert maha.layer_scores(points[1:], 0.1).item() == pytest.approx(1.8, abs=1e-5)


def test_ledoit_wolf_precision_is_the_inverse_of_sklearns_estimate_on_centred_features():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)
    features = rng.normal(size=(24, 6)) + 3 * labels[:, None]
    maha = Mahalanobis(Unit(), layers_fn=one_stage).fit(images_of(features), torch.as_tensor(labels), 3)
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    centred = features - means[labels]
    expected = np.linalg.inv(LedoitWolf().fit(centred).covariance_)
    (g,) = maha.gaussians
    assert np.allclose(g.means.numpy(), means, atol=1e-5)
    assert np.allclose(g.precision.numpy(), expected, rtol=1e-4, atol=1e-6)
    empirical = Mahalanobis(Unit(), shrinkage="empirical", layers_fn=one_stage).fit(
        images_of(features), torch.as_tensor(labels)).gaussians[0]
    assert np.allclose(empirical.covariance.numpy(), centred.T @ centred / 24, atol=1e-5)
    assert not np.allclose(g.covariance.numpy(), empirical.covariance.numpy(), atol=1e-3)  # it shrinks


def planted(rng, n_in, n_ood):
    """In-distribution: 2 classes, separable at both stages. OOD: off the class means at stage 0
    only; at stage 1 it is drawn exactly like the in-distribution points."""
    labels = rng.integers(0, 2, n_in)
    stage0_means, stage1_means = np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])
    x_in = np.concatenate([stage0_means[labels] + rng.normal(0, 0.3, (n_in, 2)),
                           stage1_means[labels] + rng.normal(0, 1.0, (n_in, 2))], 1)
    mixed = rng.integers(0, 2, n_ood)
    x_ood = np.concatenate([np.array([1.5, 1.0]) + rng.normal(0, 0.5, (n_ood, 2)),
                            stage1_means[mixed] + rng.normal(0, 1.0, (n_ood, 2))], 1)
    return images_of(x_in), torch.as_tensor(labels), images_of(x_ood)


def tune_layers(maha, images):
    return maha.layer_scores(images, maha.epsilon)


def test_the_layer_ensemble_finds_a_separation_planted_at_the_first_stage_only():
    rng = np.random.default_rng(1)
    train, train_labels, _ = planted(rng, 200, 0)
    tune_in, _, tune_ood = planted(rng, 60, 60)
    test_in, _, test_ood = planted(rng, 150, 150)
    maha = Mahalanobis(Unit(), layers_fn=two_stages, batch_size=64).fit(train, train_labels, 2)
    maha.fit_ensemble(tune_in, tune_ood, epsilons=[0.0, 0.05])
    assert set(maha.criteria) == {0.0, 0.05} and maha.epsilon in maha.criteria
    assert maha.criteria[maha.epsilon] == max(maha.criteria.values())

    y = np.r_[np.zeros(150), np.ones(150)]
    ensemble = torch.cat([maha.score(test_in), maha.score(test_ood)]).numpy()
    assert roc_auc_score(y, ensemble) > 0.9
    layers = torch.cat([maha.layer_scores(test_in, maha.epsilon), maha.layer_scores(test_ood, maha.epsilon)])
    assert roc_auc_score(y, layers[:, 1].numpy()) == pytest.approx(0.5, abs=0.1)  # the last stage alone: chance
    assert roc_auc_score(y, layers[:, 0].numpy()) > 0.9
    weights = maha.layer_weights.abs()
    assert weights[0] > 3 * weights[1]
    assert torch.allclose(maha.score_layer_scores(layers), torch.from_numpy(ensemble), atol=1e-5)
    # the plain-number ensemble is the sklearn pipeline's decision function, and survives a weights-only load
    sklearn_logits = maha.pipeline.decision_function(layers.double().numpy())
    assert np.allclose(ensemble, sklearn_logits, atol=1e-4)
    buffer = io.BytesIO()
    torch.save(maha.ensemble, buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)
    assert torch.allclose(ensemble_scores(stored, layers), torch.from_numpy(ensemble))
    single = fit_layer_ensemble(layers[:3], layers[-1:])  # one OOD image: no cross-validation, C = 1
    assert single["C"] == 1.0 and ensemble_scores(single, layers[-1:]).item() > 0
    assert torch.allclose(ensemble_scores(fit_layer_ensemble(tune_layers(maha, tune_in), tune_layers(maha, tune_ood)),
                                          layers), torch.from_numpy(ensemble), atol=1e-4)


# ---------------------------------------------------------------- stage features

@pytest.mark.parametrize("arch, channels", [("resnet18", [64, 64, 128, 256, 512]),
                                            ("mobilenet_v2", [16, 24, 32, 96, 1280])])
def test_stage_features_pool_each_stage_and_pass_gradients_to_the_input(arch, channels):
    torch.manual_seed(0)
    model = build_model(arch, 10, pretrained=False).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    feats = stage_features(model, x)
    assert len(stage_names(model)) == len(feats) == 5
    assert [tuple(f.shape) for f in feats] == [(2, c) for c in channels]
    assert torch.allclose(feats[-1], model.features(x), atol=1e-5)
    for f in (feats[0], feats[-1]):
        (grad,) = torch.autograd.grad(f.square().sum(), x, retain_graph=True)
        assert grad.abs().sum() > 0
    early = stage_features(model, x, upto=1)
    assert len(early) == 2 and torch.allclose(early[1], feats[1])


def test_stage_features_refuse_an_unknown_architecture():
    model = build_model("gtsrb_5l", 3, pretrained=False)
    assert stage_names(model) == ["pool1", "pool2", "pool3", "penultimate"]
    model.arch = "vgg11"
    with pytest.raises(ValueError, match="resnet18"):
        stage_features(model, torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------- CUDA = CPU

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mahalanobis_and_odin_score_the_same_on_cuda_as_on_the_cpu():
    torch.manual_seed(0)
    cpu_model = build_model("gtsrb_5l", 3, pretrained=False).eval()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    gen = torch.Generator().manual_seed(0)
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=torch.float32)
    labels = torch.arange(3).repeat(14)
    in_images = (colours[labels][:, :, None, None] + 25 * torch.randn(42, 3, 16, 16, generator=gen)
                 ).clamp(0, 255).to(torch.uint8)
    ood_images = torch.randint(0, 256, (30, 3, 16, 16), generator=gen, dtype=torch.uint8)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        results = []
        for model in (cpu_model, cuda_model):
            maha = Mahalanobis(model, batch_size=16).fit(in_images[:30], labels[:30], 3)
            assert all(g.precision.device.type == next(model.parameters()).device.type for g in maha.gaussians)
            maha.fit_ensemble(in_images[30:], ood_images[:20], epsilons=[0.0, 0.002])
            both = torch.cat([in_images[30:], ood_images[20:]])
            results.append({"layers": maha.layer_scores(both, 0.002), "epsilon": maha.epsilon,
                            "score": maha.score(both), "odin": ODIN(model, 10.0, 0.002, 16).score(both),
                            "msp": MSP(model).score(both)})
        cpu, cuda = results
        assert cpu["epsilon"] == cuda["epsilon"]
        for key in ("layers", "score", "odin", "msp"):
            assert cuda[key].device.type == "cpu"
            assert torch.allclose(cuda[key], cpu[key], rtol=1e-4, atol=1e-4 * float(cpu[key].abs().max())), key
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
