"""Knockoff's adaptive attacker (Orekondy et al., CVPR 2019, §4.1.2) on kx's victims: the query loop.

:func:`adaptive_queries` is what :func:`kx_utils.experiments.attack.query_victim` calls for a transfer set
whose settings name ``sampling``: the bandit of :mod:`kx_utils.core.adaptive` picks each batch of pool images,
the victim's API answers it (the bandit walks the WordNet tree above the pool's classes,
:mod:`kx_utils.data.wordnet`, as the paper), and an online surrogate (the attacker's architecture, ImageNet weights, one SGD
step per batch on the answers) supplies the loss reward.  The chosen queries and their answers are then a
transfer set like any other: the surrogate that is scored trains on them with Table 2's recipe, so adaptive and
random sampling differ only in which queries were sent.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..config.schema import Profile
from ..core.adaptive import AdaptiveSampler, adaptive_transfer_set
from ..core.api import Response
from ..core.models import build_model
from ..core.train import pick_device, soft_cross_entropy
from ..data.datasets import ImageSet
from ..data.wordnet import pool_parents
from .victims import Victim


def class_folders(pool: ImageSet) -> list[str | None]:
    """Each pool class's folder name (ImageNet's wnid), read from its images' paths (``<split>/<wnid>/<file>``);
    None for a class the capped pool holds no image of."""
    folders: list[str | None] = [None] * len(pool.classes)
    for label, name in zip(pool.labels.tolist(), pool.files):
        folders[label] = folders[label] or name.replace("\\", "/").split("/")[-2]
    return folders


def adaptive_queries(profile: Profile, victim: Victim, respond: Callable[[torch.Tensor], Response],
                     pool_images: ImageSet, settings: dict, seed: int) -> tuple[torch.Tensor, Response]:
    """(pool indices, the API's response) of ``settings["budget"]`` queries chosen adaptively."""
    sampling = settings["sampling"]
    device = pick_device(profile.device)
    torch.manual_seed(seed)
    online = build_model(profile.surrogate_arch, len(victim.classes), pretrained=True).to(device)
    optimiser = torch.optim.SGD(online.parameters(), lr=float(sampling["learning_rate"]), momentum=0.9)
    flagged: list[torch.Tensor] = []

    def query(indices: torch.Tensor) -> torch.Tensor:
        response = respond(indices)
        flagged.append(response.flagged)
        if torch.isnan(response.answers).any():
            raise ValueError("the adaptive attacker needs every query answered: a detector in front of the API "
                             "refused some; attack that API with random sampling")
        return response.answers

    def surrogate_step(indices: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        online.train()
        x = pool_images.images[indices].to(device).float().div_(255)
        logits = online(x)
        loss = soft_cross_entropy(logits, answers.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return logits.detach().cpu()  # before the step: what the surrogate knew when the answer came

    parents = pool_parents(class_folders(pool_images)) if sampling["hierarchy"] == "wordnet" else None
    sampler = AdaptiveSampler(pool_images.labels, parents=parents, reward=sampling["reward"], seed=seed)
    chosen = adaptive_transfer_set(sampler, query, int(settings["budget"]), int(sampling["batch_size"]),
                                   surrogate_step=surrogate_step)
    return chosen["indices"], Response(chosen["answers"], torch.cat(flagged))
