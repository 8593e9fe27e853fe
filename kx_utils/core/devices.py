"""How kx runs a model on a device: the CPU in float32, a CUDA GPU in bf16 with autotuned convolutions.

Training (:func:`kx_utils.core.train.fit`), evaluation and the benchmark (:mod:`kx_utils.bench.timing`) take their
device settings from here, so that the benchmark measures the path the package runs:

- :func:`pick_device` resolves ``"auto"``/``"cpu"``/``"cuda"`` and refuses a CUDA device that is not there;
- :func:`mixed_precision`: bf16 autocast on CUDA, nothing on the CPU (whose bf16 was measured slower
  than float32 on the development machine, ``figures/mini/bench.md``, and whose float32 results the
  tests pin bit for bit);
- :func:`autotuned_convolutions`: cuDNN picks the fastest convolution algorithm for each input shape;

Every model runs in channels_last memory on both devices (the callers convert their inputs).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..runtime import regime


class CudaUnavailableError(RuntimeError):
    """A CUDA device was asked for where torch sees none; the message says what to do."""


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else the CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(preference, torch.device):
        return preference
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CudaUnavailableError(cuda_missing_message(f"device {preference!r}"))
    return device


def cuda_missing_message(what: str, cpu_choice: str = "device 'cpu' or 'auto'") -> str:
    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return (f"{what} needs a CUDA GPU, but torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"{built}): run it on a machine with an NVIDIA GPU and its driver, or choose the CPU ({cpu_choice})")


def mixed_precision(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA unless ``KX_PRECISION=fp32`` (:mod:`kx_utils.runtime.regime`); on the CPU a disabled
    autocast (float32 throughout)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda" and regime.cuda_precision() == "bf16")


@contextlib.contextmanager
def autotuned_convolutions(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape; restored afterwards."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
