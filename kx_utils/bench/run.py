"""One run of ``python -m kx_utils bench``: the machine's limits, where a training step's time goes, the
throughput of every path (:mod:`kx_utils.bench.timing`) and the reference surrogates, as a :class:`BenchRun`
that :mod:`kx_utils.bench.report` writes out."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Callable

import torch

from ..config.schema import Profile
from ..core.devices import CudaUnavailableError, cuda_missing_message, pick_device
from ..core.flops import peak_bf16_tflops
from .limits import MachineLimits, measure_limits
from .ops import StepBreakdown, step_breakdown
from .timing import (
    FlopCounts,
    Timing,
    inference_timings,
    reference_accuracy,
    training_timings,
)


@dataclass
class BenchRun:
    """What one run of the benchmark measured, on which device, against which peak."""

    profile: Profile
    device: torch.device
    device_name: str
    peak_bf16_tflops: float | None  # dense bf16 TFLOP/s of the device; None where unknown
    peak_source: str  # where the peak comes from, for the report
    timings: list[Timing]
    accuracy: list[dict]
    limits: MachineLimits | None = None  # the machine's own ceilings (kx_utils.bench.limits)
    breakdown: StepBreakdown | None = None  # where today's surrogate step spends its time (kx_utils.bench.ops)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def resolve_device(device: str) -> torch.device:
    """The benchmark's device; ``cuda`` without a GPU is an error that says so."""
    if device == "cuda" and not torch.cuda.is_available():
        raise CudaUnavailableError(cuda_missing_message("`python -m kx_utils bench --device cuda`", "--device cpu"))
    return pick_device(device)


def run_bench(profile: Profile, device: str = "auto", seconds: float = 3.0, compile_model: bool = True,
              accuracy_victims: tuple[str, ...] = ("caltech", "gtsrb"),
              accuracy_paths: tuple[str, ...] = ("fp32", "frozen7", "frozen14", "frozen17"),
              accuracy_epochs: int | None = None, peak_tflops: float | None = None,
              progress: Callable[[str], None] = print) -> BenchRun:
    """Run the three measurements (``peak_tflops`` overrides the device's peak from the table)."""
    dev = resolve_device(device)
    if peak_tflops is not None and not peak_tflops > 0:
        raise ValueError(f"--peak-tflops must be a positive number of TFLOP/s, got {peak_tflops}")
    name = device_name(dev)
    if peak_tflops is not None:
        peak, source = peak_tflops, "--peak-tflops"
    elif dev.type == "cuda":
        peak, source = peak_bf16_tflops(name), "kx_utils.core.flops.PEAK_BF16_TFLOPS"
    else:
        peak, source = None, ""
    torch.manual_seed(0)
    flops = FlopCounts()
    progress(f"machine limits on {dev} ...")
    limits = measure_limits(dev)
    progress("where a surrogate's training step spends its time ...")
    size = profile.image_size[profile_surrogate_dataset(profile)]
    breakdown = step_breakdown(profile.surrogate_arch, size, profile.surrogate_recipe.batch_size, device=dev)
    progress(f"training throughput on {dev} ({name}) ...")
    timings = training_timings(profile, dev, seconds, compile_model, flops, progress)
    progress("inference throughput ...")
    timings += inference_timings(profile, dev, seconds, compile_model, flops, progress)
    accuracy = []
    if accuracy_victims:
        progress(f"reference surrogates of {', '.join(accuracy_victims)} on {', '.join(accuracy_paths)} ...")
        accuracy = reference_accuracy(profile.replace(device=str(dev)), accuracy_victims, accuracy_paths,
                                      accuracy_epochs)
    return BenchRun(profile, dev, name, peak, source, timings, accuracy, limits, breakdown)


def profile_surrogate_dataset(profile: Profile) -> str:
    """The dataset whose input size the reference surrogate trains at: Caltech's, the first victim's."""
    return "caltech256" if "caltech256" in profile.image_size else next(iter(profile.image_size))


__all__ = ["BenchRun", "device_name", "resolve_device", "run_bench"]
