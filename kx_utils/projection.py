"""How many GPU-hours a profile needs: the grid's tasks, their image passes, a throughput per model.

Each task of :func:`kx_utils.grid.grid_tasks` is turned into the image passes it makes
(:class:`Work`: training steps and inference over a model at an input size), counted from
the profile's settings and the datasets' sizes.  A pass costs ``1 / images_per_s`` seconds,
the throughput of that model and size measured by ``python -m kx_utils bench --json``, or,
where nothing was measured, the **stated default**: the model's FLOPs per image (counted by
``torch.utils.flop_counter``; a training step is 3 forward passes) at
:data:`DEFAULT_PEAK_FRACTION` of an H200's dense bf16 peak.  The result is per notebook, on
one GPU and on N, the N-GPU time from a list schedule of the task graph (a task starts when
its dependencies are done and a GPU is free), so the longest chain of tasks shows.

Counted: every training epoch, every evaluation the training loop makes, the victims'
answers to the transfer sets, the detectors' feature extraction.  Not counted: decoding,
ODIN's and Mahalanobis's tuning grids and the logistic regressions of the CV detectors
(CPU-bound and small next to 200-epoch training): the projection is a lower bound there.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

from .flops import peak_bf16_tflops, training_flops
from .grid import Task, grid_tasks
from .profiles import Profile

H200_PEAK_BF16_TFLOPS = peak_bf16_tflops("H200")  # dense, the H100/H200 SXM datasheet figure
# NVIDIA's ResNet-50 AMP reference, about 2,500 images/s on an A100, is 20% of its 312 TFLOP/s when
# counted as kx counts (kx_utils.flops: 8.2 GFLOP forward, a training step 3 forward passes)
DEFAULT_PEAK_FRACTION = 0.20
# FLOPs say nothing of a tiny network's per-step overheads: no stated default goes past airbench's
# order of magnitude (a small CIFAR-10 network trains at roughly 150,000 images/s on an A100)
STATED_CEILING_IMAGES_PER_S = 150_000.0


@dataclass(frozen=True)
class Work:
    section: str  # "train" | "inference"
    arch: str
    size: int
    images: float  # image passes


# ---------------------------------------------------------------- dataset sizes without decoding


def split_size(profile: Profile, dataset: str, split: str) -> int:
    """Images of a split: counted in its folder when present, else the paper's count (Table 1)."""
    from .data import DATASETS, DatasetNotFoundError, list_image_folder, split_folder
    info = DATASETS[dataset]
    try:
        return len(list_image_folder(split_folder(dataset, split, profile.standins, profile.data_root,
                                                   allow_download=False))[1])
    except (DatasetNotFoundError, KeyError, OSError):
        counts = {"train": info.paper_train, "test": info.paper_test}
        if counts.get(split) is None:
            raise ValueError(f"{info.paper_name} {split}: not on this machine and no size in the paper; "
                             "place the data (python -m kx_utils plan says where)") from None
        return counts[split]


def _capped(n: int, per_class: int | None, classes: int | None) -> int:
    return n if per_class is None or not classes else min(n, per_class * classes)


def victim_sizes(profile: Profile, key: str) -> tuple[int, int]:
    from .data import DATASETS
    from .victims import victim_spec
    dataset = victim_spec(key).dataset
    classes = DATASETS[dataset].paper_classes
    return (_capped(split_size(profile, dataset, "train"), profile.train_per_class, classes),
            _capped(split_size(profile, dataset, "test"), profile.test_per_class, classes))


def pool_size(profile: Profile, pool: str, split: str | None = None) -> int:
    from .attack import default_pool_split
    from .data import DATASETS
    split = split or default_pool_split(profile, pool)
    info = DATASETS[pool]
    splits = (info.standin_splits if profile.standins else info.splits) if split == "all" else [split]
    n = sum(split_size(profile, pool, s) for s in splits)
    return n if profile.pool_size is None else min(n, profile.pool_size)


# ---------------------------------------------------------------- the work of each task


def surrogate_work(profile: Profile, key: str, *, budget=None, recipe=None, batch_size=None, pool="imagenet",
                   pool_split=None, validation_fraction: float = 0.0, test_curve: bool = True, **_) -> list[Work]:
    from .victims import victim_arch, victim_image_size, victim_spec
    recipe = recipe or profile.surrogate_recipe
    queries = pool_size(profile, pool, pool_split) if budget == "all" else (budget or profile.transfer_budget)
    train = queries * (1 - validation_fraction)
    _, test = victim_sizes(profile, key)
    size = profile.image_size[victim_spec(key).dataset]
    evaluations = (test if test_curve else test / recipe.epochs) + queries * validation_fraction
    return [Work("inference", victim_arch(profile, key), victim_image_size(profile, key), queries),
            Work("train", profile.surrogate_arch, size, train * recipe.epochs),
            Work("inference", profile.surrogate_arch, size, evaluations * recipe.epochs)]


def task_work(profile: Profile, task: Task) -> list[Work]:
    """The image passes of one grid task (see the module docstring for what is left out)."""
    from .data import DATASETS
    from .victims import victim_arch, victim_image_size, victim_recipe
    fn, args, kw = task.function.split(":")[1], task.args, task.kwargs
    if fn == "get_victim":
        key = args[0]
        train, test = victim_sizes(profile, key)
        recipe, arch, size = victim_recipe(profile, key), victim_arch(profile, key), victim_image_size(profile, key)
        return [Work("train", arch, size, train * recipe.epochs), Work("inference", arch, size, test * recipe.epochs)]
    if fn == "knockoff":
        return surrogate_work(profile, args[0], **kw)
    if fn == "attack_formats":  # probs is made by its own task; top1 reuses the label surrogate
        formats = [f for f in args[1] if f not in ("probs", "top1")]
        return [w for _ in formats for w in surrogate_work(profile, args[0], **kw)]
    if fn == "section_5_1_3_pair":
        budget = pool_size(profile, "diabetic5", "train")
        return [w for pool in ("diabetic5", "imagenet")
                for w in surrogate_work(profile, "gtsrb", budget=budget, recipe=args[1], pool=pool,
                                        pool_split="train" if pool == "diabetic5" else None, test_curve=False)]
    if fn == "in_distribution_grid":
        _, pool, batch_sizes, epochs = args
        bing = pool_size(profile, "bing", "train")
        per_class = profile.in_distribution_per_class
        budget = bing if per_class is None else min(bing, per_class * (DATASETS["bing"].paper_classes or 1))
        recipe = profile.surrogate_recipe.replace(epochs=epochs)
        return [w for _ in batch_sizes for w in surrogate_work(profile, "caltech", budget=budget, recipe=recipe,
                                                                 pool=pool, pool_split="train",
                                                                 validation_fraction=profile.validation_fraction)]
    return detection_work(profile, fn, args)


def detection_work(profile: Profile, fn: str, args: tuple) -> list[Work]:
    """Table 3's scratch and CV detectors on CUBS, Table 4's backbone per victim, the filter."""
    ood_train = profile.detector_ood_train or pool_size(profile, "imagenet", "train") // 2
    ood_test = profile.detector_ood_test or split_size(profile, "imagenet", "test")
    size = profile.image_size["imagenet"]
    if fn == "table3_rows":
        cubs_train, cubs_test = victim_sizes(profile, "cubs")
        cap = profile.detector_scratch_train
        side = lambda n: n if cap is None else min(n, cap)  # noqa: E731
        scratch_size = profile.detector_scratch_image_size or size
        work = [Work("train", arch, scratch_size, (side(cubs_train) + side(ood_train)) * profile.detector_recipe.epochs
                     * 2) for arch in profile.detector_scratch_archs]  # with and without the overlapping classes
        return work + [Work("inference", arch, size, cubs_train + ood_train + cubs_test + ood_test)
                       for arch in profile.detector_cv_archs]
    if fn == "table4_result":
        train, test = victim_sizes(profile, args[0])
        arch = profile.detector_arch or profile.detector_cv_archs[0]
        victim = profile.backbone
        openimages = profile.openimages_test or split_size(profile, "openimages", "test")
        scored = test + ood_test + openimages
        return [Work("inference", arch, size, train + ood_train + scored),
                Work("inference", victim, size, scored * 3)]  # MSP, ODIN (a gradient step), Mahalanobis
    if fn == "filter_report":
        return [Work("inference", profile.detector_arch or profile.detector_cv_archs[0], size,
                     profile.transfer_budget)]
    return []  # overlap lists, the choice of backbone, notebook 06's detector queries: seconds


# ---------------------------------------------------------------- throughput


def model_forward_flops(arch: str, size: int, classes: int = 1000) -> float:
    """FLOPs of one image's forward pass through ``arch`` at ``size`` px (:func:`kx_utils.flops.forward_flops`)."""
    from .flops import forward_flops
    from .models import build_model
    return forward_flops(build_model(arch, classes, pretrained=False), (3, size, size))


class Throughput:
    """Images per second per (section, arch, size): measured where ``bench`` measured it, else stated."""

    def __init__(self, bench: dict | None = None, peak_tflops: float = H200_PEAK_BF16_TFLOPS,
                 peak_fraction: float = DEFAULT_PEAK_FRACTION):
        self.peak, self.fraction = peak_tflops * 1e12, peak_fraction
        self.device = (bench or {}).get("device_name")
        self.measured: dict[tuple[str, str, int], float] = {}
        for row in (bench or {}).get("timings", []):
            if row.get("default"):
                key = (row["section"], row["model"], int(row["size"]))
                self.measured[key] = max(self.measured.get(key, 0.0), float(row["images_per_s"]))
        self.used: dict[tuple[str, str, int], tuple[float, str]] = {}
        self._flops: dict[tuple[str, int], float] = {}

    def images_per_s(self, section: str, arch: str, size: int) -> float:
        key = (section, arch, size)
        if key not in self.used:
            if key in self.measured:
                self.used[key] = (self.measured[key], f"measured on {self.device}")
            else:
                if (arch, size) not in self._flops:
                    self._flops[(arch, size)] = model_forward_flops(arch, size)
                per_image = training_flops(self._flops[(arch, size)]) if section == "train" else self._flops[(arch, size)]
                rate = self.fraction * self.peak / per_image
                how = (f"stated: {self._flops[(arch, size)] / 1e9:.2f} GFLOP/image forward at "
                       f"{self.fraction:.0%} of {self.peak / 1e12:.0f} TFLOP/s")
                if rate > STATED_CEILING_IMAGES_PER_S:
                    rate, how = STATED_CEILING_IMAGES_PER_S, how + f", capped at {STATED_CEILING_IMAGES_PER_S:,.0f}"
                self.used[key] = (rate, how)
        return self.used[key][0]


def load_bench(path: str | Path) -> dict:
    try:
        with open(path) as f:
            bench = json.load(f)
        if not isinstance(bench.get("timings"), list):
            raise ValueError("no 'timings' list")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is not a benchmark of `python -m kx_utils bench --json` ({exc}); "
                         "write one with `python -m kx_utils bench --device cuda --json FILE`") from None
    return bench


# ---------------------------------------------------------------- the projection


@dataclass
class Projection:
    profile: str
    gpus: tuple[int, ...]
    per_notebook: dict[str, float]  # GPU-seconds
    makespan: dict[int, float]  # seconds of wall time on N GPUs
    tasks: int
    sources: dict

    def text(self) -> str:
        total = sum(self.per_notebook.values())
        lines = [f"GPU-hours of profile {self.profile} ({self.tasks} grid tasks):", "",
                 "| notebook | GPU-hours |", "|---|---:|"]
        lines += [f"| {nb} | {s / 3600:,.1f} |" for nb, s in self.per_notebook.items()]
        lines += [f"| **total** | **{total / 3600:,.1f}** |", "",
                  "| GPUs | wall-clock hours (list schedule of the task graph) | speed-up |", "|---:|---:|---:|"]
        lines += [f"| {n} | {self.makespan[n] / 3600:,.1f} | {self.makespan[self.gpus[0]] / self.makespan[n]:.1f}x |"
                  for n in self.gpus]
        lines += ["", "Throughput used (images/s):"]
        lines += [f"  {section:9s} {arch} @ {size} px: {rate:,.0f}  ({how})"
                  for (section, arch, size), (rate, how) in sorted(self.sources.items())]
        return "\n".join(lines)


def list_schedule(durations: dict[str, float], after: dict[str, tuple[str, ...]], order: list[str], gpus: int) -> float:
    """Wall time of running tasks in ``order`` on ``gpus`` workers, each as soon as its dependencies end."""
    free = [0.0] * gpus
    heapq.heapify(free)
    ends: dict[str, float] = {}
    for name in order:
        ready = max((ends[d] for d in after[name] if d in ends), default=0.0)
        start = max(heapq.heappop(free), ready)
        ends[name] = start + durations[name]
        heapq.heappush(free, ends[name])
    return max(ends.values(), default=0.0)


def critical_path_order(durations: dict[str, float], after: dict[str, tuple[str, ...]], order: list[str]) -> list[str]:
    """``order`` (dependencies first) re-sorted by each task's upward rank, longest first: its own time
    plus the longest chain of tasks that wait on it.  Workers that take ready tasks in this order start
    the long chains first, instead of leaving one long task to run alone at the end.  The result still
    lists every dependency before its dependents (ties keep ``order``)."""
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for d in after[name]:
            if d in dependents:
                dependents[d].append(name)
    rank: dict[str, float] = {}
    for name in reversed(order):
        rank[name] = durations[name] + max((rank[m] for m in dependents[name]), default=0.0)
    index = {name: i for i, name in enumerate(order)}
    return sorted(order, key=lambda name: (-rank[name], index[name]))


def estimated_seconds(profile: Profile, tasks: list[Task], throughput: Throughput | None = None) -> dict[str, float]:
    """Each task's time at ``throughput`` (default: the stated GPU throughput): on a CPU only the ratios
    between tasks mean anything, which is all :func:`critical_path_order` needs."""
    throughput = throughput or Throughput()
    return {t.name: sum(w.images / throughput.images_per_s(w.section, w.arch, w.size) for w in task_work(profile, t))
            for t in tasks}


def project(profile: Profile, throughput: Throughput | None = None, gpus: tuple[int, ...] = (1, 8)) -> Projection:
    throughput = throughput or Throughput()
    tasks = grid_tasks(profile)
    seconds = estimated_seconds(profile, tasks, throughput)
    per_notebook: dict[str, float] = {}
    for t in tasks:
        per_notebook[t.notebook] = per_notebook.get(t.notebook, 0.0) + seconds[t.name]
    after = {t.name: t.after for t in tasks}
    order = critical_path_order(seconds, after, [t.name for t in tasks])  # as `grid --executor ray` runs them
    return Projection(profile.name, tuple(gpus), dict(sorted(per_notebook.items())),
                      {n: list_schedule(seconds, after, order, n) for n in gpus}, len(tasks), throughput.used)
