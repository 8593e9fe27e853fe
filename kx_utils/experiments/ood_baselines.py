"""Table 4's baselines on the victim model: MSP, ODIN and Lee et al.'s multi-layer Mahalanobis, tuned as the
published methods were ("published") and on the attacker's own query distribution ("fair"), with every score
cached.

The estimators themselves (tensors in, scores out, higher = more out of distribution) are
:mod:`kx_utils.core.detectors.baselines`; this module runs them on a victim with a profile's sets and the
cache, for :func:`kx_utils.experiments.detection.table4_result`.
"""

from __future__ import annotations

import time
from typing import Iterable

import torch

from ..config.schema import Profile, evaluation_batch_size
from ..core.detectors import baselines as B
from ..core.detectors.layers import stage_names
from ..core.detectors.rates import auroc, fpr_at_tpr
from ..core.train import pick_device
from ..runtime.artifacts import ArtifactStore, artifact_kind, settings_key
from ..runtime.memo import Memo
from .detection_sets import DetectionData, images_digest
from .victims import Victim

OOD_SCORES = artifact_kind("ood_scores", 2)  # MSP / ODIN / per-layer Mahalanobis scores (v2: multi-layer)
BASELINE_TUNING = artifact_kind("baseline_tuning", 2)  # ODIN and Mahalanobis settings (v2: fair / published)

BASELINE_COLUMNS = ("msp", "odin_fair", "odin_published", "mahalanobis_fair", "mahalanobis_published")
VARIANTS = ("fair", "published")
OOD_SETS = {"imagenet": "ood_test", "openimages": "openimages_test"}

# fitted Mahalanobis detectors of this process: one victim at a time, per-layer precisions are large
_GAUSSIANS: Memo["B.Mahalanobis"] = Memo("fitted Mahalanobis Gaussians", max_entries=1)


def victim_mahalanobis(profile: Profile, victim: Victim, data: DetectionData) -> "B.Mahalanobis":
    """Lee et al.'s per-layer Gaussians of the victim, fitted on ``data.in_fit`` (not on the tuning images)."""
    device, batch_size = pick_device(profile.device), min(128, profile.eval_batch_size)
    key = settings_key({"victim": victim.settings, "data": data.settings, "shrinkage": profile.mahalanobis_shrinkage,
                        "device": str(device), "batch_size": batch_size})

    def fitted() -> "B.Mahalanobis":
        model = victim.model.to(device).eval()
        return B.Mahalanobis(model, shrinkage=profile.mahalanobis_shrinkage, batch_size=batch_size).fit(
            data.in_fit.images, data.in_fit.labels, len(victim.classes))
    return _GAUSSIANS.get(key, fitted)


def _score_settings(victim: Victim, method: str, params: dict, images: torch.Tensor) -> dict:
    return {"victim": victim.settings, "method": method, "params": params, "images": images_digest(images)}


def msp_scores(profile: Profile, victim: Victim, images: torch.Tensor, store: ArtifactStore) -> torch.Tensor:
    model = victim.model.to(pick_device(profile.device)).eval()
    msp = B.MSP(model, batch_size=evaluation_batch_size(profile))
    return store.cached(OOD_SCORES, _score_settings(victim, "msp", {}, images),
                        lambda: {"scores": msp.score(images)})["scores"]


def odin_scores(profile: Profile, victim: Victim, images: torch.Tensor, pairs: Iterable[tuple[float, float]],
                store: ArtifactStore) -> dict[tuple[float, float], torch.Tensor]:
    """ODIN scores at each (temperature, epsilon) pair, each cached; missing ones computed in one grid pass."""
    pairs = [(float(t), float(e)) for t, e in pairs]
    settings = {p: _score_settings(victim, "odin", {"temperature": p[0], "epsilon": p[1]}, images) for p in pairs}
    out = {p: store.load(OOD_SCORES, s) for p, s in settings.items()}
    missing = [p for p, v in out.items() if v is None]
    if missing:
        model = victim.model.to(pick_device(profile.device)).eval()
        grid = B.odin_grid(model, images, sorted({t for t, _ in missing}), sorted({e for _, e in missing}),
                           batch_size=min(128, profile.eval_batch_size))
        for p in missing:
            out[p] = {"scores": grid[p]}
            store.save(OOD_SCORES, settings[p], out[p])
    return {p: v["scores"] for p, v in out.items()}


def mahalanobis_layer_scores(profile: Profile, victim: Victim, data: DetectionData, images: torch.Tensor,
                             epsilons: Iterable[float], store: ArtifactStore) -> dict[float, torch.Tensor]:
    """N x layers Mahalanobis scores per noise size (each layer's input pre-processed for that layer),
    each cached; the missing ones computed in one pass (one gradient per layer serves every size)."""
    epsilons = [float(e) for e in epsilons]
    fitted = {"fitted_on": data.settings, "shrinkage": profile.mahalanobis_shrinkage}
    settings = {e: _score_settings(victim, "mahalanobis_layers", {"epsilon": e, **fitted}, images) for e in epsilons}
    out = {e: store.load(OOD_SCORES, s) for e, s in settings.items()}
    missing = [e for e, v in out.items() if v is None]
    if missing:
        grid = victim_mahalanobis(profile, victim, data).layer_score_grid(images, missing)
        for e in missing:
            out[e] = {"scores": grid[e]}
            store.save(OOD_SCORES, settings[e], out[e])
    return {e: v["scores"] for e, v in out.items()}


def _tuning_sets(data: DetectionData, variant: str, ood: str) -> tuple[torch.Tensor, torch.Tensor]:
    if variant == "fair":
        return data.in_tune.images, data.ood_tune.images
    if variant == "published":
        return data.validation["in"].images, data.validation[ood].images
    raise ValueError(f"unknown tuning variant {variant!r}; valid: {', '.join(VARIANTS)}")


def tune_baselines(profile: Profile, victim: Victim, data: DetectionData, variant: str, ood: str = "imagenet",
                   store: ArtifactStore | None = None) -> dict:
    """ODIN's (T, eps) and Mahalanobis's noise and layer ensemble, chosen by TPR at ``baseline_tnr`` on
    the ``variant``'s tuning sets ("fair": no OOD test image; "published": a validation sample of the
    in-distribution and of the ``ood`` test set, as Lee et al.'s and Liang et al.'s code)."""
    store = store or ArtifactStore(profile.cache_root)
    in_images, ood_images = _tuning_sets(data, variant, ood)
    settings = {"victim": victim.settings, "variant": variant, "in": images_digest(in_images),
                "ood": images_digest(ood_images), "tnr": profile.baseline_tnr, "fitted_on": data.settings,
                "odin_temperatures": list(profile.odin_temperatures), "odin_epsilons": list(profile.odin_epsilons),
                "mahalanobis_epsilons": list(profile.mahalanobis_epsilons),
                "shrinkage": profile.mahalanobis_shrinkage, "seed": profile.seed}
    found = store.load(BASELINE_TUNING, settings)
    if found is not None:
        return found
    t0 = time.perf_counter()
    pairs = [(t, e) for t in profile.odin_temperatures for e in profile.odin_epsilons]
    (temperature, epsilon), odin_tprs = B.choose_odin(odin_scores(profile, victim, in_images, pairs, store),
                                                      odin_scores(profile, victim, ood_images, pairs, store),
                                                      profile.baseline_tnr)
    maha_eps, pipeline, maha_tprs = B.choose_layer_ensemble(
        mahalanobis_layer_scores(profile, victim, data, in_images, profile.mahalanobis_epsilons, store),
        mahalanobis_layer_scores(profile, victim, data, ood_images, profile.mahalanobis_epsilons, store),
        profile.baseline_tnr, seed=profile.seed)
    ensemble = B.ensemble_of(pipeline)
    result = {"variant": variant, "ood": ood if variant == "published" else "imagenet_train_held_out",
              "odin_temperature": temperature, "odin_epsilon": epsilon,
              "odin_tuning_tpr": odin_tprs[(temperature, epsilon)], "mahalanobis_epsilon": maha_eps,
              "mahalanobis_tuning_tpr": maha_tprs[maha_eps], "mahalanobis_ensemble": ensemble,
              "mahalanobis_layer_weights": [float(w) for w in ensemble["coef"]],
              "mahalanobis_layers": stage_names(victim.model),
              "criterion": f"TPR at TNR {profile.baseline_tnr:.0%}", "tuning_in": len(in_images),
              "tuning_ood": len(ood_images),
              "odin_grid": [{"temperature": t, "epsilon": e, "tpr": tpr} for (t, e), tpr in odin_tprs.items()],
              "mahalanobis_grid": [{"epsilon": float(e), "tpr": tpr} for e, tpr in maha_tprs.items()],
              "seconds": time.perf_counter() - t0}
    store.save(BASELINE_TUNING, settings, result)
    return result


def baseline_scores(profile: Profile, victim: Victim, data: DetectionData, tuning: dict, images: torch.Tensor,
                    store: ArtifactStore) -> dict[str, torch.Tensor]:
    """ODIN and Mahalanobis scores of ``images`` at one tuning's settings."""
    pair = (tuning["odin_temperature"], tuning["odin_epsilon"])
    eps = tuning["mahalanobis_epsilon"]
    layers = mahalanobis_layer_scores(profile, victim, data, images, [eps], store)[eps]
    return {"odin": odin_scores(profile, victim, images, [pair], store)[pair],
            "mahalanobis": B.ensemble_scores(tuning["mahalanobis_ensemble"], layers)}


def score_in_one_pass(profile: Profile, victim: Victim, data: DetectionData, images: torch.Tensor,
                       tunings: list[dict], store: ArtifactStore) -> None:
    """Compute (and cache) the ODIN and Mahalanobis scores of ``images`` at every tuning's settings in one
    pass: ODIN needs one gradient per temperature, Mahalanobis one per layer, whatever the epsilons."""
    odin_scores(profile, victim, images, {(t["odin_temperature"], t["odin_epsilon"]) for t in tunings}, store)
    mahalanobis_layer_scores(profile, victim, data, images, sorted({t["mahalanobis_epsilon"] for t in tunings}),
                             store)


def rate_columns(prefix: str, s_in: torch.Tensor, s_ood: torch.Tensor) -> dict:
    return {f"{prefix}_auroc": auroc(s_in, s_ood), f"{prefix}_fpr_at_95tpr": fpr_at_tpr(s_in, s_ood, 0.95)}


