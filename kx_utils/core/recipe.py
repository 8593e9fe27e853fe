"""How one model is trained: :class:`Recipe`, the optimiser, step schedule and input pipeline of a run.

The profiles (:mod:`kx_utils.config.profiles`) hold the paper's and the stand-ins' recipes; training
(:func:`kx_utils.core.train.fit`) takes one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .settings import ProfileError, choice_problem, field_problems

OPTIMIZERS = ("sgd", "adam")
# crop: a random crop of the image zero-padded by 1/8 of its side (the CIFAR recipe); resized_crop:
# torchvision's RandomResizedCrop (8-100% of the area, aspect 3/4-4/3), the Knockoff authors' ImageNet-family
# training transform; *_flip adds horizontal flips
AUGMENTATIONS = ("none", "flip", "crop", "crop_flip", "resized_crop", "resized_crop_flip")


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: optimiser, step schedule and input pipeline.

    ``milestones`` are fractions of the whole run at which the learning rate is
    multiplied by ``gamma``.  The paper's "divide by 10 every 60 of 200 epochs"
    is ``milestones=(0.3, 0.6, 0.9), gamma=0.1``; its Adam schedule "1e-3, then
    5e-4 after 100 of 200 epochs" is ``milestones=(0.5,), gamma=0.5``.  Expressed
    as fractions, a schedule scales proportionally when a profile trains fewer
    epochs.
    """

    epochs: int
    batch_size: int
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.1
    momentum: float = 0.5
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.3, 0.6, 0.9)
    gamma: float = 0.1
    warmup_fraction: float = 0.0  # linear warm-up, as a fraction of the run
    augment: str = "none"  # one of AUGMENTATIONS

    def __post_init__(self):
        problems = field_problems(self, fractions=("milestones", "warmup_fraction"))
        problems += choice_problem("optimizer", self.optimizer, OPTIMIZERS)
        problems += choice_problem("augment", self.augment, AUGMENTATIONS)
        if not problems and self.lr == 0:
            problems.append("lr must be above 0, got 0")
        if problems:
            raise ProfileError("; ".join(problems))

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
