"""Two cheaper ways to fine-tune a network on the CPU, each a candidate the benchmark weighs against float32.

- :func:`pointwise_bf16`: the pointwise (1x1) convolutions and the linear layers compute in bf16 (the
  matrix-multiply-shaped work that AMX tiles accelerate), while depthwise and other spatial convolutions,
  batch norm and the activations stay in float32 (bf16 depthwise kernels are slower on the CPU than
  float32 ones, and whole-network bf16 autocast was measured slower than float32 here).
- :func:`freeze_batch_norm`: batch-norm layers use their stored (pretrained) statistics while the rest of
  the network trains, a common fine-tuning choice: no batch statistics are computed or back-propagated
  through, and the running averages stay as they were.

Neither is on by default; ``python -m kx_utils bench`` times both beside today's path and reports the
accuracy of the reference surrogates each reaches (:mod:`kx_utils.bench.timing`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

PRECISIONS = ("fp32", "bf16_pointwise")
BATCH_NORM_MODES = ("train", "frozen")


class Bf16Compute(nn.Module):
    """Runs ``inner`` under bf16 autocast on its device and hands back float32."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.inner(x).float()


def is_pointwise(module: nn.Module) -> bool:
    """A linear layer, or a 1x1 convolution over all input channels (not a depthwise one)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1


def pointwise_bf16(model: nn.Module) -> nn.Module:
    """``model`` with every pointwise layer (:func:`is_pointwise`) wrapped in :class:`Bf16Compute`, in place.

    The parameters stay float32 (the optimiser updates them as before; autocast casts them per call), so
    a state dict loads and saves as the float32 model's, under the wrapped names ``....inner.weight``."""
    for name, child in list(model.named_children()):
        if is_pointwise(child):
            setattr(model, name, Bf16Compute(child))
        elif not isinstance(child, Bf16Compute):
            pointwise_bf16(child)
    return model


def unwrap_bf16(model: nn.Module) -> nn.Module:
    """Undo :func:`pointwise_bf16` in place: the original layers, with their (trained) parameters."""
    for name, child in list(model.named_children()):
        if isinstance(child, Bf16Compute):
            setattr(model, name, child.inner)
        else:
            unwrap_bf16(child)
    return model


def freeze_batch_norm(model: nn.Module) -> int:
    """Put every batch-norm layer of ``model`` in eval mode (its stored statistics, not the batch's), after
    ``model.train()``; returns how many there are.  Their affine weights still train."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)
