"""What the machine itself can do, measured in the benchmark's process: the ceiling a training path is
placed against.

Three numbers, each the best of a few timed repetitions:

- **memory bandwidth**: bytes read plus bytes written per second by a copy of a tensor far larger than
  the caches (batch norm, activations and depthwise convolutions are bound by it);
- **float32 matrix multiply**: FLOP/s of a square ``torch.mm`` (2 FLOPs per multiply-add);
- **bf16 matrix multiply**: the same in bf16 (AMX tiles on CPUs that have them), the ceiling of
  :func:`kx_utils.core.precision.pointwise_bf16`.

:func:`placement` puts a training row against them: the FLOP/s the row reached, as a share of the float32
matrix multiply's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MachineLimits:
    device: str
    threads: int
    memory_gb_per_s: float
    fp32_gflops: float
    bf16_gflops: float
    matmul_side: int
    copy_mb: int

    def as_dict(self) -> dict:
        return {"device": self.device, "threads": self.threads, "memory_gb_per_s": self.memory_gb_per_s,
                "fp32_gflops": self.fp32_gflops, "bf16_gflops": self.bf16_gflops,
                "matmul_side": self.matmul_side, "copy_mb": self.copy_mb}


def _best_seconds(step, repeats: int, device: torch.device) -> float:
    step()  # warm-up: allocation, kernel choice
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def memory_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """GB/s of ``dst.copy_(src)`` on ``megabytes`` of float32, counting the read and the write."""
    n = megabytes * 2**20 // 4
    src, dst = torch.rand(n, device=device), torch.empty(n, device=device)
    seconds = _best_seconds(lambda: dst.copy_(src), repeats, device)
    return 2 * n * 4 / seconds / 1e9


def matmul_gflops(device: torch.device, dtype: torch.dtype, side: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``side`` x ``side`` matrix product in ``dtype``."""
    a = torch.rand(side, side, device=device).to(dtype)
    b = torch.rand(side, side, device=device).to(dtype)
    seconds = _best_seconds(lambda: torch.mm(a, b), repeats, device)
    return 2 * side**3 / seconds / 1e9


def measure_limits(device: torch.device, side: int = 2048, megabytes: int = 512) -> MachineLimits:
    return MachineLimits(device=device.type, threads=torch.get_num_threads(),
                         memory_gb_per_s=memory_bandwidth(device, megabytes),
                         fp32_gflops=matmul_gflops(device, torch.float32, side),
                         bf16_gflops=matmul_gflops(device, torch.bfloat16, side),
                         matmul_side=side, copy_mb=megabytes)


def placement(images_per_s: float, flops_per_image: float, limits: MachineLimits) -> dict:
    """The FLOP/s a training row reached and its share of each matrix-multiply ceiling."""
    gflops = images_per_s * flops_per_image / 1e9
    return {"gflops": gflops, "of_fp32_matmul": gflops / limits.fp32_gflops,
            "of_bf16_matmul": gflops / limits.bf16_gflops}
