"""The paper's detector (§4.2.2): a binary classifier of the victim's data (label 1) against the
attacker's natural images (label 0, ImageNet), as two estimators with ``fit`` and ``score``.

- :class:`ScratchDetector` — a ResNet trained from scratch on the two labels (RN18, RN34 and their
  starred variants); ``score`` is its softmax probability of label 0.
- :class:`FrozenBackboneLogistic` — a frozen ImageNet-pretrained backbone with an L2 logistic
  regression on its penultimate features, fitted with L-BFGS and its strength chosen by k-fold
  cross-validation (the paper's "CV" models).  The regression is a scikit-learn ``Pipeline``
  (standardisation, then the regression) inside the cross-validation, so the scaler never sees a
  validation fold, and uses **balanced class weights**: the training sets are imbalanced (about
  1:2 to 1:7 victim to ImageNet images), and an unweighted regression flagging at P(OOD) > 0.5
  trades TNR for TPR (kx measured Caltech 97%/34% that way).  With balanced weights the classifier's
  own decision (0.5) weighs both errors equally, which is also the CV criterion (balanced accuracy);
  no threshold is tuned on any test set.

Both take uint8 (or float [0, 1]) image tensors, resize them to their input size, run on the device
of their network (in bf16 on a GPU, :mod:`kx_utils.core.devices`), return CPU tensors, and know nothing
of profiles or caches (those are in :mod:`kx_utils.experiments.detection`).  Higher score = more out of
distribution; ``flag`` marks P(OOD) > ``threshold``; a detector is the ``detector=`` callable of
:class:`kx_utils.core.api.PredictionAPI`.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...runtime.memo import Memo
from ..batching import batched_outputs, module_device
from ..images import resize_images
from ..models import Classifier, build_model, weights_identity
from ..recipe import Recipe
from ..train import fit, pick_device

OOD_LABEL = 0  # the paper: "label 0 to all ImageNet samples"
IN_LABEL = 1  # "... and 1 to samples from V's dataset"


def ood_logit(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """log P(OOD) - log P(in) of a two-class network's outputs for the float batch ``x``."""
    out = network(x)
    return out[:, OOD_LABEL] - out[:, IN_LABEL]


def labelled(in_images: torch.Tensor, ood_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sets stacked, with label 1 (victim's data) and 0 (ImageNet)."""
    labels = torch.cat([torch.full((len(in_images),), IN_LABEL), torch.full((len(ood_images),), OOD_LABEL)])
    return torch.cat([in_images, ood_images]), labels


_BACKBONES: Memo[Classifier] = Memo("frozen backbones", max_entries=4)


def frozen_backbone(arch: str) -> Classifier:
    """An ImageNet-pretrained backbone in eval mode whose weights never change (one per process and weights:
    kept in a :class:`~kx_utils.runtime.memo.Memo` under the architecture and its weights' identity)."""
    def build() -> Classifier:
        model = build_model(arch, num_classes=1, pretrained=True).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    return _BACKBONES.get((arch, weights_identity(arch)), build)


class BinaryDetector:
    """What the two detectors share: input resizing, ``flag`` at a probability threshold, a name."""

    def __init__(self, image_size: int, threshold: float = 0.5, batch_size: int = 256, name: str = ""):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be a probability in (0, 1), got {threshold}")
        self.image_size, self.threshold, self.batch_size = int(image_size), float(threshold), int(batch_size)
        self.name = name or type(self).__name__
        self.info: dict = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.image_size} px)"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` at the detector's input size (uint8 stays uint8)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch of RGB images N x 3 x H x W, got shape {tuple(images.shape)}")
        if images.shape[-1] == self.image_size and images.shape[-2] == self.image_size:
            return images
        if images.dtype == torch.uint8:
            return resize_images(images, self.image_size)
        return F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                             antialias=True, align_corners=False)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flag(self, images: torch.Tensor) -> torch.Tensor:
        """True where the detector takes the query for an out-of-distribution (attacker's) image."""
        return self.score(images) > self.threshold

    __call__ = flag


class ScratchDetector(BinaryDetector):
    """A network trained from scratch on label 1 = victim's data, 0 = ImageNet (the paper's RN18/RN34)."""

    def __init__(self, arch: str, image_size: int, recipe: Recipe, *, seed: int = 0,
                 device: str | torch.device = "auto", batch_size: int = 256, name: str = "",
                 compile_model: bool = False):
        super().__init__(image_size, batch_size=batch_size, name=name or f"scratch-{arch}")
        self.arch, self.recipe, self.seed, self.compile_model = arch, recipe, seed, compile_model
        torch.manual_seed(seed)
        self.network = build_model(arch, 2, pretrained=False).to(pick_device(device)).eval()

    def fit(self, in_images: torch.Tensor, ood_images: torch.Tensor, *, checkpoint=None, progress: bool = False
            ) -> "ScratchDetector":
        images, labels = labelled(self.prepare(in_images), self.prepare(ood_images))
        device = module_device(self.network)
        history = fit(self.network, images, labels, self.recipe, seed=self.seed, device=device,
                      checkpoint=checkpoint, progress=progress, desc=f"detector {self.name}",
                      eval_batch_size=self.batch_size, compile_model=self.compile_model)
        self.network.to(device).eval()  # fit hands the model back on the CPU
        self.info.update(history=history, train_seconds=sum(r["train_seconds"] for r in history),
                         train_in=len(in_images), train_ood=len(ood_images))
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """log P(OOD) - log P(in) of each image (on the CPU)."""
        return batched_outputs(functools.partial(ood_logit, self.network), self.prepare(images), self.batch_size,
                               module_device(self.network)).cpu()

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """P(out of distribution) of each image."""
        return torch.sigmoid(self.logits(images))

    def state(self) -> dict:
        return {"state_dict": {k: v.cpu() for k, v in self.network.state_dict().items()}, **self.info}

    def load_state(self, blob: dict) -> "ScratchDetector":
        self.network.load_state_dict(blob["state_dict"])
        self.network.eval()
        self.info.update({k: v for k, v in blob.items() if k != "state_dict"})
        return self


def fit_logistic_cv(features: torch.Tensor, labels: torch.Tensor, folds: int, cs: Sequence[float] | int,
                    seed: int = 0, tol: float = 1e-4, max_iter: int = 1000) -> dict:
    """A balanced L2 logistic regression (L-BFGS) on standardised features, C chosen by k-fold CV.

    The scaler sits in the pipeline, so each CV fold standardises with its own training part;
    the criterion is balanced accuracy; the best C is refitted on all the data.  Returns plain
    tensors and numbers (the artifact), not the scikit-learn object.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if set(labels.unique().tolist()) != {OOD_LABEL, IN_LABEL}:
        raise ValueError(f"the detector needs both labels {OOD_LABEL} (ImageNet) and {IN_LABEL} (victim's data), "
                         f"got {sorted(labels.unique().tolist())}")
    smallest = int(torch.bincount(labels).min())
    if smallest < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} images of each label; the "
                         f"smaller label has {smallest}. Lower cv_folds or give more images")
    # sklearn's Cs as a count: that many strengths spaced evenly on a log scale from 1e-4 to 1e4
    cs = [float(c) for c in (np.logspace(-4, 4, cs) if isinstance(cs, int) else cs)]
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("logistic", LogisticRegression(solver="lbfgs", class_weight="balanced", tol=tol,
                                                         max_iter=max_iter))])
    search = GridSearchCV(pipeline, {"logistic__C": cs}, scoring="balanced_accuracy",
                          cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), refit=True)
    t0 = time.perf_counter()
    search.fit(features.detach().cpu().double().numpy(), labels.numpy())
    seconds = time.perf_counter() - t0
    scaler, logistic = search.best_estimator_.named_steps["scale"], search.best_estimator_.named_steps["logistic"]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return {
        "mean": torch.from_numpy(scaler.mean_).float(), "scale": torch.from_numpy(scale).float(),
        "coef": torch.from_numpy(logistic.coef_.reshape(-1)).float(),
        "intercept": torch.tensor(float(logistic.intercept_.reshape(-1)[0])),
        "C": float(search.best_params_["logistic__C"]), "Cs": cs,
        "cv_scores": [float(s) for s in search.cv_results_["mean_test_score"]],
        "cv_score": float(search.best_score_), "class_weight": "balanced",
        "fit_seconds": seconds, "train_size": int(len(labels)),
        "train_in": int((labels == IN_LABEL).sum()), "train_ood": int((labels == OOD_LABEL).sum()),
    }


class LogisticOODHead(nn.Module):
    """A fitted logistic regression on standardised features, as the OOD logit (the negative of the
    regression's log-odds of label 1)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float().reshape(-1))
        self.register_buffer("scale", scale.float().reshape(-1))
        self.register_buffer("coef", coef.float().reshape(-1))
        self.register_buffer("intercept", intercept.float().reshape(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.scale
        return -(z @ self.coef + self.intercept)


class FrozenBackboneLogistic(BinaryDetector):
    """A frozen pretrained backbone + a cross-validated, balanced logistic regression (the "CV" models).

    ``features_fn`` may replace the backbone's own feature computation (e.g. by a cached one);
    it takes uint8 images at ``image_size`` and returns penultimate features.
    """

    def __init__(self, backbone: Classifier, image_size: int, *, folds: int = 10,
                 cs: Sequence[float] | int = 10, seed: int = 0, tol: float = 1e-4, batch_size: int = 256,
                 features_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, name: str = ""):
        super().__init__(image_size, batch_size=batch_size, name=name or f"cv-{getattr(backbone, 'arch', 'backbone')}")
        self.backbone, self.folds, self.cs, self.seed, self.tol = backbone, folds, cs, seed, tol
        self.features_fn = features_fn
        self.head: LogisticOODHead | None = None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        images = self.prepare(images)
        if self.features_fn is not None:
            return self.features_fn(images)
        return batched_outputs(self.backbone.features, images, self.batch_size, module_device(self.backbone)).cpu()

    def fit(self, in_images: torch.Tensor, ood_images: torch.Tensor) -> "FrozenBackboneLogistic":
        return self.fit_features(self.features(in_images), self.features(ood_images))

    def fit_features(self, in_features: torch.Tensor, ood_features: torch.Tensor) -> "FrozenBackboneLogistic":
        features = torch.cat([in_features, ood_features])
        labels = torch.cat([torch.full((len(in_features),), IN_LABEL), torch.full((len(ood_features),), OOD_LABEL)])
        return self.load_state(fit_logistic_cv(features, labels, self.folds, self.cs, self.seed, self.tol))

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """P(OOD) from precomputed penultimate features."""
        if self.head is None:
            raise RuntimeError(f"{self.name} is not fitted: call fit(in_images, ood_images) first")
        with torch.no_grad():
            return torch.sigmoid(self.head(features.detach().float().cpu()))

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """P(out of distribution) of each image."""
        return self.score_features(self.features(images))

    def state(self) -> dict:
        return dict(self._blob)

    def load_state(self, blob: dict) -> "FrozenBackboneLogistic":
        self._blob = dict(blob)
        self.head = LogisticOODHead(blob["mean"], blob["scale"], blob["coef"], blob["intercept"])
        self.info.update({k: v for k, v in blob.items() if not isinstance(v, torch.Tensor)})
        return self
