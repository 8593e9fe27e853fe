"""The paper's notebooks and experiments, each declared once (:mod:`kx_utils.experiments.registry`).

An entry names its notebook, the result keys it feeds (what the report looks up), the grid tasks that
compute its artifacts (the calls its notebook makes under its default parameters), its part of the plan
and its cost model (:func:`kx_utils.experiments.workload.call_cost`).  Section 5's sizes come resolved from
:class:`~kx_utils.experiments.section5.Section5Settings`, as in the notebooks.  Mirroring the notebooks'
calls is checked, not trusted: the grid test runs the smoke grid, then every notebook with training
forbidden (:data:`kx_utils.core.train.NO_TRAINING_ENV`).
"""

from __future__ import annotations

from ..config.schema import Profile
from ..config.seeds import seeds_for
from ..data.catalog import DATASETS
from .architecture_and_output import table6_formats
from .registry import Experiment, Notebook, TaskBuilder, declare
from .section5 import EXTRA_FORMATS, Section5Settings, table2_attack, table7_experiment
from .victims import (
    PRETRAINED_VICTIMS,
    VICTIMS,
    available_victims,
    victim_arch,
    victim_image_size,
    victim_name,
    victim_recipe,
)
from .workload import call_cost

VICTIM = "kx_utils.experiments.victims:get_victim"
DETECTION = "kx_utils.experiments.detection"


def recipe_text(recipe) -> str:
    return (f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g}, "
            f"augment {recipe.augment}")


def _listed(values) -> str:
    return ", ".join(map(str, values)) or "-"


def _all_or(n) -> str:
    return "all" if n is None else f"{n:,}"


# ---------------------------------------------------------------- 01: the victims (Table 1)


def victim_tasks(b: TaskBuilder) -> None:
    # as the notebooks do: a victim whose optional data is absent (mini's Diabetic5) has no tasks
    for key in available_victims(b.profile):
        b.victim[key] = b.add(f"victim/{key}", VICTIM, key)


def describe_victims(p: Profile) -> str:
    lines = [f"{len(VICTIMS)} victims (train images per class: {_all_or(p.train_per_class)}, "
             f"test per class: {_all_or(p.test_per_class)})"]
    for key in VICTIMS:
        kind = "ImageNet-pretrained" if key in PRETRAINED_VICTIMS else "from scratch"
        lines.append(f"  {victim_name(p, key):16s} {victim_arch(p, key)} ({kind}), {victim_image_size(p, key)} px, "
                     f"{recipe_text(victim_recipe(p, key))}")
    return "\n".join(lines)


# ---------------------------------------------------------------- 02: Knockoff (Table 2), the budget curves


def table2_tasks(b: TaskBuilder) -> None:
    for key in available_victims(b.profile, PRETRAINED_VICTIMS):
        for seed in seeds_for(b.profile, "table2"):
            b.surrogate(f"surrogate/table2/{key}/seed{seed}", key, seed=seed, **table2_attack(b.profile))


def describe_table2(p: Profile) -> str:
    pool = DATASETS["imagenet"]
    pool_name = f"{pool.standin} (stand-in for ImageNet)" if p.standins else pool.folder
    return (f"{len(PRETRAINED_VICTIMS)} surrogates {p.surrogate_arch} (pretrained), {p.transfer_budget:,} queries "
            f"each from {pool_name}, {recipe_text(p.surrogate_recipe)}")


def budget_curve_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.budget_curve_victims:
        for budget in s.budget_curve_budgets:
            for seed in seeds_for(b.profile, "budget_curves"):
                b.surrogate(f"surrogate/budget/{key}/{budget}/seed{seed}", key, budget=budget, seed=seed,
                            **table2_attack(b.profile))


def describe_budget_curves(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    return (f"budget curves for {', '.join(s.budget_curve_victims) or 'no victim'} at "
            f"{_listed(s.budget_curve_budgets)} queries")


# ---------------------------------------------------------------- 03: detection (Tables 3 and 4, the filter)


def overlap_tasks(b: TaskBuilder) -> None:
    b.add("detection/overlap", f"{DETECTION}:overlap_rows", list(available_victims(b.profile, PRETRAINED_VICTIMS)))


def describe_overlap(p: Profile) -> str:
    return "the audited ImageNet-overlap lists of the victims' datasets"


def table3_tasks(b: TaskBuilder) -> None:
    b.add("detection/table3", f"{DETECTION}:table3_rows")
    b.add("detection/cv_arch", f"{DETECTION}:choose_cv_arch")


def describe_table3(p: Profile) -> str:
    return (f"Table 3 on CUBS: {', '.join(p.detector_scratch_archs)} from scratch, with and without "
            f"ImageNet-overlapping classes ({recipe_text(p.detector_recipe)}); {', '.join(p.detector_cv_archs)} "
            f"frozen + logistic regression ({p.cv_folds}-fold CV), the chosen backbone")


def table4_tasks(b: TaskBuilder) -> None:
    for key in available_victims(b.profile, PRETRAINED_VICTIMS):
        b.add(f"detection/table4/{key}", f"{DETECTION}:table4_result", key, after=(b.victim[key], "detection/cv_arch"))


def describe_table4(p: Profile) -> str:
    return (f"Table 4: the chosen detector for {len(PRETRAINED_VICTIMS)} victims against MSP/ODIN/Mahalanobis "
            f"(TNR {p.baseline_tnr:.0%}); ImageNet train/test {_all_or(p.detector_ood_train)}/"
            f"{_all_or(p.detector_ood_test)}, OpenImages test {_all_or(p.openimages_test)}")


def filter_tasks(b: TaskBuilder) -> None:
    pretrained = available_victims(b.profile, PRETRAINED_VICTIMS)
    for key in pretrained:
        b.add(f"detection/filter/{key}", f"{DETECTION}:filter_report", key, after=(f"detection/table4/{key}",))
    if pretrained:  # 03's demonstration of the API with the detector in front, on its first victim
        b.add("detection/api_demo", f"{DETECTION}:api_demo", pretrained[0],
              after=(f"detection/table4/{pretrained[0]}",))


def describe_filter(p: Profile) -> str:
    return "the detector as a filter in front of the API, on Table 2's queries and the benign test images"


# ---------------------------------------------------------------- 04: Tables 5 and 6, Figure 1, 5.1.3


def table5_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.table5_victims:
        for seed in seeds_for(b.profile, "table5"):
            b.surrogate(f"surrogate/table5/{key}/seed{seed}", key, seed=seed, **s.attack)


def describe_table5(p: Profile) -> str:
    return (f"Table 5: surrogates for GTSRB-5L and CIFAR10-9L with Table 2's attack "
            f"({Section5Settings.resolve(p).budget:,} queries each)")


def table6_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.table6_victims:
        for seed in seeds_for(b.profile, "table6"):
            formats = list(table6_formats(b.profile, s, key, seed))
            # its probability-vector surrogate is Table 2's run of that seed: made first, there
            probs = b.surrogate(f"surrogate/table6/{key}/probs/seed{seed}", key, seed=seed, **s.attack)
            if formats != ["probs"]:
                b.add(f"surrogates/table6/{key}/seed{seed}", "kx_utils.experiments.section5:attack_formats", key,
                      formats, after=(b.victim[key], probs), seed=seed, **s.attack)


def describe_table6(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    extra = "every pretrained victim" if set(s.extra_format_victims) == set(s.table6_victims) \
        else ", ".join(s.extra_format_victims) or "no victim"
    return (f"Table 6: a label-only surrogate per pretrained victim ({len(s.table6_victims)}), "
            f"{'/'.join(EXTRA_FORMATS)} answers for {extra}")


def describe_figure1(p: Profile) -> str:
    return "Figure 1: CIFAR10's transfer-set histogram beside per-class accuracies (Table 6's first seed)"


def section_5_1_3_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for seed in seeds_for(b.profile, "section_5_1_3") if s.diabetic5_present else ():
        b.add(f"surrogates/5.1.3/seed{seed}", "kx_utils.experiments.section5:section_5_1_3_pair", seed, s.recipe,
              after=(b.victim["gtsrb"],))


def describe_section_5_1_3(p: Profile) -> str:
    return "5.1.3: a GTSRB surrogate on Diabetic5 queries"


# ---------------------------------------------------------------- 05: Table 7, Figure 2 and early stopping


def table7_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.table7_victims:
        for size in s.table7_batch_sizes:
            for seed in seeds_for(b.profile, table7_experiment(size, s.recipe)):
                b.surrogate(f"surrogate/table7/{key}/bs{size}/seed{seed}", key, batch_size=size, seed=seed, **s.attack)
        if s.table7_control is not None:
            for seed in seeds_for(b.profile, "table7_equal_steps"):
                b.surrogate(f"surrogate/table7/{key}/bs{s.table7_control}_equal_steps/seed{seed}", key,
                            batch_size=s.table7_control, seed=seed,
                            **{**s.attack, "recipe": s.recipe.replace(epochs=s.table7_control_epochs)})


def describe_table7(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    control = (f", and bs{s.table7_control} for {s.table7_control_epochs} epochs (bs64's SGD steps)"
               if s.table7_control is not None else "")
    return (f"Table 7: {len(s.table7_victims)} victims x batch sizes {_listed(s.table7_batch_sizes)} "
            f"({s.budget:,} queries, {s.recipe.epochs} epochs){control}")


def table7_convergence_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.convergence_victims:
        for size in s.table7_batch_sizes:
            for seed in seeds_for(b.profile, "table7_convergence"):
                b.surrogate(f"surrogate/table7_convergence/{key}/bs{size}/seed{seed}", key, batch_size=size,
                            seed=seed, **s.convergence_attack)


def describe_table7_convergence(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    if not s.convergence_victims:
        return "Table 7's convergence protocol: not run in this profile"
    return (f"Table 7's convergence protocol: {', '.join(s.convergence_victims)} x batch sizes "
            f"{_listed(s.table7_batch_sizes)} ({s.convergence_budget:,} queries, until the attacker's validation "
            f"accuracy has not improved for {s.convergence_patience} epochs, {s.convergence_recipe.epochs} at most)")


def figure2_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for key in s.figure2_victims:
        for seed in seeds_for(b.profile, "figure2"):
            b.surrogate(f"surrogate/figure2/{key}/seed{seed}", key, seed=seed, budget=s.figure2_budget,
                        recipe=s.figure2_recipe, validation_fraction=b.profile.validation_fraction)


def describe_figure2(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    return (f"Figure 2: {', '.join(s.figure2_victims)} with {s.figure2_budget:,} queries for "
            f"{s.figure2_recipe.epochs} epochs; early stopping on a {p.validation_fraction:.0%} validation split")


# ---------------------------------------------------------------- 06: the in-distribution attacker (5.2.2)


def section_5_2_2_tasks(b: TaskBuilder) -> None:
    s = b.resolved(Section5Settings.resolve)
    for seed in seeds_for(b.profile, "section_5_2_2"):
        for pool in ("bing", "imagenet") if s.imagenet_control else ("bing",):
            b.add(f"surrogates/5.2.2/{pool}/seed{seed}", "kx_utils.experiments.in_distribution:in_distribution_grid",
                  seed, pool, s.grid_batch_sizes, s.grid_epochs, after=(b.victim["caltech"],))
    b.add("detection/in_distribution", "kx_utils.experiments.in_distribution:in_distribution_detection",
          after=(b.victim["caltech"], "detection/table4/caltech"))


def describe_section_5_2_2(p: Profile) -> str:
    s = Section5Settings.resolve(p)
    per_class = "all available" if p.in_distribution_per_class is None else p.in_distribution_per_class
    control = " (and the same grid on ImageNet queries)" if s.imagenet_control else ""
    return (f"5.2.2: Caltech attacked with {per_class} in-distribution images per class, a validation grid of "
            f"batch sizes {_listed(s.grid_batch_sizes)} x {s.grid_epochs} epochs{control}")


# ---------------------------------------------------------------- 07: the defences (beyond the paper)


DEFENCES = "kx_utils.experiments.defences"


def defence_tasks(b: TaskBuilder) -> None:
    from .defences import attacks, defence_attack, defence_key, seeds_experiment
    plan, attack = b.profile.defences, defence_attack(b.profile)
    table6 = b.resolved(Section5Settings.resolve).table6_victims
    for key in available_victims(b.profile, plan.victims):
        for mode, spec in attacks(plan):
            if spec is None and mode == "label" and key in table6:
                continue  # Table 6's label-only surrogate, made by its own task
            for seed in seeds_for(b.profile, seeds_experiment(spec, mode)):
                b.surrogate(f"surrogate/defences/{defence_key(key, mode, spec)}/seed{seed}", key, mode=mode,
                            defence=spec, seed=seed, **attack)


def describe_defences(p: Profile) -> str:
    d = p.defences
    return (f"07: {', '.join(d.victims)} behind reverse sigmoid (beta {_listed(d.reverse_sigmoid_betas)}, gamma "
            f"{d.reverse_sigmoid_gamma:g}) and MAD (epsilon {_listed(d.mad_epsilons)}), {'/'.join(d.answer_modes)} "
            f"answers, Table 2's attack ({Section5Settings.resolve(p).budget:,} queries)")


def dawn_tasks(b: TaskBuilder) -> None:
    plan = b.profile.defences
    for key in available_victims(b.profile, plan.victims):
        for rate in plan.dawn_rates:
            for seed in seeds_for(b.profile, "dawn"):
                b.add(f"defences/dawn/{key}/r{rate:g}/seed{seed}", f"{DEFENCES}:dawn_verification", key, rate, seed,
                      after=(b.victim[key],))


def describe_dawn(p: Profile) -> str:
    return (f"DAWN at rate {_listed(p.defences.dawn_rates)}: a watermarked and a clean surrogate per victim, "
            "their agreement with the watermark")


def prada_tasks(b: TaskBuilder) -> None:
    first = seeds_for(b.profile, "table2")[0]
    for key in available_victims(b.profile, PRETRAINED_VICTIMS):
        # Table 2's first transfer set is the Knockoff client PRADA watches
        b.add(f"defences/prada/{key}", f"{DEFENCES}:prada_result", key,
              after=(b.victim[key], f"surrogate/table2/{key}/seed{first}"))


def describe_prada(p: Profile) -> str:
    return (f"PRADA (delta {p.defences.prada_delta:g}) on each pretrained victim's Knockoff stream and two benign "
            f"streams, {p.defences.prada_queries:,} queries at most")


def adaptive_tasks(b: TaskBuilder) -> None:
    from .defences import adaptive_attack
    plan = b.profile.defences
    for key in available_victims(b.profile, plan.adaptive_victims):
        for name, sampling in (("random", "random"), ("adaptive", {"reward": plan.adaptive_reward})):
            for seed in seeds_for(b.profile, "adaptive"):
                b.surrogate(f"surrogate/adaptive/{key}/{name}/seed{seed}", key, sampling=sampling, seed=seed,
                            **adaptive_attack(b.profile))


def describe_adaptive(p: Profile) -> str:
    d = p.defences
    return (f"adaptive ({d.adaptive_reward} reward, WordNet hierarchy) against random sampling, "
            f"{', '.join(d.adaptive_victims)}, {d.adaptive_budget:,} queries")


declare(
    Notebook("01_victims", "Section 3.2: the victim models (Table 1)"),
    Notebook("02_knockoff", "Section 3: Knockoff against complex models (Table 2)"),
    Notebook("03_detection", "Section 4: detecting Knockoff queries (Tables 3 and 4)"),
    Notebook("04_architecture_and_output", "Section 5.1: the victim's architecture and output (Tables 5, 6, "
                                           "Figure 1, 5.1.3)"),
    Notebook("05_hyperparameters", "Section 5.2.1: the attacker's hyperparameters (Table 7, Figure 2)"),
    Notebook("06_in_distribution", "Section 5.2.2: the attacker with in-distribution data"),

    Experiment("victims", "01_victims", ("table1", "victims"), describe_victims, victim_tasks, call_cost),
    Experiment("table2", "02_knockoff", ("table2", "knockoff", "table2_curves"), describe_table2, table2_tasks,
               call_cost),
    Experiment("budget_curves", "02_knockoff", ("budget_curves", "budget_curves_figure"), describe_budget_curves,
               budget_curve_tasks, call_cost),
    Experiment("overlap", "03_detection", (), describe_overlap, overlap_tasks, call_cost),
    Experiment("table3", "03_detection", ("table3",), describe_table3, table3_tasks, call_cost),
    Experiment("table4", "03_detection", ("table4a", "table4b"), describe_table4, table4_tasks, call_cost),
    Experiment("filter", "03_detection", ("filter",), describe_filter, filter_tasks, call_cost),
    Experiment("table5", "04_architecture_and_output", ("table5",), describe_table5, table5_tasks, call_cost),
    Experiment("table6", "04_architecture_and_output", ("table6",), describe_table6, table6_tasks, call_cost),
    Experiment("figure1", "04_architecture_and_output", ("figure1",), describe_figure1),
    Experiment("section_5_1_3", "04_architecture_and_output", ("section_5_1_3",), describe_section_5_1_3,
               section_5_1_3_tasks, call_cost),
    Experiment("table7", "05_hyperparameters", ("table7",), describe_table7, table7_tasks, call_cost),
    Experiment("table7_convergence", "05_hyperparameters", ("table7_convergence",), describe_table7_convergence,
               table7_convergence_tasks, call_cost),
    Experiment("figure2", "05_hyperparameters", ("figure2", "early_stopping"), describe_figure2, figure2_tasks,
               call_cost),
    Experiment("section_5_2_2", "06_in_distribution", ("section_5_2_2",), describe_section_5_2_2,
               section_5_2_2_tasks, call_cost),
    Notebook("07_defences", "Beyond the paper: the defences of §6 against Knockoff (answer perturbations, PRADA, "
                            "DAWN, adaptive sampling)"),
    Experiment("defences", "07_defences", ("defences", "defence_tradeoffs"), describe_defences, defence_tasks,
               call_cost),
    Experiment("dawn", "07_defences", ("dawn",), describe_dawn, dawn_tasks, call_cost),
    Experiment("prada", "07_defences", ("prada",), describe_prada, prada_tasks, call_cost),
    Experiment("adaptive", "07_defences", ("adaptive",), describe_adaptive, adaptive_tasks, call_cost),
)
