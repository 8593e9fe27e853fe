"""Detecting Knockoff queries (Section 4): the paper's binary detector and three baselines.

The paper's convention, used everywhere in this module:

- labels: 0 = the attacker's natural images (ImageNet), 1 = the victim's own data;
- out-of-distribution (OOD) is the *positive* class: **TPR** = share of OOD queries
  flagged, **TNR** = share of in-distribution queries passed (:func:`rates`);
- every score is "higher = more out of distribution" (:func:`tpr_at_tnr`).

The detector (:class:`BinaryDetector`) is either a ResNet trained from scratch on
the two labels, or a frozen ImageNet-pretrained backbone with a logistic
regression on its features (the "CV" models: L-BFGS, L2 penalty, the strength
chosen by k-fold cross-validation).  Backbone features are computed once per
image set and cached (:func:`backbone_features`); so are trained detectors, the
baselines' scores and their tuning.  The baselines score the victim model
itself: MSP (Hendrycks & Gimpel), ODIN (temperature scaling and input
perturbation) and Mahalanobis (class-conditional Gaussians with a shared
covariance on the victim's penultimate features, with input pre-processing).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .api import PredictionAPI
from .artifacts import ArtifactStore, settings_key
from .attack import answer_transfer_set, attacker_pool
from .data import ImageSet, dataset_info, overlapping_classes, resize_images, to_float
from .models import SHORT_NAMES, Classifier, build_model, resolve_weights
from .profiles import Profile
from .train import fit, pick_device
from .victims import Victim, get_victim, load_dataset_split, victim_data, victim_spec

OOD_LABEL = 0  # the paper: "label 0 to all ImageNet samples"
IN_LABEL = 1  # "... and 1 to samples from V's dataset"
TABLE3_VICTIM = "cubs"  # Table 3 compares detector architectures on CUBS


# ---------------------------------------------------------------- rates: the one convention


def _flags(flags) -> torch.Tensor:
    flags = torch.as_tensor(flags).reshape(-1)
    if flags.dtype != torch.bool:
        raise TypeError(f"flags must be booleans (True = flagged as out of distribution), got {flags.dtype}")
    return flags


def true_positive_rate(flags_ood) -> float:
    """TPR: the share of out-of-distribution (attacker's) queries that are flagged."""
    flags_ood = _flags(flags_ood)
    if len(flags_ood) == 0:
        raise ValueError("no out-of-distribution flags: the TPR of an empty set is undefined")
    return int(flags_ood.sum()) / len(flags_ood)


def true_negative_rate(flags_in) -> float:
    """TNR: the share of in-distribution (the victim's own) queries that pass."""
    flags_in = _flags(flags_in)
    if len(flags_in) == 0:
        raise ValueError("no in-distribution flags: the TNR of an empty set is undefined")
    return int((~flags_in).sum()) / len(flags_in)


def rates(flags_ood, flags_in) -> tuple[float, float]:
    """``(TPR, TNR)``: the share of OOD queries flagged and of in-distribution queries passed."""
    return true_positive_rate(flags_ood), true_negative_rate(flags_in)


def _scores(scores, what: str) -> torch.Tensor:
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if len(scores) == 0:
        raise ValueError(f"no {what} scores")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{what} scores contain NaN or infinite values")
    return scores


def threshold_at_tnr(scores_in, tnr: float) -> float:
    """The lowest threshold ``t`` that passes at least ``tnr`` of the in-distribution queries.

    A query is flagged when its score is strictly above ``t``; ``-inf`` (flag
    everything) when ``tnr`` is 0.
    """
    if not 0.0 <= tnr <= 1.0:
        raise ValueError(f"tnr must be a fraction in [0, 1], got {tnr}")
    ordered = torch.sort(_scores(scores_in, "in-distribution")).values
    n = len(ordered)
    may_flag = math.floor((1.0 - tnr) * n + 1e-9)  # in-distribution queries allowed above t
    if may_flag >= n:
        return float("-inf")
    return float(ordered[n - 1 - may_flag])


def tpr_at_tnr(scores_in, scores_ood, tnr: float) -> float:
    """The largest TPR of a threshold on the scores (higher = more OOD) whose TNR is at least ``tnr``."""
    threshold = threshold_at_tnr(scores_in, tnr)
    return float((_scores(scores_ood, "out-of-distribution") > threshold).double().mean())


# ---------------------------------------------------------------- cached outputs of a network


def images_digest(images: torch.Tensor) -> str:
    """A content hash of an image batch: the cache key of everything computed from it."""
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}".encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
             device: torch.device) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = to_float(chunk.to(device)).contiguous(memory_format=torch.channels_last)
            out.append(fn(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def cached_outputs(store: ArtifactStore, kind: str, producer: dict, fn: Callable[[torch.Tensor], torch.Tensor],
                   images: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
                   ) -> tuple[torch.Tensor, bool]:
    """``fn`` applied to ``images`` in batches, stored under ``kind``: ``(outputs, from_cache)``.

    ``producer`` names what computes the outputs (a backbone, a victim, a detector);
    the images enter the key by their content hash, so any subset or reordering is
    its own entry and the same images are never computed twice.
    """
    settings = {"producer": producer, "images": images_digest(images), "count": len(images)}
    found = store.load(kind, settings)
    if found is not None:
        return found["outputs"], True
    outputs = _batched(fn, images, batch_size, pick_device(device))
    store.save(kind, settings, {"outputs": outputs})
    return outputs, False


@functools.lru_cache(maxsize=4)
def frozen_backbone(arch: str) -> Classifier:
    """An ImageNet-pretrained backbone in eval mode whose weights never change."""
    model = build_model(arch, num_classes=1, pretrained=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def backbone_features(profile: Profile, arch: str, images: torch.Tensor, store: ArtifactStore | None = None,
                      with_source: bool = False):
    """Penultimate features of the frozen pretrained ``arch`` for uint8 ``images``, cached.

    With ``with_source`` returns ``(features, from_cache)``.
    """
    store = store or ArtifactStore(profile.cache_root)
    producer = {"backbone": arch, "weights": resolve_weights(arch).name}
    feats, from_cache = cached_outputs(store, "features", producer, frozen_backbone(arch).features, images,
                                       profile.eval_batch_size, profile.device)
    return (feats, from_cache) if with_source else feats


def victim_features(profile: Profile, victim: Victim, images: torch.Tensor, store: ArtifactStore) -> torch.Tensor:
    """The victim's penultimate features (what Mahalanobis models), cached."""
    producer = {"victim": victim.settings, "layer": "penultimate"}
    return cached_outputs(store, "features", producer, victim.model.eval().features, images,
                          profile.eval_batch_size, profile.device)[0]


# ---------------------------------------------------------------- the binary detector


class LogisticOODHead(nn.Module):
    """A fitted logistic regression on standardised features, as the OOD logit.

    The regression models P(label 1 = victim's data); the OOD logit is its negative.
    """

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float().reshape(-1))
        self.register_buffer("scale", scale.float().reshape(-1))
        self.register_buffer("coef", coef.float().reshape(-1))
        self.register_buffer("intercept", intercept.float().reshape(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.scale
        return -(z @ self.coef + self.intercept)


class _FrozenBackboneLogistic(nn.Module):
    def __init__(self, backbone: Classifier, head: LogisticOODHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone.features(x))


class _TwoClassOODLogit(nn.Module):
    """A two-output classifier (0 = ImageNet, 1 = victim) as one OOD logit: softmax[0] = sigmoid(l0 - l1)."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        logits = self.classifier(x)
        return logits[:, OOD_LABEL] - logits[:, IN_LABEL]


class BinaryDetector:
    """The paper's binary classifier in front of the API: P(out of distribution) per query.

    ``network`` maps float images in [0, 1] at ``image_size`` px to the OOD logit;
    queries of another size are resized first.  ``flag`` marks a query when
    P(OOD) > ``threshold`` (0.5: the classifier's own decision), so a detector is
    the ``detector=`` of :class:`kx_utils.api.PredictionAPI` and of
    :func:`kx_utils.attack.knockoff`.  ``name`` is stable and unique for the
    settings that trained it (it enters cache keys).
    """

    def __init__(self, name: str, network: nn.Module, image_size: int, *, threshold: float = 0.5,
                 head: LogisticOODHead | None = None, backbone_arch: str | None = None,
                 features_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_size: int = 256, device: str | torch.device = "cpu", info: dict | None = None):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be a probability in (0, 1), got {threshold}")
        self.name = name
        self.network = network.eval()
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.head = head
        self.backbone_arch = backbone_arch
        self.features_fn = features_fn
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"BinaryDetector({self.name!r}, {self.image_size} px)"

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch of RGB images N x 3 x H x W, got shape {tuple(images.shape)}")
        if images.shape[-1] == self.image_size and images.shape[-2] == self.image_size:
            return images
        if images.dtype == torch.uint8:
            return resize_images(images, self.image_size)
        return F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                             antialias=True, align_corners=False)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The OOD logit of each image (uint8, or float in [0, 1])."""
        self.network.to(self.device)
        return _batched(self.network, self._prepare(images), self.batch_size, self.device)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """P(out of distribution) of each image, a float tensor in [0, 1].

        A CV detector built by :func:`cv_detector` takes its backbone features from
        the feature cache (one entry per batch of images it is given).
        """
        if self.head is not None and self.features_fn is not None:
            return self.score_features(self.features_fn(self._prepare(images)))
        return torch.sigmoid(self.logits(images))

    def flag(self, images: torch.Tensor) -> torch.Tensor:
        """True where the detector takes the query for an out-of-distribution (attacker's) image."""
        return self.score(images) > self.threshold

    __call__ = flag

    @property
    def uses_features(self) -> bool:
        return self.head is not None

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """P(OOD) from precomputed backbone features (CV detectors only)."""
        if self.head is None:
            raise TypeError(f"{self.name} is trained end to end; it has no feature head: call score(images)")
        with torch.no_grad():
            return torch.sigmoid(self.head(features.float()))


def detector_scores(profile: Profile, detector: BinaryDetector, images: torch.Tensor,
                    store: ArtifactStore | None = None) -> torch.Tensor:
    """``detector.score(images)`` computed through the caches: a CV detector reuses the backbone's
    cached features, a scratch detector caches its own outputs."""
    store = store or ArtifactStore(profile.cache_root)
    images = detector._prepare(images)
    if detector.uses_features:
        return detector.score_features(backbone_features(profile, detector.backbone_arch, images, store))
    detector.network.to(detector.device)
    logits, _ = cached_outputs(store, "detector_outputs", {"detector": detector.name}, detector.network,
                               images, profile.eval_batch_size, detector.device)
    return torch.sigmoid(logits)


# ---------------------------------------------------------------- data


def _seeded_order(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _capped(images: ImageSet, cap: int | None, seed: int) -> ImageSet:
    """At most ``cap`` images, a seeded draw kept in the split's order."""
    if cap is None or len(images) <= cap:
        return images
    return images.subset(torch.sort(_seeded_order(len(images), seed)[:cap]).values)


@dataclass
class DetectionData:
    """The sets of Section 4.2.1 for one victim, at the detector's input size.

    ``ood_train`` and ``ood_tune`` are disjoint parts of the attacker's ImageNet
    *training* split: the baselines are tuned on ``ood_tune`` and never see the
    OOD test sets.  ``overlap`` are the victim's classes that overlap ImageNet.
    """

    victim_key: str
    image_size: int
    in_train: ImageSet
    in_test: ImageSet
    ood_train: ImageSet
    ood_tune: ImageSet
    ood_test: ImageSet
    openimages_test: ImageSet
    overlap: list[int]
    settings: dict = field(repr=False, default_factory=dict)

    @property
    def overlap_names(self) -> list[str]:
        return [self.in_train.classes[c] for c in self.overlap]

    def in_tune(self, n: int, seed: int) -> ImageSet:
        """In-distribution tuning images: a seeded draw from the victim's *training* split."""
        return _capped(self.in_train, n, seed + 17)

    def kept(self, images: ImageSet) -> ImageSet:
        """``images`` without the classes that overlap ImageNet (the starred setting)."""
        return images.without_classes(self.overlap)


_MEMO: dict[str, object] = {}  # a few decoded sets kept in memory between calls of one session
_MEMO_SIZE = 6


def _memoized(key: dict, compute: Callable[[], object]):
    """Keep the last few image sets in memory: reloading and resizing 12,000 images per call adds up."""
    k = settings_key(key)
    if k in _MEMO:
        _MEMO[k] = _MEMO.pop(k)  # most recently used last
        return _MEMO[k]
    value = compute()
    _MEMO[k] = value
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    return value


OOD_SPLIT_SEED_OFFSET = 101


def _ood_sets(profile: Profile, size: int, store: ArtifactStore) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet]:
    """(ImageNet train minus the tuning hold-out, the tuning hold-out, ImageNet test, OpenImages test)."""
    imagenet_train = load_dataset_split(profile, "imagenet", "train", size, store=store)
    # an order of its own: the Knockoff transfer set is drawn with randperm(seed) from the same split
    order = _seeded_order(len(imagenet_train), profile.seed + OOD_SPLIT_SEED_OFFSET)
    n_tune = min(profile.baseline_tuning_size, len(imagenet_train) // 2)
    ood_tune = imagenet_train.subset(torch.sort(order[:n_tune]).values)
    rest = order[n_tune:]
    if profile.detector_ood_train is not None:
        rest = rest[:profile.detector_ood_train]
    ood_train = imagenet_train.subset(torch.sort(rest).values)
    ood_test = _capped(load_dataset_split(profile, "imagenet", "test", size, store=store),
                       profile.detector_ood_test, profile.seed)
    openimages = _capped(load_dataset_split(profile, "openimages", "test", size, store=store),
                         profile.openimages_test, profile.seed)
    return ood_train, ood_tune, ood_test, openimages


def detection_data(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> DetectionData:
    """In-distribution: the victim's train/test split; OOD: ImageNet train (minus a tuning hold-out)
    and test, and the OpenImages test set, capped as the profile says."""
    store = store or ArtifactStore(profile.cache_root)
    spec = victim_spec(victim_key)
    if not spec.pretrained:
        raise ValueError(f"Section 4 detects queries to the pretrained victims; {victim_key} is trained from "
                         "scratch at another input size. Use one of caltech, cubs, diabetic5, gtsrb, cifar10")
    size = profile.image_size[spec.dataset]
    where = {"profile": profile.as_dict(), "store": str(store.root), "size": size}
    ood_train, ood_tune, ood_test, openimages = _memoized({**where, "sets": "ood"},
                                                          lambda: _ood_sets(profile, size, store))
    in_train, in_test = _memoized({**where, "sets": victim_key}, lambda: victim_data(profile, victim_key, store))
    settings = {"victim": victim_key, "dataset": spec.dataset, "standins": profile.standins, "size": size,
                "train_per_class": profile.train_per_class, "test_per_class": profile.test_per_class,
                "ood_train": profile.detector_ood_train, "tuning": len(ood_tune), "seed": profile.seed,
                "ood_split_seed": profile.seed + OOD_SPLIT_SEED_OFFSET}
    return DetectionData(victim_key, size, in_train, in_test, ood_train, ood_tune, ood_test, openimages,
                         overlapping_classes(in_train.classes), settings)


def _attacker_pool(profile: Profile, size: int, store: ArtifactStore) -> ImageSet:
    """The Knockoff attacker's pool exactly as :func:`kx_utils.attack.knockoff` draws it, kept in memory."""
    where = {"profile": profile.as_dict(), "store": str(store.root), "size": size, "sets": "pool"}
    return _memoized(where, lambda: attacker_pool(profile, "imagenet", None, size, store))


# ---------------------------------------------------------------- training detectors


def fit_logistic_cv(features: torch.Tensor, labels: torch.Tensor, folds: int, cs: int | Sequence[float],
                    seed: int = 0, tol: float = 1e-4, max_iter: int = 1000) -> dict:
    """L2 logistic regression fitted with L-BFGS, its strength chosen by ``folds``-fold CV.

    Features are standardised first (mean and standard deviation of the training
    set) so that one grid of strengths suits every backbone and L-BFGS converges;
    the paper does not say whether it scaled them.  The CV criterion is balanced
    accuracy, the mean of TPR and TNR.  Returns plain tensors and numbers (the
    artifact), not the scikit-learn object.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    labels = torch.as_tensor(labels).reshape(-1)
    if set(labels.unique().tolist()) != {OOD_LABEL, IN_LABEL}:
        raise ValueError(f"the detector needs both labels {OOD_LABEL} (ImageNet) and {IN_LABEL} (victim's data), "
                         f"got {sorted(labels.unique().tolist())}")
    smallest = int(torch.bincount(labels).min())
    if smallest < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} images of each label; the "
                         f"smaller label has {smallest}. Lower cv_folds or give more images")
    cs = list(cs) if isinstance(cs, (list, tuple)) else int(cs)
    x = features.double().numpy()
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    z = (x - mean) / scale
    model = LogisticRegressionCV(
        Cs=cs, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), l1_ratios=(0.0,),
        solver="lbfgs", scoring="balanced_accuracy", tol=tol, max_iter=max_iter, use_legacy_attributes=False)
    t0 = time.perf_counter()
    model.fit(z, labels.numpy())
    seconds = time.perf_counter() - t0
    fold_scores = np.asarray(model.scores_).reshape(folds, -1)  # folds x Cs (one l1_ratio)
    mean_scores = fold_scores.mean(0)
    return {
        "mean": torch.from_numpy(mean).float(), "scale": torch.from_numpy(scale).float(),
        "coef": torch.from_numpy(model.coef_.reshape(-1)).float(),
        "intercept": torch.tensor(float(model.intercept_.reshape(-1)[0])),
        "C": float(model.C_), "Cs": [float(c) for c in model.Cs_],
        "cv_scores": [float(s) for s in mean_scores], "cv_score": float(mean_scores.max()),
        "fit_seconds": seconds, "train_size": int(len(labels)),
        "train_in": int((labels == IN_LABEL).sum()), "train_ood": int((labels == OOD_LABEL).sum()),
    }


def detector_row_name(arch: str, starred: bool, cv: bool) -> str:
    """The paper's row names: RN18, RN34*, RN101*CV; mini backbones as MNV2*CV, EffL0*CV."""
    return f"{SHORT_NAMES[arch]}{'*' if starred else ''}{'CV' if cv else ''}"


# The paper's Table 3 row each mini row stands in for: the profile's notes make MobileNetV2 the
# stand-in of ResNet34; EfficientNet-Lite0 has no counterpart in the paper.
CV_STAND_INS = {"mobilenet_v2": "RN34*CV", "efficientnet_lite0": None}


def paper_row(arch: str, starred: bool, cv: bool) -> str | None:
    name = detector_row_name(arch, starred, cv)
    if arch.startswith("resnet"):
        return name
    return CV_STAND_INS.get(arch) if cv and starred else None


def _labelled(in_images: torch.Tensor, ood_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.cat([torch.full((len(in_images),), IN_LABEL), torch.full((len(ood_images),), OOD_LABEL)])
    return torch.cat([in_images, ood_images]), labels


def cv_detector(profile: Profile, victim_key: str, arch: str, starred: bool = True,
                store: ArtifactStore | None = None, data: DetectionData | None = None) -> BinaryDetector:
    """A frozen pretrained ``arch`` with a cross-validated logistic regression (the paper's "CV" models).

    ``starred`` drops the victim's classes that overlap ImageNet from the training
    set.  Trained once; later calls rebuild it from the stored coefficients.
    """
    store = store or ArtifactStore(profile.cache_root)
    data = data or detection_data(profile, victim_key, store)
    settings = {"kind": "cv", "data": data.settings, "arch": arch, "weights": resolve_weights(arch).name,
                "starred": starred, "overlap": data.overlap if starred else [], "folds": profile.cv_folds,
                "cs": profile.detector_cv_cs, "tol": profile.detector_cv_tol, "seed": profile.seed,
                "scoring": "balanced_accuracy"}
    blob = store.load("detector", settings)
    if blob is None:
        in_features = backbone_features(profile, arch, data.in_train.images, store)
        if starred and data.overlap:
            in_features = in_features[~torch.isin(data.in_train.labels, torch.tensor(data.overlap))]
        ood_features = backbone_features(profile, arch, data.ood_train.images, store)
        labels = torch.cat([torch.full((len(in_features),), IN_LABEL), torch.full((len(ood_features),), OOD_LABEL)])
        blob = fit_logistic_cv(torch.cat([in_features, ood_features]), labels, profile.cv_folds,
                               profile.detector_cv_cs, profile.seed, profile.detector_cv_tol)
        store.save("detector", settings, blob)
    head = LogisticOODHead(blob["mean"], blob["scale"], blob["coef"], blob["intercept"])
    row = detector_row_name(arch, starred, cv=True)
    name = f"{dataset_info(victim_spec(victim_key).dataset).paper_name}-{row}@{settings_key(settings)[:8]}"
    info = {k: v for k, v in blob.items() if not isinstance(v, torch.Tensor)}
    info.update(arch=arch, starred=starred, cv=True, row=row, overlap=list(data.overlap) if starred else [])
    return BinaryDetector(name, _FrozenBackboneLogistic(frozen_backbone(arch), head), data.image_size,
                          head=head, backbone_arch=arch,
                          features_fn=lambda images: backbone_features(profile, arch, images, store),
                          batch_size=profile.eval_batch_size, device=profile.device, info=info)


def scratch_detector(profile: Profile, victim_key: str, arch: str, starred: bool = False,
                     store: ArtifactStore | None = None, data: DetectionData | None = None) -> BinaryDetector:
    """A ResNet trained from scratch on label 0 = ImageNet, 1 = victim's data (the paper's RN18/RN34).

    Trained with the profile's ``detector_recipe`` (the paper: Adam 1e-3, 5e-4 after
    half the run) on at most ``detector_scratch_train`` images of each side, at
    ``detector_scratch_image_size`` px.
    """
    store = store or ArtifactStore(profile.cache_root)
    data = data or detection_data(profile, victim_key, store)
    size = profile.detector_scratch_image_size or data.image_size
    recipe = profile.detector_recipe
    settings = {"kind": "scratch", "data": data.settings, "arch": arch, "starred": starred,
                "overlap": data.overlap if starred else [], "size": size, "cap": profile.detector_scratch_train,
                "recipe": recipe.as_dict(), "seed": profile.seed}
    blob = store.load("detector", settings)
    if blob is None:
        in_train = data.kept(data.in_train) if starred else data.in_train
        in_train = _capped(in_train, profile.detector_scratch_train, profile.seed + 1)
        ood_train = _capped(data.ood_train, profile.detector_scratch_train, profile.seed + 2)
        images, labels = _labelled(resize_images(in_train.images, size), resize_images(ood_train.images, size))
        torch.manual_seed(profile.seed)
        model = build_model(arch, 2, pretrained=False)
        checkpoint = store.scratch_path("detector", settings, "ckpt")
        history = fit(model, images, labels, recipe, seed=profile.seed, device=pick_device(profile.device),
                      checkpoint=checkpoint, progress=profile.progress,
                      desc=f"{detector_row_name(arch, starred, False)} detector",
                      eval_batch_size=profile.eval_batch_size)
        blob = {"state_dict": model.state_dict(), "history": history,
                "train_seconds": sum(r["train_seconds"] for r in history),
                "train_size": len(labels), "train_in": len(in_train), "train_ood": len(ood_train)}
        store.save("detector", settings, blob)
        checkpoint.unlink(missing_ok=True)
    model = build_model(arch, 2, pretrained=False)
    model.load_state_dict(blob["state_dict"])
    row = detector_row_name(arch, starred, cv=False)
    name = f"{dataset_info(victim_spec(victim_key).dataset).paper_name}-{row}@{settings_key(settings)[:8]}"
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    info.update(arch=arch, starred=starred, cv=False, row=row, overlap=list(data.overlap) if starred else [],
                image_size=size)
    return BinaryDetector(name, _TwoClassOODLogit(model.eval()), size, batch_size=profile.eval_batch_size,
                          device=profile.device, info=info)


def choose_cv_arch(profile: Profile, store: ArtifactStore | None = None) -> tuple[str, dict]:
    """The backbone of the Table 4 detector, and each candidate's CV score.

    The paper fixes ResNet101 (``profile.detector_arch``).  Otherwise the choice
    is the backbone of ``detector_cv_archs`` whose starred CUBS detector has the
    best cross-validated balanced accuracy on its *training* data (ties: the first
    listed), so no test set, in- or out-of-distribution, takes part in it.
    """
    if profile.detector_arch is not None:
        return profile.detector_arch, {}
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, TABLE3_VICTIM, store)
    scores = {arch: cv_detector(profile, TABLE3_VICTIM, arch, True, store, data).info["cv_score"]
              for arch in profile.detector_cv_archs}
    best = max(profile.detector_cv_archs, key=lambda a: (scores[a], -profile.detector_cv_archs.index(a)))
    return best, scores


def get_detector(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> BinaryDetector:
    """The profile's chosen detector for a victim (the paper: RN101*CV), trained once and cached."""
    store = store or ArtifactStore(profile.cache_root)
    arch, _ = choose_cv_arch(profile, store)
    return cv_detector(profile, victim_key, arch, starred=True, store=store)


def evaluate_detector(profile: Profile, detector: BinaryDetector, data: DetectionData,
                      store: ArtifactStore | None = None) -> dict:
    """TPR on the ImageNet and OpenImages test sets; TNR on all of the victim's test images and on those
    of the classes that do not overlap ImageNet (``tnr_kept``)."""
    store = store or ArtifactStore(profile.cache_root)
    flag = lambda images: detector_scores(profile, detector, images, store) > detector.threshold  # noqa: E731
    in_flags = flag(data.in_test.images)
    kept = ~torch.isin(data.in_test.labels, torch.tensor(data.overlap, dtype=torch.long))
    tpr, tnr = rates(flag(data.ood_test.images), in_flags)
    tpr_open, _ = rates(flag(data.openimages_test.images), in_flags)
    return {"tpr": tpr, "tnr": tnr, "tnr_kept": true_negative_rate(in_flags[kept]) if kept.any() else None,
            "tpr_openimages": tpr_open, "in_test": len(in_flags), "in_test_kept": int(kept.sum()),
            "ood_test": len(data.ood_test), "openimages_test": len(data.openimages_test)}


def table3_rows(profile: Profile, store: ArtifactStore | None = None, victim_key: str = TABLE3_VICTIM) -> dict:
    """Table 3: every detector of the profile on CUBS; TPR on the ImageNet test split, TNR on the CUBS
    test set (for a starred model: the test images of the classes it kept)."""
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, victim_key, store)
    models = [(arch, starred, False) for arch in profile.detector_scratch_archs for starred in (False, True)]
    models += [(arch, True, True) for arch in profile.detector_cv_archs]
    rows = {}
    for arch, starred, cv in models:
        build = cv_detector if cv else scratch_detector
        detector = build(profile, victim_key, arch, starred, store, data)
        measured = evaluate_detector(profile, detector, data, store)
        rows[detector_row_name(arch, starred, cv)] = {
            "tpr": measured["tpr"], "tnr": measured["tnr_kept"] if starred else measured["tnr"],
            "tnr_all_classes": measured["tnr"], "tpr_openimages": measured["tpr_openimages"],
            "arch": arch, "pretrained": cv, "starred": starred, "paper_row": paper_row(arch, starred, cv),
            "train_in": detector.info["train_in"], "train_ood": detector.info["train_ood"],
            "train_seconds": detector.info.get("train_seconds", detector.info.get("fit_seconds")),
            "cv_score": detector.info.get("cv_score"), "C": detector.info.get("C"),
            "image_size": detector.image_size, "detector": detector.name,
        }
    return rows


# ---------------------------------------------------------------- baselines on the victim model


def msp_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Baseline (Hendrycks & Gimpel): 1 - the largest softmax probability."""
    model.eval().to(pick_device(device))
    return 1.0 - _batched(lambda x: model(x).softmax(1).max(1).values, images, batch_size, pick_device(device))


def _input_gradient_sign(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return grad.sign()


def odin_grid_scores(model: nn.Module, images: torch.Tensor, temperatures: Iterable[float],
                     epsilons: Iterable[float], batch_size: int = 128, device: str | torch.device = "cpu"
                     ) -> dict[tuple[float, float], torch.Tensor]:
    """ODIN (Liang et al.) scores for every (temperature T, perturbation epsilon) pair.

    The input moves by ``epsilon`` (in [0, 1] pixel units) against the gradient
    sign of the temperature-scaled cross-entropy of the predicted class,
    ``x' = x + eps * sign(grad_x log S_max(x; T))``; the score is
    ``1 - max softmax(f(x') / T)``.  One gradient per temperature serves all epsilons.
    """
    device = pick_device(device)
    model.eval().to(device)
    temperatures, epsilons = [float(t) for t in temperatures], [float(e) for e in epsilons]
    if any(t <= 0 for t in temperatures) or any(e < 0 for e in epsilons):
        raise ValueError(f"temperatures must be > 0 and epsilons >= 0, got {temperatures} and {epsilons}")
    out = {(t, e): [] for t in temperatures for e in epsilons}
    for chunk in images.split(batch_size):
        x = to_float(chunk.to(device)).contiguous(memory_format=torch.channels_last)
        for t in temperatures:
            sign = None
            if any(e > 0 for e in epsilons):
                sign = _input_gradient_sign(lambda v: F.log_softmax(model(v) / t, 1).max(1).values, x)
            with torch.no_grad():
                for e in epsilons:
                    moved = x + e * sign if e > 0 else x
                    out[(t, e)].append(1.0 - F.softmax(model(moved) / t, 1).max(1).values.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def odin_scores(model: nn.Module, images: torch.Tensor, temperature: float, epsilon: float,
                batch_size: int = 128, device: str | torch.device = "cpu") -> torch.Tensor:
    """ODIN's score (higher = more OOD) at one temperature and perturbation size."""
    return odin_grid_scores(model, images, [temperature], [epsilon], batch_size, device)[
        (float(temperature), float(epsilon))]


@dataclass
class ClassGaussians:
    """Class-conditional Gaussians with one shared covariance (Lee et al.'s Mahalanobis detector).

    ``means`` C x D and the ``precision`` (pseudo-inverse of the shared covariance)
    D x D, fitted on the victim's penultimate training features.
    """

    means: torch.Tensor
    precision: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> "ClassGaussians":
        features = features.double()
        labels = torch.as_tensor(labels, dtype=torch.long)
        num_classes = num_classes or int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=num_classes)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"no training features for class(es) {missing}: every class needs at least one")
        means = torch.zeros(num_classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features)
        means /= counts[:, None]
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        return cls(means, torch.linalg.pinv(covariance, hermitian=True))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of each feature vector to each class mean, N x C."""
        f = features.double()
        fp = f @ self.precision
        return (fp * f).sum(1, keepdim=True) - 2 * fp @ self.means.T + \
            ((self.means @ self.precision) * self.means).sum(1)[None, :]

    def min_distance(self, features: torch.Tensor) -> torch.Tensor:
        return self.distances(features).min(1).values

    def as_dict(self) -> dict:
        return {"means": self.means, "precision": self.precision}


def mahalanobis_grid_scores(feature_fn: Callable[[torch.Tensor], torch.Tensor], gaussians: ClassGaussians,
                            images: torch.Tensor, epsilons: Iterable[float], batch_size: int = 128,
                            device: str | torch.device = "cpu") -> dict[float, torch.Tensor]:
    """Mahalanobis scores (the squared distance to the closest class, higher = more OOD) per epsilon.

    Input pre-processing as in Lee et al.: ``x' = x - eps * sign(grad_x d_min(x))``
    moves the input towards its closest class; one gradient serves all epsilons.
    """
    device = pick_device(device)
    epsilons = [float(e) for e in epsilons]
    if any(e < 0 for e in epsilons):
        raise ValueError(f"epsilons must be >= 0, got {epsilons}")
    out = {e: [] for e in epsilons}
    for chunk in images.split(batch_size):
        x = to_float(chunk.to(device)).contiguous(memory_format=torch.channels_last)
        sign = None
        if any(e > 0 for e in epsilons):
            sign = _input_gradient_sign(lambda v: gaussians.min_distance(feature_fn(v)), x)
        with torch.no_grad():
            for e in epsilons:
                moved = x - e * sign if e > 0 else x
                out[e].append(gaussians.min_distance(feature_fn(moved)).float().cpu())
    return {e: torch.cat(v) for e, v in out.items()}


def mahalanobis_scores(feature_fn: Callable[[torch.Tensor], torch.Tensor], gaussians: ClassGaussians,
                       images: torch.Tensor, epsilon: float = 0.0, batch_size: int = 128,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Mahalanobis score at one perturbation size (``feature_fn``: e.g. ``victim.model.features``)."""
    return mahalanobis_grid_scores(feature_fn, gaussians, images, [epsilon], batch_size, device)[float(epsilon)]


def _best_on_grid(results: list[dict]) -> dict:
    """The grid point with the highest TPR at the tuning TNR; ties go to the earliest (smallest) values."""
    best = results[0]
    for r in results[1:]:
        if r["tpr"] > best["tpr"]:
            best = r
    return best


def victim_gaussians(profile: Profile, victim: Victim, data: DetectionData, store: ArtifactStore) -> ClassGaussians:
    """The Mahalanobis fit on the victim's penultimate training features (kept in memory once fitted)."""
    def fit_gaussians():
        features = victim_features(profile, victim, data.in_train.images, store)
        return ClassGaussians.fit(features, data.in_train.labels, len(victim.classes))
    return _memoized({"gaussians": victim.settings, "data": data.settings, "store": str(store.root)},
                     fit_gaussians)


def tune_baselines(profile: Profile, victim: Victim, data: DetectionData, store: ArtifactStore | None = None
                   ) -> dict:
    """ODIN's (T, epsilon) and Mahalanobis's epsilon, tuned without the OOD test sets.

    In-distribution side: ``baseline_tuning_size`` images of the victim's *training*
    split (the only labelled images the owner holds besides the test set);
    OOD side: the same number of the attacker's ImageNet training split, held out
    from the detector's training set.  Criterion: TPR at TNR = ``baseline_tnr``.
    """
    store = store or ArtifactStore(profile.cache_root)
    in_tune = data.in_tune(profile.baseline_tuning_size, profile.seed)
    settings = {"victim": victim.settings, "in": images_digest(in_tune.images),
                "ood": images_digest(data.ood_tune.images), "tnr": profile.baseline_tnr,
                "odin_temperatures": list(profile.odin_temperatures), "odin_epsilons": list(profile.odin_epsilons),
                "mahalanobis_epsilons": list(profile.mahalanobis_epsilons)}
    found = store.load("baseline_tuning", settings)
    if found is not None:
        return found
    model, batch, device = victim.model.eval(), min(128, profile.eval_batch_size), profile.device
    t0 = time.perf_counter()
    odin_in = odin_grid_scores(model, in_tune.images, profile.odin_temperatures, profile.odin_epsilons, batch, device)
    odin_ood = odin_grid_scores(model, data.ood_tune.images, profile.odin_temperatures, profile.odin_epsilons,
                                batch, device)
    odin_grid = [{"temperature": t, "epsilon": e, "tpr": tpr_at_tnr(odin_in[(t, e)], odin_ood[(t, e)],
                                                                     profile.baseline_tnr)}
                 for (t, e) in odin_in]
    gaussians = victim_gaussians(profile, victim, data, store)
    maha_in = mahalanobis_grid_scores(model.features, gaussians, in_tune.images, profile.mahalanobis_epsilons,
                                      batch, device)
    maha_ood = mahalanobis_grid_scores(model.features, gaussians, data.ood_tune.images,
                                       profile.mahalanobis_epsilons, batch, device)
    maha_grid = [{"epsilon": e, "tpr": tpr_at_tnr(maha_in[e], maha_ood[e], profile.baseline_tnr)} for e in maha_in]
    odin_best, maha_best = _best_on_grid(odin_grid), _best_on_grid(maha_grid)
    result = {"odin_temperature": odin_best["temperature"], "odin_epsilon": odin_best["epsilon"],
              "odin_tuning_tpr": odin_best["tpr"], "mahalanobis_epsilon": maha_best["epsilon"],
              "mahalanobis_tuning_tpr": maha_best["tpr"], "criterion": f"TPR at TNR {profile.baseline_tnr:.0%}",
              "tuning_in": len(in_tune), "tuning_ood": len(data.ood_tune),
              "odin_grid": odin_grid, "mahalanobis_grid": maha_grid, "seconds": time.perf_counter() - t0}
    store.save("baseline_tuning", settings, result)
    return result


def baseline_scores(profile: Profile, victim: Victim, data: DetectionData, tuning: dict, images: torch.Tensor,
                    store: ArtifactStore | None = None) -> dict[str, torch.Tensor]:
    """MSP, ODIN and Mahalanobis scores of ``images`` at the tuned settings, each cached."""
    store = store or ArtifactStore(profile.cache_root)

    model, batch, device = victim.model.eval(), min(128, profile.eval_batch_size), profile.device
    t, e, me = tuning["odin_temperature"], tuning["odin_epsilon"], tuning["mahalanobis_epsilon"]
    digest = images_digest(images)
    out = {}
    for method, params, compute in (
            ("msp", {}, lambda: msp_scores(model, images, profile.eval_batch_size, device)),
            ("odin", {"temperature": t, "epsilon": e}, lambda: odin_scores(model, images, t, e, batch, device)),
            ("mahalanobis", {"epsilon": me, "gaussians_of": data.settings},
             lambda: mahalanobis_scores(model.features, victim_gaussians(profile, victim, data, store), images,
                                        me, batch, device))):
        settings = {"victim": victim.settings, "method": method, "params": params, "images": digest}
        out[method] = store.cached("ood_scores", settings, lambda: {"scores": compute()})["scores"]
    return out


BASELINES = ("msp", "odin", "mahalanobis")


@dataclass
class Table4Result:
    """One victim's rows of Table 4 (a: ImageNet test, b: OpenImages test) and what produced them."""

    victim_key: str
    victim_name: str
    detector: str
    row_a: dict
    row_b: dict
    tuning: dict
    scores: dict  # set -> method -> tensor (ours: P(OOD)); sets: in_test, imagenet_test, openimages_test


def table4_result(profile: Profile, victim_key: str, store: ArtifactStore | None = None,
                  detector: BinaryDetector | None = None) -> Table4Result:
    """Our detector's TPR/TNR and the baselines' TPR at our TNR and at ``baseline_tnr``, on the full
    in-distribution test set against ImageNet (a) and OpenImages (b)."""
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, victim_key, store)
    detector = detector or get_detector(profile, victim_key, store)
    victim = get_victim(profile, victim_key, store)
    tuning = tune_baselines(profile, victim, data, store)
    sets = {"in_test": data.in_test.images, "imagenet_test": data.ood_test.images,
            "openimages_test": data.openimages_test.images}
    scores = {}
    for name, images in sets.items():
        scores[name] = {"ours": detector_scores(profile, detector, images, store),
                        **baseline_scores(profile, victim, data, tuning, images, store)}
    kept = ~torch.isin(data.in_test.labels, torch.tensor(data.overlap, dtype=torch.long))
    in_flags = scores["in_test"]["ours"] > detector.threshold
    rows = []
    for ood in ("imagenet_test", "openimages_test"):
        tpr, tnr = rates(scores[ood]["ours"] > detector.threshold, in_flags)
        row = {"ours_tpr": tpr, "ours_tnr": tnr,
               "ours_tnr_kept_classes": true_negative_rate(in_flags[kept]) if kept.any() else None}
        for method in BASELINES:
            row[f"{method}_tpr_at_ours"] = tpr_at_tnr(scores["in_test"][method], scores[ood][method], tnr)
        for method in BASELINES:
            row[f"{method}_tpr_at_95"] = tpr_at_tnr(scores["in_test"][method], scores[ood][method],
                                                    profile.baseline_tnr)
        row.update(in_test=len(data.in_test), ood_test=len(sets[ood]))
        rows.append(row)
    return Table4Result(victim_key, victim.name, detector.name, rows[0], rows[1], tuning, scores)


# ---------------------------------------------------------------- the detector as a filter


def filter_report(profile: Profile, victim_key: str, detector: BinaryDetector | None = None,
                  store: ArtifactStore | None = None, action: str = "refuse") -> dict:
    """The detector in front of the victim's API: how many Knockoff queries and benign queries pass.

    The transfer set is the one :func:`kx_utils.attack.knockoff` sends with the
    profile's defaults (same pool, budget and seed), answered through a
    :class:`PredictionAPI` whose detector refuses (or reduces to a label) what it
    flags; the answers are cached exactly as ``knockoff(..., detector=detector)``
    would cache them.  Benign queries are the victim's test images.  Transfer
    queries that were also in the detector's ImageNet training set are counted
    apart (``transfer_unseen_*`` are the others).
    """
    store = store or ArtifactStore(profile.cache_root)
    detector = detector or get_detector(profile, victim_key, store)
    victim = get_victim(profile, victim_key, store)
    data = detection_data(profile, victim_key, store)
    pool_images = _attacker_pool(profile, profile.image_size[victim_spec(victim_key).dataset], store)
    answered = answer_transfer_set(profile, victim, store=store, detector=detector, detector_action=action,
                                   pool_images=pool_images)
    flagged = answered["flagged"].bool()
    seen_files = set(data.ood_train.files)
    transfer_files = [pool_images.files[i] for i in answered["indices"].tolist()] if pool_images.files else []
    unseen = torch.tensor([f not in seen_files for f in transfer_files], dtype=torch.bool) \
        if transfer_files else torch.ones(len(flagged), dtype=torch.bool)

    benign_settings = {"detector": detector.name, "victim": victim.settings, "action": action,
                       "images": images_digest(data.in_test.images)}
    benign = store.load("filter_benign", benign_settings)
    if benign is None:
        response = PredictionAPI(victim.model, mode="probs", detector=detector, detector_action=action,
                                 batch_size=profile.eval_batch_size, device=profile.device).respond(data.in_test.images)
        benign = {"flagged": response.flagged}
        store.save("filter_benign", benign_settings, benign)
    benign_flagged = benign["flagged"].bool()
    return {
        "victim": victim_key, "name": victim.name, "detector": detector.name, "action": action,
        "transfer_queries": len(flagged), "transfer_flagged": int(flagged.sum()),
        "transfer_passed": int((~flagged).sum()),
        "transfer_unseen_queries": int(unseen.sum()), "transfer_unseen_flagged": int(flagged[unseen].sum()),
        "benign_queries": len(benign_flagged), "benign_passed": int((~benign_flagged).sum()),
        "benign_flagged": int(benign_flagged.sum()), "queries_sent": int(answered["queries"]),
    }


def overlap_rows(profile: Profile, victim_keys: Iterable[str], store: ArtifactStore | None = None) -> dict:
    """Per victim: its classes that overlap ImageNet (what the starred detectors leave out)."""
    store = store or ArtifactStore(profile.cache_root)
    rows = {}
    for key in victim_keys:
        data = detection_data(profile, key, store)
        rows[key] = {"classes": data.in_train.num_classes, "overlapping": len(data.overlap),
                     "share": len(data.overlap) / data.in_train.num_classes, "names": data.overlap_names,
                     "train_kept": len(data.kept(data.in_train)), "train": len(data.in_train),
                     "test_kept": len(data.kept(data.in_test)), "test": len(data.in_test)}
    return rows
