"""Section 5.2.2: the attacker with in-distribution queries, tuned on its own validation split, and what the
paper's detector sees of its queries (notebook 06).

:func:`validation_grid` and :func:`select_by_validation` are the tuned attacker; :func:`in_distribution_setup`,
:func:`in_distribution_grid` and :func:`in_distribution_detection` are what the grid's tasks call.  Notebook 06
calls :func:`in_distribution_attack` (the grids of every seed, with the ImageNet control, beside notebook 02's
surrogate), :func:`in_distribution_detection`, :func:`section_5_2_2_values` (its results) and :func:`notes`;
these check the invariants their results must hold, raising :class:`RuntimeError` when one does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from ..config.profiles import RATIONALE
from ..config.schema import Profile
from ..config.seeds import seeded, seeds_for, seeds_note
from ..runtime.artifacts import ArtifactStore
from ..runtime.regime import meaningful_numbers
from .attack import attacker_pool, knockoff
from .section5 import (
    Section5Settings,
    knockoff_row,
    knockoff_seeds,
    table2_attack,
    transfer_answers,
)
from .victims import (
    chance_accuracy,
    get_victim,
    require_above_chance,
    victim_data,
    victim_image_size,
)


def select_by_validation(histories: Mapping[int, list[dict]]) -> tuple[int, dict]:
    """The (batch size, history row) with the highest ``val_acc`` over a grid of runs.

    Ties go to the earlier epoch (less training), then to the batch size listed first.
    """
    if not histories:
        raise ValueError("the validation grid is empty: give at least one batch size")
    best = None
    for order, (batch_size, history) in enumerate(histories.items()):
        for row in history:
            if "val_acc" not in row:
                raise ValueError(f"the run with batch size {batch_size} has no validation accuracy: "
                                 "train it with validation_fraction > 0")
            key = (row["val_acc"], -row["epoch"], -order)
            if best is None or key > best[0]:
                best = (key, batch_size, row)
    return best[1], best[2]


def validation_grid(profile: Profile, victim_key: str, *, batch_sizes: Iterable[int], epochs: int,
                    validation_fraction: float, pool: str = "imagenet", pool_split: str | None = None,
                    budget: int | str | None = None, store: ArtifactStore | None = None,
                    seed: int | None = None) -> dict:
    """The tuned attacker of 5.2.2: one run per batch size, (batch size, epoch) chosen on validation.

    The transfer set is split once into train and validation (``validation_fraction``);
    each batch size trains ``epochs`` epochs with the profile's schedule, and the
    attacker keeps the batch size and epoch of highest validation accuracy.  Returns
    ``{"chosen_batch_size", "chosen_epochs", "chosen_val_acc", "test_acc", "grid",
    "results"}``; ``test_acc`` is the victim-test accuracy of that choice.
    """
    if validation_fraction <= 0:
        raise ValueError("the validation grid needs a validation split: validation_fraction > 0")
    recipe = profile.surrogate_recipe.replace(epochs=epochs)
    results = {b: knockoff(profile, victim_key, pool=pool, pool_split=pool_split, budget=budget,
                           recipe=recipe, batch_size=b, validation_fraction=validation_fraction, store=store,
                           seed=seed)
               for b in batch_sizes}
    chosen_bs, chosen = select_by_validation({b: r.history for b, r in results.items()})
    grid = {f"bs{b}": {"batch_size": b, "val_acc_per_epoch": [row["val_acc"] for row in r.history],
                       "test_acc_per_epoch": [row["test_acc"] for row in r.history],
                       "best_val_epoch": r.val_selected_epoch, "final_test_acc": r.final_accuracy}
            for b, r in results.items()}
    return {"chosen_batch_size": chosen_bs, "chosen_epochs": chosen["epoch"], "chosen_val_acc": chosen["val_acc"],
            "test_acc": chosen["test_acc"], "grid": grid, "results": results}


def in_distribution_budget(profile: Profile, num_classes: int, pool_size: int) -> int:
    """Queries of the in-distribution attacker: ``in_distribution_per_class`` x classes, at most the pool."""
    if profile.in_distribution_per_class is None:
        return pool_size
    return min(pool_size, profile.in_distribution_per_class * num_classes)


def flagged_share(flag: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> float:
    """Share of ``images`` that a detector's ``flag`` marks as out of distribution."""
    flags = torch.as_tensor(flag(images), dtype=torch.bool).reshape(-1)
    if len(flags) != len(images):
        raise ValueError(f"the detector returned {len(flags)} flags for {len(images)} images: "
                         "it must return one bool per image")
    return float(flags.float().mean()) if len(flags) else float("nan")


def in_distribution_setup(profile: Profile, store: ArtifactStore | None = None) -> tuple[Any, int]:
    """Notebook 06's attacker pool (the Bing stand-in at the Caltech victim's size) and its budget."""
    bing = attacker_pool(profile, "bing", "train", victim_image_size(profile, "caltech"), store)
    return bing, in_distribution_budget(profile, len(bing.classes), len(bing))


def in_distribution_grid(profile: Profile, seed: int, pool: str, batch_sizes: tuple[int, ...], epochs: int,
                         store: ArtifactStore | None = None) -> dict:
    """Notebook 06's validation grid for one seed, on the in-distribution (``bing``) or ImageNet pool."""
    _, budget = in_distribution_setup(profile, store)
    return validation_grid(profile, "caltech", pool=pool, budget=budget, batch_sizes=batch_sizes, epochs=epochs,
                           validation_fraction=profile.validation_fraction, seed=seed, store=store)


def in_distribution_detection(profile: Profile, store: ArtifactStore | None = None) -> dict:
    """What notebook 06 asks of the Caltech detector: the share it flags of the in-distribution queries,
    of unseen ImageNet queries (as many, or all there are where fewer are unseen:
    :func:`~kx_utils.experiments.detection.unseen_imagenet_queries`) and of the benign test images, with each set's size.
    Returns ``{"detector": name, "flagged": {set: share}, "counts": {set: images}}``."""
    from ..experiments.detection import (
        detection_data,
        get_detector,
        unseen_imagenet_queries,
    )
    bing, budget = in_distribution_setup(profile, store)
    detector = get_detector(profile, "caltech", store)
    queried = transfer_answers(profile, "caltech", pool="bing", budget=budget, store=store)
    queries = bing.images[queried["indices"]]
    sets = {"in_distribution": queries,
            "unseen_imagenet": unseen_imagenet_queries(profile, "caltech", len(queries), store),
            "benign": detection_data(profile, "caltech", store).in_test.images}
    return {"detector": detector.name, "flagged": {name: flagged_share(detector.flag, images) for name, images in sets.items()},
            "counts": {name: len(images) for name, images in sets.items()}}


# --------------------------------------------------------------------------- notebook 06


@dataclass
class InDistributionAttack:
    """The tuned in-distribution attacker of 5.2.2 on every seed, its control and what it is compared with."""

    seeds: tuple[int, ...]  # those of ``section_5_2_2``
    budget: int  # queries of each attacker (:func:`in_distribution_budget`)
    pool_classes: int  # classes of the in-distribution pool
    victim_acc: float  # the Caltech victim's test accuracy
    grids: list[dict]  # :func:`validation_grid` per seed, on in-distribution queries
    controls: list[dict]  # the same on as many ImageNet queries; empty without ``imagenet_control``
    imagenet: dict  # :func:`knockoff_row` of notebook 02's surrogates of the Caltech victim (Table 2)


def in_distribution_attack(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None
                           ) -> InDistributionAttack:
    """Notebook 06's attackers: :func:`in_distribution_grid` on the ``bing`` pool for each seed of
    ``section_5_2_2`` (``settings.grid_batch_sizes`` x ``grid_epochs``), on ``imagenet`` too where
    ``settings.imagenet_control``, and notebook 02's ImageNet surrogates of the Caltech victim."""
    victim = get_victim(profile, "caltech", store)
    bing, budget = in_distribution_setup(profile, store)
    seeds = seeds_for(profile, "section_5_2_2")
    pools = ("bing", "imagenet") if settings.imagenet_control else ("bing",)
    grids = {pool: [in_distribution_grid(profile, seed, pool, settings.grid_batch_sizes, settings.grid_epochs,
                                         store) for seed in seeds] for pool in pools}
    imagenet = knockoff_row(knockoff_seeds(profile, "caltech", "table2", store=store, **table2_attack(profile)))
    for grid in grids["bing"] + grids.get("imagenet", []):
        check_grid_cells(grid, settings.grid_batch_sizes, settings.grid_epochs)
    if meaningful_numbers(profile):
        require_above_chance({"name": victim.name, "victim_acc": victim.test_accuracy},
                             chance_accuracy(victim_data(profile, "caltech", store)[1].labels),
                             {"tuned in-distribution": grids["bing"][0]["test_acc"]})
    return InDistributionAttack(seeds=seeds, budget=budget, pool_classes=len(bing.classes),
                                victim_acc=victim.test_accuracy, grids=grids["bing"],
                                controls=grids.get("imagenet", []), imagenet=imagenet)


def check_grid_cells(grid: Mapping, batch_sizes: Iterable[int], epochs: int) -> None:
    """Raise unless the validation grid has one cell per batch size, each with ``epochs`` validation and test
    accuracies."""
    if set(grid["grid"]) != {f"bs{b}" for b in batch_sizes}:
        raise RuntimeError(f"the validation grid has cells {sorted(grid['grid'])}, expected batch sizes {list(batch_sizes)}")
    for name, cell in grid["grid"].items():
        if not len(cell["val_acc_per_epoch"]) == len(cell["test_acc_per_epoch"]) == epochs:
            raise RuntimeError(f"grid cell {name}: {len(cell['val_acc_per_epoch'])} validation and "
                               f"{len(cell['test_acc_per_epoch'])} test accuracies for {epochs} epochs")


def per_seed_or_one(values: list):
    """The single value of a one-seed run, else the list of one value per seed (as the results store them)."""
    return values[0] if len(values) == 1 else values


def section_5_2_2_values(profile: Profile, settings: Section5Settings, attack: InDistributionAttack,
                         detection: Mapping, store: ArtifactStore | None = None) -> dict:
    """Notebook 06's results (``run.values["section_5_2_2"]``): the tuned attacker's accuracy and recovery
    (means over seeds, ``_seeds`` beside), its choices, notebook 02's ImageNet surrogate, the ImageNet control
    (where run), what the detector flags (``detection``: :func:`in_distribution_detection`) and the first
    seed's validation grids."""
    flagged, counts = detection["flagged"], detection["counts"]
    if counts["in_distribution"] != attack.budget or not 0 < counts["unseen_imagenet"] <= counts["in_distribution"]:
        raise RuntimeError(f"the detector judged {counts['in_distribution']} of {attack.budget} in-distribution "
                           f"queries and {counts['unseen_imagenet']} unseen ImageNet images (at most as many)")
    # the detection asked for the attacker's answers again: they must come from the cache
    if transfer_answers(profile, "caltech", pool="bing", budget=attack.budget, store=store)["queries"] != 0:
        raise RuntimeError("asking for the in-distribution answers again sent queries: the cache was not reused")
    grids, controls, imagenet = attack.grids, attack.controls, attack.imagenet
    in_acc = [g["test_acc"] for g in grids]
    section = {
        **seeded("in_distribution_acc", in_acc),
        **seeded("in_distribution_recovery", [a / attack.victim_acc for a in in_acc]),
        "chosen_batch_size": per_seed_or_one([g["chosen_batch_size"] for g in grids]),
        "chosen_epochs": per_seed_or_one([g["chosen_epochs"] for g in grids]),
        "chosen_val_acc": grids[0]["chosen_val_acc"],
        **seeded("imagenet_queries_acc", imagenet.get("surrogate_acc_seeds") or [imagenet["surrogate_acc"]]),
        "imagenet_queries_budget": imagenet["budget"],
        "victim_acc": attack.victim_acc, "in_distribution_queries": attack.budget, "grid_epochs": settings.grid_epochs,
        "flagged_in_distribution": flagged["in_distribution"], "flagged_imagenet": flagged["unseen_imagenet"],
        "flagged_benign": flagged["benign"],
        "benign_queries": counts["benign"], "unseen_imagenet_queries": counts["unseen_imagenet"],
        "detector": detection["detector"], "seeds": list(attack.seeds),
        "validation_grid": grids[0]["grid"],
    }
    if controls:
        section.update({**seeded("imagenet_same_budget_acc", [g["test_acc"] for g in controls]),
                        "imagenet_same_budget_batch_size": per_seed_or_one([g["chosen_batch_size"] for g in controls]),
                        "imagenet_same_budget_epochs": per_seed_or_one([g["chosen_epochs"] for g in controls]),
                        "imagenet_same_budget_grid": controls[0]["grid"]})
    return section


def notes(profile: Profile, settings: Section5Settings, attack: InDistributionAttack, detection: Mapping
          ) -> list[str]:
    """The notes of notebook 06's results: the in-distribution pool in a stand-in profile, the grid, the
    unseen ImageNet images where fewer than the queries, and the seeds."""
    out = []
    n_in, n_imagenet = detection["counts"]["in_distribution"], detection["counts"]["unseen_imagenet"]
    if profile.standins:
        out.append(f"5.2.2: {attack.budget} in-distribution queries (the Caltech-101 stand-in's pool split, "
                   f"about {attack.budget / attack.pool_classes:.0f} per class; the paper: 380 Bing images per class), "
                   f"against {attack.imagenet['budget']} ImageNet queries for notebook 02's surrogate.")
    out.append(f"5.2.2: grid of batch sizes {list(settings.grid_batch_sizes)} x {settings.grid_epochs} epochs with "
               f"{profile.validation_fraction:.0%} of the queries held out; the transfer set is sampled uniformly, "
               "not per class." + (" " + RATIONALE["grid_epochs"] if profile.name == "mini" else ""))
    if n_imagenet < n_in:
        out.append(f"5.2.2: the detector is compared on the {n_imagenet} ImageNet images it never saw (all of them), "
                   f"not on {n_in} like the in-distribution queries: detector_ood_share={profile.detector_ood_share} "
                   "leaves no more unseen.")
    out.append(f"Seeds: {seeds_note(profile)}.")
    return out
