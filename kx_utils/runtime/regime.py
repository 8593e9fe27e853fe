"""Process-wide switches that change what every model computes: ImageNet weights and CUDA precision.

Both are environment variables, read when used, so that every process of a run (papermill
kernels, Ray workers) sees the same value; both are explicit, never a fallback:

* ``KX_WEIGHTS=random`` builds every "pretrained" model with random weights instead of the ImageNet
  checkpoint.  It exists for the paper-shaped dry run (``make test-paper-path``), where the ResNet
  checkpoints are not available offline; its numbers mean nothing, and every output says so.
* ``KX_PRECISION=fp32`` turns off the bf16 autocast that CUDA runs use by default (the CPU is
  always float32).

A value other than the default enters every artifact key (:meth:`kx_utils.runtime.artifacts.ArtifactStore.path`),
so a dry run or an fp32 run never reuses, nor overwrites, what a default run cached; the notebooks
record both in their results' environment, and the report prints them.
"""

from __future__ import annotations

import os
import warnings

WEIGHTS_ENV, PRECISION_ENV = "KX_WEIGHTS", "KX_PRECISION"
WEIGHTS = ("imagenet", "random")
PRECISIONS = ("bf16", "fp32")


class RandomWeightsWarning(UserWarning):
    """Pretrained models are built with random weights (``KX_WEIGHTS=random``)."""


def _read(name: str, valid: tuple[str, ...]) -> str:
    value = os.environ.get(name, valid[0])
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(valid)} (unset means {valid[0]!r})")
    return value


def weights() -> str:
    """"imagenet" (the default) or "random" (``KX_WEIGHTS=random``)."""
    return _read(WEIGHTS_ENV, WEIGHTS)


def cuda_precision() -> str:
    """"bf16" (autocast, the default) or "fp32" (``KX_PRECISION=fp32``) for CUDA runs."""
    return _read(PRECISION_ENV, PRECISIONS)


_WARNED = False


def warn_random_weights(arch: str) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(f"{WEIGHTS_ENV}=random: {arch} and every other pretrained model of this process start from "
                      "random weights, not ImageNet's: a dry run of the code paths, whose numbers mean nothing",
                      RandomWeightsWarning, stacklevel=3)


def non_defaults() -> dict:
    """The switches set away from their defaults: what separates such a run's artifacts from a default run's."""
    out = {}
    if weights() != WEIGHTS[0]:
        out["weights"] = weights()
    if cuda_precision() != PRECISIONS[0]:
        out["cuda_precision"] = cuda_precision()
    return out


def describe(cuda: bool) -> dict:
    """What the report prints: the weights and the arithmetic precision of this process."""
    shown = "ImageNet checkpoints" if weights() == "imagenet" else \
        f"RANDOM ({WEIGHTS_ENV}=random: a dry run, its numbers mean nothing)"
    precision = ("bf16 autocast" if cuda_precision() == "bf16" else f"float32 ({PRECISION_ENV}=fp32)") if cuda \
        else "float32 (CPU)"
    return {"pretrained_weights": shown, "precision": precision}


def meaningful_numbers(profile) -> bool:
    """Whether a run's numbers may be held to the notebooks' quality checks (a victim above chance, ...):
    not for ``smoke`` (seconds-long runs) nor under random weights (a dry run of the code paths)."""
    return profile.name != "smoke" and weights() == "imagenet"
