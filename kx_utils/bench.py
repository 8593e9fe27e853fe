"""``python -m kx_utils bench``: how fast each model of a profile trains and answers, and at what accuracy.

Three measurements, all in one process so that their ratios are comparable on a noisy machine:

1. **training throughput** (images/s, one SGD step = forward, soft cross-entropy, backward,
   update) of every architecture and input size the profile trains, today's path (float32,
   channels_last, the machine's threads) beside each candidate: contiguous memory, bf16
   autocast, ``torch.compile``, one thread, other batch sizes, and partial fine-tuning from
   the cached outputs of frozen early blocks (:func:`kx_utils.models.split_frozen_prefix`),
   whose one-off prefix pass is amortised over the profile's surrogate epochs;
2. **inference throughput** (querying a victim, extracting features) at several batch sizes;
3. **accuracy** of one reference surrogate (the profile's Caltech attack) trained by each
   surrogate path, so that a faster path that learns less shows up.

Images and targets are random for (1) and (2): throughput does not depend on pixel values.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .models import build_model, split_frozen_prefix
from .profiles import Profile
from .train import frozen_outputs, pick_device, soft_cross_entropy


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

    @property
    def ratio(self) -> float | None:
        return self.images_per_s / self.baseline if self.baseline else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step: Callable[[], None], batch: int, device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Images per second of ``step`` (one batch each), after ``warmup`` untimed calls, over about ``seconds``."""
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


def training_rate(arch: str, size: int, batch: int, *, classes: int = 100, path: str = "fp32",
                  device: torch.device, seconds: float = 3.0) -> float:
    """Training images/s of ``arch`` at ``size`` px for one path (see the module docstring)."""
    model = _model(arch, classes).to(device)
    channels_last = path != "contiguous"
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    if path.startswith("frozen"):
        prefix, model = split_frozen_prefix(model, int(path[len("frozen"):]))
        x = frozen_outputs(prefix, torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8),
                           batch, device)
    else:
        x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=memory)
    y = torch.softmax(torch.randn(batch, classes, device=device), 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    forward = torch.compile(model) if path == "compile" else model
    bf16 = path == "bf16" or device.type == "cuda"
    model.train()

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
    model = _model(arch, 10).to(device).to(memory_format=torch.channels_last).eval()
    if prefix_blocks:
        model, _ = split_frozen_prefix(model, prefix_blocks)
    forward = torch.compile(model) if path == "compile" else model
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    bf16 = path == "bf16" or device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            forward(x)

    return _rate(step, batch, device, seconds)


def profile_models(profile: Profile) -> list[tuple[str, int, str]]:
    """(architecture, input side, what trains it) for every model the profile trains."""
    size = max(profile.image_size.values())
    out = [(profile.surrogate_arch, size, "victims and surrogates")]
    out += [(arch, profile.scratch_image_size, "scratch victims") for arch in ("gtsrb_5l", "cifar10_9l")]
    scratch_size = profile.detector_scratch_image_size or size
    out += [(arch, scratch_size, "scratch detectors") for arch in profile.detector_scratch_archs]
    return out


def training_timings(profile: Profile, device: torch.device, seconds: float, compile_model: bool) -> list[Timing]:
    timings = []
    epochs = profile.surrogate_recipe.epochs
    batch = profile.surrogate_recipe.batch_size
    for arch, size, role in profile_models(profile):
        paths = ["fp32", "contiguous", "bf16"]
        batches = [batch]
        if role == "victims and surrogates":
            paths += ["compile"] if compile_model else []
            paths += ["frozen4", "frozen7", "frozen14", "frozen17"] if arch == "mobilenet_v2" else ["frozen2", "frozen3"]
            batches = sorted({16, batch, 256})
        for b in batches:
            base = training_rate(arch, size, b, path="fp32", device=device, seconds=seconds)
            timings.append(Timing("train", arch, size, b, "fp32 (today)", base, role, base))
            for path in paths[1:] if b == batch else [p for p in paths if p.startswith("frozen")]:
                t0 = time.perf_counter()
                rate = training_rate(arch, size, b, path=path, device=device, seconds=seconds)
                note = f"first step compiled in {time.perf_counter() - t0 - seconds:.0f} s" if path == "compile" else ""
                if path.startswith("frozen"):
                    blocks = int(path[len("frozen"):])
                    prefix = inference_rate(arch, size, 256, device=device, seconds=seconds, prefix_blocks=blocks)
                    # each image passes the frozen prefix once per run, the tail once per epoch
                    amortised = 1 / (1 / rate + 1 / (epochs * prefix))
                    note = f"tail only {rate:,.0f} img/s; prefix pass {prefix:,.0f} img/s, amortised over {epochs} epochs"
                    rate = amortised
                timings.append(Timing("train", arch, size, b, path, rate, note, base))
            if device.type == "cpu" and b == batch and torch.get_num_threads() > 1:
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    rate = training_rate(arch, size, b, path="fp32", device=device, seconds=seconds)
                finally:
                    torch.set_num_threads(threads)
                timings.append(Timing("train", arch, size, b, "1 thread", rate, f"today: {threads} threads", base))
    return timings


def inference_timings(profile: Profile, device: torch.device, seconds: float, compile_model: bool) -> list[Timing]:
    timings = []
    size = max(profile.image_size.values())
    archs = [(profile.surrogate_arch, "querying a victim")]
    archs += [(a, "detector features") for a in profile.detector_cv_archs if a != profile.surrogate_arch]
    for arch, role in archs:
        base = inference_rate(arch, size, profile.eval_batch_size, device=device, seconds=seconds)
        timings.append(Timing("inference", arch, size, profile.eval_batch_size, "fp32 (today)", base, role, base))
        for batch in (64, 1024):
            rate = inference_rate(arch, size, batch, device=device, seconds=seconds)
            timings.append(Timing("inference", arch, size, batch, "fp32", rate, "", base))
        for path in ["bf16"] + (["compile"] if compile_model and arch == profile.surrogate_arch else []):
            rate = inference_rate(arch, size, profile.eval_batch_size, path=path, device=device, seconds=seconds)
            timings.append(Timing("inference", arch, size, profile.eval_batch_size, path, rate, "", base))
    return timings


def reference_accuracy(profile: Profile, victims: tuple[str, ...], frozen: tuple[int, ...],
                       epochs: int | None = None) -> list[dict]:
    """The profile's attack on each victim trained by each surrogate path (0: the whole network), seed 0.

    Surrogates are artifacts like any other: a rerun of the benchmark trains none again.
    """
    from .attack import knockoff

    recipe = profile.surrogate_recipe.replace(epochs=epochs or profile.surrogate_recipe.epochs)
    rows = []
    for victim, blocks in ((v, b) for v in victims for b in frozen):
        t0 = time.perf_counter()
        result = knockoff(profile.replace(surrogate_frozen_blocks=blocks), victim, recipe=recipe)
        rows.append({"frozen_blocks": blocks, "victim": result.victim_name, "budget": result.budget,
                     "epochs": recipe.epochs, "final_acc": result.final_accuracy,
                     "best_acc": result.best_accuracy, "recovery": result.recovery,
                     "train_seconds": result.train_seconds, "cached": result.from_cache,
                     "curve": [round(r["test_acc"], 3) for r in result.history],
                     "wall_seconds": time.perf_counter() - t0})
    return rows


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def markdown(profile: Profile, device: torch.device, timings: list[Timing], accuracy: list[dict]) -> str:
    lines = [f"# kx benchmark: profile `{profile.name}` on {device.type}", "",
             f"Machine: {machine_line(device)}. Produced by `python -m kx_utils bench --profile {profile.name}"
             f"{' --device cuda' if device.type == 'cuda' else ''}`; every number below comes from that one run "
             "(ratios against today's path measured minutes apart in the same process).", ""]
    for section, title in (("train", "Training throughput (one SGD step per batch)"),
                           ("inference", "Inference throughput")):
        rows = [t for t in timings if t.section == section]
        if not rows:
            continue
        lines += [f"## {title}", "", "| model | px | batch | path | img/s | × today | note |",
                  "|---|---:|---:|---|---:|---:|---|"]
        for t in rows:
            ratio = f"{t.ratio:.2f}" if t.ratio is not None else ""
            lines.append(f"| {t.model} | {t.size} | {t.batch} | {t.path} | {t.images_per_s:,.0f} | {ratio} | {t.note} |")
        lines.append("")
    if accuracy:
        lines += [f"## Accuracy of the reference surrogates ({accuracy[0]['budget']:,} queries, "
                  f"{accuracy[0]['epochs']} epochs, seed 0)", "",
                  "| victim | surrogate path | Acc(F_A) last epoch | best epoch | recovery | vs whole network | "
                  "train s | × today | per-epoch test accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in accuracy:
            full = next((f for f in accuracy if f["frozen_blocks"] == 0 and f["victim"] == r["victim"]), None)
            name = "whole network (today, the paper's)" if r["frozen_blocks"] == 0 else \
                f"blocks {r['frozen_blocks']}+ from cached activations"
            delta = f"{(r['final_acc'] - full['final_acc']) * 100:+.1f} pp" if full else ""
            speed = f"{full['train_seconds'] / r['train_seconds']:.1f}" if full and r["train_seconds"] else ""
            lines.append(f"| {r['victim']} | {name} | {r['final_acc']:.1%} | {r['best_acc']:.1%} | {r['recovery']:.2f} | {delta} | "
                         f"{r['train_seconds']:.0f} | {speed} | {' '.join(f'{a:.2f}' for a in r['curve'])} |")
        lines.append("")
    return "\n".join(lines)


def run_bench(profile: Profile, device: str = "auto", seconds: float = 3.0, compile_model: bool = True,
              accuracy_victims: tuple[str, ...] = ("caltech", "gtsrb"), frozen: tuple[int, ...] = (0, 7, 14, 17),
              accuracy_epochs: int | None = None, progress: Callable[[str], None] = print) -> str:
    """Run the three measurements and return them as Markdown."""
    dev = pick_device(device)
    torch.manual_seed(0)
    progress(f"training throughput on {dev} ...")
    timings = training_timings(profile, dev, seconds, compile_model)
    progress("inference throughput ...")
    timings += inference_timings(profile, dev, seconds, compile_model)
    accuracy = []
    if accuracy_victims:
        progress(f"reference surrogates of {', '.join(accuracy_victims)}, frozen blocks {frozen} ...")
        accuracy = reference_accuracy(profile.replace(device=str(dev)), accuracy_victims, frozen, accuracy_epochs)
    return markdown(profile, dev, timings, accuracy)


__all__ = ["Timing", "inference_rate", "markdown", "profile_models", "reference_accuracy", "run_bench",
           "training_rate"]
