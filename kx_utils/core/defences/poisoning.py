"""Prediction poisoning: Orekondy et al.'s MAD (Maximizing Angular Deviation; "Prediction Poisoning: Towards
Defenses Against DNN Model Stealing Attacks", ICLR 2020), following their code (tribhuvanesh/prediction-poisoning,
``defenses/victim/bb_mad.py``).

For a query with true answer ``y``, the defender models the attacker's next gradient step with its own
surrogate (the proxy): ``G`` holds, for each class ``k``, the gradient of the proxy's ``-log p_k`` with respect to
its last layer's weights.  An answer ``y~`` sends the attacker along ``G^T y~`` instead of ``G^T y``; MAD picks the
vertex ``y*`` of the simplex that turns that direction furthest (the *oracle*) and returns
``y~ = (1 - alpha) y + alpha y*`` with the largest ``alpha`` whose L1 distance to ``y`` stays within the budget
``epsilon`` (the closed-form line search, ``alpha = min(1, epsilon / ||y - y*||_1)``).

The last layer's gradient has a closed form, ``G[k] = (p - e_k) f^T`` for the proxy's probabilities ``p`` and
penultimate features ``f`` (:func:`mad_jacobian`; the tests check it against autograd), so ``G^T y = (p - y) f^T``
for any ``y`` on the simplex and both of the authors' objectives need only ``p``:

- ``"surrogate"`` (their default, ``objmax=False``): ``||G^T y~ - G^T y||^2 = ||y~ - y||^2 ||f||^2``;
- ``"angular"`` (``objmax=True``, the angle the paper's title names): the squared distance between the unit
  directions, ``|| (p - y~)/||p - y~|| - (p - y)/||p - y|| ||^2``.

Oracles: ``"extreme"`` (their default) searches the K one-hot vertices; ``"argmax"`` (MAD-argmax) searches the
vertices that keep ``y``'s top-1 class, every subset for K <= 10 and, above, their greedy search (grow the subset
one class at a time, about 1,024 candidates in all), which uses the angular objective whatever was asked, as
their code does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn

OBJECTIVES = ("surrogate", "angular")
ORACLES = ("extreme", "argmax")
TIE_WEIGHT = 1e-5  # the authors' weight on the top-1 class of an argmax-preserving vertex
GREEDY_CANDIDATES = 1024  # the authors' budget of the greedy argmax-preserving search


def mad_jacobian(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``G`` (K x K*F): row ``k`` is the gradient of ``-log p_k`` with respect to the last linear layer's weight
    (K x F, flattened row-major), for one query's penultimate ``features`` (F) and probabilities ``probs`` (K)."""
    if features.ndim != 1 or probs.ndim != 1:
        raise ValueError("mad_jacobian takes one query: features (F,) and probabilities (K,)")
    diff = probs.unsqueeze(0) - torch.eye(len(probs), dtype=probs.dtype, device=probs.device)  # row k: p - e_k
    return (diff.unsqueeze(2) * features.view(1, 1, -1)).reshape(len(probs), -1)


def _objective(candidates: torch.Tensor, y: torch.Tensor, p: torch.Tensor, objective: str) -> torch.Tensor:
    """The objective of every candidate answer: ``candidates`` N x C x K, ``y`` and ``p`` N x K -> N x C."""
    if objective == "surrogate":
        return ((candidates - y.unsqueeze(1)) ** 2).sum(2)
    v = p - y
    v_norm = v.norm(dim=1, keepdim=True)
    if (v_norm == 0).any():
        raise ValueError("the angular objective is undefined where the proxy's probabilities equal the answer "
                         "(a proxy identical to the victim): use objective='surrogate'")
    u = p.unsqueeze(1) - candidates
    u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return ((u - (v / v_norm).unsqueeze(1)) ** 2).sum(2)


def _argmax_vertices(k: int, top: int, dtype) -> torch.Tensor:
    """Every argmax-preserving vertex for ``k`` classes and top-1 class ``top``: 1 on a subset holding ``top``
    (``top`` up-weighted by TIE_WEIGHT), normalised."""
    rows = []
    for bits in itertools.product((0.0, 1.0), repeat=k - 1):
        v = list(bits[:top]) + [1.0 + TIE_WEIGHT] + list(bits[top:])
        rows.append(v)
    vertices = torch.tensor(rows, dtype=dtype)
    return vertices / vertices.sum(1, keepdim=True)


def _greedy_argmax_target(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The authors' greedy MAD-argmax search for one query (K > 10), on the angular objective."""
    k, top = len(y), int(y.argmax())
    fixed, best, best_value, tried = [top], None, -1.0, 0
    while tried < GREEDY_CANDIDATES and len(fixed) < k:
        rest = [c for c in range(k) if c not in fixed]
        base = torch.zeros(k, dtype=y.dtype)
        base[fixed] = 1.0
        cands = base.repeat(len(rest), 1)
        cands[torch.arange(len(rest)), rest] = 1.0
        cands[:, top] += TIE_WEIGHT
        cands = cands / cands.sum(1, keepdim=True)
        values = _objective(cands.unsqueeze(0), y.unsqueeze(0), p.unsqueeze(0), "angular")[0]
        i = int(values.argmax())
        if float(values[i]) > best_value:
            best, best_value = cands[i], float(values[i])
        fixed.append(rest[i])
        tried += len(rest)
    return best


def mad_target(y: torch.Tensor, proxy_probs: torch.Tensor, oracle: str = "extreme",
               objective: str = "surrogate") -> torch.Tensor:
    """``y*`` for each query: the vertex the oracle picks (N x K answers ``y``, the proxy's N x K probabilities).
    Ties go to the first candidate, as the authors' strict ``>`` does."""
    if oracle not in ORACLES or objective not in OBJECTIVES:
        raise ValueError(f"MAD: oracle must be one of {ORACLES} and objective one of {OBJECTIVES}, got "
                         f"{oracle!r}, {objective!r}")
    n, k = y.shape
    if oracle == "extreme":
        eye = torch.eye(k, dtype=y.dtype).unsqueeze(0).expand(n, k, k)
        return eye[torch.arange(n), _objective(eye, y, proxy_probs, objective).argmax(1)]
    if k > 10:
        return torch.stack([_greedy_argmax_target(y[i], proxy_probs[i]) for i in range(n)])
    out = torch.empty_like(y)
    for i in range(n):
        vertices = _argmax_vertices(k, int(y[i].argmax()), y.dtype)
        values = _objective(vertices.unsqueeze(0), y[i:i + 1], proxy_probs[i:i + 1], objective)[0]
        out[i] = vertices[int(values.argmax())]
    return out


def mad_perturb(y: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``(1 - alpha) y + alpha y*`` with ``alpha = min(1, epsilon / ||y - y*||_1)`` per query (the authors' closed
    form, 1e-7 added to the norm as theirs): the answer moves toward ``y*`` by at most ``epsilon`` in L1."""
    if not epsilon >= 0:
        raise ValueError(f"MAD's L1 budget epsilon must be >= 0, got {epsilon}")
    alpha = (epsilon / ((y - target).abs().sum(1, keepdim=True) + 1e-7)).clamp(0.0, 1.0)
    return (1 - alpha) * y + alpha * target


class MAD:
    """MAD as an answer transform: ``MAD(proxy, epsilon)(probs, images) -> answers``.

    ``proxy`` is the defender's own surrogate (a classifier returning logits over the victim's classes); the
    transform needs the queried ``images`` to run it."""

    def __init__(self, proxy: nn.Module, epsilon: float, oracle: str = "extreme", objective: str = "surrogate",
                 batch_size: int = 256, device: str = "auto"):
        self.proxy = proxy
        self.epsilon = epsilon
        self.oracle = oracle
        self.objective = objective
        self.batch_size = batch_size
        self.device = device

    def perturb(self, probs: torch.Tensor, proxy_probs: torch.Tensor) -> torch.Tensor:
        if probs.shape != proxy_probs.shape:
            raise ValueError(f"answers {tuple(probs.shape)} and the proxy's probabilities {tuple(proxy_probs.shape)} "
                             "differ in shape: the proxy must predict the victim's classes")
        y = probs.double()
        return mad_perturb(y, mad_target(y, proxy_probs.double(), self.oracle, self.objective),
                           self.epsilon).to(probs.dtype)

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from ..train import predict_proba
        return self.perturb(probs, predict_proba(self.proxy, images, self.batch_size, self.device))

    def describe(self) -> dict:
        return {"defence": "mad", "epsilon": self.epsilon, "oracle": self.oracle, "objective": self.objective}
