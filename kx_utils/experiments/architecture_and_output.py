"""Section 5.1 of the paper (notebook 04): what the victim's architecture, its answers and the attacker's
queries take from the Knockoff attack.

- :func:`table5_rows`: pretrained victims against victims trained from scratch (Table 5);
- :func:`table6_rows`: one surrogate per answer format of the API (Table 6, with its top-k and rounded
  columns beyond the paper);
- :func:`figure1_entry`: the CIFAR10 transfer set's class histogram beside per-class accuracies (Figure 1);
- :func:`section_5_1_3_values`: the GTSRB victim queried with Diabetic5 images, and with as many ImageNet ones;
- :func:`notes`: what the notebook's results say about how they were made.

Each function takes the profile and its :class:`~kx_utils.experiments.section5.Section5Settings` and checks
the invariants its results must hold (the seeds each row ran, the queries each surrogate got, a rerun
reusing the cache; outside ``smoke``, surrogates beating chance), raising :class:`RuntimeError` when one
does not.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..config.profiles import RATIONALE
from ..config.schema import Profile
from ..config.seeds import seeded, seeded_columns, seeds_for, seeds_note
from ..runtime.artifacts import ArtifactStore
from ..runtime.regime import meaningful_numbers
from .attack import knockoff, surrogate_settings
from .section5 import (
    EXTRA_FORMATS,
    PAPER_FORMATS,
    FormatOutcome,
    Section5Settings,
    attack_formats,
    figure1_data,
    format_row,
    knockoff_row,
    knockoff_seeds,
    section_5_1_3_pair,
    table2_attack,
)
from .victims import (
    PRETRAINED_VICTIMS,
    chance_level,
    get_victim,
    require_above_chance,
)

# Table 6's columns, A_p and A_c first
ALL_FORMATS = PAPER_FORMATS + EXTRA_FORMATS


def table5_rows(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None) -> dict:
    """Table 5: ``{victim: knockoff_row + "chance"}`` for the pretrained victims and their scratch-trained
    counterparts (``settings.table5_victims``), with Table 2's attack, on the seeds of ``table5``; the pretrained
    rows are Table 2's runs (:func:`check_table2_runs`)."""
    seeds = list(seeds_for(profile, "table5"))
    rows = {}
    for key in settings.table5_victims:
        runs = knockoff_seeds(profile, key, "table5", store=store, **settings.attack)
        if key in PRETRAINED_VICTIMS:
            check_table2_runs(profile, key, runs)
        row = {**knockoff_row(runs), "chance": chance_level(profile, key, store)}
        if row["queries"] != settings.budget or row["seeds"] != seeds:
            raise RuntimeError(f"Table 5 {key}: {row['queries']} queries on seeds {row['seeds']}, "
                               f"expected {settings.budget} on {seeds}")
        if meaningful_numbers(profile):
            require_above_chance(row, row["chance"], {"surrogate": row["surrogate_acc"]})
        rows[key] = row
    return rows


def table6_formats(profile: Profile, settings: Section5Settings, key: str, seed: int) -> tuple[str, ...]:
    """The answer formats ``key`` is attacked with on ``seed`` (one of ``table6``'s, Table 2's seeds): A_p, which
    is Table 2's run, A_c on the seeds of ``table6_label``, and top-k and rounded for the victims of
    ``settings.extra_format_victims`` on the seeds of ``extra_formats``."""
    label = ("label",) if seed in seeds_for(profile, "table6_label") else ()
    extra = key in settings.extra_format_victims and seed in seeds_for(profile, "extra_formats")
    return ("probs",) + label + (EXTRA_FORMATS if extra else ())


def table6_rows(profile: Profile, settings: Section5Settings, store: ArtifactStore | None = None,
                table5: Mapping[str, Mapping] | None = None) -> tuple[dict, dict[str, list[dict[str, FormatOutcome]]]]:
    """Table 6: ``(rows, outcomes)``, ``rows[victim]`` the :func:`format_row` of every seed of ``table6`` with
    ``"chance"``, ``outcomes[victim]`` one :func:`attack_formats` per seed.

    With ``table5`` (:func:`table5_rows`), a victim in both tables must have the same probability-vector
    surrogates in both (one artifact per seed, two tables) where both ran the same seeds.
    """
    seeds = seeds_for(profile, "table6")
    rows, outcomes = {}, {}
    for key in settings.table6_victims:
        outcomes[key] = [attack_formats(profile, key, table6_formats(profile, settings, key, seed), store=store,
                                        seed=seed, **settings.attack) for seed in seeds]
        for seed, per_format in zip(seeds, outcomes[key]):
            check_format_outcomes(key, seed, per_format, settings.budget)
        check_table2_runs(profile, key, [per_format["probs"].result for per_format in outcomes[key]])
        row = rows[key] = {**format_row(outcomes[key]), "chance": chance_level(profile, key, store)}
        if meaningful_numbers(profile):
            require_above_chance(row, row["chance"], {f: row.get(f"{f}_acc") for f in ALL_FORMATS})
        shared = (table5 or {}).get(key)
        if shared is not None and shared["seeds"] == list(seeds) and row["probs_acc"] != shared["surrogate_acc"]:
            raise RuntimeError(f"{key}: Table 6's probability-vector surrogate ({row['probs_acc']}) is not "
                               f"Table 5's ({shared['surrogate_acc']}): the two tables should share it")
    # a rerun must reuse the stored answers and surrogate (the notebook's own check of the cache)
    if "cifar10" in rows:
        again = knockoff(profile, "cifar10", mode="label", store=store, **settings.attack)
        if not (again.from_cache and again.queries_sent == 0):
            raise RuntimeError(f"rerunning the label-only attack on cifar10 sent {again.queries_sent} queries "
                               f"(from cache: {again.from_cache}): the cache was not reused")
    return rows, outcomes


def check_table2_runs(profile: Profile, key: str, runs: Sequence) -> None:
    """Raise unless each of ``runs`` (probability-vector attacks on ``key``, one per seed) is Table 2's attack of
    that seed: the same cache key but for the test curve, so that it is Table 2's stored surrogate where notebook
    02 ran first (:func:`kx_utils.experiments.attack.cached_surrogate`; the grid trains it once)."""
    for run in runs:
        table2 = surrogate_settings(profile, key, seed=run.settings["seed"], **table2_attack(profile))
        if {**table2, "test_curve": run.settings["test_curve"]} != run.settings:
            differing = sorted(k for k in table2 if table2[k] != run.settings.get(k) and k != "test_curve")
            raise RuntimeError(f"{key} seed {run.settings['seed']}: this probability-vector surrogate is not Table "
                               f"2's attack (settings differ in {differing}): Section 5 must reuse Table 2's runs")


def check_format_outcomes(key: str, seed: int, per_format: Mapping[str, FormatOutcome], budget: int) -> None:
    """Raise unless every format's surrogate of ``key`` ran ``budget`` queries on ``seed``, and top-1 reused an
    earlier format's surrogate: renormalised top-1 answers are one-hot labels, the label API's (or the
    probability vectors', where a victim's softmax saturates to one-hot rows)."""
    top1 = per_format.get("top1")
    if top1 is not None and top1.same_targets_as not in ("label", "probs"):
        raise RuntimeError(f"{key} seed {seed}: the top-1 targets equal neither A_c's nor A_p's "
                           f"(same as: {top1.same_targets_as}), so top-1 trained a surrogate of its own")
    for name, outcome in per_format.items():
        result = outcome.result
        if result.query_count != budget or result.settings.get("seed") != seed:
            raise RuntimeError(f"{key} {name}: {result.query_count} queries on seed {result.settings.get('seed')}, "
                               f"expected {budget} on seed {seed}")


def figure1_entry(profile: Profile, outcomes: Mapping[str, Sequence[Mapping[str, FormatOutcome]]], n_gaps: int,
                  store: ArtifactStore | None = None) -> dict:
    """Figure 1 (:func:`figure1_data`) from the first seed's A_p surrogate of the CIFAR10 victim in
    ``outcomes`` (:func:`table6_rows`), with its ``n_gaps`` largest per-class gaps named."""
    cifar = outcomes["cifar10"][0]["probs"].result
    entry = figure1_data(cifar, get_victim(profile, "cifar10", store).classes, n_gaps)
    if sum(entry["histogram"]) != cifar.query_count or len(entry["largest_gaps"]) != n_gaps:
        raise RuntimeError(f"Figure 1: {sum(entry['histogram'])} queries in the histogram for "
                           f"{cifar.query_count} sent, {len(entry['largest_gaps'])} gaps marked for {n_gaps}")
    return entry


SECTION_5_1_3_PER_SEED = ("gtsrb_with_diabetic5_queries_acc", "gtsrb_with_imagenet_same_budget_acc",
                          "diabetic5_recovery")


def section_5_1_3_values(profile: Profile, settings: Section5Settings, table5: Mapping[str, Mapping],
                         store: ArtifactStore | None = None) -> dict:
    """§5.1.3: the GTSRB victim attacked with every Diabetic5 image and with as many ImageNet queries
    (:func:`section_5_1_3_pair`, each seed of ``section_5_1_3``), beside Table 5's ImageNet surrogate.

    Returns the means (``<column>_seeds`` beside), the victim's accuracy, both budgets and how many GTSRB
    classes the first seed's Diabetic5 queries land on.
    """
    pairs = [section_5_1_3_pair(profile, seed, settings.recipe, store)
             for seed in seeds_for(profile, "section_5_1_3")]
    for with_diabetic, same_budget in pairs:
        if not (with_diabetic.pool == "diabetic5" and with_diabetic.query_count == with_diabetic.budget
                == same_budget.budget):
            raise RuntimeError(f"5.1.3: {with_diabetic.query_count} {with_diabetic.pool} queries of a budget of "
                               f"{with_diabetic.budget}, control budget {same_budget.budget}: they should agree")
    per_seed = [{"gtsrb_with_diabetic5_queries_acc": with_diabetic.final_accuracy,
                 "gtsrb_with_imagenet_same_budget_acc": same_budget.final_accuracy,
                 "diabetic5_recovery": with_diabetic.recovery} for with_diabetic, same_budget in pairs]
    first, imagenet = pairs[0][0], table5["gtsrb"]
    return {
        **seeded_columns(per_seed, list(SECTION_5_1_3_PER_SEED)),
        # the ImageNet surrogate of Table 5 (this notebook's budget), the paper's comparison
        **seeded("gtsrb_with_imagenet_queries_acc", imagenet.get("surrogate_acc_seeds") or [imagenet["surrogate_acc"]]),
        "victim_acc": first.victim_accuracy, "budget": first.budget, "imagenet_budget": imagenet["budget"],
        "diabetic5_predicted_classes": sum(c > 0 for c in first.transfer_histogram),
    }


def notes(profile: Profile, settings: Section5Settings, section_5_1_3: Mapping | None = None) -> list[str]:
    """The notes of notebook 04's results: its sizes where they depart from Table 2's, the top-1 reuse,
    the victims of the extra columns and the seeds; ``section_5_1_3`` (None: not run) for its budget."""
    out = []
    if profile.standins and section_5_1_3 is not None:
        out.append(f"5.1.3: all {section_5_1_3['budget']} images of the Diabetic5 stand-in's train split were "
                   f"queried (the paper does not give its count); ImageNet control with the same budget.")
    out.append(f"Tables 5-6: Table 2's attack ({settings.budget:,} queries, {settings.recipe.epochs} epochs, "
               f"{settings.validation_fraction:.0%} held out as the attacker's validation set); the "
               "probability-vector surrogates and Table 5's pretrained rows are Table 2's runs. 5.1.3: Table 2's "
               "recipe." + (" " + RATIONALE["section5_budget"] if profile.name == "mini" else ""))
    out.append("Table 6: top-1 answers, renormalised, are the one-hot labels of A_c; the notebook checks the "
               "transfer sets are identical and reuses A_c's surrogate for the top1 column.")
    if not settings.extra_format_victims:
        out.append("Table 6: no top-k or rounded column in this profile." +
                   (" " + RATIONALE["single_seed"] if profile.name == "mini" else ""))
    elif set(settings.extra_format_victims) != set(PRETRAINED_VICTIMS):
        out.append(f"Table 6: top-k and rounded columns only for {', '.join(settings.extra_format_victims)}.")
    out.append(f"Seeds: {seeds_note(profile)}.")
    return out
