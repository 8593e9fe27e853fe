"""Partial fine-tuning: split_frozen_prefix (kx_utils.core.models) and fit(..., frozen_blocks=k) (kx_utils.core.train)."""

import functools

import pytest
import torch

from kx_utils.core.models import build_model, split_frozen_prefix
from kx_utils.core.recipe import Recipe
from kx_utils.core.train import accuracy, fit

# ---------------------------------------------------------------- split_frozen_prefix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BLOCKS = {"mobilenet_v2": 19, "resnet18": 5}  # MobileNetV2's features; a ResNet's stem + 4 stages


@functools.lru_cache(maxsize=None)
def _model(arch, seed=0):
    """One random-weight model per architecture, shared by the tests that only read it."""
    torch.manual_seed(seed)
    return build_model(arch, 5, pretrained=False).eval()


@pytest.mark.parametrize("arch,k", [("mobilenet_v2", 1), ("mobilenet_v2", 7), ("mobilenet_v2", 18),
                                    ("resnet18", 1), ("resnet18", 4)])
def test_tail_of_prefix_equals_the_model(arch, k):
    model = _model(arch)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prefix, tail = split_frozen_prefix(model, k)
    prefix.eval(), tail.eval()
    with torch.no_grad():
        expected = model(x)
        got = tail(prefix(x))
    assert got.shape == (2, 5)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_prefix_and_tail_share_and_cover_the_models_parameters(arch):
    model = _model(arch)
    k = 2
    prefix, tail = split_frozen_prefix(model, k)
    model_params = {id(p) for p in model.parameters()}
    prefix_params = {id(p) for p in prefix.parameters()}
    tail_params = {id(p) for p in tail.parameters()}
    assert prefix_params and tail_params
    assert not prefix_params & tail_params
    assert prefix_params | tail_params == model_params
    assert {id(p) for p in model.head.parameters()} <= tail_params
    # the prefix normalises: it holds the model's Normalize module itself
    assert any(m is model.normalize for m in prefix.modules())


def test_prefix_of_mobilenet_is_the_first_k_feature_blocks():
    model = _model("mobilenet_v2")
    prefix, _ = split_frozen_prefix(model, 3)
    expected = {id(p) for p in model.body[0][:3].parameters()}
    assert {id(p) for p in prefix.parameters()} == expected


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_invalid_number_of_blocks_raises(arch):
    model = _model(arch)
    n = BLOCKS[arch]
    for k in (0, -1, n, n + 1):
        with pytest.raises(ValueError, match="frozen_blocks"):
            split_frozen_prefix(model, k)
    split_frozen_prefix(model, n - 1)  # the last valid split


def test_unsupported_architecture_raises():
    model = build_model("gtsrb_5l", 5, pretrained=False)
    with pytest.raises(ValueError, match="gtsrb_5l"):
        split_frozen_prefix(model, 1)


# ---------------------------------------------------------------- fit(..., frozen_blocks=k)

RECIPE = Recipe(epochs=1, batch_size=8, lr=0.05, momentum=0.9, augment="none")


def _data(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    return images, labels


def _state(module):
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def _changed(before, after):
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_fit_with_frozen_blocks_trains_only_the_tail():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, pretrained=False)
    k = 5
    images, labels = _data()
    frozen_before = _state(model.body[0][:k])
    tail_before = _state(model.body[0][k:])
    head_before = _state(model.head)
    history = fit(model, images, labels, RECIPE, device="cpu", progress=False, frozen_blocks=k)
    assert len(history) == 1 and history[0]["epoch"] == 1
    # frozen blocks: weights and BatchNorm statistics (running mean / var / count) untouched
    assert _changed(frozen_before, _state(model.body[0][:k])) == set()
    assert any(name.endswith("running_mean") for name in frozen_before)
    # the rest trained: weights and the tail's BatchNorm statistics moved
    tail_changed = _changed(tail_before, _state(model.body[0][k:]))
    assert any(name.endswith("weight") for name in tail_changed)
    assert any(name.endswith("running_mean") for name in tail_changed)
    assert _changed(head_before, _state(model.head)) == {"weight", "bias"}


def test_fit_without_frozen_blocks_changes_the_first_blocks():
    # the contrast: the whole network trains when frozen_blocks=0
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, pretrained=False)
    images, labels = _data()
    before = _state(model.body[0][:5])
    fit(model, images, labels, RECIPE, device="cpu", progress=False)
    changed = _changed(before, _state(model.body[0][:5]))
    assert any(name.endswith("weight") for name in changed)
    assert any(name.endswith("running_mean") for name in changed)


def test_fit_with_frozen_blocks_evaluates_the_whole_model():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, pretrained=False)
    images, labels = _data()
    test_images, test_labels = _data(n=12, seed=1)
    history = fit(model, images, labels, RECIPE, device="cpu", progress=False, frozen_blocks=5,
                  eval_sets={"test": (test_images, test_labels)})
    # the accuracy from the cached prefix outputs is the whole model's accuracy on the images
    assert history[-1]["test_acc"] == pytest.approx(accuracy(model, test_images, test_labels, device="cpu"))


def test_fit_with_frozen_blocks_and_soft_targets():
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, pretrained=False)
    images, _ = _data()
    probs = torch.softmax(torch.randn(len(images), 2, generator=torch.Generator().manual_seed(2)), 1)
    before = _state(model.body[0][:5])
    history = fit(model, images, probs, RECIPE, device="cpu", progress=False, frozen_blocks=5)
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert _changed(before, _state(model.body[0][:5])) == set()


@pytest.mark.parametrize("augment", ["crop", "flip", "crop_flip"])
def test_fit_with_frozen_blocks_refuses_augmentation(augment):
    model = build_model("mobilenet_v2", 2, pretrained=False)
    images, labels = _data(n=8)
    with pytest.raises(ValueError, match="augment"):
        fit(model, images, labels, RECIPE.replace(augment=augment), device="cpu", progress=False,
            frozen_blocks=5)


def test_fit_with_frozen_blocks_on_a_scratch_model_raises():
    model = build_model("gtsrb_5l", 2, pretrained=False)
    images, labels = _data(n=8)
    with pytest.raises(ValueError):
        fit(model, images, labels, RECIPE, device="cpu", progress=False, frozen_blocks=1)
