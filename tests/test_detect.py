"""Section 4: the rate convention, the three baselines by hand, the logistic detector and its caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from kx_utils.core import detectors as D
from kx_utils.core.api import PredictionAPI
from kx_utils.core.images import resize_images
from kx_utils.experiments import detection as E
from kx_utils.runtime.artifacts import ArtifactStore
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


def test_auroc_and_fpr_at_95_tpr_by_hand():
    scores_in = torch.tensor([0.1, 0.4, 0.35, 0.8])
    scores_ood = torch.tensor([0.9, 0.4, 0.7])
    # pairs (ood > in): 0.9 beats 4; 0.4 beats 0.1, 0.35 and ties 0.4 (half); 0.7 beats 3 -> 9.5 / 12
    assert D.auroc(scores_in, scores_ood) == pytest.approx(9.5 / 12)
    from sklearn.metrics import roc_auc_score
    gen = torch.Generator().manual_seed(5)
    a, b = torch.round(torch.randn(50, generator=gen) * 3), torch.round(torch.randn(40, generator=gen) * 3 + 1)
    assert D.auroc(a, b) == pytest.approx(roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[a, b]))
    # 95% of the 3 OOD scores needs all 3 flagged: threshold 0.4 flags in-scores 0.4 and 0.8 -> 2 of 4
    assert D.fpr_at_tpr(scores_in, scores_ood, 0.95) == 0.5
    # 2 of 3 suffice at 60%: threshold 0.7 flags only 0.8
    assert D.fpr_at_tpr(scores_in, scores_ood, 0.6) == 0.25


# ---------------------------------------------------------------- the logistic-regression detector


class _MeanColour(nn.Module):
    """A fixed 'backbone': the mean of each colour channel and of its square."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), (x ** 2).mean((2, 3))], 1)


class _Backbone(nn.Module):
    """A fixed feature map with the ``features`` method of a Classifier (and a parameter for its device)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.anchor = fn, nn.Parameter(torch.zeros(1), requires_grad=False)

    def features(self, x):
        return self.fn(x)


def test_balanced_weights_keep_the_operating_point_balanced():
    """An imbalanced, overlapping training set (1 victim image per 6 ImageNet images): the unweighted
    regression passes few victim images at P(OOD) > 0.5; the balanced one about as many as it flags."""
    gen = torch.Generator().manual_seed(7)
    in_features, ood_features = torch.randn(150, 2, generator=gen) + 0.8, torch.randn(900, 2, generator=gen)
    features = torch.cat([in_features, ood_features])
    labels = torch.cat([torch.full((150,), D.IN_LABEL), torch.full((900,), D.OOD_LABEL)])
    fitted = D.fit_logistic_cv(features, labels, folds=3, cs=(1.0,), seed=0)
    z = (features - fitted["mean"]) / fitted["scale"]
    p_ood = torch.sigmoid(-(z @ fitted["coef"] + fitted["intercept"]))
    tpr, tnr = D.rates(p_ood[150:] > 0.5, p_ood[:150] > 0.5)
    assert abs(tpr - tnr) < 0.15, (tpr, tnr)
    from sklearn.linear_model import LogisticRegression
    plain = LogisticRegression().fit(z.numpy(), labels.numpy())
    plain_tnr = float((plain.predict_proba(z[:150].numpy())[:, D.IN_LABEL] > 0.5).mean())
    assert plain_tnr < tnr - 0.2  # the imbalance the balanced weights correct


def test_a_count_of_strengths_is_sklearns_log_grid_and_the_fit_round_trips_through_the_cache(tmp_path):
    """The paper profile's detector_cv_cs=10: ten strengths from 1e-4 to 1e4, stored as plain floats."""
    gen = torch.Generator().manual_seed(3)
    features = torch.cat([torch.randn(40, 2, generator=gen) + 1.5, torch.randn(40, 2, generator=gen)])
    labels = torch.cat([torch.full((40,), D.IN_LABEL), torch.full((40,), D.OOD_LABEL)])
    fitted = D.fit_logistic_cv(features, labels, folds=3, cs=10, seed=0)
    assert fitted["Cs"] == pytest.approx([10.0 ** (-4 + 8 * i / 9) for i in range(10)], rel=1e-12)
    assert fitted["C"] in fitted["Cs"] and len(fitted["cv_scores"]) == 10
    store = ArtifactStore(tmp_path)
    store.save("features", {"probe": "cv"}, fitted)
    assert store.load("features", {"probe": "cv"})["Cs"] == fitted["Cs"]


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
    detector = D.FrozenBackboneLogistic(_Backbone(backbone), 8, folds=3, cs=(0.01, 1.0, 100.0))
    detector.fit(in_train, ood_train)
    assert torch.allclose(detector.head.coef, fitted["coef"], atol=1e-5)

    in_test, ood_test = _colour_images(30, 0, 3), _colour_images(30, 2, 4)
    tpr, tnr = D.rates(detector.flag(ood_test), detector.flag(in_test))
    assert tpr > 0.95 and tnr > 0.95
    scores = detector.score(torch.cat([in_test, ood_test]))
    assert scores.dtype == torch.float32 and ((scores >= 0) & (scores <= 1)).all()
    # queries of another size are resized to the detector's input
    assert torch.equal(detector.flag(resize_images(ood_test, 16)), detector.flag(ood_test))

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
    cpu = torch.device("cpu")
    first, cached = E.cached_outputs(store, E.FEATURES, {"backbone": "mean"}, features, images, 4, cpu)
    assert not cached and sum(calls) == 10
    second, cached = E.cached_outputs(store, E.FEATURES, {"backbone": "mean"}, features, images, 4, cpu)
    assert cached and sum(calls) == 10 and torch.equal(first, second)
    E.cached_outputs(store, E.FEATURES, {"backbone": "mean"}, features, images[:5], 4, cpu)
    assert sum(calls) == 15  # other images: computed
    E.cached_outputs(store, E.FEATURES, {"backbone": "other"}, features, images, 4, cpu)
    assert sum(calls) == 25  # another producer: computed


def test_backbone_features_are_cached(tiny_profile, store):
    images = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    first, from_cache = E.backbone_features(tiny_profile, "mobilenet_v2", images, store, with_source=True)
    assert not from_cache and first.shape == (3, 1280)
    again, from_cache = E.backbone_features(tiny_profile, "mobilenet_v2", images, store, with_source=True)
    assert from_cache and torch.equal(first, again)


# ---------------------------------------------------------------- end to end on tiny data


@pytest.fixture
def detection_profile(tiny_profile, tiny_data):
    """The tiny profile with an OpenImages stand-in and detector settings small enough for a test."""
    write_image_folder(tiny_data / "ood_web" / "test", classes=1, per_class=12, seed=5, pattern="noise")
    return tiny_profile.replace(
        detector_arch="mobilenet_v2", cv_folds=3, detector_cv_cs=(0.01, 1.0), baseline_tuning_size=10,
        detector_ood_share=0.5,
        detector_ood_train=None, detector_ood_test=None, openimages_test=None, detector_scratch_image_size=None,
        detector_scratch_train=40, odin_temperatures=(1.0, 100.0), odin_epsilons=(0.0, 0.002),
        mahalanobis_epsilons=(0.0, 0.002))


def test_detector_is_trained_once_and_flags_the_attackers_noise(detection_profile):
    detector = E.get_detector(detection_profile, "cifar10")
    assert detector.name.startswith("CIFAR10-MNV2*CV@") and detector.image_size == 16
    data = E.detection_data(detection_profile, "cifar10")
    # the defender holds half of ImageNet train (120 images): 10 for tuning, the rest for training
    assert len(data.ood_tune) == 10 and len(data.ood_train) == 60 - 10
    assert not set(data.ood_tune.files) & set(data.ood_train.files)
    assert data.overlap == []  # CIFAR10 shares no class with ImageNet
    tpr, tnr = D.rates(detector.flag(data.ood_test.images), detector.flag(data.in_test.images))
    assert tpr > 0.9 and tnr > 0.9  # colour-coded classes vs uniform noise
    again = E.get_detector(detection_profile, "cifar10")
    assert again.name == detector.name
    assert torch.equal(again.head.coef, detector.head.coef)


def test_sets_keep_judged_queries_and_validation_samples_apart(detection_profile):
    data = E.detection_data(detection_profile, "cifar10")
    seen = set(data.ood_train.files) | set(data.ood_tune.files)
    assert seen <= data.defender_files
    pool = E.imagenet_pool(detection_profile, 16, ArtifactStore(detection_profile.cache_root))
    unseen = E.unseen_mask(data, pool.files)
    assert int(unseen.sum()) == len(pool) - len(data.defender_files) == 60
    assert not {f for f, u in zip(pool.files, unseen.tolist()) if u} & seen
    queries = E.unseen_imagenet_queries(detection_profile, "cifar10", 20)
    unseen_images = pool.images[unseen]
    assert all((unseen_images == q).all((1, 2, 3)).any() for q in queries)
    # more asked than there are: all 60 unseen ones, each once (the paper's 97,280 Bing queries against its
    # 10,000 unseen ImageNet test images)
    every = E.unseen_imagenet_queries(detection_profile, "cifar10", 500)
    assert len(every) == 60 and len(torch.unique(every.flatten(1), dim=0)) == len(torch.unique(unseen_images.flatten(1), dim=0))
    with pytest.raises(ValueError, match="no ImageNet pool image is unseen.*lower detector_ood_share"):
        E.unseen_imagenet_queries(detection_profile.replace(detector_ood_share=1.0, attacker_pool_split="train"),
                                  "cifar10", 5)
    # the published protocol's validation samples are not among the images the tables measure
    for sample, measured in ((data.validation["in"], data.in_test), (data.validation["imagenet"], data.ood_test),
                             (data.validation["openimages"], data.openimages_test)):
        assert len(sample) >= 1 and not set(sample.files) & set(measured.files)
    assert not set(data.in_tune.files) & set(data.in_fit.files)
    assert len(data.in_tune) + len(data.in_fit) == len(data.in_train)


def _tpr_at_tnr_by_definition(s_in, s_ood, tnr: float) -> float:
    """Of the thresholds t that pass (score <= t) at least ``tnr`` of the in-distribution scores, the lowest
    (-inf, or one of those scores: nothing else changes a rate); the share of OOD scores above it."""
    s_in, s_ood = [float(v) for v in s_in], [float(v) for v in s_ood]
    t = min(t for t in [float("-inf"), *s_in] if sum(v <= t for v in s_in) >= tnr * len(s_in) - 1e-9)
    return sum(v > t for v in s_ood) / len(s_ood)


def _auroc_by_pairs(s_in, s_ood) -> float:
    """P(an OOD score above an in-distribution one), a tie counted one half: every pair counted."""
    s_in, s_ood = [float(v) for v in s_in], [float(v) for v in s_ood]
    return sum((o > i) + 0.5 * (o == i) for o in s_ood for i in s_in) / (len(s_in) * len(s_ood))


def test_table4_columns_use_our_tnr_and_the_same_images(detection_profile):
    result = E.table4_result(detection_profile, "cifar10")
    data = E.detection_data(detection_profile, "cifar10")
    victim = E.get_victim(detection_profile, "cifar10")
    detector = E.get_detector(detection_profile, "cifar10")
    model = victim.model.eval()

    @torch.no_grad()
    def msp(images):  # MSP of each set, computed here: the columns score the sets they say
        x = (images.float() / 255).to(next(model.parameters()).device)
        return (1 - torch.softmax(model(x), 1).max(1).values).cpu()

    for ood, row in (("imagenet", result.row_a), ("openimages", result.row_b)):
        s, measured = result.scores[ood], getattr(data, E.OOD_SETS[ood])
        assert len(s["in"]["ours"]) == row["in_test"] == len(data.in_test) and row["ood_test"] == len(measured)
        assert all(len(v) == row["in_test"] for v in s["in"].values())
        assert torch.allclose(s["in"]["msp"], msp(data.in_test.images), atol=1e-5)
        assert torch.allclose(s["ood"]["msp"], msp(measured.images), atol=1e-5)
        assert torch.equal(s["in"]["ours"], detector.score(data.in_test.images))
        assert torch.equal(s["ood"]["ours"], detector.score(measured.images))
        # our TNR is the share of the victim's test images our detector passes (P(OOD) <= 0.5) ...
        ours_tnr = sum(float(v) <= detector.threshold for v in s["in"]["ours"]) / row["in_test"]
        assert row["ours_tnr"] == pytest.approx(ours_tnr, abs=1e-12)
        assert row["ours_tpr"] == pytest.approx(sum(float(v) > 0.5 for v in s["ood"]["ours"]) / len(measured), abs=1e-12)
        # ... and every baseline is read at it, at 95%, and over all thresholds, from its definition
        for method in E.BASELINE_COLUMNS:
            assert row[f"{method}_tpr_at_ours"] == pytest.approx(
                _tpr_at_tnr_by_definition(s["in"][method], s["ood"][method], ours_tnr), abs=1e-12), method
            assert row[f"{method}_tpr_at_95"] == pytest.approx(
                _tpr_at_tnr_by_definition(s["in"][method], s["ood"][method], 0.95), abs=1e-12), method
            assert row[f"{method}_auroc"] == pytest.approx(_auroc_by_pairs(s["in"][method], s["ood"][method]),
                                                           abs=1e-12), method
        assert row["classes_dropped"] == 0
    fair, published = result.tuning["fair"], result.tuning["published_imagenet"]
    assert fair["tuning_ood"] == 10 and published["tuning_ood"] == len(
        E.detection_data(detection_profile, "cifar10").validation["imagenet"])
    assert len(fair["mahalanobis_layer_weights"]) > 1


def test_filter_counts_unseen_queries_apart(detection_profile):
    report = E.filter_report(detection_profile, "cifar10")
    assert report["transfer_queries"] == detection_profile.transfer_budget
    data = E.detection_data(detection_profile, "cifar10")
    pool = E.imagenet_pool(detection_profile, 16, ArtifactStore(detection_profile.cache_root))
    from kx_utils.experiments.attack import sample_transfer_set
    indices = sample_transfer_set(len(pool), detection_profile.transfer_budget, detection_profile.seed)
    assert report["unseen_queries"] == int(E.unseen_mask(data, [pool.files[i] for i in indices]).sum())
    assert report["benign_queries"] == len(data.in_test)
    assert E.filter_report(detection_profile, "cifar10")["queries_sent"] == 0  # answers reused


def test_scratch_detector_trains_on_both_labels(detection_profile):
    detector = E.scratch_detector(detection_profile, "cifar10", "resnet18", starred=False)
    assert detector.info["train_in"] == 40 and detector.info["train_ood"] == 40
    again = E.scratch_detector(detection_profile, "cifar10", "resnet18", starred=False)
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    assert again.name == detector.name and torch.equal(again.score(images), detector.score(images))
