"""The OOD baselines of Table 4 on the victim model: MSP, ODIN and Mahalanobis (pure tensors, no caches).

Every score is "higher = more out of distribution" (OOD is the positive class).
Images are uint8 ``N x 3 x H x W`` or floats in [0, 1]; they go batch by batch to
the device of the model's parameters and scores come back as CPU float tensors.
The model is put in ``eval()`` mode and only the input is ever differentiated
(``torch.autograd.grad``), so no parameter gets a ``.grad``.

- :class:`MSP` (Hendrycks & Gimpel, 2017): ``1 - max softmax``.
- :class:`ODIN` (Liang et al., 2018): temperature scaling and input pre-processing,
  ``x' = x - eps * sign(-grad_x log S_yhat(x; T))``, score ``1 - max softmax(f(x') / T)``.
  Liang's code perturbs the *normalised* input by ``eps / std`` per channel; that is
  a step of ``eps`` on the [0, 1] pixels, the unit used here.  As in their code the
  perturbed input is not clipped to [0, 1].  :func:`odin_grid` serves the tuning
  grid (one gradient per temperature for all epsilons).
- :class:`Mahalanobis` (Lee et al., NeurIPS 2018, pokaxpoka/deep_Mahalanobis_detector):
  per stage ``l`` of :func:`~kx_utils.core.detectors.layers.stage_features`, class means and
  one covariance of the class-centred features; the input moves by
  ``eps * sign(grad_x M_l)`` towards its closest class (``M_l``: squared distance to
  the closest mean, eps in [0, 1] pixel units as above); the layer score is ``M_l``
  at the moved input.  A logistic regression on the ``L`` layer scores (Lee et al.
  used ``LogisticRegressionCV``) and the noise size are chosen on the tuning sets by
  TPR at TNR 95% on those same sets, as Lee's code does with its validation sample.
  Deviations: the covariance is shrunk by Ledoit-Wolf by default (Lee: the empirical
  one), because the owner has few images per dimension (e.g. 1,280 dims on ~2,700
  images), where the empirical estimate is singular and its pseudo-inverse
  unstable (``shrinkage="empirical"`` is Lee's choice); the scores are standardised
  before the regression, whose ``C`` is cross-validated by log-loss (Lee: accuracy);
  distances are computed in float64.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..batching import device_batches, module_device
from ..selection import best
from .layers import stage_features
from .rates import tpr_at_tnr

LayersFn = Callable[..., Sequence[torch.Tensor]]  # (model, x, upto=None) -> [N x C_l per stage]


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0)


def _input_grad_sign(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``sign(grad_x sum(fn(x)))``, differentiating the input only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return grad.sign()


# ---------------------------------------------------------------- MSP and ODIN


class MSP:
    """Maximum softmax probability (Hendrycks & Gimpel): score ``1 - max softmax(f(x))``."""

    def __init__(self, model: nn.Module, batch_size: int = 128):
        self.model, self.batch_size = model.eval(), batch_size

    def fit(self, *args, **kwargs) -> "MSP":
        return self

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        model = self.model.eval()
        return _cat([(1.0 - F.softmax(model(x), 1).max(1).values).float().cpu()
                     for x in device_batches(images, self.batch_size, module_device(model))])


def odin_grid(model: nn.Module, images: torch.Tensor, temperatures: Iterable[float], epsilons: Iterable[float],
              batch_size: int = 128) -> dict[tuple[float, float], torch.Tensor]:
    """ODIN's score for every ``(temperature, epsilon)`` pair (epsilon in [0, 1] pixel units)."""
    temperatures, epsilons = [float(t) for t in temperatures], [float(e) for e in epsilons]
    if any(t <= 0 for t in temperatures) or any(e < 0 for e in epsilons):
        raise ValueError(f"temperatures must be > 0 and epsilons >= 0, got {temperatures} and {epsilons}")
    model = model.eval()
    out = {(t, e): [] for t in temperatures for e in epsilons}
    for x in device_batches(images, batch_size, module_device(model)):
        for t in temperatures:
            sign = None
            if any(e > 0 for e in epsilons):  # log S_yhat(x; T) rises along its gradient's sign
                sign = _input_grad_sign(lambda v, t=t: F.log_softmax(model(v) / t, 1).max(1).values, x)
            with torch.no_grad():
                for e in epsilons:
                    moved = x + e * sign if e > 0 else x
                    out[(t, e)].append((1.0 - F.softmax(model(moved) / t, 1).max(1).values).float().cpu())
    return {key: _cat(parts) for key, parts in out.items()}


def choose_odin(in_grid: dict[tuple[float, float], torch.Tensor], ood_grid: dict[tuple[float, float], torch.Tensor],
                tnr: float) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
    """The ``(temperature, epsilon)`` of :func:`odin_grid` scores with the highest TPR at TNR ``tnr`` on the two
    tuning sets (ties: the first in the grid's order), and every pair's TPR."""
    if list(in_grid) != list(ood_grid) or not in_grid:
        raise ValueError(f"the two ODIN grids need the same pairs, got {list(in_grid)} and {list(ood_grid)}")
    criteria = {pair: tpr_at_tnr(in_grid[pair], ood_grid[pair], tnr) for pair in in_grid}
    return best(criteria, criteria.__getitem__, ties="first"), criteria


class ODIN:
    """ODIN (Liang et al.) at one temperature and perturbation size (their CIFAR defaults: T=1000, 0.0014);
    :meth:`tuned` chooses both on tuning sets, as Liang et al.'s code does."""

    def __init__(self, model: nn.Module, temperature: float = 1000.0, epsilon: float = 0.0014,
                 batch_size: int = 128):
        self.model, self.batch_size = model.eval(), batch_size
        self.temperature, self.epsilon = float(temperature), float(epsilon)

    def fit(self, *args, **kwargs) -> "ODIN":
        return self

    @classmethod
    def tuned(cls, model: nn.Module, in_images: torch.Tensor, ood_images: torch.Tensor,
              temperatures: Iterable[float], epsilons: Iterable[float], tnr: float = 0.95,
              batch_size: int = 128) -> "ODIN":
        """ODIN at the pair :func:`choose_odin` picks on the two tuning sets; ``criteria``: every pair's TPR."""
        temperatures, epsilons = list(temperatures), list(epsilons)
        (temperature, epsilon), criteria = choose_odin(
            odin_grid(model, in_images, temperatures, epsilons, batch_size),
            odin_grid(model, ood_images, temperatures, epsilons, batch_size), tnr)
        odin = cls(model, temperature, epsilon, batch_size)
        odin.criteria = criteria
        return odin

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return odin_grid(self.model, images, [self.temperature], [self.epsilon],
                         self.batch_size)[(self.temperature, self.epsilon)]


# ---------------------------------------------------------------- Mahalanobis


class TiedGaussians:
    """Class-conditional Gaussians with one shared covariance: ``means`` C x D, ``precision`` D x D (float64)."""

    def __init__(self, means: torch.Tensor, covariance: torch.Tensor, precision: torch.Tensor):
        self.means, self.covariance, self.precision = means, covariance, precision
        self._means_p = means @ precision  # C x D: mu_c^T P
        self._const = (self._means_p * means).sum(1)  # mu_c^T P mu_c

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
            shrinkage: str = "ledoit_wolf") -> "TiedGaussians":
        if shrinkage not in ("ledoit_wolf", "empirical"):
            raise ValueError(f"shrinkage must be 'ledoit_wolf' or 'empirical', got {shrinkage!r}")
        features = torch.as_tensor(features).detach().cpu().double()
        labels = torch.as_tensor(labels).cpu().long().reshape(-1)
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature vectors but {len(labels)} labels")
        num_classes = num_classes or int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=num_classes)
        if len(counts) > num_classes or (counts == 0).any():
            raise ValueError(f"every class of 0 .. {num_classes - 1} needs training features; counts {counts.tolist()}")
        means = torch.zeros(num_classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features)
        means /= counts[:, None]
        centred = features - means[labels]
        if shrinkage == "empirical":  # Lee et al.: sklearn's EmpiricalCovariance, precision = pinv
            covariance = centred.T @ centred / len(centred)
            precision = torch.linalg.pinv(covariance, hermitian=True)
        else:
            lw = LedoitWolf().fit(centred.numpy())
            covariance, precision = torch.from_numpy(lw.covariance_), torch.from_numpy(lw.precision_)
        return cls(means, covariance, precision)

    def to(self, device: torch.device) -> "TiedGaussians":
        if self.means.device == torch.device(device):
            return self
        return TiedGaussians(self.means.to(device), self.covariance.to(device), self.precision.to(device))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of each row to each class mean, N x C float64."""
        f = features.to(self.means.device, torch.float64)
        return ((f @ self.precision) * f).sum(1, keepdim=True) - 2 * f @ self._means_p.T + self._const[None, :]

    def min_distance(self, features: torch.Tensor) -> torch.Tensor:
        return self.distances(features).min(1).values


def fit_layer_pipeline(in_scores, ood_scores, seed: int = 0) -> Pipeline:
    """Standardisation + ``LogisticRegressionCV`` (OOD = 1, ``C`` chosen by up to 5-fold log-loss) on the
    ``N x L`` layer scores of the two tuning sets."""
    x_in, x_ood = np.asarray(in_scores, np.float64), np.asarray(ood_scores, np.float64)
    folds = min(5, len(x_in), len(x_ood))
    if folds < 1:
        raise ValueError("the layer ensemble needs in-distribution and OOD tuning images")
    if folds < 2:  # one image of a set: no cross-validation, sklearn's default C = 1
        logistic = LogisticRegression(C=1.0, max_iter=1000, tol=1e-8, random_state=seed)
    else:
        logistic = LogisticRegressionCV(Cs=10, cv=folds, l1_ratios=(0.0,), scoring="neg_log_loss", max_iter=1000,
                                        tol=1e-8, random_state=seed, use_legacy_attributes=False)
    return Pipeline([("scale", StandardScaler()), ("logistic", logistic)]).fit(
        np.concatenate([x_in, x_ood]), np.r_[np.zeros(len(x_in)), np.ones(len(x_ood))])


def ensemble_of(pipeline: Pipeline) -> dict:
    """A fitted pipeline as plain numbers (storable with ``torch.save``, loadable ``weights_only``)."""
    scale, logistic = pipeline.named_steps["scale"], pipeline.named_steps["logistic"]
    c = logistic.C_ if hasattr(logistic, "C_") else logistic.C
    return {"mean": scale.mean_.tolist(), "scale": scale.scale_.tolist(), "coef": logistic.coef_[0].tolist(),
            "intercept": float(logistic.intercept_[0]), "C": float(np.ravel(c)[0])}


def fit_layer_ensemble(in_scores, ood_scores, seed: int = 0) -> dict:
    """:func:`fit_layer_pipeline` as the dict of :func:`ensemble_of` (``coef``: weight per standardised layer)."""
    return ensemble_of(fit_layer_pipeline(in_scores, ood_scores, seed))


def ensemble_scores(ensemble: dict, layer_scores) -> torch.Tensor:
    """The ensemble's log-odds of OOD (the pipeline's ``decision_function``) for an ``N x L`` matrix."""
    matrix = torch.as_tensor(layer_scores).detach().cpu().double().reshape(-1, len(ensemble["coef"]))
    mean, scale, coef = (torch.tensor(ensemble[k], dtype=torch.float64) for k in ("mean", "scale", "coef"))
    return (((matrix - mean) / scale) @ coef + ensemble["intercept"]).float()


def choose_layer_ensemble(in_grid: dict[float, torch.Tensor], ood_grid: dict[float, torch.Tensor], tnr: float,
                          seed: int = 0) -> tuple[float, Pipeline, dict[float, float]]:
    """Lee et al.'s choice of the noise size: per size (ascending), a layer regression
    (:func:`fit_layer_pipeline`) on the ``N x L`` layer scores of both tuning sets, judged by the TPR at TNR
    ``tnr`` of its scores (:func:`ensemble_scores`) on these same sets; the best size (ties: the smallest),
    its pipeline, and every size's TPR."""
    if sorted(in_grid) != sorted(ood_grid) or not in_grid:
        raise ValueError(f"the two grids need the same epsilons, got {sorted(in_grid)} and {sorted(ood_grid)}")
    pipelines, criteria = {}, {}
    for eps in sorted(in_grid):
        pipelines[eps] = pipeline = fit_layer_pipeline(in_grid[eps], ood_grid[eps], seed)
        ensemble = ensemble_of(pipeline)
        criteria[eps] = tpr_at_tnr(ensemble_scores(ensemble, in_grid[eps]), ensemble_scores(ensemble, ood_grid[eps]),
                                   tnr)
    chosen = best(criteria, criteria.__getitem__, ties="first")
    return chosen, pipelines[chosen], criteria


class Mahalanobis:
    """Lee et al.'s Mahalanobis detector: per-stage tied Gaussians, input pre-processing, a layer ensemble.

    ``layers``: indices into the stages of ``layers_fn`` (default all; see
    :mod:`kx_utils.core.detectors.layers`).  ``layers_fn(model, x, upto=None)`` returns the
    pooled features of the stages ``0 .. upto`` (default :func:`stage_features`).
    After :meth:`fit` and :meth:`fit_ensemble`: ``gaussians`` (one
    :class:`TiedGaussians` per layer, on the model's device), ``epsilon`` (chosen),
    ``pipeline`` (scaler + logistic regression; ``ensemble``: the same as plain
    numbers), ``criteria`` (eps -> tuning TPR at TNR ``tnr``) and ``layer_weights``
    (the regression's weight per standardised layer score).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int] | None = None, shrinkage: str = "ledoit_wolf",
                 batch_size: int = 128, layers_fn: LayersFn = stage_features, tnr: float = 0.95, seed: int = 0):
        self.model, self.layers_fn, self.batch_size, self.tnr = model.eval(), layers_fn, batch_size, tnr
        self.seed = seed  # of the layer regression's cross-validation
        self.layers = None if layers is None else [int(i) for i in layers]
        self.shrinkage = shrinkage
        self.gaussians: list[TiedGaussians] = []
        self.epsilon: float | None = None
        self.pipeline: Pipeline | None = None
        self.ensemble: dict | None = None
        self.criteria: dict[float, float] = {}
        self.layer_weights: torch.Tensor | None = None

    def _stage(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return self.layers_fn(self.model, x, upto=layer)[layer]

    def fit(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> "Mahalanobis":
        """Fit the Gaussians of every layer on the (in-distribution, labelled) ``images``."""
        model, device = self.model.eval(), module_device(self.model)
        parts: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for x in device_batches(images, self.batch_size, device):
                stages = self.layers_fn(model, x, upto=None if self.layers is None else max(self.layers))
                if self.layers is None:
                    self.layers = list(range(len(stages)))
                parts.append([stages[i].double().cpu() for i in self.layers])
        if not parts:
            raise ValueError("no images to fit the Gaussians on")
        self.gaussians = [TiedGaussians.fit(torch.cat([p[j] for p in parts]), labels, num_classes,
                                            self.shrinkage).to(device) for j in range(len(self.layers))]
        return self

    def layer_score_grid(self, images: torch.Tensor, epsilons: Iterable[float]) -> dict[float, torch.Tensor]:
        """``eps -> N x L`` layer scores (min squared distance at the moved input); one gradient per layer."""
        if not self.gaussians:
            raise RuntimeError("fit the Gaussians first: Mahalanobis.fit(images, labels)")
        epsilons = sorted({float(e) for e in epsilons})
        if any(e < 0 for e in epsilons):
            raise ValueError(f"epsilons must be >= 0, got {epsilons}")
        model, device = self.model.eval(), module_device(self.model)
        gaussians = self.gaussians = [g.to(device) for g in self.gaussians]
        moved_eps = [e for e in epsilons if e > 0]
        out = {e: [] for e in epsilons}
        for x in device_batches(images, self.batch_size, device):
            columns = {e: [] for e in epsilons}
            if 0.0 in columns:
                with torch.no_grad():
                    stages = self.layers_fn(model, x, upto=max(self.layers))
                    columns[0.0] = [g.min_distance(stages[i]) for g, i in zip(gaussians, self.layers, strict=True)]
            for g, layer in zip(gaussians, self.layers, strict=True):
                if not moved_eps:
                    break
                sign = _input_grad_sign(lambda v, g=g, layer=layer: g.min_distance(self._stage(v, layer)), x)
                with torch.no_grad():
                    for e in moved_eps:  # towards the closest class: the distance falls
                        columns[e].append(g.min_distance(self._stage(x - e * sign, layer)))
            for e in epsilons:
                out[e].append(torch.stack(columns[e], 1).float().cpu())
        return {e: _cat(parts).reshape(-1, len(self.layers)) for e, parts in out.items()}

    def layer_scores(self, images: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """The ``N x L`` layer scores at one perturbation size."""
        return self.layer_score_grid(images, [epsilon])[float(epsilon)]

    def fit_ensemble(self, in_images: torch.Tensor, ood_images: torch.Tensor,
                     epsilons: Iterable[float] = (0.0,)) -> "Mahalanobis":
        """Choose the noise size and fit the layer regression on tuning sets (in-distribution vs OOD)."""
        epsilons = list(epsilons)
        return self.fit_ensemble_scores(self.layer_score_grid(in_images, epsilons),
                                        self.layer_score_grid(ood_images, epsilons))

    def fit_ensemble_scores(self, in_grid: dict[float, torch.Tensor],
                            ood_grid: dict[float, torch.Tensor]) -> "Mahalanobis":
        """:meth:`fit_ensemble` from precomputed ``eps -> N x L`` layer scores of both tuning sets: the noise
        size, regression and criteria of :func:`choose_layer_ensemble` (at TNR ``tnr``)."""
        self.epsilon, self.pipeline, self.criteria = choose_layer_ensemble(in_grid, ood_grid, self.tnr, self.seed)
        self.ensemble = ensemble_of(self.pipeline)
        self.layer_weights = torch.tensor(self.ensemble["coef"], dtype=torch.float32)
        return self

    def score_layer_scores(self, layer_scores: torch.Tensor) -> torch.Tensor:
        """The ensemble's log-odds of OOD for a precomputed ``N x L`` layer-score matrix (at ``self.epsilon``)."""
        if self.ensemble is None:
            raise RuntimeError("fit the layer ensemble first: Mahalanobis.fit_ensemble(in_images, ood_images, ...)")
        return ensemble_scores(self.ensemble, layer_scores)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """The ensemble's log-odds of OOD (higher = more OOD) at the chosen noise size."""
        if self.ensemble is None:
            raise RuntimeError("fit the layer ensemble first: Mahalanobis.fit_ensemble(in_images, ood_images, ...)")
        return self.score_layer_scores(self.layer_scores(images, self.epsilon))
