"""kx_utils.core.flops: FLOPs counted against hand computation, the peak table and the share of the peak."""

import pytest
import torch
import torch.nn as nn

from kx_utils.core.flops import (
    forward_flops,
    peak_bf16_tflops,
    peak_fraction,
    training_flops,
)
from kx_utils.core.models import build_model


def test_a_linear_layer_costs_two_flops_per_multiply_add_per_image():
    assert forward_flops(nn.Linear(48, 10), (48,)) == 2 * 48 * 10


def test_a_1x1_convolution_costs_two_flops_per_multiply_add_at_every_pixel():
    assert forward_flops(nn.Conv2d(16, 8, kernel_size=1), (16, 5, 7)) == 2 * 16 * 8 * 5 * 7


def test_a_strided_3x3_convolution_counts_its_output_pixels():
    # 3 -> 4 channels, 3x3, stride 2, padding 1: an 8x8 input gives 4x4 outputs of 3*9 multiply-adds each
    assert forward_flops(nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 8, 8)) == 2 * 3 * 9 * 4 * 4 * 4


def test_element_wise_layers_are_not_counted():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    assert forward_flops(model, (3, 6, 6)) == 2 * 3 * 4 * 36 + 2 * 4 * 2


def test_gtsrb_5l_counts_as_its_layers_do_by_hand():
    # 3x3 convolutions 3->32 at 32x32, 32->64 at 16x16, 64->128 at 8x8; 2048->256; head 256->43
    by_hand = 2 * (3 * 9 * 32 * 32 * 32 + 32 * 9 * 64 * 16 * 16 + 64 * 9 * 128 * 8 * 8 + 2048 * 256 + 256 * 43)
    assert forward_flops(build_model("gtsrb_5l", 43, pretrained=False), (3, 32, 32)) == by_hand


def test_counting_leaves_the_model_as_it_was():
    model = build_model("gtsrb_5l", 3, pretrained=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forward_flops(model, (3, 16, 16))
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_training_step_is_three_forward_passes():
    assert training_flops(7.0e9) == 21.0e9


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                       ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
                                       ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("NVIDIA A100 80GB PCIe", 312.0), ("Tesla T4", None), ("cpu", None)])
def test_peak_by_device_name(name, peak):
    assert peak_bf16_tflops(name) == peak


def test_peak_fraction_arithmetic():
    # NVIDIA's ResNet-50 anchor: 2,500 img/s x 3 x 8.2 GFLOP = 61.5 TFLOP/s of the A100's 312
    assert peak_fraction(2500.0, 3 * 8.2e9, 312.0) == pytest.approx(61.5 / 312)
    assert peak_fraction(1000.0, 1e9, 1.0) == pytest.approx(1.0)
    assert peak_fraction(1000.0, None, 312.0) is None
    assert peak_fraction(1000.0, 1e9, None) is None
    with pytest.raises(ValueError, match="positive number of TFLOP/s, got 0"):
        peak_fraction(1000.0, 1e9, 0.0)
