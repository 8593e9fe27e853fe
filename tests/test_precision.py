"""The candidate CPU speed-ups of fine-tuning (kx_utils.core.precision) and fit's switches for them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kx_utils.core.models import build_model
from kx_utils.core.precision import (
    Bf16Compute,
    freeze_batch_norm,
    is_pointwise,
    pointwise_bf16,
    unwrap_bf16,
)
from kx_utils.core.recipe import Recipe
from kx_utils.core.train import fit


def small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: stays float32
                         nn.Conv2d(8, 16, 1),  # pointwise
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def test_only_pointwise_layers_compute_in_bf16_and_unwrapping_restores_the_model():
    torch.manual_seed(0)
    net = small_net()
    keys = list(net.state_dict())
    x = torch.rand(2, 3, 8, 8)
    reference = net(x)
    assert [is_pointwise(m) for m in net] == [False, False, False, False, True, False, False, True]
    pointwise_bf16(net)
    assert [type(m) is Bf16Compute for m in net] == [False, False, False, False, True, False, False, True]
    seen = {}
    net[4].inner.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    out = net(x)
    assert seen["dtype"] == torch.bfloat16 and out.dtype == torch.float32
    assert net[4].inner.weight.dtype == torch.float32  # parameters stay float32 for the optimiser
    unwrap_bf16(net)
    assert list(net.state_dict()) == keys and not any(isinstance(m, Bf16Compute) for m in net.modules())
    assert torch.equal(net(x), reference)  # the float32 network again
    # bf16 keeps about 3 significant digits: the outputs stay close to float32's, not equal
    assert torch.allclose(out, reference, atol=5e-2) and not torch.equal(out, reference)


def test_frozen_batch_norm_keeps_its_statistics_while_its_affine_weights_train():
    torch.manual_seed(0)
    net = small_net().train()
    assert freeze_batch_norm(net) == 1
    bn = net[1]
    before = bn.running_mean.clone()
    net(torch.rand(4, 3, 8, 8) * 5).sum().backward()
    assert torch.equal(bn.running_mean, before) and not bn.training and net.training
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("batch_norm, moves", [("train", True), ("frozen", False)])
def test_fit_with_frozen_batch_norm_leaves_the_pretrained_statistics_alone(batch_norm, moves):
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 3, pretrained=False)
    first_bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = first_bn.running_mean.clone()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    fit(model, images, torch.randint(0, 3, (16,)), Recipe(epochs=1, batch_size=8, lr=0.01), device="cpu",
        progress=False, batch_norm=batch_norm)
    assert (not torch.equal(first_bn.running_mean, before)) == moves


def test_fit_in_bf16_pointwise_trains_and_returns_the_plain_network():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 3, pretrained=False)
    keys = list(model.state_dict())
    images, labels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 3, (16,))
    history = fit(model, images, labels, Recipe(epochs=2, batch_size=8, lr=0.01), device="cpu", progress=False,
                  precision="bf16_pointwise", eval_sets={"test": (images, labels)})
    assert len(history) == 2 and all(0 <= row["test_acc"] <= 1 for row in history)
    assert list(model.state_dict()) == keys and not any(isinstance(m, Bf16Compute) for m in model.modules())
    with pytest.raises(ValueError, match="unknown precision 'fp16'; valid: fp32, bf16_pointwise"):
        fit(model, images, labels, Recipe(epochs=1, batch_size=8), device="cpu", progress=False, precision="fp16")
