"""The victim's prediction API: what a client gets back for each query.

Answer formats (``mode``), each returned as one row of ``num_classes`` numbers:

- ``"probs"``: the full probability vector (the Knockoff adversary, A_p);
- ``"topk"``: the ``k`` largest probabilities, every other entry 0;
- ``"rounded"``: every probability rounded to ``decimals`` decimals (ties to even);
- ``"label"``: the predicted class only, as a one-hot row (A_c).

A defence (:mod:`kx_utils.core.defences`) can transform the probability vectors
before they are formatted: ``defence(probs, images) -> probs'`` (reverse sigmoid,
prediction poisoning, a watermark).  A detector can sit in front of the API
(Section 4: "a filter placed in front of the prediction API"): queries it flags
are refused (row of NaN) or answered with the label only.  The API counts every
query it receives, flagged or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .train import pick_device, predict_proba

MODES = ("probs", "topk", "rounded", "label")
DETECTOR_ACTIONS = ("refuse", "label")


def format_answers(probs: torch.Tensor, mode: str, k: int = 1, decimals: int = 1) -> torch.Tensor:
    """Reduce probability vectors to what an API of the given ``mode`` reveals."""
    if mode == "probs":
        return probs.clone()
    if mode == "topk":
        if not 1 <= k <= probs.shape[1]:
            raise ValueError(f"top-k needs 1 <= k <= {probs.shape[1]}, got k={k}")
        values, idx = probs.topk(k, dim=1)
        return torch.zeros_like(probs).scatter_(1, idx, values)
    if mode == "rounded":
        scale = 10.0 ** decimals
        return torch.round(probs * scale) / scale
    if mode == "label":
        return nn.functional.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
    raise ValueError(f"unknown answer mode {mode!r}; valid modes: {', '.join(MODES)}")


def api_description(mode: str, k: int = 1, decimals: int = 1, defence: dict | None = None) -> dict:
    """The answer format as it enters a transfer set's settings (only the parameters the mode uses; a
    defence's description only where there is one, so an undefended API keeps its settings)."""
    d = {"mode": mode}
    if mode == "topk":
        d["k"] = k
    if mode == "rounded":
        d["decimals"] = decimals
    if defence is not None:
        d["defence"] = dict(defence)
    return d


def answered_rows(answers: torch.Tensor) -> torch.Tensor:
    """Mask of the queries the API answered (a refused query is a row of NaN)."""
    return ~torch.isnan(answers).any(1)


def answers_to_targets(answers: torch.Tensor) -> torch.Tensor:
    """Training targets from API answers: each row renormalised to a probability vector.

    Rows that carry no mass (a rounded answer where every probability rounds to 0)
    become uniform: the attacker learned nothing about that query.  Refused rows
    (NaN) must be dropped before.
    """
    if torch.isnan(answers).any():
        raise ValueError("answers contain refused (NaN) rows; drop them before training")
    mass = answers.sum(1, keepdim=True)
    uniform = torch.full_like(answers, 1.0 / answers.shape[1])
    return torch.where(mass > 0, answers / mass.clamp_min(1e-12), uniform)


@dataclass
class Response:
    answers: torch.Tensor  # N x C, NaN rows where refused
    flagged: torch.Tensor  # bool N: the detector flagged the query (all False without a detector)


class PredictionAPI:
    """Answers queries with a victim model; counts them.

    ``detector`` is a callable from uint8 images to a bool tensor (True = flagged
    as out of distribution), e.g. :meth:`kx_utils.experiments.detection.BinaryDetector.flag`.
    """

    def __init__(self, model: nn.Module, mode: str = "probs", k: int = 1, decimals: int = 1,
                 detector: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 detector_action: str = "refuse", batch_size: int = 256, device: str = "auto",
                 defence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown answer mode {mode!r}; valid modes: {', '.join(MODES)}")
        if detector_action not in DETECTOR_ACTIONS:
            raise ValueError(f"unknown detector action {detector_action!r}; "
                             f"valid: {', '.join(DETECTOR_ACTIONS)}")
        self.model = model
        self.mode, self.k, self.decimals = mode, k, decimals
        self.detector, self.detector_action = detector, detector_action
        self.defence = defence
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.query_count = 0

    def describe(self) -> dict:
        return api_description(self.mode, self.k, self.decimals,
                               self.defence.describe() if self.defence is not None else None)

    def respond(self, images: torch.Tensor) -> Response:
        """Answer a batch of uint8 (or [0, 1] float) images."""
        self.query_count += len(images)
        probs = predict_proba(self.model, images, self.batch_size, self.device)
        if self.defence is not None:
            probs = self.defence(probs, images)
        answers = format_answers(probs, self.mode, self.k, self.decimals)
        flagged = torch.zeros(len(images), dtype=torch.bool)
        if self.detector is not None:
            flagged = torch.as_tensor(self.detector(images), dtype=torch.bool).cpu()
            if self.detector_action == "refuse":
                answers[flagged] = float("nan")
            else:
                answers[flagged] = format_answers(probs[flagged], "label")
        return Response(answers, flagged)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.respond(images).answers
