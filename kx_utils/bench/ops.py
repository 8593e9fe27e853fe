"""Where one training step's time goes: the operators of today's path, measured with ``torch.profiler``.

The throughput rows say how fast a path is; this says why.  :func:`step_breakdown` times a few SGD steps of
one model as ``fit`` runs it (channels_last, soft cross-entropy, SGD with momentum) and returns

- the operators by self time per step and their share of the step (convolution backward, batch norm, ...);
- the convolutions' backward passes by input shape, so that a layer whose kernel is far slower than its
  size calls for (a depthwise convolution on a 2x2 map, say) stands out.

Self times, not totals: an operator's time excludes what it calls, so the shares add up to at most one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from ..core.models import build_model
from ..core.train import soft_cross_entropy


@dataclass(frozen=True)
class OpTime:
    name: str  # the aten operator ("aten::convolution_backward"); for a shape row, its shapes too
    ms_per_step: float
    share: float  # of the step's self time
    calls_per_step: float


@dataclass(frozen=True)
class StepBreakdown:
    arch: str
    size: int
    batch: int
    steps: int
    ms_per_step: float  # the profiled steps' self time, all operators
    ops: tuple[OpTime, ...]  # the heaviest operators, heaviest first
    convolution_backward: tuple[OpTime, ...]  # the heaviest convolution backward passes by input shape


def _shape_label(shapes) -> str:
    """"input 64x960x2x2, weight 960x1x3x3" from the profiler's input shapes of a convolution backward."""
    named = [("grad", shapes[0]), ("input", shapes[1]), ("weight", shapes[2])] if len(shapes) >= 3 else []
    return ", ".join(f"{what} {'x'.join(map(str, s))}" for what, s in named[1:] if s)


def step_breakdown(arch: str, size: int, batch: int, *, classes: int = 100, steps: int = 4, top: int = 8,
                   device: torch.device | str = "cpu") -> StepBreakdown:
    """Profile ``steps`` SGD steps of ``arch`` at ``size`` px and batch ``batch`` (after two warm-up steps)."""
    if steps < 1 or top < 1:
        raise ValueError(f"steps and top must be 1 or more, got steps={steps}, top={top}")
    device = torch.device(device)
    model = build_model(arch, classes, pretrained=False).to(device).to(memory_format=torch.channels_last).train()
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.softmax(torch.randn(batch, classes, device=device), 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        loss = soft_cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    by_name = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in by_name)  # microseconds, all profiled steps

    def op(name: str, self_us: float, count: int) -> OpTime:
        return OpTime(name, self_us / 1000 / steps, self_us / total if total else 0.0, count / steps)

    ops = sorted((op(e.key, e.self_cpu_time_total, e.count) for e in by_name), key=lambda o: -o.ms_per_step)
    convs = sorted((op(_shape_label(e.input_shapes), e.self_cpu_time_total, e.count)
                    for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::convolution_backward"),
                   key=lambda o: -o.ms_per_step)
    return StepBreakdown(arch, size, batch, steps, total / 1000 / steps, tuple(ops[:top]), tuple(convs[:top]))


def breakdown_lines(b: StepBreakdown) -> list[str]:
    """The Markdown section of the benchmark report."""
    lines = ["## Where a training step's time goes", "",
             f"{b.arch} at {b.size} px, batch {b.batch}, today's path (channels_last float32): "
             f"{b.ms_per_step:,.0f} ms of operator self time per step over {b.steps} profiled steps "
             f"({b.batch / b.ms_per_step * 1000:,.0f} img/s under the profiler).", "",
             "| operator | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
    lines += [f"| {o.name.removeprefix('aten::')} | {o.ms_per_step:,.1f} | {o.share:.0%} | {o.calls_per_step:.0f} |"
              for o in b.ops]
    lines += ["", "The heaviest convolution backward passes, by input (a depthwise weight is Cx1x3x3):", "",
              "| convolution backward | ms/step | share | calls/step |", "|---|---:|---:|---:|"]
    lines += [f"| {o.name} | {o.ms_per_step:,.1f} | {o.share:.0%} | {o.calls_per_step:.0f} |"
              for o in b.convolution_backward]
    return lines + [""]
