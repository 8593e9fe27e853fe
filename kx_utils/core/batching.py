"""Inference in batches: the one way the package feeds a stored image tensor to a network.

Images (uint8 ``N x 3 x H x W``, or floats in [0, 1]) travel to the device one batch at a time, are
scaled to float32 in [0, 1] (:func:`~kx_utils.core.images.to_float`) and put in channels_last memory
(:mod:`kx_utils.core.devices`: every model runs in it).  Images already on the device are read in place.

- :func:`device_batches` yields those batches and nothing else (no ``no_grad``, no autocast, no cuDNN
  autotuning): for the callers that differentiate the input (ODIN, Mahalanobis) or need their own loop;
- :func:`batched_outputs` runs a function over them without gradients, with autotuned convolutions and
  (unless told not to) bf16 autocast on CUDA, and concatenates the float32 outputs on the device;
- :func:`module_device` is where a network's parameters are.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .devices import autotuned_convolutions, mixed_precision
from .images import to_float


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's parameters (the CPU for a module without any)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def device_batches(images: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``images`` in consecutive batches of ``batch_size`` on ``device``: float32 in [0, 1] (uint8 divided
    by 255, other floats cast to float32), a 4-D batch in channels_last memory."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for chunk in images.split(batch_size):
        x = to_float(chunk.to(device)).float()
        yield x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def batched_outputs(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
                    device: torch.device, *, autocast: bool = True) -> torch.Tensor:
    """``fn`` over :func:`device_batches` of ``images``, as float32, concatenated and left on ``device``.

    Runs without gradients and with autotuned convolutions; ``autocast``: in bf16 on CUDA
    (:func:`~kx_utils.core.devices.mixed_precision`; nothing changes on the CPU).  The outputs stay on
    ``device`` until the caller moves them: one copy to the host, not one per batch.  No images: an
    empty tensor on ``device``.
    """
    out = []
    with torch.no_grad(), autotuned_convolutions(device):
        for x in device_batches(images, batch_size, device):
            with mixed_precision(device) if autocast else contextlib.nullcontext():
                out.append(fn(x).float())
    return torch.cat(out) if out else torch.empty(0, device=device)
