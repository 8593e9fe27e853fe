"""Notebook 02's tables and figures (paper §3, Table 2), each one call that returns what the notebook stores.

- :func:`table2_rows`: Table 2's rows and the runs behind them (one :class:`KnockoffResult` per seed);
- :func:`table2_training_curves`: the appendix's Table 2 training curves (``run.figures["knockoff"]``);
- :func:`budget_curves` and :func:`budget_curve_rows`: recovery against the number of queries (beyond
  the paper), as the figure and as the report's table;
- :func:`knockoff_notes`: the notes the notebook adds to its results.

The runtime checks the notebook used to assert run here and raise a :class:`RuntimeError` that says
what went wrong: each seed's attack queried the full budget with its own transfer-set sample, a rerun
sends no query, the budget curve's point at Table 2's budget is Table 2's own runs, and (where the
numbers mean something, :func:`~kx_utils.runtime.regime.meaningful_numbers`) a surrogate of a victim
that clearly learned its task beats chance.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..config.profiles import get_profile
from ..config.schema import Profile
from ..config.seeds import seeds_for, seeds_note
from ..data.catalog import dataset_info
from ..runtime.artifacts import ArtifactStore
from ..runtime.regime import meaningful_numbers
from .attack import KnockoffResult, knockoff
from .section5 import (
    budget_curve,
    curve_entry,
    knockoff_row,
    knockoff_seeds,
    table2_attack,
)
from .victims import (
    PRETRAINED_VICTIMS,
    available_victims,
    chance_accuracy,
    require_above_chance,
    victim_data,
    victim_name,
    victim_spec,
)

TABLE2_COLUMNS = ("victim_acc", "surrogate_acc", "recovery")  # the columns shown beside the paper's
# the columns of the report's budget-curve table, one row per (victim, budget)
BUDGET_CURVE_COLUMNS = ("budget", "epochs", "surrogate_acc", "recovery", "seeds")


def attack_summary(profile: Profile) -> str:
    """One line on the attack the profile runs: budget, pool, surrogate, recipe, held-out share, seeds."""
    pool = dataset_info("imagenet")
    recipe = profile.surrogate_recipe
    return (f"profile {profile.name}: transfer set of {profile.transfer_budget} queries from "
            f"{pool.standin if profile.standins else pool.folder}; surrogate {profile.surrogate_arch}, "
            f"{recipe.epochs} epochs, batch size {recipe.batch_size}, "
            f"{profile.surrogate_validation_fraction:.0%} of the queries held out for validation; "
            f"{seeds_note(profile)}")


# --------------------------------------------------------------------------- Table 2


def check_table2_row(profile: Profile, row: Mapping, runs: Sequence[KnockoffResult]) -> None:
    """Raise RuntimeError where a Table 2 row breaks what the attack guarantees (see the module's doc)."""
    name = row["name"]
    if meaningful_numbers(profile):
        require_above_chance(row, row["chance"], {"surrogate": row["surrogate_acc"]})
    if not row["queries"] == row["budget"] == profile.transfer_budget:
        raise RuntimeError(f"{name}: {row['queries']} queries for a budget of {row['budget']}; the profile's "
                           f"transfer_budget is {profile.transfer_budget}")
    expected = list(seeds_for(profile, "table2"))
    if row["seeds"] != expected:
        raise RuntimeError(f"{name}: Table 2 ran seeds {row['seeds']}, the profile gives {expected}")
    query_seeds = [r.settings["query"]["seed"] for r in runs]
    if len(set(query_seeds)) != len(runs):  # each seed draws its own transfer set
        raise RuntimeError(f"{name}: the {len(runs)} seeds share transfer-set samples (query seeds {query_seeds})")


def check_rerun_is_cached(profile: Profile, victim_key: str, store: ArtifactStore | None = None) -> None:
    """Raise RuntimeError unless Table 2's attack on ``victim_key`` (the profile's seed), asked again, comes
    whole from the cache and sends no query."""
    again = knockoff(profile, victim_key, store=store, **table2_attack(profile))
    if not (again.from_cache and again.queries_sent == 0):
        raise RuntimeError(f"{victim_key}: Table 2's attack asked again sent {again.queries_sent} queries "
                           f"(from cache: {again.from_cache}); it should reuse the cached surrogate")


def table2_rows(profile: Profile, victims: Iterable[str] | None = None, store: ArtifactStore | None = None
                ) -> tuple[dict, dict]:
    """Table 2: the Knockoff attack on each victim (default: the pretrained victims the profile can train),
    once per seed of ``table2``.

    Returns ``(rows, results)``: ``rows[victim]`` is :func:`knockoff_row` with the victim's ``chance``
    accuracy and ``test_size``; ``results[victim]`` the runs, one per seed.  Raises RuntimeError when a
    row breaks :func:`check_table2_row` or a rerun of the first victim's attack is not cached.
    """
    rows, results = {}, {}
    for key in victims or available_victims(profile, PRETRAINED_VICTIMS):
        runs = knockoff_seeds(profile, key, "table2", store=store, **table2_attack(profile))
        _, test = victim_data(profile, key, store)
        results[key] = runs
        rows[key] = {**knockoff_row(runs), "chance": chance_accuracy(test.labels), "test_size": len(test)}
        check_table2_row(profile, rows[key], runs)
    if rows:
        check_rerun_is_cached(profile, next(iter(rows)), store)
    return rows, results


def table2_training_curves(results: Mapping[str, Sequence[KnockoffResult]]) -> dict:
    """The appendix's Table 2 training curves: victim -> :func:`curve_entry` of its runs."""
    return {key: curve_entry(runs) for key, runs in results.items()}


def paper_victim_names(victims: Iterable[str]) -> dict:
    """Victim -> its name in the ``paper`` profile (CIFAR10-RN34): the rows of the Knockoff paper's own
    Table 2 (``paper.KNOCKOFF_TABLE2``), whose victims are ResNet34s."""
    paper_profile = get_profile("paper")
    return {key: victim_name(paper_profile, key) for key in victims}


def standins_line(victims: Iterable[str]) -> str:
    """"Stand-ins in this profile: <paper dataset> -> <stand-in>; ..." for the datasets of ``victims``."""
    infos = [dataset_info(victim_spec(key).dataset) for key in victims]
    return "Stand-ins in this profile: " + "; ".join(f"{info.paper_name} -> {info.standin}" for info in infos)


# --------------------------------------------------------------------------- budget curves


def check_budget_curve(profile: Profile, key: str, curve: Mapping,
                       table2_runs: Sequence[KnockoffResult] | None = None) -> None:
    """Raise RuntimeError unless the curve's budgets ascend and its point at the profile's budget holds
    Table 2's own runs (``table2_runs``, one per seed): the same per-seed accuracies, as far as both go."""
    budgets = [p["budget"] for p in curve["points"].values()]
    if budgets != sorted(budgets):
        raise RuntimeError(f"{key}: the budget curve's budgets {budgets} are not in ascending order "
                           "(section5.budget_curve_budgets)")
    same = curve["points"].get(str(profile.transfer_budget))
    if same is None or not table2_runs:
        return
    # budget_curves and table2 run the first seed(s) of the same list: compare the seeds both ran
    curve_accs = same.get("surrogate_acc_seeds") or [same["surrogate_acc"]]
    table2_accs = [r.final_accuracy for r in table2_runs]
    n = min(len(curve_accs), len(table2_accs))
    if curve_accs[:n] != table2_accs[:n] or same["budget"] != table2_runs[0].budget:
        raise RuntimeError(f"{key}: the budget curve's point at {same['budget']} queries ({curve_accs}) is not "
                           f"Table 2's run at {table2_runs[0].budget} ({table2_accs})")


def budget_curves(profile: Profile, table2_results: Mapping[str, Sequence[KnockoffResult]] | None = None,
                  store: ArtifactStore | None = None) -> dict:
    """The budget curves of ``section5.budget_curve_victims``: victim -> :func:`budget_curve` at
    ``section5.budget_curve_budgets`` (``run.figures["budget_curves_figure"]``).

    ``table2_results`` (from :func:`table2_rows`) lets each curve be checked against Table 2's runs
    (:func:`check_budget_curve`, which raises RuntimeError).
    """
    plan = profile.section5
    curves = {}
    for key in plan.budget_curve_victims:
        curves[key] = budget_curve(profile, key, plan.budget_curve_budgets, store=store)
        check_budget_curve(profile, key, curves[key], (table2_results or {}).get(key))
    return curves


def budget_curve_rows(curves: Mapping[str, Mapping]) -> dict:
    """The report's budget-curve table: ``"<victim> @ <budget>"`` -> ``{name, budget, epochs, surrogate_acc,
    recovery, seeds}``, victims in order, each victim's budgets in the curve's order."""
    return {f"{key} @ {point['budget']}": {"name": curve["name"], **{c: point[c] for c in BUDGET_CURVE_COLUMNS}}
            for key, curve in curves.items() for point in curve["points"].values()}


def knockoff_notes(profile: Profile) -> list[str]:
    """The notes notebook 02 adds to its results: the attacker's held-out validation share (where it
    holds one out) and the seeds."""
    notes = []
    if profile.surrogate_validation_fraction:
        notes.append(f"Table 2: the attacker holds {profile.surrogate_validation_fraction:.0%} of its "
                     f"{profile.transfer_budget} queries out to watch its validation accuracy (the appendix's "
                     "curves) and trains on the rest; the paper's attacker trains on all of them.")
    notes.append(f"Seeds: {seeds_note(profile)}.")
    return notes
