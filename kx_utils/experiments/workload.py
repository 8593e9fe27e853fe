"""What each grid task does, counted from the profile and the datasets' sizes: its image passes and CPU work.

:func:`call_cost` is the cost model of the library calls the paper's experiments make (the registry's
``cost`` of each, :mod:`kx_utils.experiments.catalogue`): a task's :class:`Cost` holds its image passes
(:class:`Work`: training steps and inference over a model at an input size and batch size), the decoded
sets it loads and the CV detectors it fits; :func:`cpu_work` turns the last two into :class:`CpuWork`
(decoding, reloading decoded sets, the CV detectors' logistic regressions).  A call it has no model of is
an error, never zero.  Sizes are counted in the
data folders where they are present, else taken from the paper's Table 1 (:func:`split_size_and_source`).
:mod:`kx_utils.orchestration.projection` prices this work in GPU-hours; the grid asks :func:`pool_size` for a whole-pool
task's key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config.schema import Profile

if TYPE_CHECKING:  # the registry imports this module for pool_size: no import back at run time
    from .registry import Task

# per image on one core, Pillow decode and resize: the paper's JPEGs are a few hundred pixels a side,
# Diabetic5's fundus photographs several thousand, GTSRB's and CIFAR-10's tiny PNG/PPM files
DECODE_MS_PER_IMAGE = {"diabetic5": 80.0, "openimages": 15.0, "gtsrb": 0.5, "cifar10": 0.2}
DECODE_MS_DEFAULT = 5.0
DECODE_THREADS = 8  # kx_utils.data.imagefolder.decode_images' pool, at most 8 threads
RELOAD_BYTES_PER_S = 1e9  # torch.load of a decoded uint8 set, its integrity hash included
LOGISTIC_ITERATIONS = 150  # strong penalties converge in tens, weak ones run into the hundreds (max_iter 1000)
LOGISTIC_BYTES_PER_S = 10e9  # about 4 GB/s on the 2-core development machine; a server core is faster
TASK_START_S = 30.0  # a fresh worker: imports, the CUDA context, cuDNN autotuning, the model's weights
@dataclass(frozen=True)
class Work:
    section: str  # "train" | "inference"
    arch: str
    size: int
    images: float  # image passes
    batch: int  # images per step: the recipe's in training, the evaluation batch in inference


@dataclass(frozen=True)
class Cost:
    """What one task computes: its image passes, the decoded sets it loads (dataset, split, px, once per
    load) and the CV detectors it fits or loads (victim, backbone)."""

    passes: list[Work]
    sets: list[tuple[str, str, int]] = field(default_factory=list)
    fits: list[tuple[str, str]] = field(default_factory=list)


# the library calls call_cost has a model of; the last five spend seconds (no image passes of note)
MODELLED_CALLS = ("get_victim", "knockoff", "attack_formats", "section_5_1_3_pair", "in_distribution_grid",
                  "table3_rows", "table4_result", "filter_report", "overlap_rows", "choose_cv_arch", "api_demo",
                  "in_distribution_detection", "dawn_verification", "prada_result")


class UnmodelledCall(LookupError):
    """A task whose library call the cost model does not know: counting it as free would hide its cost."""


def call_cost(profile: Profile, task: Task) -> Cost:
    """The cost of a task that makes one of the paper's library calls (:data:`MODELLED_CALLS`)."""
    fn = task.function.split(":")[1]
    if fn not in MODELLED_CALLS:
        raise UnmodelledCall(f"task {task.name}: no cost model of {task.function}; give its experiment a cost "
                             "in kx_utils/experiments/catalogue.py (or model the call in call_cost)")
    return Cost(task_work(profile, task), task_sets(profile, task), logistic_fits(profile, task))


@dataclass(frozen=True)
class CpuWork:
    kind: str  # "decoding" | "reloads" | "logistic regressions" | "task starts"
    amount: float  # images, bytes, fits or tasks (see Projection.text)
    seconds: float


# ---------------------------------------------------------------- dataset sizes without decoding


def split_size_and_source(profile: Profile, dataset: str, split: str) -> tuple[int, str | None]:
    """Images of a split and the folder they were counted in; (the paper's count, None) without one."""
    from ..data.catalog import DATASETS, DatasetNotFoundError
    from ..data.datasets import list_image_folder, split_folder
    info = DATASETS[dataset]
    try:
        folder = split_folder(dataset, split, profile.standins, profile.data_root, allow_download=False)
        return len(list_image_folder(folder)[1]), str(folder)
    except (DatasetNotFoundError, KeyError, OSError):
        counts = {"train": info.paper_train, "test": info.paper_test}
        if counts.get(split) is None:
            raise ValueError(f"{info.paper_name} {split}: not on this machine and no size in the paper; "
                             "place the data (python -m kx_utils plan says where)") from None
        return counts[split], None


def split_size(profile: Profile, dataset: str, split: str) -> int:
    """Images of a split: counted in its folder when present, else the paper's count (Table 1)."""
    return split_size_and_source(profile, dataset, split)[0]


def _capped(n: int, per_class: int | None, classes: int | None) -> int:
    return n if per_class is None or not classes else min(n, per_class * classes)


def victim_sizes(profile: Profile, key: str) -> tuple[int, int]:
    from ..data.catalog import DATASETS
    from .victims import victim_spec
    dataset = victim_spec(key).dataset
    classes = DATASETS[dataset].paper_classes
    return (_capped(split_size(profile, dataset, "train"), profile.train_per_class, classes),
            _capped(split_size(profile, dataset, "test"), profile.test_per_class, classes))


def _pool_splits(profile: Profile, pool: str, split: str | None) -> list[str]:
    from .attack import default_pool_split, pool_splits
    return list(pool_splits(profile, pool, split or default_pool_split(profile, pool)))


def pool_size(profile: Profile, pool: str, split: str | None = None) -> int:
    n = sum(split_size(profile, pool, s) for s in _pool_splits(profile, pool, split))
    return n if profile.pool_size is None else min(n, profile.pool_size)


# ---------------------------------------------------------------- the image passes of each task


def surrogate_work(profile: Profile, key: str, *, budget=None, recipe=None, batch_size=None, pool="imagenet",
                   pool_split=None, validation_fraction: float = 0.0, test_curve: bool = True, defence=None,
                   sampling="random", **_) -> list[Work]:
    from .victims import victim_arch, victim_image_size, victim_spec
    recipe = recipe or profile.surrogate_recipe
    queries = pool_size(profile, pool, pool_split) if budget == "all" else (budget or profile.transfer_budget)
    train = queries * (1 - validation_fraction)
    _, test = victim_sizes(profile, key)
    size, evaluate = profile.image_size[victim_spec(key).dataset], profile.cuda_eval_batch_size
    evaluations = (test if test_curve else test / recipe.epochs) + queries * validation_fraction
    extra = []
    if (defence or {}).get("name") == "mad":  # the defender's proxy answers every query too
        extra.append(Work("inference", profile.surrogate_arch, victim_image_size(profile, key), queries, evaluate))
    if sampling != "random":  # the adaptive attacker's online surrogate takes one step per batch of queries
        extra.append(Work("train", profile.surrogate_arch, size, queries, recipe.batch_size))
    return [Work("inference", victim_arch(profile, key), victim_image_size(profile, key), queries, evaluate),
            Work("train", profile.surrogate_arch, size, train * recipe.epochs, batch_size or recipe.batch_size),
            Work("inference", profile.surrogate_arch, size, evaluations * recipe.epochs, evaluate), *extra]


def _in_distribution_budget(profile: Profile) -> int:
    from ..data.catalog import DATASETS
    bing, per_class = pool_size(profile, "bing", "train"), profile.in_distribution_per_class
    return bing if per_class is None else min(bing, per_class * (DATASETS["bing"].paper_classes or 1))


def task_work(profile: Profile, task: Task) -> list[Work]:
    """The image passes of one grid task (see the module docstring for what is left out)."""
    from .victims import victim_arch, victim_image_size, victim_recipe
    fn, args, kw = task.function.split(":")[1], task.args, task.kwargs
    if fn == "get_victim":
        key = args[0]
        train, test = victim_sizes(profile, key)
        recipe, arch, size = victim_recipe(profile, key), victim_arch(profile, key), victim_image_size(profile, key)
        return [Work("train", arch, size, train * recipe.epochs, recipe.batch_size),
                Work("inference", arch, size, test * recipe.epochs, profile.cuda_eval_batch_size)]
    if fn == "knockoff":
        return surrogate_work(profile, args[0], **kw)
    if fn == "dawn_verification":  # a watermarked and a clean surrogate of Table 2's size
        from .defences import dawn_spec, defence_attack
        attack = defence_attack(profile)
        return surrogate_work(profile, args[0], defence=dawn_spec(args[1]), **attack) + \
            surrogate_work(profile, args[0], **attack)[1:]
    if fn == "prada_result":  # the victim answers its test images; PRADA itself is distance arithmetic
        from .victims import victim_arch, victim_image_size
        return [Work("inference", victim_arch(profile, args[0]), victim_image_size(profile, args[0]),
                     victim_sizes(profile, args[0])[1], profile.cuda_eval_batch_size)]
    if fn == "attack_formats":  # probs is made by its own task; top1 reuses the label surrogate
        return [w for f in args[1] if f not in ("probs", "top1") for w in surrogate_work(profile, args[0], **kw)]
    if fn == "section_5_1_3_pair":
        budget = pool_size(profile, "diabetic5", "train")
        return [w for pool in ("diabetic5", "imagenet")
                for w in surrogate_work(profile, "gtsrb", budget=budget, recipe=args[1], pool=pool,
                                        pool_split="train" if pool == "diabetic5" else None, test_curve=False)]
    if fn == "in_distribution_grid":
        _, pool, batch_sizes, epochs = args
        recipe = profile.surrogate_recipe.replace(epochs=epochs)
        return [w for b in batch_sizes for w in surrogate_work(
            profile, "caltech", budget=_in_distribution_budget(profile), recipe=recipe, batch_size=b, pool=pool,
            pool_split="train", validation_fraction=profile.validation_fraction)]
    return detection_work(profile, fn, args)


def detection_work(profile: Profile, fn: str, args: tuple) -> list[Work]:
    """Table 3's scratch and CV detectors on CUBS, Table 4's backbone per victim, the filter."""
    ood_train = profile.detector_ood_train or pool_size(profile, "imagenet", "train") // 2
    ood_test = profile.detector_ood_test or split_size(profile, "imagenet", "test")
    size, evaluate = profile.image_size["imagenet"], profile.cuda_eval_batch_size
    if fn == "table3_rows":
        cubs_train, cubs_test = victim_sizes(profile, "cubs")
        cap, recipe = profile.detector_scratch_train, profile.detector_recipe
        side = lambda n: n if cap is None else min(n, cap)  # noqa: E731
        scratch_size = profile.detector_scratch_image_size or size
        work = [Work("train", arch, scratch_size, (side(cubs_train) + side(ood_train)) * recipe.epochs * 2,
                     recipe.batch_size) for arch in profile.detector_scratch_archs]  # with and without the overlap
        return work + [Work("inference", arch, size, cubs_train + ood_train + cubs_test + ood_test, evaluate)
                       for arch in profile.detector_cv_archs]
    if fn == "table4_result":
        train, test = victim_sizes(profile, args[0])
        openimages = profile.openimages_test or split_size(profile, "openimages", "test")
        scored = test + ood_test + openimages
        return [Work("inference", _detector_arch(profile), size, train + ood_train + scored, evaluate),
                Work("inference", profile.backbone, size, scored * 3, evaluate)]  # MSP, ODIN (a gradient), Mahalanobis
    if fn == "filter_report":
        return [Work("inference", _detector_arch(profile), size, profile.transfer_budget, evaluate)]
    return []  # overlap lists, the choice of backbone, notebook 06's detector queries: seconds


def _detector_arch(profile: Profile) -> str:
    return profile.detector_arch or profile.detector_cv_archs[0]


# ---------------------------------------------------------------- the CPU work of each task (high end)


def task_sets(profile: Profile, task: Task) -> list[tuple[str, str, int]]:
    """(dataset, split, px) of every decoded set the task loads, once per call that loads it."""
    from .victims import victim_image_size, victim_spec
    fn, args, kw = task.function.split(":")[1], task.args, task.kwargs
    whole = lambda key, px: [(victim_spec(key).dataset, s, px) for s in ("train", "test")]  # noqa: E731

    def attack(key, pool="imagenet", pool_split=None, **_):
        px = profile.image_size[victim_spec(key).dataset]
        return [(pool, s, px) for s in _pool_splits(profile, pool, pool_split)] + \
            [(victim_spec(key).dataset, "test", px)]

    if fn == "get_victim":
        return whole(args[0], victim_image_size(profile, args[0]))
    if fn == "knockoff":
        return attack(args[0], **kw)
    if fn in ("dawn_verification", "prada_result"):
        return attack(args[0])
    if fn == "attack_formats":
        return [s for f in args[1] if f not in ("probs", "top1") for s in attack(args[0], **kw)]
    if fn == "section_5_1_3_pair":
        return attack("gtsrb", "diabetic5", "train") + attack("gtsrb")
    if fn == "in_distribution_grid":
        return [s for _ in args[2] for s in attack("caltech", args[1], "train")]
    if fn not in ("table3_rows", "table4_result", "filter_report", "api_demo", "in_distribution_detection"):
        return []  # overlap lists, the choice of backbone: no images
    victim = {"table3_rows": "cubs", "in_distribution_detection": "caltech"}.get(fn) or args[0]
    px = profile.image_size["imagenet"]
    return whole(victim, px) + [("imagenet", s, px) for s in _pool_splits(profile, "imagenet", "all")] + \
        [("openimages", "test", px)]


def logistic_fits(profile: Profile, task: Task) -> list[tuple[str, str]]:
    """(victim, backbone) of each CV detector the task fits or loads (each is fitted once)."""
    fn, args = task.function.split(":")[1], task.args
    if fn == "table3_rows":
        return [("cubs", arch) for arch in profile.detector_cv_archs]
    if fn in ("table4_result", "filter_report", "api_demo"):
        return [(args[0], _detector_arch(profile))]
    return [("caltech", _detector_arch(profile))] if fn == "in_distribution_detection" else []


def _feature_dim(arch: str) -> int:
    import torch

    from ..core.models import build_model
    with torch.device("meta"):
        return int(build_model(arch, 2, pretrained=False).feature_dim)


def cpu_work(profile: Profile, cost: Cost, seen: set) -> list[CpuWork]:
    """The high end's CPU work of a task of ``cost``; ``seen`` holds the sets decoded and detectors fitted by
    the tasks before it (the first task to need one pays for it, the later ones reload it)."""
    out = [CpuWork("task starts", 1, TASK_START_S)]
    for dataset, split, px in cost.sets:
        try:
            n = split_size(profile, dataset, split)
        except ValueError:  # no folder and no paper count (a stand-in's extra split): not counted
            continue
        if (dataset, split, px) not in seen:
            seen.add((dataset, split, px))
            ms = DECODE_MS_PER_IMAGE.get(dataset, DECODE_MS_DEFAULT)
            out.append(CpuWork("decoding", n, n * ms / 1000 / DECODE_THREADS))
        else:
            out.append(CpuWork("reloads", n * 3 * px * px, n * 3 * px * px / RELOAD_BYTES_PER_S))
    for victim, arch in cost.fits:
        if (victim, arch) in seen:
            continue
        seen.add((victim, arch))
        ood = profile.detector_ood_train or pool_size(profile, "imagenet", "train") // 2  # as detection_work
        n = victim_sizes(profile, victim)[0] + ood
        cs = profile.detector_cv_cs if isinstance(profile.detector_cv_cs, int) else len(profile.detector_cv_cs)
        fits = cs * (profile.cv_folds - 1) + 1  # each CV fit on (folds - 1)/folds of the data, then the refit
        # an L-BFGS iteration reads the n x d float64 features twice (the margins, then the gradient)
        out.append(CpuWork("logistic regressions", 1, fits * LOGISTIC_ITERATIONS * 2 * 8 * n * _feature_dim(arch)
                           / LOGISTIC_BYTES_PER_S))
    return out
