"""Section 5 of the paper on top of the Knockoff attack: what limits it and what improves it.

Notebooks 04-06 call these helpers:

- :func:`attack_formats` runs the attack once per answer format of the API (Table 6 and its
  top-k / rounded extensions), training a surrogate only when a format gives a transfer set
  not seen before (top-1 answers renormalise to exactly the label-only targets);
- :func:`figure1_data` and :func:`largest_gaps` (Figure 1);
- :func:`batch_size_rows` (Table 7), :func:`curve_entry` and :func:`early_stopping_row`
  (Figure 2 and the validation-stopping comparison of 5.2.1);
- :func:`validation_grid` and :func:`select_by_validation` (the tuned in-distribution
  attacker of 5.2.2) and :func:`flagged_share` (its detection).

:func:`section5_plan` returns the sizes of these experiments, which each profile carries
(``Profile.section5``, a :class:`~kx_utils.config.schema.Section5Plan`), with a notebook's own
changes applied; :data:`kx_utils.config.profiles.RATIONALE` says why ``mini`` departs from the paper's sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch

from ..config.schema import SECTION5_KEYS, Profile, Section5Plan
from ..config.seeds import mean_curve, seeded, seeded_columns, seeds_for
from ..core.api import answered_rows, answers_to_targets
from ..core.recipe import Recipe
from ..core.selection import argmax, best
from ..data.catalog import absent_optional_datasets
from ..runtime.artifacts import ArtifactStore
from .attack import KnockoffResult, answer_transfer_set, knockoff
from .victims import PRETRAINED_VICTIMS, available_victims, get_victim

# column prefix of Table 6 -> the API's answer format
ANSWER_FORMATS: dict[str, dict] = {
    "probs": {"mode": "probs"},  # A_p: the full probability vector
    "label": {"mode": "label"},  # A_c: the predicted class only
    "top1": {"mode": "topk", "k": 1},
    "top3": {"mode": "topk", "k": 3},
    "rounded": {"mode": "rounded", "decimals": 1},
}
PAPER_FORMATS = ("probs", "label")
# Table 5: the two victims with a pretrained and a from-scratch model each
TABLE5_VICTIMS = ("gtsrb", "gtsrb_5l", "cifar10", "cifar10_9l")
# the arguments of knockoff that choose the queries (the others choose how the surrogate trains)
QUERY_ARGS = ("pool", "pool_split", "budget", "replace", "seed")
EXTRA_FORMATS = ("top1", "top3", "rounded")


def section5_plan(profile: Profile, **changes) -> Section5Plan:
    """The Section 5 plan of ``profile`` (``profile.section5``) with ``changes`` applied.

    A change whose value is None keeps the plan's value, so a notebook can pass its
    parameters through unchanged.
    """
    unknown = sorted(set(changes) - set(SECTION5_KEYS))
    if unknown:
        raise ValueError(f"unknown Section 5 setting(s) {unknown}; valid: {', '.join(SECTION5_KEYS)}")
    return profile.section5.replace(**{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Section5Settings:
    """The sizes of Section 5's experiments (notebooks 04-06), each "None: the profile's value" of the
    profile's :class:`~kx_utils.config.schema.Section5Plan` resolved here, once: the grid, ``--plan``, the
    projection and the notebooks read these fields and never fall back on their own.

    Victim lists hold only the victims a run of the profile can train (:func:`available_victims`).
    """

    budget: int  # queries of the surrogates of Tables 5-7: Table 2's (the profile's transfer budget)
    recipe: Recipe  # their training recipe and 5.1.3's: Table 2's (the profile's surrogate recipe)
    validation_fraction: float  # the share of its queries the attacker holds out: Table 2's
    table5_victims: tuple[str, ...]
    table6_victims: tuple[str, ...]  # the pretrained victims
    extra_format_victims: tuple[str, ...]  # Table 6's top-k / rounded columns
    table7_victims: tuple[str, ...]
    table7_batch_sizes: tuple[int, ...]
    table7_control: int | None  # the batch size of Table 7's equal-steps control, None: no control
    table7_control_epochs: int | None  # its epochs (batch 64's number of SGD steps)
    convergence_victims: tuple[str, ...]  # Table 7's convergence protocol (none: ())
    convergence_budget: int
    convergence_recipe: Recipe  # its epochs are the most a batch size trains
    convergence_patience: int
    convergence_validation_fraction: float  # patience needs a validation split: Table 2's, else the profile's
    figure2_victims: tuple[str, ...]
    figure2_budget: int
    figure2_recipe: Recipe
    grid_batch_sizes: tuple[int, ...]  # 5.2.2's validation grid
    grid_epochs: int
    imagenet_control: bool  # 5.2.2: the same grid on as many ImageNet queries
    budget_curve_victims: tuple[str, ...]
    budget_curve_budgets: tuple[int | str, ...]
    diabetic5_present: bool  # 5.1.3 needs it; mini may go without

    @classmethod
    def resolve(cls, profile: Profile, **changes) -> "Section5Settings":
        """``profile``'s Section 5 plan with a notebook's ``changes`` (None keeps the plan's value), resolved."""
        plan = section5_plan(profile, **changes)
        available = available_victims(profile)
        pretrained = available_victims(profile, PRETRAINED_VICTIMS)
        budget, recipe = profile.transfer_budget, profile.surrogate_recipe
        sizes = tuple(plan.table7_batch_sizes or profile.batch_sizes)
        control = equal_steps_control(sizes, plan.table7_equal_steps)
        extra = pretrained if plan.extra_format_victims is None else plan.extra_format_victims
        return cls(
            budget=budget, recipe=recipe, validation_fraction=profile.surrogate_validation_fraction,
            table5_victims=tuple(k for k in TABLE5_VICTIMS if k in available), table6_victims=pretrained,
            extra_format_victims=tuple(k for k in extra if k in pretrained),
            table7_victims=tuple(k for k in plan.table7_victims or available if k in available),
            table7_batch_sizes=sizes, table7_control=control,
            table7_control_epochs=None if control is None else equal_steps_epochs(budget, control, recipe.epochs),
            convergence_victims=tuple(k for k in plan.table7_convergence_victims if k in available),
            convergence_budget=plan.table7_convergence_budget or budget,
            convergence_recipe=recipe.replace(epochs=plan.table7_convergence_epochs or recipe.epochs),
            convergence_patience=plan.table7_convergence_patience,
            convergence_validation_fraction=profile.surrogate_validation_fraction or profile.validation_fraction,
            figure2_victims=tuple(k for k in plan.figure2_victims if k in available),
            figure2_budget=plan.figure2_budget or profile.transfer_budget,
            figure2_recipe=profile.surrogate_recipe.replace(epochs=plan.figure2_epochs or
                                                            profile.surrogate_recipe.epochs),
            grid_batch_sizes=tuple(plan.grid_batch_sizes or profile.batch_sizes),
            grid_epochs=plan.grid_epochs or profile.surrogate_recipe.epochs,
            imagenet_control=plan.imagenet_control,
            budget_curve_victims=tuple(k for k in plan.budget_curve_victims if k in available),
            budget_curve_budgets=tuple(plan.budget_curve_budgets),
            diabetic5_present="diabetic5" not in absent_optional_datasets(profile.standins, profile.data_root))

    @property
    def attack(self) -> dict:
        """The keyword arguments of :func:`knockoff` for Tables 5-7: Table 2's attack (its budget, recipe
        and validation split, :func:`table2_attack`), the victim's test set scored after the last epoch
        only, so that a probability-vector run at batch 64 *is* Table 2's surrogate
        (:func:`kx_utils.experiments.attack.cached_surrogate`)."""
        return {"budget": self.budget, "recipe": self.recipe, "validation_fraction": self.validation_fraction,
                "test_curve": False}

    @property
    def convergence_attack(self) -> dict:
        """The keyword arguments of :func:`knockoff` for Table 7's convergence runs (pass ``batch_size``):
        scored on the test set every epoch, so the epoch the attacker's validation picks has its score."""
        return {"budget": self.convergence_budget, "recipe": self.convergence_recipe,
                "validation_fraction": self.convergence_validation_fraction, "patience": self.convergence_patience}


def table2_attack(profile: Profile) -> dict:
    """The keyword arguments of :func:`knockoff` for Table 2 (and Figure 2, and the budget curves)."""
    return {"validation_fraction": profile.surrogate_validation_fraction}


def table7_experiment(batch_size: int, recipe: Recipe) -> str:
    """Whose seeds a Table 7 column runs on: the recipe's own batch size is Table 2's runs (``table2``),
    batch 16 is ``table7_bs16``, every other size ``table7``."""
    if batch_size == recipe.batch_size:
        return "table2"
    return "table7_bs16" if batch_size == 16 else "table7"


def knockoff_seeds(profile: Profile, victim_key: str, experiment: str, **attack_args) -> list[KnockoffResult]:
    """One attack per seed the profile gives ``experiment`` (:func:`kx_utils.config.seeds.seeds_for`)."""
    return [knockoff(profile, victim_key, seed=seed, **attack_args) for seed in seeds_for(profile, experiment)]


def knockoff_row(results: Sequence[KnockoffResult]) -> dict:
    """A row of Table 2 / 5 from the runs of one victim, one per seed: means, with ``<column>_seeds``."""
    first = results[0]
    per_seed = [{"surrogate_acc": r.final_accuracy, "recovery": r.recovery, "best_acc": r.best_accuracy,
                 "best_recovery": r.best_recovery} for r in results]
    row = {"name": first.victim_name, "victim_acc": first.victim_accuracy,
           **seeded_columns(per_seed, ["surrogate_acc", "recovery", "best_acc", "best_recovery"]),
           "best_epoch": [r.best_epoch for r in results] if len(results) > 1 else first.best_epoch,
           "queries": first.query_count, "budget": first.budget, "epochs": first.epochs,
           "seeds": [r.settings.get("seed") for r in results],
           "queries_sent_now": sum(r.queries_sent for r in results),
           "train_seconds": sum(r.train_seconds for r in results)}
    if first.val_selected_accuracy is not None:
        row.update(seeded("val_selected_acc", [r.val_selected_accuracy for r in results]))
    return row


# --------------------------------------------------------------------------- answers


def transfer_answers(profile: Profile, victim_key: str, *, store: ArtifactStore | None = None,
                     **query_args) -> dict:
    """The transfer set's answers exactly as :func:`knockoff` queries them, without training.

    Shares knockoff's cache entry (both go through
    :func:`kx_utils.experiments.attack.answer_transfer_set`): after this call, ``knockoff`` with
    the same arguments sends no query, and the other way round.
    """
    store = store or ArtifactStore(profile.cache_root)
    return answer_transfer_set(profile, get_victim(profile, victim_key, store), store=store, **query_args)


def training_targets(answers: torch.Tensor) -> torch.Tensor:
    """The surrogate's targets from the answered (not refused) rows, as knockoff trains on them."""
    return answers_to_targets(answers[answered_rows(answers)])


@dataclass
class FormatOutcome:
    result: KnockoffResult
    same_targets_as: str | None  # an earlier format with identical targets, whose surrogate is reused


def attack_formats(profile: Profile, victim_key: str, formats: Iterable[str] = PAPER_FORMATS,
                   store: ArtifactStore | None = None, **attack_args) -> dict[str, FormatOutcome]:
    """The Knockoff attack against ``victim_key`` once per answer format (keys of ANSWER_FORMATS).

    Before training for a format, its training targets are compared with those of
    the formats already attacked: when they are identical (top-1 answers, once
    renormalised, are the one-hot labels of the label-only API), the earlier
    surrogate is the surrogate this format would train, and it is reused.
    """
    store = store or ArtifactStore(profile.cache_root)
    outcomes: dict[str, FormatOutcome] = {}
    seen_targets: dict[str, torch.Tensor] = {}
    for name in formats:
        if name not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {name!r}; valid: {', '.join(ANSWER_FORMATS)}")
        api_args = ANSWER_FORMATS[name]
        query_args = {k: v for k, v in attack_args.items() if k in QUERY_ARGS}
        answered = transfer_answers(profile, victim_key, store=store, **api_args, **query_args)
        targets = training_targets(answered["answers"])
        twin = next((other for other, t in seen_targets.items() if torch.equal(t, targets)), None)
        if twin is not None:
            outcomes[name] = FormatOutcome(outcomes[twin].result, twin)
        else:
            outcomes[name] = FormatOutcome(knockoff(profile, victim_key, store=store, **api_args,
                                                    **attack_args), None)
        seen_targets[name] = targets
    return outcomes


def format_row(outcomes: Mapping[str, FormatOutcome] | Sequence[Mapping[str, FormatOutcome]],
               columns: Iterable[str] = ANSWER_FORMATS) -> dict:
    """One row of Table 6: ``<format>_acc`` (last epoch) and ``<format>_recovery``; None where not run.

    ``outcomes`` is one seed's :func:`attack_formats`, or a list of them (one per seed): each
    column is then the mean over the seeds that ran that format, with ``<column>_seeds`` beside.
    """
    per_seed = [outcomes] if isinstance(outcomes, Mapping) else list(outcomes)
    first = next(iter(per_seed[0].values())).result
    row = {"name": first.victim_name, "victim_acc": first.victim_accuracy}
    for name in columns:
        ran = [o[name] for o in per_seed if name in o]
        row.update(seeded(f"{name}_acc", [o.result.final_accuracy for o in ran]))
        row.update(seeded(f"{name}_recovery", [o.result.recovery for o in ran]))
        if ran and ran[0].same_targets_as:
            row[f"{name}_same_targets_as"] = ran[0].same_targets_as
    return row


# --------------------------------------------------------------------------- Figure 1


def largest_gaps(per_class_victim: Sequence[float], per_class_surrogate: Sequence[float], n: int = 2
                 ) -> list[int]:
    """Indices of the ``n`` classes where the victim beats the surrogate by most (largest first).

    Classes without test items (NaN) are skipped; ties keep the lower index first.
    """
    if len(per_class_victim) != len(per_class_surrogate):
        raise ValueError(f"{len(per_class_victim)} victim accuracies but {len(per_class_surrogate)} "
                         "surrogate accuracies: both must have one entry per class")
    gaps = [(v - s, i) for i, (v, s) in enumerate(zip(per_class_victim, per_class_surrogate))
            if not (math.isnan(v) or math.isnan(s))]
    gaps.sort(key=lambda g: (-g[0], g[1]))
    return [i for _, i in gaps[:n]]


def figure1_data(result: KnockoffResult, classes: Sequence[str], n_gaps: int = 2) -> dict:
    """Figure 1: the transfer set's predicted-class histogram beside per-class test accuracies."""
    if len(classes) != len(result.transfer_histogram):
        raise ValueError(f"{len(classes)} class names for a histogram of {len(result.transfer_histogram)} classes")
    gaps = largest_gaps(result.per_class_victim, result.per_class_surrogate, n_gaps)
    return {"victim": result.victim, "name": result.victim_name, "classes": list(classes),
            "histogram": list(result.transfer_histogram),
            "per_class_victim": list(result.per_class_victim),
            "per_class_surrogate": list(result.per_class_surrogate),
            "largest_gaps": [classes[i] for i in gaps], "largest_gap_indices": gaps,
            "surrogate_acc": result.final_accuracy, "victim_acc": result.victim_accuracy}


# --------------------------------------------------------------------------- 5.2.1


def equal_steps_control(batch_sizes: Iterable[int], enabled: bool, reference: int = 64) -> int | None:
    """The batch size that Table 7's equal-steps control retrains (the largest), or None when there is
    none: the control is off, ``reference`` is not among the batch sizes, or none is larger."""
    batch_sizes = tuple(batch_sizes)
    largest = max(batch_sizes, default=reference)
    return largest if enabled and reference in batch_sizes and largest > reference else None


def equal_steps_epochs(budget: int, batch_size: int, epochs: int, reference: int = 64) -> int:
    """Epochs at ``batch_size`` that take as many SGD steps as ``epochs`` at ``reference`` on ``budget``
    queries (rounded; at least one)."""
    steps = epochs * math.ceil(budget / reference)
    return max(1, round(steps / math.ceil(budget / batch_size)))


def batch_size_rows(profile: Profile, victims: Iterable[str], batch_sizes: Iterable[int],
                    store: ArtifactStore | None = None, on_result: Callable | None = None,
                    equal_steps: bool = False, **attack_args) -> tuple[dict, dict]:
    """Table 7: the surrogate's last-epoch accuracy per training batch size, for each victim.

    Returns ``(rows, results)``: ``rows[victim] = {name, victim_acc, bs<b>, bs<b>_seeds...,
    best_batch_size, epochs, steps_per_epoch, seeds_per_batch_size}`` and ``results[victim][b]``
    the list of KnockoffResults, one per seed (batch size 16 on the seeds of ``table7_bs16``, the
    others on those of ``table7``).  The number of epochs is fixed, so a larger batch means fewer SGD
    steps, as in the paper.  With ``equal_steps`` (the plan's ``table7_equal_steps``) the largest
    batch size is also trained for as many steps as batch 64 (:func:`equal_steps_epochs`), on the
    seeds of ``table7_equal_steps``: the row gains ``bs<b>_equal_steps`` and ``equal_steps_epochs``,
    and ``results[victim]["equal_steps"]`` holds those runs.
    """
    store = store or ArtifactStore(profile.cache_root)
    batch_sizes = list(batch_sizes)
    recipe = attack_args.pop("recipe", None) or profile.surrogate_recipe
    rows, results = {}, {}
    for key in victims:
        results[key] = {}
        for b in batch_sizes:
            runs = knockoff_seeds(profile, key, table7_experiment(b, recipe), batch_size=b, recipe=recipe,
                                  store=store, **attack_args)
            results[key][b] = runs
            if on_result:
                for run in runs:
                    on_result(key, b, run)
        first = next(iter(results[key].values()))[0]
        row = {"name": first.victim_name, "victim_acc": first.victim_accuracy}
        for b, runs in results[key].items():
            row.update(seeded(f"bs{b}", [r.final_accuracy for r in runs]))
        row["best_batch_size"] = best(results[key], key=lambda b: row[f"bs{b}"], ties=lambda b: b)  # the smaller
        row["epochs"] = recipe.epochs
        row["steps_per_epoch"] = {f"bs{b}": math.ceil(runs[0].budget / b) for b, runs in results[key].items()}
        row["seeds_per_batch_size"] = {f"bs{b}": len(runs) for b, runs in results[key].items()}
        control = equal_steps_control(batch_sizes, equal_steps)
        if control is not None:
            epochs = equal_steps_epochs(first.budget, control, recipe.epochs)
            runs = knockoff_seeds(profile, key, "table7_equal_steps", batch_size=control,
                                  recipe=recipe.replace(epochs=epochs), store=store, **attack_args)
            results[key]["equal_steps"] = runs
            if on_result:
                for run in runs:
                    on_result(key, control, run)
            row.update(seeded(f"bs{control}_equal_steps", [r.final_accuracy for r in runs]))
            row["equal_steps_epochs"] = {f"bs{control}": epochs}
            row["equal_steps_seeds"] = [r.settings["seed"] for r in runs]
        rows[key] = row
    return rows, results


def curve_entry(results: KnockoffResult | Sequence[KnockoffResult]) -> dict:
    """Figure 2: test accuracy over the epochs, the (test-selected) best epoch and the last one.

    With several runs (one per seed) the curves are averaged epoch by epoch (``*_per_epoch``)
    and kept per seed (``*_per_epoch_seeds``); best and last are read off the mean curve.
    """
    runs = [results] if isinstance(results, KnockoffResult) else list(results)
    first = runs[0]
    curves = [[r["test_acc"] for r in run.history] for run in runs]
    curve = mean_curve(curves)
    best_index = argmax(curve)  # the earliest of equal epochs
    entry = {"name": first.victim_name, "victim_acc": first.victim_accuracy, "test_acc_per_epoch": curve,
             "best_epoch": best_index + 1, "best_acc": curve[best_index], "final_acc": curve[-1], "budget": first.budget,
             "epochs": first.epochs}
    if len(runs) > 1:
        entry["test_acc_per_epoch_seeds"] = curves
        entry["final_acc_seeds"] = [c[-1] for c in curves]
    if "val_acc" in first.history[0]:
        vals = [[r["val_acc"] for r in run.history] for run in runs]
        entry["val_acc_per_epoch"] = mean_curve(vals)
        if len(runs) > 1:
            entry["val_acc_per_epoch_seeds"] = vals
        entry["val_selected_epoch"] = first.val_selected_epoch if len(runs) == 1 else \
            [run.val_selected_epoch for run in runs]
    return entry


def early_stopping_row(results: KnockoffResult | Sequence[KnockoffResult]) -> dict:
    """The attacker who stops at its best validation epoch against the test-selected best epoch.

    ``gain_captured`` = (val-selected - last) / (best - last): the share of the
    best-epoch gain over training to the end that validation stopping obtains
    (None when the last epoch is already the best: there is no gain to capture).
    Several runs (one per seed) give means, with ``<column>_seeds`` beside.
    """
    runs = [results] if isinstance(results, KnockoffResult) else list(results)
    if any(r.val_selected_accuracy is None for r in runs):
        raise ValueError("this attack held out no validation split: call knockoff with "
                         "validation_fraction > 0 to compare early stopping")
    first = runs[0]
    row = {"name": first.victim_name, "victim_acc": first.victim_accuracy, "final_epoch": first.epochs,
           **seeded_columns([{"final_acc": r.final_accuracy, "best_acc": r.best_accuracy,
                              "val_selected_acc": r.val_selected_accuracy} for r in runs],
                            ["final_acc", "best_acc", "val_selected_acc"])}
    epochs = lambda attr: getattr(first, attr) if len(runs) == 1 else [getattr(r, attr) for r in runs]
    row["best_epoch"], row["val_selected_epoch"] = epochs("best_epoch"), epochs("val_selected_epoch")
    gain = row["best_acc"] - row["final_acc"]
    row["gain_captured"] = (row["val_selected_acc"] - row["final_acc"]) / gain if gain > 0 else None
    return row


# --------------------------------------------------------------------------- budget curves


def budget_curve(profile: Profile, victim_key: str, budgets: Iterable[int | str],
                 store: ArtifactStore | None = None, on_result: Callable | None = None) -> dict:
    """Recovery against the number of queries (beyond the paper): Table 2's attack at each budget.

    Every budget trains with Table 2's recipe (same epochs, so a smaller budget also takes
    fewer steps, as a smaller transfer set would) on the seeds of ``budget_curves``; the
    budget equal to the profile's is Table 2's own runs.  Returns ``{"name", "victim_acc",
    "points": {budget: {surrogate_acc, recovery (+ _seeds)}}}``.
    """
    store = store or ArtifactStore(profile.cache_root)
    points = {}
    for budget in budgets:
        runs = knockoff_seeds(profile, victim_key, "budget_curves", budget=budget, store=store,
                              **table2_attack(profile))
        if on_result:
            for run in runs:
                on_result(victim_key, budget, run)
        points[str(runs[0].budget)] = {"budget": runs[0].budget, "epochs": runs[0].epochs,
                                       **seeded_columns([{"surrogate_acc": r.final_accuracy, "recovery": r.recovery}
                                                         for r in runs], ["surrogate_acc", "recovery"]),
                                       "seeds": len(runs)}
        victim_acc, name = runs[0].victim_accuracy, runs[0].victim_name
    return {"name": name, "victim_acc": victim_acc, "points": points}


# --------------------------------------------------------------------------- 5.1.3


def section_5_1_3_pair(profile: Profile, seed: int, recipe, store: ArtifactStore | None = None) -> tuple:
    """Notebook 04's 5.1.3 runs for one seed: GTSRB attacked with every Diabetic5 image, and with
    as many ImageNet queries (the second budget is the first's, so one task makes both)."""
    with_diabetic = knockoff(profile, "gtsrb", pool="diabetic5", pool_split="train", budget="all", seed=seed,
                             recipe=recipe, test_curve=False, store=store)
    same_budget = knockoff(profile, "gtsrb", budget=with_diabetic.budget, seed=seed, recipe=recipe,
                           test_curve=False, store=store)
    return with_diabetic, same_budget
