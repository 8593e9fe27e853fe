"""The benchmark's results (:class:`kx_utils.bench.run.BenchRun`) as Markdown and as JSON.

The Markdown is the human report (``figures/<profile>/bench.md``).  The JSON is what tools read (the
lead's GPU-hours projection), in exactly this schema::

    {"device": "cpu" | "cuda", "device_name": str, "peak_bf16_tflops": float | null, "profile": str,
     "limits": {"memory_gb_per_s": float, "fp32_gflops": float, "bf16_gflops": float, ...} | null,
     "timings": [{"section": "train" | "inference", "model": str, "size": int, "batch": int,
                  "path": str, "default": bool, "images_per_s": float,
                  "flops_per_image": float | null, "note": str}]}

``default`` marks the path the package itself runs on that device (float32 on the CPU, bf16 on a
GPU), at every batch size timed; ``flops_per_image`` is of what the row timed (a training step is
three forward passes, :mod:`kx_utils.core.flops`).  The projection reads the ``default`` rows, keyed by
(section, model, size, batch): a GPU benchmark times every batch size the profile trains at.
"""

from __future__ import annotations

import torch

from ..config.profiles import PROFILES
from ..config.schema import PROFILE_KEYS, Profile
from ..core.flops import TRAIN_STEP_FORWARDS, peak_fraction
from .limits import MachineLimits, placement
from .ops import StepBreakdown, breakdown_lines
from .run import BenchRun
from .timing import Timing, frozen_prefix_blocks


def machine_line(name: str) -> str:
    return f"{name}, torch {torch.__version__}"


def changed_keys(profile: Profile) -> list[str]:
    """The keys in which ``profile`` differs from the registered profile of its name."""
    registered = PROFILES.get(profile.name)
    if registered is None:
        return []
    return [key for key in PROFILE_KEYS if getattr(profile, key) != getattr(registered, key)]


def _peak_cell(t: Timing, peak: float | None) -> str:
    if peak is None:
        return "peak unknown"
    fraction = peak_fraction(t.images_per_s, t.flops_per_image, peak)
    return f"{fraction:.1%}" if fraction is not None else ""


def _throughput_table(rows: list[Timing], peak: float | None, with_peak: bool) -> list[str]:
    head = "| model | px | batch | path | img/s | × today | GFLOP/img |"
    rule = "|---|---:|---:|---|---:|---:|---:|"
    if with_peak:
        head += " TFLOP/s | % of peak |"
        rule += "---:|---:|"
    lines = [head + " note |", rule + "---|"]
    for t in rows:
        ratio = f"{t.ratio:.2f}" if t.ratio is not None else ""
        path = f"{t.path} (today)" if t.default else t.path
        gflop = f"{t.flops_per_image / 1e9:.3g}" if t.flops_per_image is not None else ""
        cells = [t.model, str(t.size), str(t.batch), path, f"{t.images_per_s:,.0f}", ratio, gflop]
        if with_peak:
            tflops = t.images_per_s * t.flops_per_image / 1e12 if t.flops_per_image is not None else None
            cells += [f"{tflops:.1f}" if tflops is not None else "", _peak_cell(t, peak)]
        lines.append("| " + " | ".join(cells + [t.note]) + " |")
    return lines


PATH_LABELS = {"fp32": "whole network (today, the paper's)",
               "bf16_pointwise": "bf16 pointwise convolutions and classifier",
               "frozen_bn": "batch norm on its pretrained statistics",
               "frozen_bn+bf16_pointwise": "both of the above"}


def path_label(path: str) -> str:
    if path in PATH_LABELS:
        return PATH_LABELS[path]
    blocks = frozen_prefix_blocks(path)
    return f"blocks {blocks}+ from cached activations" if blocks else path


def limits_lines(limits: MachineLimits, timings: list[Timing]) -> list[str]:
    """The machine's ceilings, and today's training rows placed against them."""
    lines = ["## Machine limits", "",
             f"Measured in this run ({limits.threads} threads): memory copy {limits.memory_gb_per_s:,.1f} GB/s "
             f"(read + write, {limits.copy_mb} MB), float32 matrix multiply {limits.fp32_gflops:,.0f} GFLOP/s, "
             f"bf16 matrix multiply {limits.bf16_gflops:,.0f} GFLOP/s ({limits.bf16_gflops / limits.fp32_gflops:.1f}x "
             f"float32; {limits.matmul_side}x{limits.matmul_side}).", ""]
    rows = [t for t in timings if t.section == "train" and t.flops_per_image and (t.default or "+" in t.path
            or t.path in PATH_LABELS)]
    if rows:
        lines += ["| model | px | batch | path | img/s | GFLOP/s reached | of fp32 matmul | of bf16 matmul |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for t in rows:
            where = placement(t.images_per_s, t.flops_per_image, limits)
            path = f"{t.path} (today)" if t.default else t.path
            lines.append(f"| {t.model} | {t.size} | {t.batch} | {path} | {t.images_per_s:,.0f} | "
                         f"{where['gflops']:,.0f} | {where['of_fp32_matmul']:.0%} | {where['of_bf16_matmul']:.0%} |")
        lines.append("")
    return lines


def markdown(profile: Profile, device: torch.device, timings: list[Timing], accuracy: list[dict],
             name: str = "", peak_tflops: float | None = None, peak_source: str = "",
             limits: MachineLimits | None = None, breakdown: StepBreakdown | None = None) -> str:
    """The report; a "% of peak" column on a GPU (or wherever a peak is given), GFLOP/img everywhere."""
    name = name or device.type
    command = f"python -m kx_utils bench --profile {profile.name}" + (" --device cuda" if device.type == "cuda" else "")
    changed = changed_keys(profile)
    overrides = f" with --overrides of {', '.join(changed)}" if changed else ""
    lines = [f"# kx benchmark: profile `{profile.name}` on {device.type}", "",
             f"Machine: {machine_line(name)}. Produced by `{command}`{overrides}; every number below comes "
             "from that one run (ratios against today's path measured minutes apart in the same process).", "",
             "GFLOP/img: torch's FlopCounterMode on one forward pass (convolutions and matrix products, "
             f"2 FLOPs per multiply-add); a training step counts as {TRAIN_STEP_FORWARDS} forward passes.", ""]
    if limits is not None:
        lines += limits_lines(limits, timings)
    if breakdown is not None:
        lines += breakdown_lines(breakdown)
    with_peak = device.type == "cuda" or peak_tflops is not None
    if with_peak:
        peak_text = f"{peak_tflops:,.0f} TFLOP/s dense bf16 ({peak_source})" if peak_tflops is not None else \
            f"unknown for {name}: pass --peak-tflops to give it"
        lines += [f"Peak of the device: {peak_text}.", ""]
    for section, title in (("train", "Training throughput (one SGD step per batch)"),
                           ("inference", "Inference throughput")):
        rows = [t for t in timings if t.section == section]
        if not rows:
            continue
        lines += [f"## {title}", ""] + _throughput_table(rows, peak_tflops, with_peak) + [""]
    if accuracy:
        lines += [f"## Accuracy of the reference surrogates ({accuracy[0]['budget']:,} queries, "
                  f"{accuracy[0]['epochs']} epochs, seed {accuracy[0]['seed']}: Table 2's attack)", "",
                  "| victim | surrogate path | Acc(F_A) last epoch | best epoch | recovery | vs whole network | "
                  "train s | × today | per-epoch test accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in accuracy:
            full = next((f for f in accuracy if f["path"] == "fp32" and f["victim"] == r["victim"]), None)
            label = path_label(r["path"])
            delta = f"{(r['final_acc'] - full['final_acc']) * 100:+.1f} pp" if full else ""
            speed = f"{full['train_seconds'] / r['train_seconds']:.1f}" if full and r["train_seconds"] else ""
            lines.append(f"| {r['victim']} | {label} | {r['final_acc']:.1%} | {r['best_acc']:.1%} | "
                         f"{r['recovery']:.2f} | {delta} | {r['train_seconds']:.0f} | {speed} | "
                         f"{' '.join(f'{a:.2f}' for a in r['curve'])} |")
        lines.append("")
    return "\n".join(lines)


def run_markdown(run: BenchRun) -> str:
    return markdown(run.profile, run.device, run.timings, run.accuracy, run.device_name,
                    run.peak_bf16_tflops, run.peak_source, run.limits, run.breakdown)


def document(run: BenchRun) -> dict:
    """The JSON document of the module docstring's schema."""
    return {"device": run.device.type, "device_name": run.device_name,
            "peak_bf16_tflops": None if run.peak_bf16_tflops is None else float(run.peak_bf16_tflops),
            "profile": run.profile.name, "limits": run.limits.as_dict() if run.limits else None,
            "timings": [{"section": t.section, "model": t.model, "size": int(t.size), "batch": int(t.batch),
                         "path": t.path, "default": bool(t.default), "images_per_s": float(t.images_per_s),
                         "flops_per_image": None if t.flops_per_image is None else float(t.flops_per_image),
                         "note": t.note} for t in run.timings]}
