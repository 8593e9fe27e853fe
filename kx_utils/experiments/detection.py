"""Tables 3 and 4 and the filter of Section 4, built from the estimators with the profile's settings.

This is the orchestration layer: it chooses the data (:mod:`.sets`), fits the estimators
(:mod:`.binary`, :mod:`.baselines`), caches what is expensive (backbone features, fitted detectors,
baseline scores) in the artifact store, and measures the rates (:mod:`.rates`).

Baselines come in two variants, both reported:

- **published** — as Lee et al.'s and Liang et al.'s code run them (the paper used Lee et al.'s
  repository): ODIN's (T, eps) and Mahalanobis's noise and layer-ensemble weights fitted on a small
  validation sample of the in-distribution *test* set and of the OOD *test* set being measured.  An
  optimistic upper bound: a defender does not hold the attacker's queries in advance.
- **fair** — tuned with what our detector may use: victim training images the Mahalanobis Gaussians
  were not fitted on, and ImageNet *training* images from the defender's share, held out from our
  detector's training set.  No OOD test image takes part.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..config.schema import Profile, evaluation_batch_size
from ..config.seeds import stream_seed
from ..core.api import PredictionAPI
from ..core.batching import batched_outputs, module_device
from ..core.detectors.binary import (
    FrozenBackboneLogistic,
    ScratchDetector,
    frozen_backbone,
    ood_logit,
)
from ..core.detectors.rates import (
    auroc,
    rates,
    tpr_at_tnr,
    true_negative_rate,
)
from ..core.models import SHORT_NAMES, weights_identity
from ..core.selection import best
from ..core.train import pick_device
from ..data.catalog import dataset_info
from ..runtime.artifacts import ArtifactStore, artifact_kind, settings_key
from .attack import answer_transfer_set
from .detection_sets import (
    DetectionData,
    detection_data,
    imagenet_pool,
    images_digest,
    unseen_mask,
)
from .ood_baselines import (  # noqa: F401 (BASELINE_COLUMNS: the report's and the notebooks' column names)
    BASELINE_COLUMNS,
    OOD_SETS,
    VARIANTS,
    baseline_scores,
    msp_scores,
    rate_columns,
    score_in_one_pass,
    tune_baselines,
)
from .victims import get_victim, victim_spec

FEATURES = artifact_kind("features", 1)  # penultimate features of a frozen backbone
DETECTOR = artifact_kind("detector", 2)  # a fitted binary detector (v2: balanced, scaler inside the CV)
DETECTOR_OUTPUTS = artifact_kind("detector_outputs", 1)  # a scratch detector's OOD logits
FILTER_BENIGN = artifact_kind("filter_benign", 1)  # the filter's flags on the victim's test images

TABLE3_VICTIM = "cubs"  # Table 3 compares detector architectures on CUBS


# ---------------------------------------------------------------- cached outputs


def cached_outputs(store: ArtifactStore, kind: str, producer: dict, fn: Callable[[torch.Tensor], torch.Tensor],
                   images: torch.Tensor, batch_size: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """``fn`` over ``images`` in batches on ``device``, stored under ``kind``: ``(outputs, from_cache)``."""
    settings = {"producer": producer, "images": images_digest(images), "count": len(images)}
    found = store.load(kind, settings)
    if found is not None:
        return found["outputs"], True
    outputs = batched_outputs(fn, images, batch_size, device).cpu()
    store.save(kind, settings, {"outputs": outputs})
    return outputs, False


def backbone_features(profile: Profile, arch: str, images: torch.Tensor, store: ArtifactStore | None = None,
                      with_source: bool = False):
    """Penultimate features of the frozen pretrained ``arch`` for uint8 ``images``, cached.

    With ``with_source`` returns ``(features, from_cache)``.
    """
    store = store or ArtifactStore(profile.cache_root)
    device = pick_device(profile.device)
    backbone = frozen_backbone(arch).to(device)
    producer = {"backbone": arch, "weights": weights_identity(arch)}
    feats, from_cache = cached_outputs(store, FEATURES, producer, backbone.features, images,
                                       evaluation_batch_size(profile), device)
    return (feats, from_cache) if with_source else feats


# ---------------------------------------------------------------- our detector


def detector_row_name(arch: str, starred: bool, cv: bool) -> str:
    """The paper's row names: RN18, RN34*, RN101*CV; mini backbones as MNV2*CV, EffL0*CV."""
    return f"{SHORT_NAMES[arch]}{'*' if starred else ''}{'CV' if cv else ''}"


# The paper's Table 3 row each mini row stands in for: MobileNetV2 stands in for ResNet34 throughout
# mini; EfficientNet-Lite0 has no counterpart in the paper.
CV_STAND_INS = {"mobilenet_v2": "RN34*CV", "efficientnet_lite0": None}


def paper_row(arch: str, starred: bool, cv: bool) -> str | None:
    name = detector_row_name(arch, starred, cv)
    if arch.startswith("resnet"):
        return name
    return CV_STAND_INS.get(arch) if cv and starred else None


def _detector_name(victim_key: str, row: str, settings: dict) -> str:
    return f"{dataset_info(victim_spec(victim_key).dataset).paper_name}-{row}@{settings_key(settings)[:8]}"


def cv_detector(profile: Profile, victim_key: str, arch: str, starred: bool = True,
                store: ArtifactStore | None = None, data: DetectionData | None = None) -> FrozenBackboneLogistic:
    """A frozen pretrained ``arch`` + balanced, cross-validated logistic regression; fitted once, cached."""
    store = store or ArtifactStore(profile.cache_root)
    data = data or detection_data(profile, victim_key, store)
    settings = {"kind": "cv", "data": data.settings, "arch": arch, "weights": weights_identity(arch),
                "starred": starred, "overlap": data.overlap if starred else [], "folds": profile.cv_folds,
                "cs": profile.detector_cv_cs, "tol": profile.detector_cv_tol, "seed": profile.seed,
                "scoring": "balanced_accuracy", "class_weight": "balanced", "scaler": "inside the CV"}
    row = detector_row_name(arch, starred, cv=True)
    detector = FrozenBackboneLogistic(
        frozen_backbone(arch).to(pick_device(profile.device)), data.image_size, folds=profile.cv_folds,
        cs=profile.detector_cv_cs, seed=profile.seed, tol=profile.detector_cv_tol,
        batch_size=evaluation_batch_size(profile), name=_detector_name(victim_key, row, settings),
        features_fn=lambda images: backbone_features(profile, arch, images, store))
    blob = store.load(DETECTOR, settings)
    if blob is None:  # features of the whole training split (cached once, shared by every variant)
        in_features = detector.features(data.in_train.images)
        if starred:
            in_features = in_features[data.kept_mask(data.in_train)]
        detector.fit_features(in_features, detector.features(data.ood_train.images))
        store.save(DETECTOR, settings, detector.state())
    else:
        detector.load_state(blob)
    detector.info.update(arch=arch, starred=starred, cv=True, row=row,
                         overlap=list(data.overlap) if starred else [])
    return detector


def scratch_detector(profile: Profile, victim_key: str, arch: str, starred: bool = False,
                     store: ArtifactStore | None = None, data: DetectionData | None = None) -> ScratchDetector:
    """A ResNet trained from scratch on label 0 = ImageNet, 1 = victim's data (the paper's RN18/RN34),
    with the profile's ``detector_recipe`` on at most ``detector_scratch_train`` images per side."""
    store = store or ArtifactStore(profile.cache_root)
    data = data or detection_data(profile, victim_key, store)
    size = profile.detector_scratch_image_size or data.image_size
    settings = {"kind": "scratch", "data": data.settings, "arch": arch, "starred": starred,
                "overlap": data.overlap if starred else [], "size": size, "cap": profile.detector_scratch_train,
                "recipe": profile.detector_recipe.as_dict(), "seed": profile.seed}
    row = detector_row_name(arch, starred, cv=False)
    detector = ScratchDetector(arch, size, profile.detector_recipe, seed=profile.seed, device=profile.device,
                               batch_size=evaluation_batch_size(profile), compile_model=profile.compile_models,
                               name=_detector_name(victim_key, row, settings))
    blob = store.load(DETECTOR, settings)
    if blob is None:
        in_train = data.kept(data.in_train) if starred else data.in_train
        in_train = in_train.capped(profile.detector_scratch_train, stream_seed(profile.seed, "scratch_detector_in"))
        ood_train = data.ood_train.capped(profile.detector_scratch_train,
                                           stream_seed(profile.seed, "scratch_detector_ood"))
        checkpoint = store.scratch_path(DETECTOR, settings, "ckpt")
        detector.fit(in_train.images, ood_train.images, checkpoint=checkpoint, progress=profile.progress)
        store.save(DETECTOR, settings, detector.state())
        checkpoint.unlink(missing_ok=True)
    else:
        detector.load_state(blob)
    detector.info.update(arch=arch, starred=starred, cv=False, row=row, image_size=size,
                         overlap=list(data.overlap) if starred else [])
    return detector


def detector_scores(profile: Profile, detector, images: torch.Tensor, store: ArtifactStore | None = None
                    ) -> torch.Tensor:
    """``detector.score(images)`` through the caches: a CV detector's features are cached by its
    ``features_fn``; a scratch detector's logits are cached here."""
    store = store or ArtifactStore(profile.cache_root)
    if isinstance(detector, FrozenBackboneLogistic):
        return detector.score(images)
    network = detector.network
    logits, _ = cached_outputs(store, DETECTOR_OUTPUTS, {"detector": detector.name},
                               lambda x: ood_logit(network, x),
                               detector.prepare(images), evaluation_batch_size(profile), module_device(network))
    return torch.sigmoid(logits)


def choose_cv_arch(profile: Profile, store: ArtifactStore | None = None) -> tuple[str, dict]:
    """The backbone of the Table 4 detector, and each candidate's CV score.

    The paper fixes ResNet101 (``profile.detector_arch``).  Otherwise: the backbone of
    ``detector_cv_archs`` whose starred CUBS detector has the best cross-validated balanced
    accuracy on its *training* data (ties: the first listed); no test set takes part.
    """
    if profile.detector_arch is not None:
        return profile.detector_arch, {}
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, TABLE3_VICTIM, store)
    scores = {arch: cv_detector(profile, TABLE3_VICTIM, arch, True, store, data).info["cv_score"]
              for arch in profile.detector_cv_archs}
    return best(profile.detector_cv_archs, scores.__getitem__, ties="first"), scores


def get_detector(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> FrozenBackboneLogistic:
    """The profile's detector for a victim (the paper: RN101*CV), trained once and cached."""
    store = store or ArtifactStore(profile.cache_root)
    arch, _ = choose_cv_arch(profile, store)
    return cv_detector(profile, victim_key, arch, starred=True, store=store)


def table3_rows(profile: Profile, store: ArtifactStore | None = None, victim_key: str = TABLE3_VICTIM) -> dict:
    """Table 3: every detector of the profile on CUBS.  TPR on the ImageNet test split; TNR on the
    same CUBS test images for every row (``tnr_kept_classes``: on the classes no row drops)."""
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, victim_key, store)
    models = [(arch, starred, False) for arch in profile.detector_scratch_archs for starred in (False, True)]
    models += [(arch, True, True) for arch in profile.detector_cv_archs]
    kept = data.kept_mask(data.in_test)
    rows = {}
    for arch, starred, cv in models:
        detector = (cv_detector if cv else scratch_detector)(profile, victim_key, arch, starred, store, data)
        s_in = detector_scores(profile, detector, data.in_test.images, store)
        s_ood = detector_scores(profile, detector, data.ood_test.images, store)
        s_open = detector_scores(profile, detector, data.openimages_test.images, store)
        flags_in = s_in > detector.threshold
        tpr, tnr = rates(s_ood > detector.threshold, flags_in)
        rows[detector_row_name(arch, starred, cv)] = {
            "tpr": tpr, "tnr": tnr, "auroc": auroc(s_in, s_ood),
            "tnr_kept_classes": true_negative_rate(flags_in[kept]) if kept.any() else None,
            "tpr_openimages": float((s_open > detector.threshold).double().mean()),
            "arch": arch, "pretrained": cv, "starred": starred, "paper_row": paper_row(arch, starred, cv),
            "classes_dropped": len(data.overlap) if starred else 0,
            "train_in": detector.info["train_in"], "train_ood": detector.info["train_ood"],
            "train_seconds": detector.info.get("train_seconds", detector.info.get("fit_seconds")),
            "cv_score": detector.info.get("cv_score"), "C": detector.info.get("C"),
            "image_size": detector.image_size, "detector": detector.name,
            "in_test": len(data.in_test), "ood_test": len(data.ood_test),
        }
    return rows


class Table4Result:
    """One victim's rows of Table 4 (a: ImageNet test, b: OpenImages test), the tunings and the scores."""

    def __init__(self, victim_key, victim_name, detector, row_a, row_b, tuning, scores):
        self.victim_key, self.victim_name, self.detector = victim_key, victim_name, detector
        self.row_a, self.row_b, self.tuning, self.scores = row_a, row_b, tuning, scores


def table4_result(profile: Profile, victim_key: str, store: ArtifactStore | None = None,
                  detector=None) -> Table4Result:
    """Our detector's TPR/TNR, AUROC and FPR at 95% TPR, and each baseline's TPR at our TNR and at
    ``baseline_tnr`` (plus AUROC and FPR95), on the same in-distribution test images for every column."""
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, victim_key, store)
    detector = detector or get_detector(profile, victim_key, store)
    victim = get_victim(profile, victim_key, store)
    in_images = data.in_test.images
    ours_in = detector_scores(profile, detector, in_images, store)
    msp_in = msp_scores(profile, victim, in_images, store)
    fair = tune_baselines(profile, victim, data, "fair", store=store)
    published = {ood: tune_baselines(profile, victim, data, "published", ood, store) for ood in OOD_SETS}
    # every setting the in-distribution test images are scored at, in one pass (ODIN: one gradient per
    # temperature; Mahalanobis: one per layer); the calls below then read them from the cache
    score_in_one_pass(profile, victim, data, in_images, [fair, *published.values()], store)
    fair_in = baseline_scores(profile, victim, data, fair, in_images, store)
    kept = data.kept_mask(data.in_test)
    flags_in = ours_in > detector.threshold
    rows, tuning, scores = {}, {"fair": fair}, {}
    for ood, attr in OOD_SETS.items():
        ood_images = getattr(data, attr).images
        tuning[f"published_{ood}"] = published[ood]
        score_in_one_pass(profile, victim, data, ood_images, [fair, published[ood]], store)
        pub_in = baseline_scores(profile, victim, data, published[ood], in_images, store)
        fair_ood = baseline_scores(profile, victim, data, fair, ood_images, store)
        pub_ood = baseline_scores(profile, victim, data, published[ood], ood_images, store)
        pair_in = {"ours": ours_in, "msp": msp_in, "odin_fair": fair_in["odin"],
                   "odin_published": pub_in["odin"], "mahalanobis_fair": fair_in["mahalanobis"],
                   "mahalanobis_published": pub_in["mahalanobis"]}
        pair_ood = {"ours": detector_scores(profile, detector, ood_images, store),
                    "msp": msp_scores(profile, victim, ood_images, store), "odin_fair": fair_ood["odin"],
                    "odin_published": pub_ood["odin"], "mahalanobis_fair": fair_ood["mahalanobis"],
                    "mahalanobis_published": pub_ood["mahalanobis"]}
        tpr, tnr = rates(pair_ood["ours"] > detector.threshold, flags_in)
        row = {"ours_tpr": tpr, "ours_tnr": tnr,
               "ours_tnr_kept_classes": true_negative_rate(flags_in[kept]) if kept.any() else None,
               **rate_columns("ours", pair_in["ours"], pair_ood["ours"])}
        for method in BASELINE_COLUMNS:
            row[f"{method}_tpr_at_ours"] = tpr_at_tnr(pair_in[method], pair_ood[method], tnr)
            row[f"{method}_tpr_at_95"] = tpr_at_tnr(pair_in[method], pair_ood[method], profile.baseline_tnr)
            row.update(rate_columns(method, pair_in[method], pair_ood[method]))
        row.update(classes_dropped=len(data.overlap), classes=data.in_train.num_classes,
                   in_test=len(in_images), ood_test=len(ood_images))
        rows[ood] = row
        scores[ood] = {"in": pair_in, "ood": pair_ood}
    return Table4Result(victim_key, victim.name, detector.name, rows["imagenet"], rows["openimages"], tuning,
                        scores)


# ---------------------------------------------------------------- the detector as a filter


def filter_report(profile: Profile, victim_key: str, detector=None, store: ArtifactStore | None = None,
                  action: str = "refuse") -> dict:
    """The detector in front of the victim's API: how many Knockoff queries and benign queries pass.

    The transfer set is the one :func:`kx_utils.experiments.attack.knockoff` sends with the profile's defaults,
    answered through a :class:`PredictionAPI` whose detector refuses (or reduces to a label) what it
    flags, cached as ``knockoff(..., detector=detector)`` would cache it.  The headline counts are
    over the queries **unseen** by the detector (from the attacker-only share of ImageNet); the
    counts over all queries, most of which the detector may have trained on, are given beside them.
    Benign queries are the victim's test images.
    """
    store = store or ArtifactStore(profile.cache_root)
    detector = detector or get_detector(profile, victim_key, store)
    victim = get_victim(profile, victim_key, store)
    data = detection_data(profile, victim_key, store)
    pool_images = imagenet_pool(profile, profile.image_size[victim_spec(victim_key).dataset], store)
    answered = answer_transfer_set(profile, victim, store=store, detector=detector, detector_action=action,
                                   pool_images=pool_images)
    flagged = answered["flagged"].bool()
    unseen = unseen_mask(data, [pool_images.files[i] for i in answered["indices"].tolist()])
    benign_settings = {"detector": detector.name, "victim": victim.settings, "action": action,
                       "images": images_digest(data.in_test.images)}
    benign = store.load(FILTER_BENIGN, benign_settings)
    if benign is None:
        response = PredictionAPI(victim.model, mode="probs", detector=detector, detector_action=action,
                                 batch_size=evaluation_batch_size(profile), device=profile.device
                                 ).respond(data.in_test.images)
        benign = {"flagged": response.flagged}
        store.save(FILTER_BENIGN, benign_settings, benign)
    benign_flagged = benign["flagged"].bool()
    n_unseen = int(unseen.sum())
    return {
        "victim": victim_key, "name": victim.name, "detector": detector.name, "action": action,
        "unseen_queries": n_unseen, "unseen_flagged": int(flagged[unseen].sum()),
        "unseen_flagged_rate": float(flagged[unseen].double().mean()) if n_unseen else None,
        "transfer_queries": len(flagged), "transfer_flagged": int(flagged.sum()),
        "transfer_passed": int((~flagged).sum()), "transfer_flagged_rate": float(flagged.double().mean()),
        "benign_queries": len(benign_flagged), "benign_passed": int((~benign_flagged).sum()),
        "benign_flagged": int(benign_flagged.sum()), "benign_flagged_rate": float(benign_flagged.double().mean()),
        "queries_sent": int(answered["queries"]),
    }


def unseen_imagenet_queries(profile: Profile, victim_key: str, n: int, store: ArtifactStore | None = None
                            ) -> torch.Tensor:
    """The first ``n`` queries of the profile's Knockoff transfer set (same seed and order) that no
    detector of ``victim_key`` trained or was tuned on -- or all of them where fewer are unseen.

    The paper's defender trains on all 90,000 ImageNet train images (``detector_ood_share=1.0``), which
    leaves the 10,000 test images unseen: fewer than the 97,280 Bing queries of 5.2.2.  The caller
    compares on the images there are and reports their number (``len`` of the result).
    """
    from .attack import sample_transfer_set
    store = store or ArtifactStore(profile.cache_root)
    data = detection_data(profile, victim_key, store)
    pool_images = imagenet_pool(profile, profile.image_size[victim_spec(victim_key).dataset], store)
    order = sample_transfer_set(len(pool_images), len(pool_images), profile.seed)
    unseen = unseen_mask(data, [pool_images.files[i] for i in order.tolist()])
    chosen = order[unseen][:n]
    if len(chosen) == 0:
        raise ValueError(f"no ImageNet pool image is unseen by the detector of {victim_key} (detector_ood_share="
                         f"{profile.detector_ood_share}): lower detector_ood_share, or give the pool a test split")
    return pool_images.images[chosen]


def overlap_rows(profile: Profile, victim_keys: Iterable[str], store: ArtifactStore | None = None) -> dict:
    """Per victim: its classes that overlap ImageNet (what the starred detectors leave out)."""
    from ..data.overlap import overlap_list
    from .detection_sets import dataset_folder
    store = store or ArtifactStore(profile.cache_root)
    rows = {}
    for key in victim_keys:
        data = detection_data(profile, key, store)
        entries = {e.class_name: e for e in overlap_list(dataset_folder(profile, victim_spec(key).dataset))}
        rows[key] = {"classes": data.in_train.num_classes, "overlapping": len(data.overlap),
                     "share": len(data.overlap) / data.in_train.num_classes,
                     "names": data.overlap_names,
                     "imagenet_matches": [f"{data.in_train.classes[c]} = {entries[data.class_folders[c]].imagenet_name} "
                                          f"({entries[data.class_folders[c]].wnid})" for c in data.overlap],
                     "train_kept": len(data.kept(data.in_train)), "train": len(data.in_train),
                     "test_kept": len(data.kept(data.in_test)), "test": len(data.in_test)}
    return rows


def api_demo(profile: Profile, victim_key: str, per_side: int = 4, store: ArtifactStore | None = None) -> list[dict]:
    """The detector in front of the victim's API on a handful of queries: ``per_side`` ImageNet test
    images, then as many of the victim's own test images, each answered with a label when flagged.

    One dict per query: its origin, whether it was flagged, the answer's top value and its number of
    non-zero entries (1 for a label, the class count for a full probability vector).
    """
    store = store or ArtifactStore(profile.cache_root)
    victim, detector = get_victim(profile, victim_key, store), get_detector(profile, victim_key, store)
    data = detection_data(profile, victim_key, store)
    ood, own = data.ood_test.images[:per_side], data.in_test.images[:per_side]
    queries = torch.cat([ood, own])
    origins = ["ImageNet"] * len(ood) + [victim.name.split("-")[0]] * len(own)
    response = PredictionAPI(victim.model, detector=detector, detector_action="label",
                             device=profile.device).respond(queries)
    return [{"origin": origin, "flagged": bool(flag), "top": float(answer.max()), "non_zero": int((answer > 0).sum())}
            for origin, flag, answer in zip(origins, response.flagged.tolist(), response.answers)]
