"""Compute per image: the FLOPs of a model's forward pass, and the share of a GPU's peak a rate reaches.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of one
image: convolutions and matrix products only, two FLOPs per multiply-add (a ResNet34 at 224 px,
"3.6 GFLOPs" in the MAC-counting literature, counts 7.3 here).  Element-wise work (normalisation,
activations, pooling) is not counted; it is small beside the dense layers and runs far from the
tensor cores' peak anyway.  The count runs on the ``meta`` device: shapes only, no arithmetic.

A training step is counted as :data:`TRAIN_STEP_FORWARDS` forward passes: the backward pass computes
gradients for both the activations and the weights, each as much work as the forward pass.

The peak is the dense (not 2:4-sparse) bf16 tensor-core throughput NVIDIA publishes for the part.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_STEP_FORWARDS = 3

# (substring of torch.cuda.get_device_name, dense bf16 TFLOP/s); the first match wins, so the PCIe and
# NVL parts come before the SXM ones whose names they contain
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of ``model``'s forward pass on one input of ``input_shape`` (no batch dimension).

    ``model`` is left as it is: the count runs on a copy on the ``meta`` device (or on the model
    itself when it already lives there).
    """
    params = list(model.parameters()) + list(model.buffers())
    on_meta = model if params and all(p.is_meta for p in params) else copy.deepcopy(model).to("meta")
    was_training = on_meta.training
    on_meta.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            on_meta(torch.empty(1, *input_shape, device="meta"))
    finally:
        on_meta.train(was_training)
    return float(counter.get_total_flops())


def training_flops(forward: float) -> float:
    """FLOPs of one training step per image, given the forward pass's."""
    return TRAIN_STEP_FORWARDS * forward


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like ``torch.cuda.get_device_name`` says; None if not in the table."""
    for part, tflops in PEAK_BF16_TFLOPS:
        if part.lower() in device_name.lower():
            return tflops
    return None


def peak_fraction(images_per_s: float, flops_per_image: float | None, peak_tflops: float | None) -> float | None:
    """The share of ``peak_tflops`` that ``images_per_s`` images of ``flops_per_image`` each reach."""
    if flops_per_image is None or peak_tflops is None:
        return None
    if peak_tflops <= 0:
        raise ValueError(f"a peak throughput is a positive number of TFLOP/s, got {peak_tflops}")
    return images_per_s * flops_per_image / (peak_tflops * 1e12)
