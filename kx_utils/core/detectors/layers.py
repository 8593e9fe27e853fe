"""Stage-wise features of a victim :class:`~kx_utils.core.models.Classifier` (for the Mahalanobis detector).

Lee et al. (NeurIPS 2018, github pokaxpoka/deep_Mahalanobis_detector) fit their
class-conditional Gaussians not only on the penultimate features but on the
output of every *stage* of the network, each average-pooled over space to an
``N x C_l`` matrix (their ResNet-34's ``feature_list``: the stem, then
``layer1`` ... ``layer4``; ``intermediate_forward`` stops at the requested stage).
:func:`stage_features` gives the same for every architecture of
:mod:`kx_utils.core.models`:

- resnet18/34/101/152: ``stem`` (conv1-bn-relu-maxpool), ``layer1`` .. ``layer4``
  (channels 64, 64, 128, 256, 512 for ResNet-18/34; 64, 256, 512, 1024, 2048 for 101/152);
- mobilenet_v2: ``features`` blocks 1, 3, 6, 13 and 18 (16, 24, 32, 96, 1280 channels);
- efficientnet_lite0: ``_blocks`` 0, 2, 4 and 10, then the head conv that ends
  ``extract_features`` (16, 24, 40, 112, 1280 channels);
- gtsrb_5l and cifar10_9l: after each of the three max-pools, then the penultimate
  features (32, 64, 128, 256 channels).

For MobileNetV2 and EfficientNet-Lite0 a stage is a resolution stage: the last
block before the spatial size halves (MobileNetV2's blocks 2, 4, 7 and 14 and
EfficientNet-Lite0's blocks 1, 3, 5 and 11 have stride 2), plus the network's
last feature map, so each has five stages like the ResNets (stride 1/2 .. 1/32).
The last stage of every architecture, pooled, equals ``model.features(x)``.

The features come from forward hooks on ``model.features`` itself, so the input
normalisation is exactly the model's and gradients flow back to ``x`` (the
detector's input pre-processing needs them).  ``upto=l`` stops the forward
pass once stage ``l`` is computed (Lee et al.'s ``intermediate_forward``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models import Classifier

_RESNETS = ("resnet18", "resnet34", "resnet101", "resnet152")
MOBILENET_V2_BLOCKS = (1, 3, 6, 13, 18)
EFFICIENTNET_LITE0_BLOCKS = (0, 2, 4, 10)
SUPPORTED_ARCHS = _RESNETS + ("mobilenet_v2", "efficientnet_lite0", "gtsrb_5l", "cifar10_9l")


def _stages(model: Classifier) -> list[tuple[str, nn.Module | None]]:
    """``(name, module)`` per stage; ``None`` stands for the output of ``model.features`` itself."""
    arch = getattr(model, "arch", "")
    body = getattr(model, "body", None)
    if arch in _RESNETS:
        return [("stem", body.maxpool)] + [(f"layer{i}", getattr(body, f"layer{i}")) for i in range(1, 5)]
    if arch == "mobilenet_v2":
        return [(f"features.{i}", body[0][i]) for i in MOBILENET_V2_BLOCKS]
    if arch == "efficientnet_lite0":
        return [(f"blocks.{i}", body.net._blocks[i]) for i in EFFICIENTNET_LITE0_BLOCKS] + [("head", None)]
    if arch in ("gtsrb_5l", "cifar10_9l"):
        pools = [m for m in body.net if isinstance(m, nn.MaxPool2d)]
        return [(f"pool{i + 1}", m) for i, m in enumerate(pools)] + [("penultimate", None)]
    raise ValueError(f"no stage features for architecture {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")


def stage_names(model: Classifier) -> list[str]:
    """The names of the stages :func:`stage_features` returns, in order (see the module's table)."""
    return [name for name, _ in _stages(model)]


class _StopForward(Exception):
    """Raised by the hook of the last requested stage: the rest of the forward pass is not needed."""


def _pooled(output: torch.Tensor) -> torch.Tensor:
    return output.mean(dim=(2, 3)) if output.ndim == 4 else output.flatten(1)


def stage_features(model: Classifier, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
    """The spatially average-pooled output (``N x C_l``) of each stage of ``model`` for float images ``x``.

    ``x`` is what ``model`` takes (floats in [0, 1], not yet normalised).  With
    ``upto`` only stages ``0 .. upto`` are returned and the forward pass stops there.
    The tensors stay in the autograd graph of ``x``; the caller picks ``eval()``
    and ``torch.no_grad()`` as it needs.
    """
    stages = _stages(model)
    last = len(stages) - 1 if upto is None else int(upto)
    if not 0 <= last < len(stages):
        raise IndexError(f"upto={upto} is not a stage of {model.arch} (0 .. {len(stages) - 1})")
    out: list[torch.Tensor | None] = [None] * (last + 1)

    def hook_for(index: int):
        def hook(module, inputs, output):
            out[index] = _pooled(output)  # pooled at once: later in-place ops cannot alter it
            if index == last:
                raise _StopForward
        return hook

    handles = [module.register_forward_hook(hook_for(i))
               for i, (_, module) in enumerate(stages[:last + 1]) if module is not None]
    try:
        features = model.features(x)
    except _StopForward:
        pass
    else:
        if stages[last][1] is None:
            out[last] = _pooled(features)
    finally:
        for handle in handles:
            handle.remove()
    missing = [stages[i][0] for i, f in enumerate(out) if f is None]
    if missing:
        raise RuntimeError(f"stage(s) {missing} of {model.arch} were not reached by model.features")
    return out
