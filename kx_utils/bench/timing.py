"""``python -m kx_utils bench``: how fast each model of a profile trains and answers, and at what accuracy.

Three measurements, all in one process so that their ratios are comparable on a noisy machine:

1. **training throughput** (images/s, one SGD step = forward, soft cross-entropy, backward,
   update) of every architecture and input size the profile trains, today's path beside each
   candidate.  On the CPU today's path is float32, channels_last, the machine's threads; the
   candidates are contiguous memory, bf16 autocast, ``torch.compile``, one thread, other batch
   sizes, and partial fine-tuning from the cached outputs of frozen early blocks
   (:func:`kx_utils.core.models.split_frozen_prefix`), whose one-off prefix pass is amortised over the
   profile's surrogate epochs.  On a CUDA GPU today's path is bf16 autocast, channels_last and
   autotuned convolutions (:mod:`kx_utils.core.devices`, what ``fit`` runs); the candidates are float32,
   contiguous memory, ``torch.compile`` and a sweep of batch sizes that includes every batch size
   the profile trains at (the paper's 16, 64, 128 and 256: the GPU-hours projection,
   :mod:`kx_utils.orchestration.projection`, costs each task at its own batch size's rate), for the surrogate
   architecture and MobileNetV2 at the profile's surrogate input size;
2. **inference throughput** (querying a victim, extracting features) at several batch sizes;
3. **accuracy** of reference surrogates (Table 2's attack on its first seed, Caltech and GTSRB by default)
   trained by each surrogate path, so that a faster path that learns less shows up.

Every throughput row carries the FLOPs per image of what it timed (:mod:`kx_utils.core.flops`: a
training step counts as three forward passes) and, where the device's peak bf16 throughput is
known, the share of it the row reached.  Images and targets are random for (1) and (2):
throughput does not depend on pixel values.  :mod:`kx_utils.bench.report` writes the results as
Markdown and as JSON.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..config.schema import Profile
from ..core.devices import (
    autotuned_convolutions,
)
from ..core.flops import forward_flops, training_flops
from ..core.models import build_model, split_frozen_prefix
from ..core.precision import freeze_batch_norm, pointwise_bf16
from ..core.train import frozen_outputs, soft_cross_entropy

# training batch sizes timed besides the profile's, for the swept models (see training_models); on a GPU
# also every batch size the profile trains at (profile_batch_sizes), which the projection costs by
TRAIN_SWEEP = {"cpu": (16, 256), "cuda": (64, 128, 256, 512)}
# evaluation batch sizes timed besides the device's own (kx_utils.core.devices.evaluation_batch_size)
INFERENCE_SWEEP = {"cpu": (64, 1024), "cuda": (256, 4096)}
TRAIN_CLASSES, INFERENCE_CLASSES = 100, 10
# the candidate CPU speed-ups of the training loop (kx_utils.core.precision). A path is "fp32" (today),
# "contiguous", "bf16" (whole-network autocast), "compile", "frozen<N>" (blocks 0..N-1 frozen, their outputs
# cached) or SPEEDUPS joined with "+"
SPEEDUPS = ("frozen_bn", "bf16_pointwise")
SPEEDUP_PATHS = ("bf16_pointwise", "frozen_bn", "frozen_bn+bf16_pointwise")


def frozen_prefix_blocks(path: str) -> int:
    """N of a "frozen<N>" path (the leading blocks trained from cached outputs), else 0."""
    match = re.fullmatch(r"frozen(\d+)", path)
    return int(match.group(1)) if match else 0


def speedups_of(path: str) -> set[str]:
    """The :data:`SPEEDUPS` a path joins ("frozen_bn+bf16_pointwise": both)."""
    parts = set(path.split("+"))
    return parts & set(SPEEDUPS) if parts <= set(SPEEDUPS) else set()


def surrogate_settings_of(path: str) -> dict:
    """The profile values that train a surrogate on ``path`` (for the reference surrogates)."""
    speedups = speedups_of(path)
    if path != "fp32" and not speedups and not frozen_prefix_blocks(path):
        raise ValueError(f"no surrogate is trained on path {path!r}; surrogate paths: fp32, frozen<N>, "
                         f"{', '.join(SPEEDUP_PATHS)}")
    return {"surrogate_frozen_blocks": frozen_prefix_blocks(path),
            "surrogate_batch_norm": "frozen" if "frozen_bn" in speedups else "train",
            "surrogate_precision": "bf16_pointwise" if "bf16_pointwise" in speedups else "fp32"}


@dataclass
class Timing:
    section: str  # "train" | "inference"
    model: str
    size: int
    batch: int
    path: str
    images_per_s: float
    note: str = ""
    baseline: float | None = None  # images/s of today's path for the same model, size and batch
    default: bool = False  # the path the package itself runs on this device
    flops_per_image: float | None = None  # of what was timed: a training step counts 3 forward passes

    @property
    def ratio(self) -> float | None:
        return self.images_per_s / self.baseline if self.baseline else None


def _add_note(timing: Timing, text: str) -> None:
    timing.note = f"{timing.note}; {text}" if timing.note else text


def package_path(device: torch.device) -> str:
    """The path ``fit`` and evaluation run on ``device``: bf16 on a GPU, float32 on the CPU."""
    return "bf16" if device.type == "cuda" else "fp32"


def _uses_bf16(path: str, device: torch.device) -> bool:
    """"fp32" and "bf16" say so; every other path keeps the device's own precision (the speed-ups of
    :data:`SPEEDUPS` set their own)."""
    return path == "bf16" or (path != "fp32" and package_path(device) == "bf16")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step: Callable[[], None], batch: int, device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Images per second of ``step`` (one batch each), after ``warmup`` untimed calls, over about ``seconds``."""
    with autotuned_convolutions(device):
        for _ in range(warmup):
            step()
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += 1
            if n >= 3 and time.perf_counter() - t0 >= seconds:
                break
        _sync(device)
    return n * batch / (time.perf_counter() - t0)


def _model(arch: str, classes: int) -> nn.Module:
    return build_model(arch, classes, pretrained=False)


def training_rate(arch: str, size: int, batch: int, *, classes: int = TRAIN_CLASSES, path: str = "fp32",
                  device: torch.device, seconds: float = 3.0) -> float:
    """Training images/s of ``arch`` at ``size`` px for one path (see the module docstring)."""
    model = _model(arch, classes).to(device)
    channels_last = path != "contiguous"
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    speedups = speedups_of(path)
    if "bf16_pointwise" in speedups:
        pointwise_bf16(model)
    if frozen_prefix_blocks(path):
        prefix, model = split_frozen_prefix(model, frozen_prefix_blocks(path))
        x = frozen_outputs(prefix, torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8),
                           batch, device)
    else:
        x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=memory)
    y = torch.softmax(torch.randn(batch, classes, device=device), 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    forward = torch.compile(model) if path == "compile" else model
    bf16 = _uses_bf16(path, device) and not speedups
    model.train()
    if "frozen_bn" in speedups:
        freeze_batch_norm(model)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x).float()
        loss = soft_cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _rate(step, batch, device, seconds)


@torch.no_grad()
def inference_rate(arch: str, size: int, batch: int, *, path: str = "fp32", device: torch.device,
                   seconds: float = 3.0, prefix_blocks: int = 0) -> float:
    """Evaluation images/s (``prefix_blocks`` > 0: only the first blocks, as a frozen prefix pass)."""
    model = _model(arch, INFERENCE_CLASSES).to(device).to(memory_format=torch.channels_last).eval()
    if prefix_blocks:
        model, _ = split_frozen_prefix(model, prefix_blocks)
    forward = torch.compile(model) if path == "compile" else model
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    bf16 = _uses_bf16(path, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            forward(x)

    return _rate(step, batch, device, seconds)


class FlopCounts:
    """Forward FLOPs per image of each (architecture, size, classes, frozen prefix), counted once."""

    def __init__(self):
        self._counts: dict[tuple, float] = {}

    def forward(self, arch: str, size: int, classes: int, prefix_blocks: int = 0) -> float:
        key = (arch, size, classes, prefix_blocks)
        if key not in self._counts:
            with torch.device("meta"):  # shapes only: no weights are initialised
                model = _model(arch, classes)
            if prefix_blocks:
                model, _ = split_frozen_prefix(model, prefix_blocks)
            self._counts[key] = forward_flops(model, (3, size, size))
        return self._counts[key]

    def training_step(self, arch: str, size: int, path: str, epochs: int) -> float:
        """Per image of one training step on ``path``; a frozen prefix's single pass shared by ``epochs``."""
        whole = self.forward(arch, size, TRAIN_CLASSES)
        if not frozen_prefix_blocks(path):
            return training_flops(whole)
        prefix = self.forward(arch, size, TRAIN_CLASSES, frozen_prefix_blocks(path))
        return training_flops(whole - prefix) + prefix / epochs


def training_models(profile: Profile, device: torch.device) -> list[tuple[str, int, str, int, bool]]:
    """(architecture, input side, what trains it, its batch size, swept) for every model timed in training.

    Swept models are timed at several batch sizes and on every candidate path: the surrogate
    architecture, and on a GPU MobileNetV2 at the same size (the mini profiles' backbone).
    """
    size = max(profile.image_size.values())
    batch = profile.surrogate_recipe.batch_size
    out = [(profile.surrogate_arch, size, "victims and surrogates", batch, True)]
    if device.type == "cuda" and profile.surrogate_arch != "mobilenet_v2":
        out.append(("mobilenet_v2", size, "the mini profiles' backbone", batch, True))
    out += [(arch, profile.scratch_image_size, "scratch victims", profile.scratch_recipe.batch_size, False)
            for arch in ("gtsrb_5l", "cifar10_9l")]
    scratch_size = profile.detector_scratch_image_size or size
    out += [(arch, scratch_size, "scratch detectors", profile.detector_recipe.batch_size, False)
            for arch in profile.detector_scratch_archs]
    return out


def profile_batch_sizes(profile: Profile) -> list[int]:
    """Every batch size the profile trains a surrogate at: its recipe's, Table 7's and 5.2.2's grids."""
    plan = profile.section5
    return sorted({profile.surrogate_recipe.batch_size, *profile.batch_sizes, *(plan.table7_batch_sizes or ()),
                   *(plan.grid_batch_sizes or ())})


def swept_batches(profile: Profile, device: torch.device, batch: int) -> list[int]:
    """The batch sizes a swept model is timed at on ``device`` (``batch``: the profile's own)."""
    extra = profile_batch_sizes(profile) if device.type == "cuda" else []
    return sorted({batch, *TRAIN_SWEEP[device.type], *extra})


def _frozen_paths(arch: str) -> list[str]:
    if arch == "mobilenet_v2":
        return ["frozen4", "frozen7", "frozen14", "frozen17"]
    if arch.startswith("resnet"):
        return ["frozen2", "frozen3"]
    return []


def _candidates(arch: str, device: torch.device, swept: bool, compile_model: bool) -> list[str]:
    """The paths timed beside today's at the profile's batch size."""
    if device.type == "cuda":
        return (["fp32", "contiguous"] + (["compile"] if compile_model else [])) if swept else []
    return ["contiguous", "bf16"] + (["compile"] if swept and compile_model else []) + \
        (list(SPEEDUP_PATHS) + _frozen_paths(arch) if swept else [])


def training_timings(profile: Profile, device: torch.device, seconds: float, compile_model: bool,
                     flops: FlopCounts | None = None, progress: Callable[[str], None] = lambda m: None
                     ) -> list[Timing]:
    flops = flops or FlopCounts()
    timings = []
    epochs = profile.surrogate_recipe.epochs
    today = package_path(device)
    for arch, size, role, batch, swept in training_models(profile, device):
        batches = swept_batches(profile, device, batch) if swept else [batch]
        todays: list[Timing] = []
        for b in batches:
            progress(f"  train {arch} {size} px, batch {b}")
            try:
                base = training_rate(arch, size, b, path=today, device=device, seconds=seconds)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if todays:
                    _add_note(todays[-1], f"batch {b}: out of GPU memory")
                break
            row = Timing("train", arch, size, b, today, base, role, base, default=True,
                         flops_per_image=flops.training_step(arch, size, today, epochs))
            timings.append(row)
            todays.append(row)
            paths = _candidates(arch, device, swept, compile_model) if b == batch else \
                [p for p in _candidates(arch, device, swept, compile_model) if frozen_prefix_blocks(p)]
            for path in paths:
                t0 = time.perf_counter()
                rate = training_rate(arch, size, b, path=path, device=device, seconds=seconds)
                note = f"first step compiled in {time.perf_counter() - t0 - seconds:.0f} s" if path == "compile" else ""
                if frozen_prefix_blocks(path):
                    blocks = frozen_prefix_blocks(path)
                    prefix = inference_rate(arch, size, 256, device=device, seconds=seconds, prefix_blocks=blocks)
                    # each image passes the frozen prefix once per run, the tail once per epoch
                    amortised = 1 / (1 / rate + 1 / (epochs * prefix))
                    note = f"tail only {rate:,.0f} img/s; prefix pass {prefix:,.0f} img/s, amortised over {epochs} epochs"
                    rate = amortised
                timings.append(Timing("train", arch, size, b, path, rate, note, base,
                                      flops_per_image=flops.training_step(arch, size, path, epochs)))
            if device.type == "cpu" and b == batch and torch.get_num_threads() > 1:
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    rate = training_rate(arch, size, b, path="fp32", device=device, seconds=seconds)
                finally:
                    torch.set_num_threads(threads)
                timings.append(Timing("train", arch, size, b, "1 thread", rate, f"today: {threads} threads", base,
                                      flops_per_image=flops.training_step(arch, size, "fp32", epochs)))
        if device.type == "cuda" and len(todays) > 1:
            _add_note(max(todays, key=lambda t: t.images_per_s), "fastest batch of the sweep")
    return timings


def inference_models(profile: Profile) -> list[tuple[str, int, str]]:
    """(architecture, input side, role) of every model timed in inference: the victim, then the detectors'."""
    size = max(profile.image_size.values())
    out = [(profile.backbone, size, "querying a victim")]
    out += [(arch, size, "detector features") for arch in profile.detector_cv_archs if arch != profile.backbone]
    return out


def inference_timings(profile: Profile, device: torch.device, seconds: float, compile_model: bool,
                      flops: FlopCounts | None = None, progress: Callable[[str], None] = lambda m: None
                      ) -> list[Timing]:
    flops = flops or FlopCounts()
    timings = []
    today = package_path(device)
    eval_batch = profile.cuda_eval_batch_size if device.type == "cuda" else profile.eval_batch_size
    for arch, size, role in inference_models(profile):
        progress(f"  inference {arch} {size} px")
        per_image = flops.forward(arch, size, INFERENCE_CLASSES)
        base = inference_rate(arch, size, eval_batch, path=today, device=device, seconds=seconds)
        timings.append(Timing("inference", arch, size, eval_batch, today, base, role, base, default=True,
                              flops_per_image=per_image))
        for batch in INFERENCE_SWEEP[device.type]:
            try:
                rate = inference_rate(arch, size, batch, path=today, device=device, seconds=seconds)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                _add_note(timings[-1], f"batch {batch}: out of GPU memory")
                continue
            timings.append(Timing("inference", arch, size, batch, today, rate, "", base, default=True,
                                  flops_per_image=per_image))
        other = "fp32" if device.type == "cuda" else "bf16"
        main = arch == profile.backbone
        for path in [other] + (["compile"] if compile_model and main else []):
            rate = inference_rate(arch, size, eval_batch, path=path, device=device, seconds=seconds)
            timings.append(Timing("inference", arch, size, eval_batch, path, rate, "", base,
                                  flops_per_image=per_image))
    return timings


def reference_accuracy(profile: Profile, victims: tuple[str, ...], paths: tuple[str, ...],
                       epochs: int | None = None) -> list[dict]:
    """Table 2's attack on each victim (its budget, recipe, attacker validation split and first seed) trained on
    each surrogate path (:func:`surrogate_settings_of`; "fp32": today's whole network).

    Surrogates are artifacts like any other: the "fp32" row at the profile's epochs is Table 2's own first-seed
    surrogate, read from the cache where the grid made it, and a rerun of the benchmark trains none again.
    """
    from ..config.seeds import seeds_for
    from ..experiments.attack import knockoff
    from ..experiments.section5 import table2_attack

    recipe = profile.surrogate_recipe.replace(epochs=epochs or profile.surrogate_recipe.epochs)
    seed = seeds_for(profile, "table2")[0]
    rows = []
    for victim, path in ((v, p) for v in victims for p in paths):
        t0 = time.perf_counter()
        result = knockoff(profile.replace(**surrogate_settings_of(path)), victim, recipe=recipe, seed=seed,
                          **table2_attack(profile))
        rows.append({"path": path, "frozen_blocks": frozen_prefix_blocks(path), "victim": result.victim_name,
                     "budget": result.budget, "epochs": recipe.epochs, "seed": seed, "final_acc": result.final_accuracy,
                     "best_acc": result.best_accuracy, "recovery": result.recovery,
                     "train_seconds": result.train_seconds, "cached": result.from_cache,
                     "curve": [round(r["test_acc"], 3) for r in result.history],
                     "wall_seconds": time.perf_counter() - t0})
    return rows


__all__ = ["FlopCounts", "Timing", "inference_models", "inference_rate", "package_path", "profile_batch_sizes",
           "reference_accuracy", "swept_batches", "training_models", "training_rate"]
