"""The experiment grid: every artifact a profile's notebooks need, as tasks with dependencies.

A :class:`Task` is one call of the library function a notebook makes (``get_victim``,
``knockoff``, ``attack_formats``, ``table4_result``...) with the arguments the notebook
passes it under its default parameters.  Each of these functions caches what it computes
(:class:`~kx_utils.runtime.artifacts.ArtifactStore`), so running a task fills the cache and running
the notebooks afterwards loads instead of training; running it again loads and returns.
:func:`grid_tasks` lists a profile's tasks in dependency order; a task whose artifact key
can be computed without training (victims, surrogates) says so through
:meth:`Task.artifact`, which is how ``python -m kx_utils grid --list`` tells what is missing.

The executors (:mod:`kx_utils.orchestration.executors`) decide where tasks run; this module only says what
they are.  Mirroring the notebooks' calls is checked, not trusted: the grid test runs the
smoke grid, then every notebook with training forbidden (:data:`kx_utils.core.train.NO_TRAINING_ENV`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config.profiles import Profile
from ..runtime.artifacts import ArtifactStore, settings_key

NOTEBOOK_OF_STAGE = {"victims": "01_victims", "knockoff": "02_knockoff", "detection": "03_detection",
                     "section5": "04_architecture_and_output", "hyperparameters": "05_hyperparameters",
                     "in_distribution": "06_in_distribution"}


@dataclass(frozen=True)
class Task:
    """One cached call: ``function(profile, *args, store=store, **kwargs)``.

    ``name`` is unique within a grid and readable (``surrogate/table2/caltech/seed1``);
    ``after`` names the tasks whose artifacts this one reads, so that no two workers
    train the same victim at once.
    """

    name: str
    notebook: str
    function: str  # "module:function" under kx_utils
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    also_for: tuple[str, ...] = ()  # later notebooks that use the same artifact (made once, by this task)

    def resolve(self) -> Callable:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)

    def run(self, profile: Profile, store: ArtifactStore | None = None) -> Any:
        store = store or ArtifactStore(profile.cache_root)
        return self.resolve()(profile, *self.args, store=store, **self.kwargs)

    @property
    def key(self) -> str:
        """A digest of the call itself (function and arguments)."""
        return settings_key({"function": self.function, "args": _plain(list(self.args)), "kwargs": _plain(self.kwargs)})

    def artifact(self, profile: Profile, with_content: bool = True) -> tuple[str, dict] | None:
        """(kind, settings) of the artifact this task makes, where they follow from the settings
        alone (victims, single surrogates); None for composite tasks (they load what exists).
        ``with_content=False``: the data's digests replaced by placeholders (no data read), to
        compare two tasks of one grid."""
        if self.function == "kx_utils.experiments.victims:get_victim":
            from ..experiments.victims import VICTIM, victim_settings
            return VICTIM, victim_settings(profile, self.args[0], with_content)
        if self.function == "kx_utils.experiments.attack:knockoff":
            from ..experiments.attack import SURROGATE, surrogate_settings
            kwargs = self.kwargs
            if kwargs.get("budget") == "all":
                # the pool's size, counted in its folder (knockoff counts the decoded pool): so a curve's
                # last point and a Table 2 run on the whole pool are one task.  Where the folder is absent
                # the count is the paper's, the key matches nothing, and the task simply runs.
                from .workload import pool_size
                kwargs = {**kwargs, "budget": pool_size(profile, kwargs.get("pool", "imagenet"),
                                                        kwargs.get("pool_split"))}
            return SURROGATE, surrogate_settings(profile, self.args[0], **kwargs, with_content=with_content)
        return None

    def describe(self) -> dict:
        return {"name": self.name, "notebook": self.notebook, "also_for": list(self.also_for),
                "function": self.function,
                "args": _plain(list(self.args)), "kwargs": _plain(self.kwargs), "after": list(self.after)}


def _plain(value: Any) -> Any:
    """JSON-able form of task arguments (recipes become dicts)."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- composite calls the notebooks make


def section_5_1_3_pair(profile: Profile, seed: int, recipe, store: ArtifactStore | None = None) -> tuple:
    """Notebook 04's 5.1.3 runs for one seed: GTSRB attacked with every Diabetic5 image, and with
    as many ImageNet queries (the second budget is the first's, so one task makes both)."""
    from ..experiments.attack import knockoff
    with_diabetic = knockoff(profile, "gtsrb", pool="diabetic5", pool_split="train", budget="all", seed=seed,
                             recipe=recipe, test_curve=False, store=store)
    same_budget = knockoff(profile, "gtsrb", budget=with_diabetic.budget, seed=seed, recipe=recipe,
                           test_curve=False, store=store)
    return with_diabetic, same_budget


def in_distribution_setup(profile: Profile, store: ArtifactStore | None = None) -> tuple[Any, int]:
    """Notebook 06's attacker pool (the Bing stand-in at the Caltech victim's size) and its budget."""
    from ..experiments.attack import attacker_pool
    from ..experiments.section5 import in_distribution_budget
    from ..experiments.victims import victim_image_size
    bing = attacker_pool(profile, "bing", "train", victim_image_size(profile, "caltech"), store)
    return bing, in_distribution_budget(profile, len(bing.classes), len(bing))


def in_distribution_grid(profile: Profile, seed: int, pool: str, batch_sizes: tuple[int, ...], epochs: int,
                         store: ArtifactStore | None = None) -> dict:
    """Notebook 06's validation grid for one seed, on the in-distribution (``bing``) or ImageNet pool."""
    from ..experiments.section5 import validation_grid
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
    from ..experiments.section5 import flagged_share, transfer_answers
    bing, budget = in_distribution_setup(profile, store)
    detector = get_detector(profile, "caltech", store)
    queried = transfer_answers(profile, "caltech", pool="bing", budget=budget, store=store)
    queries = bing.images[queried["indices"]]
    sets = {"in_distribution": queries,
            "unseen_imagenet": unseen_imagenet_queries(profile, "caltech", len(queries), store),
            "benign": detection_data(profile, "caltech", store).in_test.images}
    return {"detector": detector.name, "flagged": {name: flagged_share(detector.flag, images) for name, images in sets.items()},
            "counts": {name: len(images) for name, images in sets.items()}}


# ---------------------------------------------------------------- the tasks of each notebook


def grid_tasks(profile: Profile, notebooks: tuple[str, ...] | None = None) -> list[Task]:
    """Every task of ``profile``'s notebooks (default parameters), in an order that respects ``after``.

    ``notebooks`` keeps the tasks of those notebooks and whatever they depend on.
    """
    from ..config.seeds import seeds_for
    from ..data.datasets import absent_optional_datasets
    from ..experiments.section5 import (
        EXTRA_FORMATS,
        PAPER_FORMATS,
        equal_steps_control,
        equal_steps_epochs,
        section5_attack,
        table2_attack,
    )
    from ..experiments.victims import PRETRAINED_VICTIMS, available_victims

    P, plan = profile, profile.section5
    tasks: list[Task] = []
    # as the notebooks do: a victim whose optional data is absent (mini's Diabetic5) has no tasks
    victim_keys = available_victims(P)
    pretrained = available_victims(P, PRETRAINED_VICTIMS)
    diabetic5_present = "diabetic5" not in absent_optional_datasets(P.standins, P.data_root)

    def add(name: str, stage: str, function: str, *args, after: tuple[str, ...] = (), **kwargs) -> str:
        tasks.append(Task(name, NOTEBOOK_OF_STAGE[stage], function, tuple(args), kwargs, tuple(after)))
        return name

    victim = {key: add(f"victim/{key}", "victims", "kx_utils.experiments.victims:get_victim", key) for key in victim_keys}
    made_by: dict[str, str] = {}  # surrogate artifact key -> the task that makes it

    def surrogate(name: str, stage: str, key: str, **kwargs) -> str:
        """A knockoff task, unless an earlier task trains the very same surrogate (Table 7's default
        batch size is Table 5's run): then that task's name, so dependents wait for it."""
        task = Task(name, NOTEBOOK_OF_STAGE[stage], "kx_utils.experiments.attack:knockoff", (key,), kwargs, (victim[key],))
        artifact = task.artifact(P, with_content=False)  # one grid, one data: the content adds nothing here
        digest = settings_key(artifact[1]) if artifact else name
        # a run without a test curve is answered by the same run with one (attack.cached_surrogate)
        with_curve = settings_key({**artifact[1], "test_curve": True}) if artifact else name
        if digest in made_by or with_curve in made_by:
            first = made_by.get(digest) or made_by[with_curve]
            i = next(i for i, t in enumerate(tasks) if t.name == first)
            if task.notebook not in (tasks[i].notebook, *tasks[i].also_for):
                tasks[i] = dataclasses.replace(tasks[i], also_for=tasks[i].also_for + (task.notebook,))
            return first
        tasks.append(task)
        made_by[digest] = name
        return name

    # 02: Table 2 (and its curves, Figure 2's source in mini), the budget curves
    t2 = table2_attack(P)
    for key in pretrained:
        for seed in seeds_for(P, "table2"):
            surrogate(f"surrogate/table2/{key}/seed{seed}", "knockoff", key, seed=seed, **t2)
    for key in [k for k in plan.budget_curve_victims if k in victim_keys]:
        for budget in plan.budget_curve_budgets:
            for seed in seeds_for(P, "budget_curves"):
                surrogate(f"surrogate/budget/{key}/{budget}/seed{seed}", "knockoff", key, budget=budget,
                          seed=seed, **t2)

    # 03: Tables 3 and 4, the filter
    add("detection/overlap", "detection", "kx_utils.experiments.detection:overlap_rows", list(pretrained))
    add("detection/table3", "detection", "kx_utils.experiments.detection:table3_rows")
    add("detection/cv_arch", "detection", "kx_utils.experiments.detection:choose_cv_arch")
    for key in pretrained:
        t4 = add(f"detection/table4/{key}", "detection", "kx_utils.experiments.detection:table4_result", key,
                 after=(victim[key], "detection/cv_arch"))
        add(f"detection/filter/{key}", "detection", "kx_utils.experiments.detection:filter_report", key, after=(t4,))
    if pretrained:  # 03's demonstration of the API with the detector in front, on its first victim
        add("detection/api_demo", "detection", "kx_utils.experiments.detection:api_demo", pretrained[0],
            after=(f"detection/table4/{pretrained[0]}",))

    # 04: Tables 5 and 6, 5.1.3
    s5 = section5_attack(P, plan)
    for key in [k for k in ("gtsrb", "gtsrb_5l", "cifar10", "cifar10_9l") if k in victim_keys]:
        for seed in seeds_for(P, "table5"):
            surrogate(f"surrogate/table5/{key}/seed{seed}", "section5", key, seed=seed, **s5)
    extra_victims = pretrained if plan.extra_format_victims is None else plan.extra_format_victims
    for key in pretrained:
        for seed in seeds_for(P, "table6"):
            extra = key in extra_victims and seed in seeds_for(P, "extra_formats")
            formats = list(PAPER_FORMATS + (EXTRA_FORMATS if extra else ()))
            # its probability-vector surrogate is Table 5's where the victim is in Table 5: made first, there
            probs = surrogate(f"surrogate/table6/{key}/probs/seed{seed}", "section5", key, seed=seed, **s5)
            add(f"surrogates/table6/{key}/seed{seed}", "section5", "kx_utils.experiments.section5:attack_formats", key,
                formats, after=(victim[key], probs), seed=seed, **s5)
    for seed in seeds_for(P, "section_5_1_3") if diabetic5_present else ():
        add(f"surrogates/5.1.3/seed{seed}", "section5", "kx_utils.orchestration.grid:section_5_1_3_pair", seed, s5["recipe"],
            after=(victim["gtsrb"],))

    # 05: Table 7, Figure 2
    table7_sizes = tuple(plan.table7_batch_sizes or P.batch_sizes)
    for key in [k for k in plan.table7_victims or victim_keys if k in victim_keys]:
        for b in table7_sizes:
            for seed in seeds_for(P, "table7_bs16" if b == 16 else "table7"):
                surrogate(f"surrogate/table7/{key}/bs{b}/seed{seed}", "hyperparameters", key, batch_size=b,
                          seed=seed, **s5)
        control = equal_steps_control(table7_sizes, plan.table7_equal_steps)
        if control is not None:
            epochs = equal_steps_epochs(s5["budget"], control, s5["recipe"].epochs)
            for seed in seeds_for(P, "table7_equal_steps"):
                surrogate(f"surrogate/table7/{key}/bs{control}_equal_steps/seed{seed}", "hyperparameters", key,
                          batch_size=control, seed=seed, **{**s5, "recipe": s5["recipe"].replace(epochs=epochs)})
    long_recipe = P.surrogate_recipe.replace(epochs=plan.figure2_epochs or P.surrogate_recipe.epochs)
    for key in [k for k in plan.figure2_victims if k in victim_keys]:
        for seed in seeds_for(P, "figure2"):
            surrogate(f"surrogate/figure2/{key}/seed{seed}", "hyperparameters", key, seed=seed,
                      budget=plan.figure2_budget or P.transfer_budget, recipe=long_recipe,
                      validation_fraction=P.validation_fraction)

    # 06: the in-distribution attacker's validation grids and what the detector sees
    batch_sizes = tuple(plan.grid_batch_sizes or P.batch_sizes)
    epochs = plan.grid_epochs or P.surrogate_recipe.epochs
    for seed in seeds_for(P, "section_5_2_2"):
        for pool in ("bing", "imagenet") if plan.imagenet_control else ("bing",):
            add(f"surrogates/5.2.2/{pool}/seed{seed}", "in_distribution", "kx_utils.orchestration.grid:in_distribution_grid",
                seed, pool, batch_sizes, epochs, after=(victim["caltech"],))
    add("detection/in_distribution", "in_distribution", "kx_utils.orchestration.grid:in_distribution_detection",
        after=(victim["caltech"], "detection/table4/caltech"))

    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise AssertionError("two grid tasks share a name")  # a bug here, not a user error
    return _needed_by(tasks, notebooks) if notebooks else tasks


def _needed_by(tasks: list[Task], notebooks: tuple[str, ...]) -> list[Task]:
    by_name = {t.name: t for t in tasks}
    keep = {t.name for t in tasks if {t.notebook, *t.also_for} & set(notebooks)}
    stack = list(keep)
    while stack:
        for dep in by_name[stack.pop()].after:
            if dep not in keep:
                keep.add(dep)
                stack.append(dep)
    return [t for t in tasks if t.name in keep]


def notebooks_needing(tasks: list[Task], names) -> list[str]:
    """The notebooks (in order) that use any of the tasks ``names`` or a task that waits for one."""
    by_name = {t.name: t for t in tasks}
    hit, grew = set(names), True
    while grew:  # what waits, directly or not, on a named task
        grew = False
        for t in tasks:
            if t.name not in hit and set(t.after) & hit:
                hit.add(t.name)
                grew = True
    notebooks = {nb for name in hit if name in by_name for nb in (by_name[name].notebook, *by_name[name].also_for)}
    return [nb for nb in NOTEBOOK_OF_STAGE.values() if nb in notebooks]


def missing_tasks(tasks: list[Task], profile: Profile, store: ArtifactStore | None = None) -> list[Task]:
    """The tasks whose artifact is not in the cache (composite tasks always count as missing: they
    load what exists when they run)."""
    store = store or ArtifactStore(profile.cache_root)
    out = []
    for task in tasks:
        artifact = task.artifact(profile)
        if artifact is None or not _made(store, *artifact):
            out.append(task)
    return out


def _made(store: ArtifactStore, kind: str, settings: dict) -> bool:
    if store.exists(kind, settings):
        return True
    return kind == "surrogate" and settings.get("test_curve") is False and \
        store.exists(kind, {**settings, "test_curve": True})


def tasks_json(tasks: list[Task]) -> str:
    return json.dumps([t.describe() for t in tasks], indent=1)
