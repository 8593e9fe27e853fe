"""The registry of experiments: each notebook and each experiment declared once, everything else derived.

A :class:`Notebook` is one paper section's notebook; an :class:`Experiment` is one thing it measures
(Table 2, the budget curves, Table 7...): the notebook it belongs to, the results it feeds (the keys the
report looks up), the grid tasks that compute its artifacts, its line in ``--plan`` and the cost model
of its tasks.  The grid (:func:`kx_utils.orchestration.grid.grid_tasks`), the projection, the plan, the
runner's list of notebooks and the report's map from a result to its notebook all read
:func:`experiments` and :func:`notebooks`; a task or a result key that no experiment declares is an
error, never a silent zero.  The declarations themselves are in :mod:`kx_utils.experiments.catalogue`.

A :class:`Task` is one cached library call, ``function(profile, *args, store=store, **kwargs)``, with
the tasks it waits for.  The same run in two tables is one task (one artifact key):
:meth:`TaskBuilder.surrogate` returns the earlier task where one already trains that surrogate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from ..config.schema import Profile
from ..runtime.artifacts import ArtifactStore, settings_key

T = TypeVar("T")


@dataclass(frozen=True)
class Notebook:
    name: str  # "02_knockoff": the file notebooks/<name>.ipynb
    title: str  # what it reproduces, in the paper's words


@dataclass(frozen=True)
class Experiment:
    """One measurement of a notebook.

    ``tasks(builder)`` adds the grid tasks that compute its artifacts (None: it only reads what other
    experiments computed, as Figure 1 reads Table 6's runs); ``describe(profile)`` is its part of the
    plan's line for its notebook; ``cost(profile, task)`` the image passes and CPU inputs of one of its
    tasks (:class:`kx_utils.experiments.workload.Cost`).
    """

    name: str
    notebook: str
    feeds: tuple[str, ...]  # the result keys it writes (tables, figures, values), as the report looks them up
    describe: Callable[[Profile], str]
    tasks: Callable[["TaskBuilder"], None] | None = None
    cost: Callable[[Profile, "Task"], Any] | None = None


class UnknownExperiment(LookupError):
    """A name, task or result key no experiment of the registry declares."""


@dataclass(frozen=True)
class Task:
    """One cached call: ``function(profile, *args, store=store, **kwargs)``.

    ``name`` is unique within a grid and readable (``surrogate/table2/caltech/seed1``); ``after`` names the
    tasks whose artifacts this one reads; ``also_for`` the later notebooks that use the same artifact.
    """

    name: str
    notebook: str
    function: str  # "module:function" under kx_utils
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    also_for: tuple[str, ...] = ()
    experiment: str = ""  # the registry entry that declared it

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
        """(kind, settings) of the artifact this task makes, where they follow from the settings alone
        (victims, single surrogates); None for composite tasks (they load what exists).
        ``with_content=False``: the data's digests replaced by placeholders (no data read), to compare
        two tasks of one grid."""
        if self.function == "kx_utils.experiments.victims:get_victim":
            from .victims import VICTIM, victim_settings
            return VICTIM, victim_settings(profile, self.args[0], with_content)
        if self.function == "kx_utils.experiments.attack:knockoff":
            from .attack import SURROGATE, surrogate_settings
            kwargs = self.kwargs
            if kwargs.get("budget") == "all":
                # the pool's size, counted in its folder (knockoff counts the decoded pool): so a curve's last
                # point and a Table 2 run on the whole pool are one task.  Where the folder is absent the count
                # is the paper's, the key matches nothing, and the task simply runs.
                from .workload import pool_size
                kwargs = {**kwargs, "budget": pool_size(profile, kwargs.get("pool", "imagenet"),
                                                        kwargs.get("pool_split"))}
            return SURROGATE, surrogate_settings(profile, self.args[0], **kwargs, with_content=with_content)
        return None

    def describe(self) -> dict:
        return {"name": self.name, "notebook": self.notebook, "experiment": self.experiment,
                "also_for": list(self.also_for), "function": self.function, "args": _plain(list(self.args)),
                "kwargs": _plain(self.kwargs), "after": list(self.after)}


def _plain(value: Any) -> Any:
    """JSON-able form of task arguments (recipes become dicts)."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class TaskBuilder:
    """What an experiment's ``tasks`` adds its tasks to: ``victim[key]`` names the task that trains a
    victim, :meth:`add` adds one call, :meth:`surrogate` one Knockoff attack (or finds the earlier task that
    trains the same surrogate)."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.tasks: list[Task] = []
        self.victim: dict[str, str] = {}
        self.experiment: Experiment | None = None  # the entry whose tasks are being added
        self._made_by: dict[str, str] = {}  # surrogate artifact key -> the task that makes it
        self._resolved: dict[Callable, object] = {}

    def resolved(self, resolve: Callable[[Profile], T]) -> T:
        """``resolve(self.profile)`` (e.g. ``Section5Settings.resolve``), computed once per builder: every
        experiment of one grid sees the same resolved settings."""
        if resolve not in self._resolved:
            self._resolved[resolve] = resolve(self.profile)
        return self._resolved[resolve]

    def add(self, name: str, function: str, *args, after: tuple[str, ...] = (), **kwargs) -> str:
        exp = self.experiment
        self.tasks.append(Task(name, exp.notebook, function, tuple(args), kwargs, tuple(after), (), exp.name))
        return name

    def surrogate(self, name: str, key: str, **kwargs) -> str:
        """A knockoff task, unless an earlier task trains the very same surrogate (Table 7's default batch
        size is Table 5's run): then that task's name, so dependents wait for it."""
        exp = self.experiment
        task = Task(name, exp.notebook, "kx_utils.experiments.attack:knockoff", (key,), kwargs,
                    (self.victim[key],), (), exp.name)
        _, settings = task.artifact(self.profile, with_content=False)  # one grid, one data: content adds nothing
        digest = settings_key(settings)
        # a run without a test curve is answered by the same run with one (attack.cached_surrogate)
        with_curve = settings_key({**settings, "test_curve": True})
        first = self._made_by.get(digest) or self._made_by.get(with_curve)
        if first is not None:
            i = next(i for i, t in enumerate(self.tasks) if t.name == first)
            if task.notebook not in (self.tasks[i].notebook, *self.tasks[i].also_for):
                self.tasks[i] = dataclasses.replace(self.tasks[i], also_for=self.tasks[i].also_for + (task.notebook,))
            return first
        self.tasks.append(task)
        self._made_by[digest] = name
        return name


# ---------------------------------------------------------------- the registry

_NOTEBOOKS: list[Notebook] = []
_EXPERIMENTS: list[Experiment] = []


def declare(*entries: Experiment | Notebook) -> None:
    """Add notebooks and experiments to the registry (:mod:`kx_utils.experiments.catalogue` declares the
    paper's); an experiment's notebook must be declared first, and a name only once."""
    for e in entries:
        if isinstance(e, Notebook):
            if e.name in {nb.name for nb in _NOTEBOOKS}:
                raise ValueError(f"a notebook named {e.name!r} is already declared")
            _NOTEBOOKS.append(e)
            continue
        if e.notebook not in {nb.name for nb in _NOTEBOOKS}:
            raise UnknownExperiment(f"experiment {e.name!r} names notebook {e.notebook!r}, which is not declared")
        if e.name in {other.name for other in _EXPERIMENTS}:
            raise ValueError(f"an experiment named {e.name!r} is already declared")
        taken = {key: other.name for other in _EXPERIMENTS for key in other.feeds}
        clash = sorted(set(e.feeds) & set(taken))
        if clash:
            raise ValueError(f"experiment {e.name!r} feeds {clash}, which {taken[clash[0]]!r} already feeds")
        _EXPERIMENTS.append(e)


def _declared() -> None:
    from . import catalogue  # noqa: F401  (importing it declares the paper's notebooks and experiments)


def notebooks() -> list[Notebook]:
    _declared()
    return list(_NOTEBOOKS)


def notebook_names() -> tuple[str, ...]:
    return tuple(nb.name for nb in notebooks())


def experiments() -> list[Experiment]:
    _declared()
    return list(_EXPERIMENTS)


def experiments_of(notebook: str) -> list[Experiment]:
    return [e for e in experiments() if e.notebook == notebook]


def experiment_named(name: str) -> Experiment:
    for e in experiments():
        if e.name == name:
            return e
    raise UnknownExperiment(f"no experiment {name!r} in the registry; declared: "
                            f"{', '.join(e.name for e in experiments())} (kx_utils/experiments/catalogue.py)")


def producer(key: str) -> str:
    """The notebook whose results hold ``key`` (a table, figure or value)."""
    for e in experiments():
        if key in e.feeds:
            return e.notebook
    raise UnknownExperiment(f"no experiment feeds {key!r}: declare it in kx_utils/experiments/catalogue.py")


def result_keys() -> dict[str, str]:
    """Every result key the experiments feed -> its notebook."""
    return {key: e.notebook for e in experiments() for key in e.feeds}


def build_tasks(profile: Profile) -> list[Task]:
    """Every experiment's tasks for ``profile``, in registry order (which respects ``after``)."""
    builder = TaskBuilder(profile)
    for exp in experiments():
        if exp.tasks is not None:
            builder.experiment = exp
            exp.tasks(builder)
    names = [t.name for t in builder.tasks]
    if len(set(names)) != len(names):
        raise AssertionError("two grid tasks share a name")  # a bug in a declaration, not a user error
    return builder.tasks


def cost_of(profile: Profile, task: Task):
    """The cost model's answer for ``task``, from the experiment that declared it."""
    exp = experiment_named(task.experiment)
    if exp.cost is None:
        raise UnknownExperiment(f"experiment {exp.name!r} declares tasks but no cost model")
    return exp.cost(profile, task)


@contextlib.contextmanager
def registered(*entries: Experiment | Notebook) -> Iterator[None]:
    """``entries`` declared for the duration of a ``with`` block (tests, one-off studies), then withdrawn."""
    _declared()
    before = list(_NOTEBOOKS), list(_EXPERIMENTS)
    try:
        declare(*entries)
        yield
    finally:
        _NOTEBOOKS[:], _EXPERIMENTS[:] = before
