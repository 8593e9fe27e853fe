"""One training loop for victims, surrogates and detectors.

Images stay decoded as uint8 tensors; each batch is converted to float, augmented
on the tensor (random crop with padding, optional flip) and fed to the model.
Targets are class indices (hard labels) or probability vectors (soft labels,
trained with soft cross-entropy as in Knockoff).  Every epoch ends with an
evaluation on the given sets, recorded in the returned history; with a
``checkpoint`` path the run saves itself after each epoch and resumes from there.

On a CUDA GPU, ``fit`` moves the training and evaluation sets to the GPU once (as
uint8), draws its shuffles and augmentations there with a GPU generator, runs in
bf16 with autotuned convolutions (:mod:`kx_utils.core.devices`) and reads the loss and
the accuracies back once per epoch: no batch waits for the host.  On the CPU it
computes exactly what it always did (``tests/test_fit_device.py`` pins it bit for bit).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime.artifacts import atomic_save, load_verified
from ..runtime.progress import progress_bar
from .batching import batched_outputs
from .devices import autotuned_convolutions, mixed_precision, pick_device
from .images import to_float
from .models import split_frozen_prefix
from .precision import (
    BATCH_NORM_MODES,
    PRECISIONS,
    freeze_batch_norm,
    pointwise_bf16,
    unwrap_bf16,
)
from .recipe import AUGMENTATIONS, Recipe
from .selection import best

# Set (to anything) to make every training run an error: `reproduce --grid` runs the notebooks this
# way after the experiment grid, so a notebook that would train what the grid did not make says so.
NO_TRAINING_ENV = "KX_NO_TRAINING"


class TrainingForbiddenError(RuntimeError):
    pass


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_j p_j log softmax(logits)_j``."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """The step schedule of ``recipe`` at ``step`` of ``total_steps`` (fractions of the run)."""
    progress = step / max(total_steps, 1)
    lr = recipe.lr * recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    if recipe.warmup_fraction > 0 and progress < recipe.warmup_fraction:
        lr *= (step + 1) / max(1.0, recipe.warmup_fraction * total_steps)
    return lr


RESIZED_CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults: share of the area...
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # ...and aspect ratio of the crop
_RESIZED_CROP_TRIES = 10


def resized_crop_boxes(n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` crop boxes ``(x1, y1, x2, y2)`` drawn as torchvision's ``RandomResizedCrop.get_params`` draws
    them: up to ten tries of an area share and a log-uniform aspect ratio, the first that fits; where none
    fits, the whole image (torchvision's fallback for a square image)."""
    dev = generator.device
    area = torch.empty(n, _RESIZED_CROP_TRIES, device=dev).uniform_(*RESIZED_CROP_SCALE, generator=generator) * h * w
    log_ratio = torch.empty(n, _RESIZED_CROP_TRIES, device=dev).uniform_(
        math.log(RESIZED_CROP_RATIO[0]), math.log(RESIZED_CROP_RATIO[1]), generator=generator)
    cw = torch.sqrt(area * torch.exp(log_ratio)).round()
    ch = torch.sqrt(area / torch.exp(log_ratio)).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=dev))
    rows = torch.arange(n, device=dev)
    cw = torch.where(first >= 0, cw[rows, first.clamp(min=0)], torch.full((n,), float(w), device=dev))
    ch = torch.where(first >= 0, ch[rows, first.clamp(min=0)], torch.full((n,), float(h), device=dev))
    x1 = torch.floor(torch.rand(n, generator=generator, device=dev) * (w - cw + 1))
    y1 = torch.floor(torch.rand(n, generator=generator, device=dev) * (h - ch + 1))
    return torch.stack([x1, y1, x1 + cw, y1 + ch], 1)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator, out_size: int | None = None) -> torch.Tensor:
    """Random crop (zero padding of 1/8 of the side) for ``crop*``, horizontal flips for ``*flip``, a random
    resized crop to ``out_size`` x ``out_size`` (default: the input's side) for ``resized_crop*``.

    The random numbers come from ``generator`` on its own device (a GPU generator for images on
    the GPU, so that no batch waits for a copy from the host).
    """
    if mode == "none":
        return x
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r}; valid: {', '.join(AUGMENTATIONS)}")
    n, c, h, w = x.shape
    if mode == "flip":
        flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    if mode.startswith("resized_crop"):
        from torchvision.ops import roi_align
        boxes = resized_crop_boxes(n, h, w, generator).to(x.device, x.dtype)
        indexed = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes], 1)
        side = out_size or h
        # bilinear samples of each box at the output grid (2 x 2 per output pixel), as a batch
        out = roi_align(x, indexed, output_size=(side, side), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    else:
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
        out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                     torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if mode.endswith("_flip"):
        flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def _make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: sgd, adam")


def device_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                  device: str | torch.device = "auto") -> torch.Tensor:
    """Logits for uint8 (or [0, 1] float) images, in batches (:func:`~kx_utils.core.batching.batched_outputs`:
    bf16 on CUDA), left on ``device``.

    Images already on ``device`` are read in place; others travel one batch at a time.
    """
    device = pick_device(device)
    model.eval().to(device)
    return batched_outputs(model, images, batch_size, device)


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                   device: str | torch.device = "auto") -> torch.Tensor:
    """Logits for uint8 (or [0, 1] float) images, in batches, returned on the CPU."""
    return device_logits(model, images, batch_size, device).cpu()


def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                  device: str | torch.device = "auto") -> torch.Tensor:
    return predict_logits(model, images, batch_size, device).softmax(dim=1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
             device: str | torch.device = "auto") -> float:
    """Top-1 accuracy, computed on ``device``: only the final number comes back to the host."""
    if not len(labels):
        return float("nan")
    pred = device_logits(model, images, batch_size, device).argmax(1)
    return float((pred == labels.to(pred.device)).float().mean())


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy on each class's test items (NaN for a class without test items)."""
    out = []
    for c in range(num_classes):
        mask = labels == c
        out.append(float((predictions[mask] == c).float().mean()) if mask.any() else float("nan"))
    return out


def fit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, recipe: Recipe, *,
        eval_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        seed: int = 0, device: str | torch.device = "auto", checkpoint: str | Path | None = None,
        progress: bool = True, desc: str = "train", eval_batch_size: int = 256,
        frozen_blocks: int = 0, evaluate_every_epoch: bool = True, compile_model: bool = False,
        input_size: int | None = None, precision: str = "fp32", batch_norm: str = "train",
        patience: int = 0, monitor: str = "val_acc") -> list[dict]:
    """Train ``model`` in place on uint8 ``images`` and return the per-epoch history.

    ``targets`` are int64 class indices (cross-entropy) or float probability vectors
    (soft cross-entropy).  After every epoch, the accuracy on each of ``eval_sets``
    (name -> (images, labels)) is recorded as ``<name>_acc``; without
    ``evaluate_every_epoch``, only after the last epoch.

    ``frozen_blocks`` > 0 fine-tunes only the backbone's later blocks: the first
    ``frozen_blocks`` (:func:`kx_utils.core.models.split_frozen_prefix`) stay as they are,
    in eval mode, and their outputs for the training and evaluation images are
    computed once, so each epoch runs only the rest of the network.  That needs
    un-augmented training (the same input every epoch).  The frozen blocks keep their
    pretrained BatchNorm statistics (re-estimating them on the transfer set measured
    worse: Caltech 50.4% against 52.3% with blocks 14+ trained).

    ``input_size``: the side the network sees when ``images`` are stored larger for a random resized
    crop (``augment="resized_crop*"``: the paper profile's victims train on RandomResizedCrop(224) of
    images kept at 256 px, as the Knockoff authors' code does); None: the images' own side.

    ``patience`` > 0 stops training once ``monitor`` (an eval set's ``<name>_acc``, then scored every epoch)
    has not improved for that many epochs; the last epoch trained is scored on every eval set (:func:`epochs_without_improvement`), before ``recipe.epochs`` (whose
    step schedule still spans ``recipe.epochs``): training until the attacker's validation accuracy stops
    improving, the paper's advice of Section 5.2.1.

    ``precision="bf16_pointwise"`` computes the pointwise layers in bf16 (training and the per-epoch
    evaluations; :func:`kx_utils.core.precision.pointwise_bf16`) and ``batch_norm="frozen"`` keeps the
    batch-norm layers on their stored statistics (:func:`kx_utils.core.precision.freeze_batch_norm`): two
    candidate speed-ups of ``python -m kx_utils bench``, off by default.

    ``compile_model`` trains through ``torch.compile`` of the trained network (the profile's
    ``compile_models``, off by default: :class:`kx_utils.config.schema.Profile` says why); evaluation
    runs the network as it is.  On CUDA the sets live on the GPU for the whole call, so they must
    fit in its memory (224 px images take 150 KB each as uint8).
    """
    if os.environ.get(NO_TRAINING_ENV):
        raise TrainingForbiddenError(
            f"{desc}: training is forbidden here ({NO_TRAINING_ENV} is set) because the experiment grid should "
            "have made this model; the grid's tasks (kx_utils.orchestration.grid) no longer mirror the notebook's calls. "
            f"Unset {NO_TRAINING_ENV} to train it in the notebook")
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if len(images) == 0:
        raise ValueError("cannot train on an empty set")
    if patience < 0 or not isinstance(patience, int):
        raise ValueError(f"patience must be a whole number of epochs, 0 for none, got {patience!r}")
    if patience and monitor.removesuffix("_acc") not in (eval_sets or {}):
        raise ValueError(f"patience={patience} watches {monitor!r}, but the eval sets are "
                         f"{sorted(eval_sets or {})}: pass an eval set named {monitor.removesuffix('_acc')!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(f"unknown batch_norm mode {batch_norm!r}; valid: {', '.join(BATCH_NORM_MODES)}")
    device = pick_device(device)
    soft = targets.is_floating_point()
    model.to(device).to(memory_format=torch.channels_last)
    if precision == "bf16_pointwise":
        pointwise_bf16(model)
        try:
            return fit(model, images, targets, recipe, eval_sets=eval_sets, seed=seed, device=device,
                       checkpoint=checkpoint, progress=progress, desc=desc, eval_batch_size=eval_batch_size,
                       frozen_blocks=frozen_blocks, evaluate_every_epoch=evaluate_every_epoch,
                       compile_model=compile_model, input_size=input_size, batch_norm=batch_norm,
                       patience=patience, monitor=monitor)
        finally:
            unwrap_bf16(model)
    trained = model
    if frozen_blocks:
        if recipe.augment != "none":
            raise ValueError(f"frozen_blocks={frozen_blocks} reuses the frozen blocks' outputs every epoch, "
                             f"which augmentation ({recipe.augment!r}) would change: use augment='none' "
                             "or frozen_blocks=0")
        prefix, trained = split_frozen_prefix(model, frozen_blocks)
        images = frozen_outputs(prefix, images, eval_batch_size, device)
        eval_sets = {name: (frozen_outputs(prefix, x, eval_batch_size, device), y)
                     for name, (x, y) in (eval_sets or {}).items()}
    optimizer = _make_optimizer(trained, recipe)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    # shuffles and augmentations are drawn where the images are (the CPU's stream is the one the
    # CPU results and their caches were made with)
    generator = torch.Generator(device=device).manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0

    checkpoint = Path(checkpoint) if checkpoint else None
    state = load_verified(checkpoint, "training checkpoint") if checkpoint is not None else None
    if state is not None:  # None too for a checkpoint that failed verification: then from epoch 0
        written_on = state.get("generator_device", "cpu")  # checkpoints before this key drew on the CPU
        if written_on != generator.device.type:
            raise ValueError(f"checkpoint {checkpoint} was written by a run on {written_on}, and this run is on "
                             f"{generator.device.type}: its random state cannot carry over. Resume it on "
                             f"{written_on}, or delete the checkpoint to train this model again from the start")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])

    # the decoded sets cross to the device once per call (no-ops on the CPU)
    images, targets = images.to(device), targets.to(device)
    eval_sets = {name: (x.to(device), y.to(device)) for name, (x, y) in (eval_sets or {}).items()}
    forward = torch.compile(trained) if compile_model else trained

    bar = progress_bar(total_steps, desc, initial=start_epoch * steps_per_epoch) if progress else None
    try:
        for epoch in range(start_epoch, recipe.epochs):
            if patience and history and epochs_without_improvement(history, monitor) >= patience:
                break  # also where a resumed run had already stopped
            torch.manual_seed(seed * 100_003 + epoch)  # dropout: reproducible after a resume
            trained.train()
            if batch_norm == "frozen":
                freeze_batch_norm(trained)
            t0 = time.perf_counter()
            order = torch.randperm(len(images), generator=generator, device=generator.device)
            # summed in float64 where the loss is: the same arithmetic as Python floats, read once per epoch
            loss_sum, seen = torch.zeros((), dtype=torch.float64, device=device), 0
            with autotuned_convolutions(device):
                for i, batch in enumerate(order.split(recipe.batch_size)):
                    step = epoch * steps_per_epoch + i
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(recipe, step, total_steps)
                    x = augment_batch(to_float(images[batch]), recipe.augment, generator, input_size)
                    x = x.contiguous(memory_format=torch.channels_last)
                    y = targets[batch]
                    with mixed_precision(device):
                        logits = forward(x).float()
                    loss = soft_cross_entropy(logits, y) if soft else F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach().double() * len(batch)
                    seen += len(batch)
                    if bar is not None:
                        bar.update(1)
            row = {"epoch": epoch + 1, "lr": learning_rate(recipe, (epoch + 1) * steps_per_epoch - 1, total_steps),
                   "train_loss": float(loss_sum) / seen, "train_seconds": time.perf_counter() - t0}
            last = epoch + 1 == recipe.epochs
            for name, (eval_images, eval_labels) in eval_sets.items():
                if evaluate_every_epoch or last or (patience and f"{name}_acc" == monitor):
                    row[f"{name}_acc"] = accuracy(trained, eval_images, eval_labels, eval_batch_size, device)
            history.append(row)
            if checkpoint is not None:
                atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "generator_device": generator.device.type,
                             "history": history, "epoch": epoch + 1}, checkpoint)
            if bar is not None:
                bar.set_postfix_str(", ".join([f"epoch {epoch + 1}/{recipe.epochs}",
                                               *(f"{k.removesuffix('_acc')} {v:.1%}" for k, v in row.items()
                                                 if k.endswith("_acc"))]))
        if patience and history:  # stopped early: the last epoch trained is scored on every set
            for name, (eval_images, eval_labels) in eval_sets.items():
                if f"{name}_acc" not in history[-1]:
                    history[-1][f"{name}_acc"] = accuracy(trained, eval_images, eval_labels, eval_batch_size, device)
    finally:  # a run that raises leaves its bar closed in red (tqdm's danger style)
        if bar is not None:
            bar.close()
    model.cpu().to(memory_format=torch.contiguous_format)
    return history


def frozen_outputs(prefix: nn.Module, images: torch.Tensor, batch_size: int = 256,
                   device: str | torch.device = "auto") -> torch.Tensor:
    """``prefix``'s outputs (eval mode, float32 also on CUDA: no autocast) for uint8 images, kept on
    ``device`` in channels_last float32."""
    device = pick_device(device)
    prefix.eval().to(device)
    return batched_outputs(prefix, images, batch_size, device, autocast=False).contiguous(
        memory_format=torch.channels_last)


def epochs_without_improvement(history: list[dict], key: str) -> int:
    """Epochs since the best ``key`` of ``history`` (ties: the earliest counts as the best)."""
    return history[-1]["epoch"] - best_epoch(history, key)["epoch"]


def best_epoch(history: list[dict], key: str) -> dict:
    """The history row with the highest ``key`` (ties: the earliest epoch; rows without ``key`` skipped)."""
    rows = [row for row in history if key in row]
    if not rows:
        raise ValueError(f"no epoch of this history has {key!r}")
    return best(rows, lambda row: row[key], ties=lambda row: row["epoch"])
