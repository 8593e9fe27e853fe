"""Section 4: the rate convention, the three baselines by hand, the logistic detector and its caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from kx_utils import detect as D
from kx_utils.api import PredictionAPI
from kx_utils.artifacts import ArtifactStore
from tests.conftest import write_image_folder


# ---------------------------------------------------------------- rates


def test_rates_follow_the_papers_convention():
    flags_ood = torch.tensor([True, True, False, True])  # 3 of 4 attacker queries flagged
    flags_in = torch.tensor([False, True, False, False, False])  # 4 of 5 victim queries passed
    assert D.rates(flags_ood, flags_in) == (0.75, 0.8)
    with pytest.raises(TypeError, match="booleans"):
        D.rates(torch.tensor([1, 0]), flags_in)
    with pytest.raises(ValueError, match="empty"):
        D.rates(torch.tensor([], dtype=torch.bool), flags_in)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpr_at_tnr_agrees_with_sklearns_roc_curve(seed):
    from sklearn.metrics import roc_curve
    gen = torch.Generator().manual_seed(seed)
    # rounded scores: ties inside and across the two sets
    scores_in = torch.round(torch.randn(57, generator=gen) * 4) / 4
    scores_ood = torch.round((torch.randn(43, generator=gen) + 1.0) * 4) / 4
    labels = np.r_[np.zeros(len(scores_in)), np.ones(len(scores_ood))]  # OOD is the positive class
    fpr, tpr, _ = roc_curve(labels, np.r_[scores_in.numpy(), scores_ood.numpy()], drop_intermediate=False)
    for tnr in (0.0, 0.3, 0.5, 0.9, 0.95, 1.0):
        expected = tpr[fpr <= 1 - tnr + 1e-12].max()
        assert D.tpr_at_tnr(scores_in, scores_ood, tnr) == pytest.approx(expected)
        threshold = D.threshold_at_tnr(scores_in, tnr)
        assert float((scores_in <= threshold).double().mean()) >= tnr - 1e-12


def test_tpr_at_tnr_extremes_and_bad_input():
    scores_in, scores_ood = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.25, 0.5])
    assert D.tpr_at_tnr(scores_in, scores_ood, 1.0) == 0.5  # only 0.5 lies above every in-score
    assert D.tpr_at_tnr(scores_in, scores_ood, 0.0) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        D.tpr_at_tnr(scores_in, scores_ood, 95)
    with pytest.raises(ValueError, match="NaN"):
        D.tpr_at_tnr(torch.tensor([0.1, float("nan")]), scores_ood, 0.9)


# ---------------------------------------------------------------- baselines on a fixed tiny network


def _tiny_linear_network():
    """logits = W x + b on flattened 3 x 2 x 2 images, with fixed weights."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(3, 12, generator=gen))
        net[1].bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return net.eval()


def _tiny_images(n=5, seed=1):
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def test_msp_score_is_one_minus_the_largest_softmax_probability():
    net, x = _tiny_linear_network(), _tiny_images()
    w, b = net[1].weight.detach(), net[1].bias.detach()
    logits = x.reshape(len(x), -1) @ w.T + b
    expected = 1 - torch.exp(logits - torch.logsumexp(logits, 1, keepdim=True)).max(1).values
    assert torch.allclose(D.msp_scores(net, x), expected, atol=1e-6)


def test_odin_score_by_hand():
    net, x = _tiny_linear_network(), _tiny_images()
    w, b = net[1].weight.detach().double(), net[1].bias.detach().double()
    flat = x.reshape(len(x), -1).double()
    for temperature, epsilon in ((1.0, 0.0), (10.0, 0.01), (1000.0, 0.05)):
        p = torch.softmax((flat @ w.T + b) / temperature, 1)
        k = p.argmax(1)
        # d/dx log softmax_k((Wx + b) / T) = (w_k - sum_j p_j w_j) / T
        grad = (w[k] - p @ w) / temperature
        moved = flat + epsilon * grad.sign()
        expected = 1 - torch.softmax((moved @ w.T + b) / temperature, 1).max(1).values
        got = D.odin_scores(net, x, temperature, epsilon)
        assert torch.allclose(got.double(), expected, atol=1e-5), (temperature, epsilon)
    assert torch.allclose(D.odin_scores(net, x, 1.0, 0.0), D.msp_scores(net, x), atol=1e-6)


def test_odin_grid_matches_single_settings():
    net, x = _tiny_linear_network(), _tiny_images()
    grid = D.odin_grid_scores(net, x, [1.0, 100.0], [0.0, 0.02])
    for (t, e), scores in grid.items():
        assert torch.allclose(scores, D.odin_scores(net, x, t, e), atol=1e-6)


def test_mahalanobis_fit_and_score_by_hand():
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    labels = torch.arange(40) % 2
    features[labels == 1] += 2.0
    gaussians = D.ClassGaussians.fit(features, labels)
    f, y = features.numpy(), labels.numpy()
    means = np.stack([f[y == c].mean(0) for c in (0, 1)])
    centred = f - means[y]
    precision = np.linalg.inv(centred.T @ centred / len(f))
    assert np.allclose(gaussians.means.numpy(), means)
    assert np.allclose(gaussians.precision.numpy(), precision)

    # features = A x of flattened 3 x 2 x 2 images: a linear "network" the test can differentiate by hand
    a = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    feature_fn = lambda images: images.reshape(len(images), -1).double() @ a.T  # noqa: E731
    x = _tiny_images(6, seed=4)
    flat = x.reshape(len(x), -1).double()
    for epsilon in (0.0, 0.03):
        fx = flat @ a.T
        d = np.stack([np.einsum("nd,de,ne->n", fx.numpy() - m, precision, fx.numpy() - m) for m in means], 1)
        k = d.argmin(1)
        # d/dx (f - m_k)^T P (f - m_k) = 2 A^T P (f - m_k)
        grad = 2 * (fx.numpy() - means[k]) @ precision @ a.numpy()
        moved = flat.numpy() - epsilon * np.sign(grad)
        fm = moved @ a.numpy().T
        expected = np.stack([np.einsum("nd,de,ne->n", fm - m, precision, fm - m) for m in means], 1).min(1)
        got = D.mahalanobis_scores(feature_fn, gaussians, x, epsilon)
        assert np.allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5), epsilon


def test_mahalanobis_needs_every_class():
    with pytest.raises(ValueError, match="class"):
        D.ClassGaussians.fit(torch.randn(4, 2), torch.tensor([0, 0, 2, 2]))


# ---------------------------------------------------------------- the logistic-regression detector


class _MeanColour(nn.Module):
    """A fixed 'backbone': the mean of each colour channel and of its square."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), (x ** 2).mean((2, 3))], 1)


def _colour_images(n, channel, seed):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 90, (n, 3, 8, 8), generator=gen)
    images[:, channel] += 120
    return images.to(torch.uint8)


def test_logistic_detector_separates_two_clearly_different_distributions():
    in_train, ood_train = _colour_images(60, 0, 1), _colour_images(80, 2, 2)  # red vs blue
    backbone = _MeanColour()
    features = backbone(torch.cat([in_train, ood_train]).float() / 255)
    labels = torch.cat([torch.full((60,), D.IN_LABEL), torch.full((80,), D.OOD_LABEL)])
    fitted = D.fit_logistic_cv(features, labels, folds=3, cs=(0.01, 1.0, 100.0), seed=0)
    assert fitted["C"] in (0.01, 1.0, 100.0) and fitted["cv_score"] > 0.95
    head = D.LogisticOODHead(fitted["mean"], fitted["scale"], fitted["coef"], fitted["intercept"])
    detector = D.BinaryDetector("colour", nn.Sequential(backbone, head), 8, head=head)

    in_test, ood_test = _colour_images(30, 0, 3), _colour_images(30, 2, 4)
    tpr, tnr = D.rates(detector.flag(ood_test), detector.flag(in_test))
    assert tpr > 0.95 and tnr > 0.95
    scores = detector.score(torch.cat([in_test, ood_test]))
    assert scores.dtype == torch.float32 and ((scores >= 0) & (scores <= 1)).all()
    # queries of another size are resized to the detector's input
    assert torch.equal(detector.flag(D.resize_images(ood_test, 16)), detector.flag(ood_test))

    # in front of the API: flagged (OOD) queries are refused or answered with a label only
    victim = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    queries = torch.cat([in_test[:5], ood_test[:5]])
    refused = PredictionAPI(victim, detector=detector, device="cpu").respond(queries)
    assert refused.flagged.tolist() == detector.flag(queries).tolist()
    assert torch.isnan(refused.answers[refused.flagged]).all()
    assert not torch.isnan(refused.answers[~refused.flagged]).any()
    labelled = PredictionAPI(victim, detector=detector, detector_action="label", device="cpu").respond(queries)
    assert (labelled.answers[labelled.flagged].sum(1) == 1).all()
    assert set(labelled.answers[labelled.flagged].unique().tolist()) <= {0.0, 1.0}


def test_logistic_fit_needs_both_labels_and_enough_for_the_folds():
    features = torch.randn(12, 3)
    with pytest.raises(ValueError, match="both labels"):
        D.fit_logistic_cv(features, torch.ones(12, dtype=torch.long), folds=3, cs=2)
    with pytest.raises(ValueError, match="cross-validation"):
        D.fit_logistic_cv(features, torch.tensor([1] * 10 + [0] * 2), folds=3, cs=2)


# ---------------------------------------------------------------- caches


def test_cached_outputs_compute_once_per_image_set(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    calls = []

    def features(x):
        calls.append(len(x))
        return x.mean((2, 3))

    images = torch.randint(0, 255, (10, 3, 4, 4), dtype=torch.uint8)
    first, cached = D.cached_outputs(store, "features", {"backbone": "mean"}, features, images, batch_size=4)
    assert not cached and sum(calls) == 10
    second, cached = D.cached_outputs(store, "features", {"backbone": "mean"}, features, images, batch_size=4)
    assert cached and sum(calls) == 10 and torch.equal(first, second)
    D.cached_outputs(store, "features", {"backbone": "mean"}, features, images[:5])
    assert sum(calls) == 15  # other images: computed
    D.cached_outputs(store, "features", {"backbone": "other"}, features, images)
    assert sum(calls) == 25  # another producer: computed


def test_backbone_features_are_cached(tiny_profile, store):
    images = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    first, from_cache = D.backbone_features(tiny_profile, "mobilenet_v2", images, store, with_source=True)
    assert not from_cache and first.shape == (3, 1280)
    again, from_cache = D.backbone_features(tiny_profile, "mobilenet_v2", images, store, with_source=True)
    assert from_cache and torch.equal(first, again)


# ---------------------------------------------------------------- end to end on tiny data


@pytest.fixture
def detection_profile(tiny_profile, tiny_data):
    """The tiny profile with an OpenImages stand-in and detector settings small enough for a test."""
    write_image_folder(tiny_data / "ood_web" / "test", classes=1, per_class=12, seed=5, pattern="noise")
    return tiny_profile.replace(
        detector_arch="mobilenet_v2", cv_folds=3, detector_cv_cs=(0.01, 1.0), baseline_tuning_size=10,
        detector_ood_train=None, detector_ood_test=None, openimages_test=None, detector_scratch_image_size=None,
        detector_scratch_train=40, odin_temperatures=(1.0, 100.0), odin_epsilons=(0.0, 0.002),
        mahalanobis_epsilons=(0.0, 0.002))


def test_detector_is_trained_once_and_flags_the_attackers_noise(detection_profile):
    detector = D.get_detector(detection_profile, "cifar10")
    assert detector.name.startswith("CIFAR10-MNV2*CV@") and detector.image_size == 16
    data = D.detection_data(detection_profile, "cifar10")
    assert len(data.ood_tune) == 10 and len(data.ood_train) == 120 - 10
    assert not set(data.ood_tune.files) & set(data.ood_train.files)
    measured = D.evaluate_detector(detection_profile, detector, data)
    assert measured["tpr"] > 0.9 and measured["tnr"] > 0.9  # colour-coded classes vs uniform noise
    again = D.get_detector(detection_profile, "cifar10")
    assert again.name == detector.name
    assert torch.equal(again.head.coef, detector.head.coef)


def test_table4_and_filter_rows_on_tiny_data(detection_profile):
    result = D.table4_result(detection_profile, "cifar10")
    for row in (result.row_a, result.row_b):
        for column in ("ours_tpr", "ours_tnr", *(f"{m}_tpr_at_{w}" for m in D.BASELINES for w in ("ours", "95"))):
            assert 0.0 <= row[column] <= 1.0, column
    assert result.tuning["odin_temperature"] in (1.0, 100.0)
    assert result.tuning["mahalanobis_epsilon"] in (0.0, 0.002)
    report = D.filter_report(detection_profile, "cifar10")
    assert report["transfer_queries"] == detection_profile.transfer_budget
    assert 0 <= report["transfer_flagged"] <= report["transfer_queries"]
    assert report["benign_queries"] == len(D.detection_data(detection_profile, "cifar10").in_test)
    assert D.filter_report(detection_profile, "cifar10")["queries_sent"] == 0  # answers reused


def test_scratch_detector_trains_on_both_labels(detection_profile):
    detector = D.scratch_detector(detection_profile, "cifar10", "resnet18", starred=False)
    assert detector.info["train_in"] == 40 and detector.info["train_ood"] == 40
    scores = detector.score(torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8))
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert D.scratch_detector(detection_profile, "cifar10", "resnet18", starred=False).name == detector.name
