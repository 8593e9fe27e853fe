"""The experiment grid: every artifact a profile's notebooks need, as tasks with dependencies.

The tasks are the registry's (:func:`kx_utils.experiments.registry.build_tasks`: each experiment of
:mod:`kx_utils.experiments.catalogue` adds the library calls its notebook makes under its default
parameters).  Each of these functions caches what it computes
(:class:`~kx_utils.runtime.artifacts.ArtifactStore`), so running a task fills the cache and running the
notebooks afterwards loads instead of training.  A task whose artifact key can be computed without
training (victims, surrogates) says so through :meth:`Task.artifact`, which is how
``python -m kx_utils grid --list`` tells what is missing.  The executors
(:mod:`kx_utils.orchestration.executors`) decide where tasks run.
"""

from __future__ import annotations

from ..config.schema import Profile
from ..experiments.registry import Task, build_tasks, notebook_names
from ..runtime.artifacts import ArtifactStore


def grid_tasks(profile: Profile, notebooks: tuple[str, ...] | None = None) -> list[Task]:
    """Every task of ``profile``'s experiments (the registry's, in its order, which respects ``after``).

    ``notebooks`` keeps the tasks of those notebooks and whatever they depend on.
    """
    tasks = build_tasks(profile)
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
    return [nb for nb in notebook_names() if nb in notebooks]


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
