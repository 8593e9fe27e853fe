"""How many GPU-hours a profile needs, as a range: the grid's tasks, their image passes, their CPU work.

Each task of :func:`kx_utils.orchestration.grid.grid_tasks` is turned into the image passes it makes by the
cost model of the experiment that declared it (:func:`kx_utils.experiments.registry.cost_of`)
(:class:`Work`: training steps and inference over a model at an input size and batch size),
counted from the profile's settings and the datasets' sizes (counted in their folders, else the
paper's Table 1 counts; the plan lists which).  A pass costs ``1 / images_per_s`` seconds, with
the throughput of that model, size and batch size measured by ``python -m kx_utils bench --json``
where it was measured, else stated.  Two ends are projected, both for one H200:

* **low end**: every pass at :data:`DEFAULT_PEAK_FRACTION` (20%) of the H200's dense bf16 peak,
  the model's FLOPs per image counted by :mod:`kx_utils.core.flops` (a training step is 3 forward
  passes), whatever the batch size; nothing but image passes.  NVIDIA's ResNet-50 AMP reference
  (about 2,500 images/s on an A100) is 20% of its peak counted so: a lower bound.
* **high end**: :data:`REFERENCE` -- ResNet34 at 224 px training at 4,500 images/s at batch 64
  (10% of the peak; eager PyTorch in bf16 on one H200 is reported at 4,500-6,000) -- other models
  at the same rate per FLOP, plus :data:`STEP_OVERHEAD_S` per batch (kernel launches, the batch's
  copy to the GPU, the optimizer), so that batch 16 trains ResNet34 at about 2,760 images/s; and the
  CPU work a task does while it holds its GPU: decoding each data set once
  (:data:`DECODE_MS_PER_IMAGE` per image on one core, :data:`DECODE_THREADS` threads), reloading
  decoded sets from the cache (:data:`RELOAD_BYTES_PER_S`), the CV detectors' logistic regressions
  (:data:`LOGISTIC_ITERATIONS` L-BFGS iterations per fit, each reading the float64 features twice
  at :data:`LOGISTIC_BYTES_PER_S`) and :data:`TASK_START_S` per task for a fresh worker process.
  No pass is costed faster at the high end than at the low end.

A measured rate replaces the stated one at both ends.  A batch size that was not measured, for a
model and size that was, takes the rate of the nearest larger measured batch size at the low end
(larger batches are rarely slower per image) and of the nearest smaller one at the high end (where
there is none: the nearest larger one plus :data:`STEP_OVERHEAD_S` for each extra step); the plan
flags each such row "NOT MEASURED".  The result is per notebook, on one GPU and on N, the N-GPU time
from a list schedule of the task graph, and names what dominates it.  :data:`NOT_COUNTED` is what
neither end counts.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import Profile
from ..core.flops import peak_bf16_tflops, training_flops
from ..experiments.registry import Task, cost_of
from ..experiments.workload import (
    DECODE_MS_DEFAULT,
    DECODE_MS_PER_IMAGE,
    DECODE_THREADS,
    LOGISTIC_BYTES_PER_S,
    LOGISTIC_ITERATIONS,
    RELOAD_BYTES_PER_S,
    TASK_START_S,
    cpu_work,
    split_size_and_source,
)
from .grid import grid_tasks

LOW, HIGH = "low", "high"
H200_PEAK_BF16_TFLOPS = peak_bf16_tflops("H200")  # dense, the H100/H200 SXM datasheet figure
DEFAULT_PEAK_FRACTION = 0.20
# FLOPs say nothing of a tiny network's per-step overheads: no stated rate goes past airbench's
# order of magnitude (a small CIFAR-10 network trains at roughly 150,000 images/s on an A100)
STATED_CEILING_IMAGES_PER_S = 150_000.0
REFERENCE = ("resnet34", 224, 64, 4_500.0)  # the high end's (arch, px, batch, training images/s) on an H200
STEP_OVERHEAD_S = 0.003
NOT_COUNTED = ("ODIN's and Mahalanobis's tuning grids (passes over the tuning sets for every setting) and "
               "Mahalanobis's per-layer Gaussians; augmentation beyond the per-step overhead; writing artifacts "
               "and checkpoints; the starred detectors' dropped classes (counted as kept: over-counts); the "
               "notebooks' own run afterwards (they load what the grid made)")


# ---------------------------------------------------------------- throughput


def model_forward_flops(arch: str, size: int, classes: int = 1000) -> float:
    """FLOPs of one image's forward pass through ``arch`` at ``size`` px (:func:`kx_utils.core.flops.forward_flops`)."""
    from ..core.flops import forward_flops
    from ..core.models import build_model
    return forward_flops(build_model(arch, classes, pretrained=False), (3, size, size))


class Throughput:
    """Images per second per (section, arch, size, batch) at each end: measured where ``bench`` measured
    it, else stated (the module docstring gives both ends' rules)."""

    def __init__(self, bench: dict | None = None, peak_tflops: float = H200_PEAK_BF16_TFLOPS,
                 peak_fraction: float = DEFAULT_PEAK_FRACTION, reference: tuple = REFERENCE,
                 step_overhead_s: float = STEP_OVERHEAD_S):
        if not 0 < peak_fraction <= 1 or not peak_tflops > 0:
            raise ValueError(f"a peak fraction is in (0, 1] and a peak positive; got {peak_fraction}, {peak_tflops}")
        if not 0 <= step_overhead_s < reference[2] / reference[3]:
            raise ValueError(f"a step overhead of {step_overhead_s} s leaves no time for the reference's "
                             f"{reference[2]} images at {reference[3]:,.0f} images/s")
        self.peak, self.fraction = peak_tflops * 1e12, peak_fraction
        self.reference, self.overhead = reference, step_overhead_s
        self.device = (bench or {}).get("device_name")
        self.measured: dict[tuple[str, str, int], dict[int, float]] = {}
        for row in (bench or {}).get("timings", []):
            if row.get("default"):
                rates = self.measured.setdefault((row["section"], row["model"], int(row["size"])), {})
                rates[int(row["batch"])] = max(rates.get(int(row["batch"]), 0.0), float(row["images_per_s"]))
        self.used: dict[tuple[str, str, int, int], dict[str, tuple[float, str]]] = {}
        self._flops: dict[tuple[str, int], float] = {}

    def _per_image(self, section: str, arch: str, size: int) -> float:
        if (arch, size) not in self._flops:
            self._flops[(arch, size)] = model_forward_flops(arch, size)
        return training_flops(self._flops[(arch, size)]) if section == "train" else self._flops[(arch, size)]

    def images_per_s(self, section: str, arch: str, size: int, batch: int, end: str = LOW) -> float:
        if end not in (LOW, HIGH):
            raise ValueError(f"an end is {LOW!r} or {HIGH!r}, got {end!r}")
        key = (section, arch, size, int(batch))
        if end not in self.used.get(key, {}):
            rate, how = self._measured(key, end) or self._stated(key, end)
            if end == HIGH and rate > self.images_per_s(section, arch, size, batch, LOW):
                rate, how = self.used[key][LOW][0], how + ", held to the low end's"
            self.used.setdefault(key, {})[end] = (rate, how)
        return self.used[key][end][0]

    def _measured(self, key: tuple, end: str) -> tuple[float, str] | None:
        rates = self.measured.get(key[:3])
        batch = key[3]
        if not rates:
            return None
        if batch in rates:
            return rates[batch], f"measured on {self.device}"
        below, above = [b for b in rates if b < batch], [b for b in rates if b > batch]
        flag = f"batch {batch} NOT MEASURED"
        if end == LOW or not below:
            b = min(above) if above else max(below)
            if end == HIGH:  # only larger batches measured: theirs plus the overhead of the extra steps
                rate = 1 / (1 / rates[b] + self.overhead * (1 / batch - 1 / b))
                return rate, f"{flag}: batch {b}'s rate on {self.device} + {self.overhead * 1e3:g} ms per extra step"
            return rates[b], f"{flag}: batch {b}'s rate on {self.device}"
        return rates[max(below)], f"{flag}: batch {max(below)}'s rate on {self.device}"

    def _stated(self, key: tuple, end: str) -> tuple[float, str]:
        section, arch, size, batch = key
        per_image = self._per_image(section, arch, size)
        if end == LOW:
            rate = self.fraction * self.peak / per_image
            return min(rate, STATED_CEILING_IMAGES_PER_S), f"stated, {per_image / 1e9:.2f} GFLOP/image" + (
                ", at the ceiling" if rate > STATED_CEILING_IMAGES_PER_S else "")
        ref_arch, ref_size, ref_batch, ref_rate = self.reference
        # the reference's seconds per FLOP once its own per-step overhead is taken out, scaled to this peak
        per_flop = (1 / ref_rate - self.overhead / ref_batch) / self._per_image("train", ref_arch, ref_size)
        per_flop *= H200_PEAK_BF16_TFLOPS * 1e12 / self.peak
        rate = 1 / (per_image * per_flop + self.overhead / batch)
        return min(rate, STATED_CEILING_IMAGES_PER_S), f"stated, {per_image / 1e9:.2f} GFLOP/image" + (
            ", at the ceiling" if rate > STATED_CEILING_IMAGES_PER_S else "")


def load_bench(path: str | Path) -> dict:
    try:
        with open(path) as f:
            bench = json.load(f)
        if not isinstance(bench.get("timings"), list):
            raise ValueError("no 'timings' list")
        for row in bench["timings"]:
            if not all(k in row for k in ("section", "model", "size", "batch", "images_per_s")):
                raise ValueError(f"a timing without section, model, size, batch and images_per_s: {row}")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path} is not a benchmark of `python -m kx_utils bench --json` ({exc}); "
                         "write one with `python -m kx_utils bench --device cuda --json FILE`") from None
    return bench


# ---------------------------------------------------------------- the projection


def task_seconds(profile: Profile, task: Task, throughput: Throughput, end: str = LOW,
                 seen: set | None = None) -> dict[str, float]:
    """Seconds of ``task`` at one end, by what they are spent on ("train resnet34 @ 224 px", "CPU: decoding")."""
    parts: dict[str, float] = {}
    cost = cost_of(profile, task)  # the cost model of the experiment that declared it
    for w in cost.passes:
        label = f"{w.section} {w.arch} @ {w.size} px"
        rate = throughput.images_per_s(w.section, w.arch, w.size, w.batch, end)
        parts[label] = parts.get(label, 0.0) + w.images / rate
    for c in cpu_work(profile, cost, set() if seen is None else seen) if end == HIGH else ():
        parts[f"CPU: {c.kind}"] = parts.get(f"CPU: {c.kind}", 0.0) + c.seconds
    return parts


def estimated_seconds(profile: Profile, tasks: list[Task], throughput: Throughput | None = None,
                      end: str = LOW) -> dict[str, float]:
    """Each task's time at ``throughput`` (default: the stated GPU throughput): on a CPU only the ratios
    between tasks mean anything, which is all :func:`critical_path_order` needs."""
    throughput, seen = throughput or Throughput(), set()
    return {t.name: sum(task_seconds(profile, t, throughput, end, seen).values()) for t in tasks}


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


@dataclass
class Projection:
    profile: str
    gpus: tuple[int, ...]
    tasks: int
    per_notebook: dict[str, dict[str, float]]  # end -> notebook -> GPU-seconds
    makespan: dict[str, dict[int, float]]  # end -> N -> seconds of wall time on N GPUs
    parts: dict[str, dict[str, float]]  # end -> what the seconds are spent on -> seconds
    sources: dict  # (section, arch, size, batch) -> end -> (images/s, how)
    sizes: list[str] = field(default_factory=list)  # where each split's size comes from
    notebook_parts: dict[str, dict[str, float]] = field(default_factory=dict)  # high end: notebook -> parts

    def total(self, end: str) -> float:
        return sum(self.per_notebook[end].values())

    def dominant(self, end: str) -> tuple[str, float]:
        """What the most seconds go to at ``end``, and its share of the total."""
        label, seconds = max(self.parts[end].items(), key=lambda kv: kv[1], default=("nothing", 0.0))
        return label, seconds / (self.total(end) or 1.0)

    def text(self) -> str:
        h = lambda s: f"{s / 3600:,.1f}" if s >= 3600 else f"{s / 3600:.2f}"  # noqa: E731
        cpu = lambda nb: sum(v for k, v in self.notebook_parts[nb].items() if k.startswith("CPU"))  # noqa: E731
        ref_arch, ref_size, ref_batch, ref_rate = REFERENCE
        lines = [f"GPU-hours of profile {self.profile} ({self.tasks} grid tasks): {h(self.total(LOW))} to "
                 f"{h(self.total(HIGH))} on H200s (low to high end):",
                 f"  low end:  every image pass at {DEFAULT_PEAK_FRACTION:.0%} of the H200's "
                 f"{H200_PEAK_BF16_TFLOPS:.0f} TFLOP/s bf16 peak by its FLOPs (or as measured); nothing else",
                 f"  high end: {ref_arch} @ {ref_size} px trains at {ref_rate:,.0f} img/s at batch {ref_batch}, other "
                 f"models at its rate per FLOP, + {STEP_OVERHEAD_S * 1e3:g} ms per batch (or as measured); + the CPU "
                 "work a task does while holding its GPU (below)", "",
                 "| notebook | GPU-hours, low | GPU-hours, high | of which CPU work (high) |", "|---|---:|---:|---:|"]
        lines += [f"| {nb} | {h(self.per_notebook[LOW][nb])} | {h(s)} | {h(cpu(nb))} |"
                  for nb, s in self.per_notebook[HIGH].items()]
        lines += [f"| **total** | **{h(self.total(LOW))}** | **{h(self.total(HIGH))}** | "
                  f"**{h(sum(cpu(nb) for nb in self.notebook_parts))}** |", "",
                  "| GPUs | wall-clock hours, low | wall-clock hours, high | speed-up (high) |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {n} | {h(self.makespan[LOW][n])} | {h(self.makespan[HIGH][n])} | "
                  f"{self.makespan[HIGH][self.gpus[0]] / (self.makespan[HIGH][n] or 1):.1f}x |" for n in self.gpus]
        label, share = self.dominant(HIGH)
        ranked = sorted(self.parts[HIGH].items(), key=lambda kv: -kv[1])[1:4]
        lines += ["", f"Dominant: {label}, {self.parts[LOW].get(label, 0.0) / (self.total(LOW) or 1):.0%} of the low "
                  f"end and {share:.0%} of the high end; next at the high end: "
                  + ", ".join(f"{k} {v / (self.total(HIGH) or 1):.0%}" for k, v in ranked)]
        low_label, low_share = self.dominant(LOW)
        if low_label != label:
            lines.append(f"Dominant at the low end: {low_label}, {low_share:.0%}")
        lines += ["", f"CPU work in the high end: decoding each set once ({DECODE_MS_DEFAULT:g} ms per image on one "
                  f"core, Diabetic5 {DECODE_MS_PER_IMAGE['diabetic5']:g}, OpenImages "
                  f"{DECODE_MS_PER_IMAGE['openimages']:g}; {DECODE_THREADS} threads), reloading decoded sets at "
                  f"{RELOAD_BYTES_PER_S / 1e9:g} GB/s, the CV logistic regressions ({LOGISTIC_ITERATIONS} L-BFGS "
                  f"iterations per fit reading the float64 features twice at {LOGISTIC_BYTES_PER_S / 1e9:g} GB/s), "
                  f"{TASK_START_S:g} s per task start: "
                  + ", ".join(f"{k[5:]} {h(v)} h" for k, v in sorted(self.parts[HIGH].items()) if k.startswith("CPU")),
                  f"Not counted at either end: {NOT_COUNTED}."]
        lines += ["", "Throughput used (images/s, low / high end):"]
        for (section, arch, size, batch), ends in sorted(self.sources.items()):
            (low, low_how), (high, high_how) = ends[LOW], ends.get(HIGH, ends[LOW])
            how = low_how if low_how == high_how else f"low end {low_how}; high end {high_how}"
            lines.append(f"  {section:9s} {arch} @ {size} px, batch {batch}: {low:,.0f} / {high:,.0f}  ({how})")
        return "\n".join(lines + ["", "Dataset sizes:", *(f"  {s}" for s in self.sizes)])


def size_sources(profile: Profile) -> list[str]:
    """Where the projection's size of each split comes from: counted in its folder, or the paper's."""
    from ..data.catalog import DATASETS
    out = []
    for key, info in DATASETS.items():
        for split in (info.standin_splits if profile.standins else info.splits):
            try:
                n, folder = split_size_and_source(profile, key, split)
            except ValueError:
                out.append(f"{info.paper_name} {split}: not on this machine and no count in the paper (not counted)")
                continue
            paper = {"train": info.paper_train, "test": info.paper_test}.get(split)
            out.append(f"{info.paper_name} {split}: {n:,} counted in {folder}" + (
                f" (the paper's: {paper:,})" if paper and paper != n and not profile.standins else "")
                if folder else f"{info.paper_name} {split}: {n:,}, the paper's count (no folder on this machine)")
    return out


def project(profile: Profile, throughput: Throughput | None = None, gpus: tuple[int, ...] = (1, 8)) -> Projection:
    throughput = throughput or Throughput()
    tasks = grid_tasks(profile)
    after = {t.name: t.after for t in tasks}
    per_notebook: dict = {LOW: {}, HIGH: {}}
    parts: dict = {LOW: {}, HIGH: {}}
    makespan: dict = {}
    notebook_parts: dict[str, dict[str, float]] = {}
    for end in (LOW, HIGH):
        seen: set = set()
        seconds = {}
        for t in tasks:
            task_parts = task_seconds(profile, t, throughput, end, seen)
            seconds[t.name] = sum(task_parts.values())
            per_notebook[end][t.notebook] = per_notebook[end].get(t.notebook, 0.0) + seconds[t.name]
            for label, s in task_parts.items():
                parts[end][label] = parts[end].get(label, 0.0) + s
                if end == HIGH:
                    into = notebook_parts.setdefault(t.notebook, {})
                    into[label] = into.get(label, 0.0) + s
        order = critical_path_order(seconds, after, [t.name for t in tasks])  # as `grid --executor ray` runs them
        makespan[end] = {n: list_schedule(seconds, after, order, n) for n in gpus}
    per_notebook = {end: dict(sorted(seconds.items())) for end, seconds in per_notebook.items()}
    return Projection(profile.name, tuple(gpus), len(tasks), per_notebook, makespan, parts, throughput.used,
                      size_sources(profile), notebook_parts)
