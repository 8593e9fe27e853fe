"""The Knockoff attack: sample a transfer set, query the victim's API once, train a surrogate.

``knockoff(profile, "cifar10")`` runs the attack of Section 3 against a victim of
``01_victims``; its keyword arguments cover the variants of Section 5 (answer
format, transfer-set source, batch size, a held-out validation split).  Query
answers and surrogate results are artifacts: a rerun makes no new query and
trains nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..config.schema import Profile, evaluation_batch_size
from ..config.seeds import stream_seed
from ..core.api import PredictionAPI, answered_rows, answers_to_targets, api_description
from ..core.images import resize_images
from ..core.models import build_model
from ..core.recipe import Recipe
from ..core.seeded import seeded_indices, seeded_permutation
from ..core.train import (
    best_epoch,
    fit,
    per_class_accuracy,
    pick_device,
    predict_logits,
)
from ..data.catalog import dataset_info
from ..data.datasets import ImageSet, remembered
from ..runtime.artifacts import ArtifactStore, artifact_kind
from .defence_specs import build_defence, defence_settings, sampling_settings
from .victims import (
    Victim,
    data_content,
    get_victim,
    load_dataset_split,
    victim_image_size,
    victim_settings,
    victim_spec,
)

# v2: keyed by the content of the pool's splits (and the victim's, through its settings)
ANSWERS = artifact_kind("answers", 2)  # a transfer set: pool indices and the API's answers
# v2: settings name the frozen backbone blocks and whether the test set is scored every epoch
# v3: keyed by the content of the data (the victim's and the pool's)
SURROGATE = artifact_kind("surrogate", 3)  # a trained surrogate's history and accuracies


class BudgetError(ValueError):
    pass


def sample_transfer_set(pool_size: int, budget: int, seed: int, replace: bool = False) -> torch.Tensor:
    """Indices of ``budget`` pool images drawn at random with ``seed``.

    Without ``replace`` no image is repeated, and a budget larger than the pool is
    an error rather than a silent repetition.
    """
    if budget <= 0:
        raise BudgetError(f"the query budget must be positive, got {budget}")
    if replace:
        return seeded_indices(pool_size, budget, seed, replace=True)
    if budget > pool_size:
        raise BudgetError(f"a budget of {budget} queries exceeds the attacker's pool of {pool_size} "
                          "images; lower the budget, enlarge the pool, or ask for sampling with "
                          "replacement explicitly (replace=True)")
    return seeded_indices(pool_size, budget, seed)


def default_pool_split(profile: Profile, pool: str) -> str:
    """The split an attacker queries from: the profile's ``attacker_pool_split`` for ImageNet,
    "train" for any other source."""
    return profile.attacker_pool_split if pool == "imagenet" else "train"


def attacker_pool(profile: Profile, pool: str = "imagenet", split: str | None = None,
                  size: int | None = None, store: ArtifactStore | None = None) -> ImageSet:
    """The attacker's natural images (the paper: its ImageNet subset), capped to ``pool_size``.

    ``split`` None means :func:`default_pool_split`; "all" concatenates every split of the dataset.
    """
    split = split or default_pool_split(profile, pool)
    size = size or profile.image_size.get(pool, max(profile.image_size.values()))
    if split == "all":
        splits = pool_splits(profile, pool, "all")

        def concatenated() -> ImageSet:
            parts = [load_dataset_split(profile, pool, s, size, store=store) for s in splits]
            return ImageSet(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                            parts[0].classes, f"{pool}/all", [f for p in parts for f in p.files])

        content = data_content(profile, pool, splits)  # a changed split is another concatenation
        images = remembered(("pool", pool, size, profile.standins, str(profile.data_root),
                             tuple(content.values())), concatenated)
    else:
        images = load_dataset_split(profile, pool, split, size, store=store)
    return images.capped(profile.pool_size, profile.seed)


def query_settings(profile: Profile, victim: Victim, pool: str, split: str, budget: int,
                   seed: int, replace: bool, api: dict, sampling: dict | None = None) -> dict:
    return _query_settings(profile, victim.settings, victim.image_size, pool, split, budget, seed, replace, api,
                           sampling=sampling)


def pool_splits(profile: Profile, pool: str, split: str) -> tuple[str, ...]:
    """The splits a pool of ``split`` is made of: every split of the dataset for "all"."""
    info = dataset_info(pool)
    return tuple(info.standin_splits if profile.standins else info.splits) if split == "all" else (split,)


def _query_settings(profile: Profile, victim_settings: dict, query_size: int, pool: str, split: str, budget: int,
                    seed: int, replace: bool, api: dict, with_content: bool = True,
                    sampling: dict | None = None) -> dict:
    return {"victim": victim_settings, "pool": pool, "pool_split": split, "pool_size": profile.pool_size,
            "pool_data": data_content(profile, pool, pool_splits(profile, pool, split), with_content),
            "center_crop": profile.center_crop,  # the pool's images: centre crops of a larger decode
            "standins": profile.standins, "query_size": query_size, "budget": budget,
            "seed": seed, "replace": replace, "api": api,
            # random sampling names nothing, so every transfer set made before adaptive sampling keeps its key
            **({"sampling": sampling} if sampling is not None else {})}


def _surrogate_settings(profile: Profile, query: dict, surrogate_size: int, recipe: Recipe,
                        validation_fraction: float, seed: int, test_curve: bool, patience: int = 0) -> dict:
    return {"query": query, "surrogate_arch": profile.surrogate_arch,
            "surrogate_size": surrogate_size, "recipe": recipe.as_dict(),
            "frozen_blocks": profile.surrogate_frozen_blocks,
            "validation_fraction": validation_fraction, "seed": seed, "test_curve": test_curve,
            # early stopping and the candidate speed-ups name themselves only where on: every default run
            # keeps its key
            **({"patience": patience} if patience else {}),
            **({"precision": profile.surrogate_precision} if profile.surrogate_precision != "fp32" else {}),
            **({"batch_norm": profile.surrogate_batch_norm} if profile.surrogate_batch_norm != "train" else {})}


def surrogate_settings(profile: Profile, victim_key: str, *, mode: str = "probs", k: int = 1, decimals: int = 1,
                       pool: str = "imagenet", pool_split: str | None = None, budget: int | None = None,
                       replace: bool = False, recipe: Recipe | None = None, batch_size: int | None = None,
                       validation_fraction: float = 0.0, seed: int | None = None, test_curve: bool = True,
                       patience: int = 0, defence: dict | None = None, sampling: str | dict = "random",
                       with_content: bool = True) -> dict:
    """The settings (the cache key) of the surrogate ``knockoff(profile, victim_key, **same arguments)``
    trains, from the settings alone: no model built, no image decoded, no query sent (the data's
    content digests are read from the cache, or the files hashed once; ``with_content=False`` puts
    placeholders in their place, for comparing two experiments' settings without the data).

    ``budget="all"`` is the pool's size, known once the pool is decoded: such a call has no key here.
    """
    if budget == "all":
        raise BudgetError('budget="all" is the size of the decoded pool: its surrogate has no key before it runs')
    seed = profile.seed if seed is None else seed
    recipe = recipe or profile.surrogate_recipe
    if batch_size is not None:
        recipe = recipe.replace(batch_size=batch_size)
    pool_split = pool_split or default_pool_split(profile, pool)
    surrogate_size = profile.image_size[victim_spec(victim_key).dataset]
    query = _query_settings(profile, victim_settings(profile, victim_key, with_content),
                            victim_image_size(profile, victim_key), pool, pool_split,
                            int(profile.transfer_budget if budget is None else budget), seed,
                            replace, api_description(mode, k, decimals, defence_settings(defence)), with_content,
                            sampling_settings(profile, sampling))
    return _surrogate_settings(profile, query, surrogate_size, recipe, validation_fraction, seed, test_curve,
                               patience)


def query_victim(profile: Profile, victim: Victim, api: PredictionAPI, pool_images: ImageSet,
                 settings: dict, store: ArtifactStore, seed: int, replace: bool = False) -> dict:
    """The transfer set's indices into the pool and the API's answers, queried once and cached.

    Returns ``{"indices", "answers", "flagged", "queries"}``; ``queries`` is the
    number of queries this call sent (0 when the answers came from the cache).
    """
    found = store.load(ANSWERS, settings)
    if found is not None:
        return {**found, "queries": 0}
    before = api.query_count

    def respond(indices: torch.Tensor):
        queries = pool_images.images[indices]
        if queries.shape[-1] != victim.image_size:
            queries = resize_images(queries, victim.image_size)
        return api.respond(queries)

    if "sampling" in settings:  # adaptive: each batch of queries chosen by what the earlier answers taught
        from .adaptive import adaptive_queries
        indices, response = adaptive_queries(profile, victim, respond, pool_images, settings, seed)
    else:
        indices = sample_transfer_set(len(pool_images), settings["budget"], seed, replace)
        response = respond(indices)
    blob = {"indices": indices, "answers": response.answers, "flagged": response.flagged,
            "query_count": api.query_count - before}
    store.save(ANSWERS, settings, blob)
    return {**blob, "queries": blob["query_count"]}


def answer_transfer_set(profile: Profile, victim: Victim, *, mode: str = "probs", k: int = 1,
                        decimals: int = 1, pool: str = "imagenet", pool_split: str | None = None,
                        budget: int | str | None = None, replace: bool = False, seed: int | None = None,
                        store: ArtifactStore | None = None, detector=None, detector_action: str = "refuse",
                        pool_images: ImageSet | None = None, defence: dict | None = None,
                        sampling: str | dict = "random") -> dict:
    """The transfer set's indices and the API's answers: the one query path of every attack.

    ``budget`` is a number of queries, None for the profile's budget, or ``"all"`` for
    the whole pool.  The pool is decoded only when the answers are not cached yet (or
    ``budget="all"`` needs its size); pass ``pool_images`` when the caller holds it.
    Returns ``{"indices", "answers", "flagged", "query_count", "queries", "settings"}``
    (``queries``: sent by this call).
    """
    store = store or ArtifactStore(profile.cache_root)
    seed = profile.seed if seed is None else seed
    pool_split = pool_split or default_pool_split(profile, pool)
    size = profile.image_size[victim_spec(victim.key).dataset]

    def load_pool() -> ImageSet:
        return pool_images if pool_images is not None else attacker_pool(profile, pool, pool_split, size, store)

    if budget == "all":
        pool_images = load_pool()
        budget = len(pool_images)
    elif budget is None:
        budget = profile.transfer_budget
    api = PredictionAPI(victim.model, mode=mode, k=k, decimals=decimals, detector=detector,
                        detector_action=detector_action, batch_size=evaluation_batch_size(profile),
                        device=profile.device,
                        defence=build_defence(profile, defence, len(victim.classes)) if defence else None)
    api_desc = api_description(mode, k, decimals, defence_settings(defence))
    if detector is not None:
        api_desc = {**api_desc, "detector": getattr(detector, "name", repr(detector)),
                    "detector_action": detector_action}
    settings = query_settings(profile, victim, pool, pool_split, int(budget), seed, replace, api_desc,
                              sampling_settings(profile, sampling))
    found = store.load(ANSWERS, settings)  # verified: a damaged file is recomputed, with the pool
    if found is not None:
        return {**found, "queries": 0, "settings": settings}
    answered = query_victim(profile, victim, api, load_pool(), settings, store, seed, replace)
    return {**answered, "settings": settings}


@dataclass
class KnockoffResult:
    """What one attack measured.  Accuracies are fractions in [0, 1]."""

    victim: str
    victim_name: str
    victim_accuracy: float
    surrogate_arch: str
    api: dict
    pool: str
    budget: int
    batch_size: int
    epochs: int
    final_accuracy: float  # last epoch: the headline
    best_accuracy: float  # best epoch on the test set: test-set-selected, optimistic
    best_epoch: int
    history: list[dict]
    per_class_victim: list[float]
    per_class_surrogate: list[float]
    transfer_histogram: list[int]  # transfer-set queries per predicted class
    queries_sent: int  # in this call (0 when answers came from the cache)
    query_count: int  # queries that built the transfer set
    refused: int
    val_selected_accuracy: float | None = None  # test accuracy at the best validation epoch
    val_selected_epoch: int | None = None
    train_seconds: float = 0.0
    from_cache: bool = False
    settings: dict = field(default_factory=dict, repr=False)

    @property
    def epochs_trained(self) -> int:
        """Epochs actually trained: ``epochs`` unless early stopping (``patience``) ended the run sooner."""
        return len(self.history)

    @property
    def recovery(self) -> float:
        return self.final_accuracy / self.victim_accuracy

    @property
    def best_recovery(self) -> float:
        return self.best_accuracy / self.victim_accuracy

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "settings"}
        d["recovery"] = self.recovery
        d["best_recovery"] = self.best_recovery
        return d


def knockoff(profile: Profile, victim_key: str, *, mode: str = "probs", k: int = 1, decimals: int = 1,
             pool: str = "imagenet", pool_split: str | None = None, budget: int | str | None = None,
             replace: bool = False, recipe: Recipe | None = None, batch_size: int | None = None,
             validation_fraction: float = 0.0, seed: int | None = None,
             store: ArtifactStore | None = None, detector=None, detector_action: str = "refuse",
             test_curve: bool = True, patience: int = 0, defence: dict | None = None,
             sampling: str | dict = "random") -> KnockoffResult:
    """Run (or load) one Knockoff attack against victim ``victim_key`` of ``profile``.

    ``budget`` is a number of queries, None for the profile's budget, or ``"all"``
    for the whole pool.  ``validation_fraction`` > 0 holds that share of the
    transfer set out as the attacker's validation set (labelled by the victim's
    answers); the result then reports the test accuracy at the best validation
    epoch, as a real attacker would stop.  Without ``test_curve`` the victim's test set
    is scored only after the last epoch (the result's best epoch is then the last).  ``patience`` > 0
    (with a validation split) stops training once the attacker's validation accuracy has not improved for
    that many epochs, ``recipe.epochs`` at most (``KnockoffResult.epochs_trained``).  ``defence`` names a
    defence of the API (:func:`~kx_utils.experiments.defence_specs.build_defence`: reverse sigmoid, MAD, DAWN)
    that transforms its probability vectors before they are formatted; ``sampling="adaptive"`` (or a dict of
    its parameters) picks the queries with Knockoff's adaptive strategy instead of at random.
    """
    if patience and not validation_fraction > 0:
        raise ValueError(f"patience={patience} stops on the attacker's validation accuracy: pass "
                         "validation_fraction > 0 to hold a validation split out")
    store = store or ArtifactStore(profile.cache_root)
    seed = profile.seed if seed is None else seed
    victim = get_victim(profile, victim_key, store)
    surrogate_size = profile.image_size[victim_spec(victim_key).dataset]
    pool_split = pool_split or default_pool_split(profile, pool)
    recipe = recipe or profile.surrogate_recipe
    if batch_size is not None:
        recipe = recipe.replace(batch_size=batch_size)

    # the pool is decoded only where answers or the surrogate must be computed (or budget="all" counts it)
    answered = answer_transfer_set(profile, victim, mode=mode, k=k, decimals=decimals, pool=pool,
                                   pool_split=pool_split, budget=budget, replace=replace, seed=seed,
                                   store=store, detector=detector, detector_action=detector_action,
                                   defence=defence, sampling=sampling)
    q_settings = answered["settings"]

    s_settings = _surrogate_settings(profile, q_settings, surrogate_size, recipe, validation_fraction, seed,
                                     test_curve, patience)
    blob = cached_surrogate(store, s_settings)
    from_cache = blob is not None
    if blob is None:
        pool_images = attacker_pool(profile, pool, pool_split, surrogate_size, store)  # the surrogate trains on it
        blob = _train_surrogate(profile, victim, pool_images, answered, recipe, validation_fraction,
                                seed, store, s_settings, test_curve, patience)
        store.save(SURROGATE, s_settings, blob)
        store.scratch_path(SURROGATE, s_settings, "ckpt").unlink(missing_ok=True)

    history = blob["history"]
    best = best_epoch(history, "test_acc")
    val_acc = val_epoch = None
    if validation_fraction > 0:
        chosen = best_epoch(history, "val_acc")
        val_acc, val_epoch = chosen["test_acc"], chosen["epoch"]
    answers = answered["answers"]
    answered_mask = answered_rows(answers)
    hist = torch.bincount(answers[answered_mask].argmax(1), minlength=len(victim.classes))
    return KnockoffResult(
        victim=victim_key, victim_name=victim.name, victim_accuracy=victim.test_accuracy,
        surrogate_arch=profile.surrogate_arch, api=q_settings["api"], pool=pool, budget=q_settings["budget"],
        batch_size=recipe.batch_size, epochs=recipe.epochs,
        final_accuracy=history[-1]["test_acc"], best_accuracy=best["test_acc"], best_epoch=best["epoch"],
        history=history, per_class_victim=victim.per_class_accuracy,
        per_class_surrogate=list(blob["per_class_accuracy"]), transfer_histogram=hist.tolist(),
        queries_sent=int(answered["queries"]), query_count=int(answered["query_count"]),
        refused=int((~answered_mask).sum()), val_selected_accuracy=val_acc, val_selected_epoch=val_epoch,
        train_seconds=float(blob["train_seconds"]), from_cache=from_cache, settings=s_settings)


def without_test_curve(blob: dict) -> dict:
    """A surrogate scored on the test set every epoch, as the same run scored after its last epoch only.

    Scoring is done in eval mode on the test set and draws no random number, so the two runs train
    the same weights: only the per-epoch accuracies of the earlier epochs go."""
    history = [dict(row) for row in blob["history"]]
    for row in history[:-1]:
        for name in [k for k in row if k.endswith("_acc")]:
            del row[name]
    return {**blob, "history": history}


def cached_surrogate(store: ArtifactStore, settings: dict) -> dict | None:
    """The stored surrogate of ``settings``; a run without a test curve is also answered by the same
    run with one (Table 2's surrogates are Tables 5 and 6's probability-vector surrogates)."""
    found = store.load(SURROGATE, settings)
    if found is None and not settings["test_curve"]:
        with_curve = store.load(SURROGATE, {**settings, "test_curve": True})
        found = without_test_curve(with_curve) if with_curve is not None else None
    return found


def _train_surrogate(profile: Profile, victim: Victim, pool_images: ImageSet, answered: dict,
                     recipe: Recipe, validation_fraction: float, seed: int, store: ArtifactStore,
                     settings: dict, test_curve: bool = True, patience: int = 0) -> dict:
    return train_surrogate_model(profile, victim, pool_images, answered, recipe, validation_fraction, seed, store,
                                 settings, test_curve, patience)[0]


def train_surrogate_model(profile: Profile, victim: Victim, pool_images: ImageSet, answered: dict,
                          recipe: Recipe, validation_fraction: float, seed: int, store: ArtifactStore,
                          settings: dict, test_curve: bool = True,
                          patience: int = 0) -> tuple[dict, torch.nn.Module]:
    """Train one surrogate on a transfer set's answers: (its result blob, the trained model).  Knockoff stores
    the blob; DAWN's verification (notebook 07) also asks the model about the watermarked queries."""
    answers = answered["answers"]
    keep = answered_rows(answers)  # refused queries teach nothing
    if not keep.any():
        raise ValueError("the API refused every query: there is nothing to train a surrogate on")
    images = pool_images.images[answered["indices"][keep]]
    targets = answers_to_targets(answers[keep])
    test = victim_test_set(profile, victim.key, pool_images.image_size, store)
    eval_sets = {"test": (test.images, test.labels)}
    if validation_fraction > 0:
        order = seeded_permutation(len(images), stream_seed(seed, "attacker_validation"))
        n_val = max(1, int(round(validation_fraction * len(images))))
        val_idx, train_idx = order[:n_val], order[n_val:]
        eval_sets["val"] = (images[val_idx], targets[val_idx].argmax(1))
        images, targets = images[train_idx], targets[train_idx]
    torch.manual_seed(seed)
    model = build_model(profile.surrogate_arch, targets.shape[1], pretrained=True)
    t0 = time.perf_counter()
    history = fit(model, images, targets, recipe, eval_sets=eval_sets, seed=seed,
                  device=pick_device(profile.device),
                  checkpoint=store.scratch_path(SURROGATE, settings, "ckpt"),
                  progress=profile.progress, desc=f"surrogate of {victim.name}, seed {seed}",
                  eval_batch_size=evaluation_batch_size(profile), frozen_blocks=profile.surrogate_frozen_blocks,
                  evaluate_every_epoch=test_curve, compile_model=profile.compile_models,
                  precision=profile.surrogate_precision, batch_norm=profile.surrogate_batch_norm,
                  patience=patience)
    pred = predict_logits(model, test.images, evaluation_batch_size(profile), pick_device(profile.device)).argmax(1)
    return {"history": history, "per_class_accuracy": per_class_accuracy(pred, test.labels, targets.shape[1]),
            "train_seconds": sum(r["train_seconds"] for r in history) or time.perf_counter() - t0,
            "train_size": len(images)}, model


def victim_test_set(profile: Profile, victim_key: str, size: int, store: ArtifactStore) -> ImageSet:
    """The victim's test set (same images and caps) decoded at the surrogate's input size."""
    spec = victim_spec(victim_key)
    return load_dataset_split(profile, spec.dataset, "test", size, profile.test_per_class, store)
