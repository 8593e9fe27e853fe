"""Answer transforms that perturb the probability vector, and what they cost an honest client.

**Reverse sigmoid** (Lee et al., "Defending against NN model stealing attacks using deceptive perturbations",
IEEE S&P Workshops 2019): each probability ``y`` loses ``r = beta * (sigmoid(gamma * logit(y)) - 1/2)`` and the
vector is renormalised: ``y' = alpha * clip(y - r, 0, 1)`` with ``alpha`` making it sum to one.  With
``gamma < 1`` the perturbation lowers the large probabilities and raises the small ones, so the soft labels an
attacker learns from turn deceptive while the top-1 class mostly survives.  The formula and its clipping of
``y`` to ``[1e-9, 1 - 1e-9]`` before the logit are those of ART's ``ReverseSigmoid`` postprocessor
(``art.defences.postprocessor``), the implementation Knockoff experiments use; parameters as published:
``beta`` > 0 the magnitude, ``gamma`` > 0 the convergence parameter.
"""

from __future__ import annotations

import torch

CLIP = 1e-9  # as ART: keeps the logit of a probability of 0 or 1 finite


def _check_probabilities(probs: torch.Tensor) -> None:
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"expected a batch of probability vectors (N x K, K >= 2), got shape {tuple(probs.shape)}")
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probability vectors must be finite and non-negative")


def reverse_sigmoid(probs: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Lee et al.'s reverse-sigmoid perturbation of ``probs`` (N x K), renormalised to sum to one."""
    if not beta > 0 or not gamma > 0:
        raise ValueError(f"reverse sigmoid needs beta > 0 and gamma > 0, got beta={beta}, gamma={gamma}")
    _check_probabilities(probs)
    clipped = probs.clamp(CLIP, 1 - CLIP)
    r = beta * (torch.sigmoid(gamma * torch.logit(clipped)) - 0.5)
    perturbed = (probs - r).clamp(0.0, 1.0)
    return perturbed / perturbed.sum(1, keepdim=True)


class ReverseSigmoid:
    """The reverse sigmoid as an answer transform: ``ReverseSigmoid(beta, gamma)(probs) -> answers``."""

    def __init__(self, beta: float = 1.0, gamma: float = 0.1):
        self.beta = beta
        self.gamma = gamma

    def __call__(self, probs: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return reverse_sigmoid(probs, self.beta, self.gamma)  # the queried images play no part

    def describe(self) -> dict:
        return {"defence": "reverse_sigmoid", "beta": self.beta, "gamma": self.gamma}


def distortion(original: torch.Tensor, returned: torch.Tensor) -> dict[str, float]:
    """What a transform costs the clients it answers: the mean L1 distance and KL(original || returned) between
    the true and the returned probability vectors, and the share of answers whose top-1 class is kept.

    KL uses the returned vector clipped at 1e-9 (a returned 0 where the true vector has mass is finite but large).
    """
    _check_probabilities(original)
    _check_probabilities(returned)
    if original.shape != returned.shape:
        raise ValueError(f"original {tuple(original.shape)} and returned {tuple(returned.shape)} answers differ in shape")
    o, r = original.double(), returned.double()
    kl = torch.where(o > 0, o * (o.clamp_min(1e-300).log() - r.clamp_min(CLIP).log()), torch.zeros_like(o)).sum(1)
    kl = kl.clamp_min(0.0)  # KL >= 0: a negative value is the rounding of a vector renormalised in float32
    return {"l1": float((o - r).abs().sum(1).mean()), "kl": float(kl.mean()),
            "top1_kept": float((o.argmax(1) == r.argmax(1)).double().mean())}
