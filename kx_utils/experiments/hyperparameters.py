"""Section 5.2.1 of the paper (notebook 05): the surrogate's batch size and its number of epochs.

- :func:`table7_rows`: the last-epoch accuracy per training batch size (Table 7, with its equal-steps control
  beyond the paper) and :func:`batch_size_summary`, the best batch size beside the paper's;
- :func:`convergence_rows`: Table 7 again with every batch size trained until the attacker's validation
  accuracy stops improving (the paper's own advice in 5.2.1), which decides claim 5 where it ran;
- :func:`figure2_entries`: accuracy over the epochs (Figure 2) and the attacker who stops on its own
  validation split (the early-stopping table);
- :func:`notes`: what the notebook's results say about how they were made.

Each function takes the profile and its :class:`~kx_utils.experiments.section5.Section5Settings` and checks
the invariants its results must hold (seeds, batch sizes, budgets and epochs of every run, the default
column reusing notebook 04's surrogates; outside ``smoke``, surrogates beating chance), raising
:class:`RuntimeError` when one does not.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ..config.profiles import RATIONALE
from ..config.schema import VICTIM_KEYS, Profile
from ..config.seeds import seeded, seeds_for, seeds_note
from ..core.selection import best
from ..runtime.artifacts import ArtifactStore
from ..runtime.regime import meaningful_numbers
from .architecture_and_output import check_table2_runs
from .attack import KnockoffResult, knockoff
from .section5 import (
    Section5Settings,
    batch_size_rows,
    curve_entry,
    early_stopping_row,
    knockoff_seeds,
    table7_experiment,
)
from .victims import PRETRAINED_VICTIMS, chance_level, require_above_chance

PAPER_BATCH_SIZES = (16, 64, 128, 256)
REFERENCE_BATCH_SIZE = 64  # the equal-steps control matches batch 64's number of SGD steps


def table7_rows(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None,
                on_result: Callable[[str, int, KnockoffResult], None] | None = None) -> dict:
    """Table 7: ``{victim: row}`` of :func:`batch_size_rows` for ``settings.table7_victims`` and
    ``table7_batch_sizes`` with Table 2's attack (its batch-64 column is Table 2's runs), with the equal-steps
    control where
    ``settings.table7_control`` names one.  ``on_result(victim, batch_size, result)`` sees every run."""
    rows, results = batch_size_rows(profile, settings.table7_victims, settings.table7_batch_sizes, store=store,
                                    on_result=on_result, equal_steps=settings.table7_control is not None,
                                    **settings.attack)
    for key, row in rows.items():
        per_batch_size = dict(results[key])
        check_equal_steps_control(profile, settings, row, per_batch_size.pop("equal_steps", None))
        for batch_size, runs in per_batch_size.items():
            check_batch_size_runs(profile, settings, key, batch_size, runs)
        if meaningful_numbers(profile):
            require_above_chance(row, chance_level(profile, key, store),
                                 {f"bs{b}": row[f"bs{b}"] for b in settings.table7_batch_sizes})
    default = profile.surrogate_recipe.batch_size
    if rows and default in settings.table7_batch_sizes:  # Table 7's default column is Table 2's surrogate
        key = settings.table7_victims[0]
        first = results[key][default][0]
        if key in PRETRAINED_VICTIMS:
            check_table2_runs(profile, key, results[key][default])
        again = knockoff(profile, key, store=store, seed=first.settings["seed"], **settings.attack)
        if not (again.from_cache and again.queries_sent == 0 and again.final_accuracy == first.final_accuracy):
            raise RuntimeError(f"Table 7 {key} bs{default}: rerunning Table 2's surrogate sent "
                               f"{again.queries_sent} queries (from cache: {again.from_cache}) or changed its "
                               "accuracy: it was not reused")
    return rows


def check_batch_size_runs(profile: Profile, settings: Section5Settings, key: str, batch_size: int,
                          runs: Sequence[KnockoffResult]) -> None:
    """Raise unless ``runs`` are one per seed of the plan (:func:`table7_experiment`), each at ``batch_size``,
    Table 2's budget and its epochs."""
    expected = list(seeds_for(profile, table7_experiment(batch_size, settings.recipe)))
    seeds = [r.settings.get("seed") for r in runs]
    if seeds != expected:
        raise RuntimeError(f"Table 7 {key} bs{batch_size}: seeds {seeds}, expected {expected}")
    for r in runs:
        if (r.batch_size, r.budget, r.epochs) != (batch_size, settings.budget, settings.recipe.epochs):
            raise RuntimeError(f"Table 7 {key} seed {r.settings.get('seed')}: batch size {r.batch_size}, "
                               f"{r.budget} queries, {r.epochs} epochs; expected {batch_size}, "
                               f"{settings.budget}, {settings.recipe.epochs}")


def check_equal_steps_control(profile: Profile, settings: Section5Settings, row: Mapping,
                              control: Sequence[KnockoffResult] | None) -> None:
    """Raise unless the equal-steps control ran exactly where ``settings.table7_control`` says, on the seeds of
    ``table7_equal_steps``, at that batch size and within half an epoch's steps of batch 64's step count."""
    if settings.table7_control is None:
        if control is not None:
            raise RuntimeError(f"Table 7 {row['name']}: an equal-steps control ran where the plan has none")
        return
    expected = list(seeds_for(profile, "table7_equal_steps"))
    if control is None or [r.settings.get("seed") for r in control] != expected:
        raise RuntimeError(f"Table 7 {row['name']}: the equal-steps control should run on seeds {expected}")
    steps = row["steps_per_epoch"]
    reference = settings.recipe.epochs * steps[f"bs{REFERENCE_BATCH_SIZE}"]
    for r in control:
        per_epoch = steps[f"bs{r.batch_size}"]
        if r.batch_size != settings.table7_control or abs(r.epochs * per_epoch - reference) > per_epoch / 2:
            raise RuntimeError(f"Table 7 {row['name']}: the control trained batch size {r.batch_size} for "
                               f"{r.epochs * per_epoch} steps; expected {settings.table7_control} for about "
                               f"{reference} (batch {REFERENCE_BATCH_SIZE}'s)")


def convergence_rows(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None,
                     on_result: Callable[[str, int, KnockoffResult], None] | None = None) -> dict:
    """Table 7 under the convergence protocol: for each victim of ``settings.convergence_victims`` and each
    batch size of Table 7, surrogates trained until the attacker's validation accuracy has not improved for
    ``convergence_patience`` epochs (``convergence_recipe.epochs`` at most, the step schedule spanning them),
    on the seeds of ``table7_convergence``.

    A row holds ``bs<b>``: the test accuracy at the epoch the attacker's validation picks (what an attacker
    who stops on its own data keeps), ``bs<b>_last`` the last epoch trained, ``epochs_trained`` per batch size
    (one per seed), the budget, the most epochs and the patience, and ``best_batch_size``.
    """
    rows = {}
    for key in settings.convergence_victims:
        results = {}
        for b in settings.table7_batch_sizes:
            runs = results[b] = knockoff_seeds(profile, key, "table7_convergence", batch_size=b, store=store,
                                               **settings.convergence_attack)
            for r in runs:
                if r.val_selected_accuracy is None or r.epochs_trained > settings.convergence_recipe.epochs:
                    raise RuntimeError(f"Table 7 convergence {key} bs{b} seed {r.settings['seed']}: trained "
                                       f"{r.epochs_trained} epochs (at most {settings.convergence_recipe.epochs}) "
                                       "without a validation-selected epoch")
                if on_result:
                    on_result(key, b, r)
        first = results[settings.table7_batch_sizes[0]][0]
        row = {"name": first.victim_name, "victim_acc": first.victim_accuracy}
        for b, runs in results.items():
            row.update(seeded(f"bs{b}", [r.val_selected_accuracy for r in runs]))
            row.update(seeded(f"bs{b}_last", [r.final_accuracy for r in runs]))
        row["best_batch_size"] = best(results, key=lambda b: row[f"bs{b}"], ties=lambda b: b)
        row["epochs_trained"] = {f"bs{b}": [r.epochs_trained for r in runs] for b, runs in results.items()}
        row["budget"], row["max_epochs"] = first.budget, settings.convergence_recipe.epochs
        row["patience"] = settings.convergence_patience
        row["seeds"] = [r.settings["seed"] for r in results[settings.table7_batch_sizes[0]]]
        if meaningful_numbers(profile):
            require_above_chance(row, chance_level(profile, key, store),
                                 {f"bs{b}": row[f"bs{b}"] for b in settings.table7_batch_sizes})
        rows[key] = row
    return rows


def batch_size_summary(rows: Mapping[str, Mapping], paper_rows: Mapping[str, Mapping]) -> dict[str, dict]:
    """Per victim name: the best batch size measured and the paper's (from ``paper_rows``, Table 7 of
    :mod:`kx_utils.report.paper`), the SGD steps per epoch and the seeds of each batch size, and the
    equal-steps control's accuracy where it ran."""
    summary = {}
    for key, row in rows.items():
        paper_row = paper_rows.get(key)
        summary[row["name"]] = {
            "best bs (ours)": row["best_batch_size"],
            "best bs (paper)": max(PAPER_BATCH_SIZES, key=lambda b: paper_row[f"bs{b}"]) if paper_row else None,
            **{f"steps/epoch {b}": n for b, n in row["steps_per_epoch"].items()},
            **{f"seeds {b}": n for b, n in row["seeds_per_batch_size"].items()},
            # the control: the largest batch size for as many SGD steps as batch 64
            **{f"{b} for {e} epochs (bs64's steps)": f"{row[f'{b}_equal_steps']:.1%}"
               for b, e in (row.get("equal_steps_epochs") or {}).items()}}
    return summary


def figure2_entries(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None
                    ) -> tuple[dict, dict]:
    """Figure 2 and the early-stopping table: ``(figure2, early)``, per victim of ``settings.figure2_victims``
    the :func:`curve_entry` and the :func:`early_stopping_row` of its long runs (``figure2_budget`` queries,
    ``figure2_recipe``, the profile's validation share held out), one per seed of ``figure2``."""
    figure2, early = {}, {}
    for key in settings.figure2_victims:
        runs = knockoff_seeds(profile, key, "figure2", budget=settings.figure2_budget,
                              recipe=settings.figure2_recipe, validation_fraction=profile.validation_fraction,
                              store=store)
        entry = figure2[key] = curve_entry(runs)
        row = early[key] = early_stopping_row(runs)
        if len(entry["test_acc_per_epoch"]) != settings.figure2_recipe.epochs:
            raise RuntimeError(f"Figure 2 {key}: {len(entry['test_acc_per_epoch'])} epochs in the curve, "
                               f"expected {settings.figure2_recipe.epochs}")
        # no stopping rule, on validation or at the end, can beat the epoch chosen on the test set
        if row["final_acc"] > row["best_acc"] + 1e-12 or row["val_selected_acc"] > row["best_acc"] + 1e-12:
            raise RuntimeError(f"Figure 2 {key}: last ({row['final_acc']}) or validation-selected "
                               f"({row['val_selected_acc']}) accuracy above the best epoch's ({row['best_acc']})")
        if meaningful_numbers(profile):
            require_above_chance(entry, chance_level(profile, key, store), {"final": entry["final_acc"]})
    return figure2, early


def notes(profile: Profile, settings: Section5Settings) -> list[str]:
    """The notes of notebook 05's results: the batch sizes and victims Table 7 leaves out, its control, its
    size, Figure 2's runs and the seeds."""
    out = []
    missing = [b for b in PAPER_BATCH_SIZES if b not in settings.table7_batch_sizes]
    if missing:
        out.append(f"Table 7: batch sizes {missing} not run in this profile.")
    if set(settings.table7_victims) != set(VICTIM_KEYS):
        out.append(f"Table 7: only victims {', '.join(settings.table7_victims)}." +
                   (" " + RATIONALE["table7"] if profile.name == "mini" else ""))
    if settings.table7_control is not None and settings.table7_victims:
        out.append("Table 7's equal-steps control (beyond the paper): " + RATIONALE["table7_equal_steps"])
    out.append(f"Table 7: Table 2's attack ({settings.budget:,} queries, {settings.recipe.epochs} epochs) at "
               f"every batch size; its batch-{settings.recipe.batch_size} column is Table 2's surrogates.")
    if settings.convergence_victims:
        out.append(f"Table 7, convergence protocol (beyond the paper's table, its advice in 5.2.1): victims "
                   f"{', '.join(settings.convergence_victims)}, {settings.convergence_budget:,} queries, each batch "
                   f"size trained until the attacker's validation accuracy has not improved for "
                   f"{settings.convergence_patience} epochs ({settings.convergence_recipe.epochs} at most); the "
                   "accuracy is the test accuracy at the epoch the attacker's validation picks. Claim 5 is "
                   "decided on it." + (" " + RATIONALE["table7"] if profile.name == "mini" else ""))
    out.append(f"Figure 2 / early stopping: {settings.figure2_budget} queries, {settings.figure2_recipe.epochs} "
               f"epochs, {profile.validation_fraction:.0%} of the queries held out as the attacker's validation set "
               f"(the surrogate trains on the rest); victims {', '.join(settings.figure2_victims)}."
               + (" " + RATIONALE["figure2"] if profile.name == "mini" else ""))
    out.append("Table 7: epochs fixed, so larger batches take fewer SGD steps (as in the paper).")
    out.append(f"Seeds: {seeds_note(profile)}.")
    return out
