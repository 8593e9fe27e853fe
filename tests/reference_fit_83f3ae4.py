"""The CPU training loop of kx_utils.core.train as it was before the CUDA path (commit 83f3ae4), frozen.

tests/test_fit_device.py runs this and today's ``kx_utils.core.train.fit`` side by side, in one process,
and requires the same bits: that is what "the CPU path did not change when the CUDA path came"
means on any CPU, without pinning float results recorded on another machine.  Only what the CPU
path of that commit ran is kept (no checkpoint, no progress bar, no CUDA branch); every arithmetic
step and every draw from the generators is as it was.  Do not edit it to follow the package.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kx_utils.core.models import split_frozen_prefix


def _to_float(images):
    return images.float().div_(255) if images.dtype == torch.uint8 else images


def _soft_cross_entropy(logits, target_probs):
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _learning_rate(recipe, step, total_steps):
    progress = step / max(total_steps, 1)
    lr = recipe.lr * recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    if recipe.warmup_fraction > 0 and progress < recipe.warmup_fraction:
        lr *= (step + 1) / max(1.0, recipe.warmup_fraction * total_steps)
    return lr


def _augment(x, mode, generator):
    if mode == "none":
        return x
    n, c, h, w = x.shape
    if mode == "flip":
        flip = torch.rand(n, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def _optimizer(model, recipe):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


@torch.no_grad()
def predict_logits(model, images, batch_size):
    model.eval()
    out = [model(_to_float(chunk).contiguous(memory_format=torch.channels_last)).float()
           for chunk in images.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def _accuracy(model, images, labels, batch_size):
    pred = predict_logits(model, images, batch_size).argmax(1)
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


@torch.no_grad()
def _frozen_outputs(prefix, images, batch_size):
    prefix.eval()
    out = [prefix(_to_float(chunk).contiguous(memory_format=torch.channels_last)) for chunk in images.split(batch_size)]
    return torch.cat(out).contiguous(memory_format=torch.channels_last)


def fit(model: nn.Module, images, targets, recipe, *, eval_sets=None, seed=0, eval_batch_size=256,
        frozen_blocks=0) -> list[dict]:
    soft = targets.is_floating_point()
    model.to(memory_format=torch.channels_last)
    trained = model
    if frozen_blocks:
        prefix, trained = split_frozen_prefix(model, frozen_blocks)
        images = _frozen_outputs(prefix, images, eval_batch_size)
        eval_sets = {name: (_frozen_outputs(prefix, x, eval_batch_size), y) for name, (x, y) in (eval_sets or {}).items()}
    optimizer = _optimizer(trained, recipe)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(recipe.epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        trained.train()
        order = torch.randperm(len(images), generator=generator)
        loss_sum, seen = 0.0, 0
        for i, batch in enumerate(order.split(recipe.batch_size)):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step, total_steps)
            x = _augment(_to_float(images[batch]), recipe.augment, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            logits = trained(x).float()
            y = targets[batch]
            loss = _soft_cross_entropy(logits, y) if soft else F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
            seen += len(batch)
        row = {"epoch": epoch + 1, "lr": _learning_rate(recipe, (epoch + 1) * steps_per_epoch - 1, total_steps),
               "train_loss": loss_sum / seen}
        for name, (eval_images, eval_labels) in (eval_sets or {}).items():
            row[f"{name}_acc"] = _accuracy(trained, eval_images, eval_labels, eval_batch_size)
        history.append(row)
    model.to(memory_format=torch.contiguous_format)
    return history
