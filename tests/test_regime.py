"""The process-wide switches (kx_utils.runtime.regime): random weights for the dry run, fp32 on CUDA."""

import pytest
import torch

from kx_utils.config.profiles import get_profile
from kx_utils.core.devices import mixed_precision
from kx_utils.core.models import build_model, weights_identity
from kx_utils.runtime import regime
from kx_utils.runtime.artifacts import ArtifactStore


def test_random_weights_are_said_aloud_and_build_without_a_checkpoint(monkeypatch):
    monkeypatch.setenv("KX_WEIGHTS", "random")
    monkeypatch.setattr(regime, "_WARNED", False)
    with pytest.warns(regime.RandomWeightsWarning, match="KX_WEIGHTS=random: resnet34 .*numbers mean nothing"):
        model = build_model("resnet34", 5, pretrained=True)  # no ResNet checkpoint exists offline
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert weights_identity("resnet101") == "random"
    assert regime.describe(cuda=False)["pretrained_weights"].startswith("RANDOM (KX_WEIGHTS=random")
    assert not regime.meaningful_numbers(get_profile("paper"))


def test_a_switched_run_never_shares_an_artifact_with_a_default_run(monkeypatch, tmp_path):
    store = ArtifactStore(tmp_path)
    monkeypatch.delenv("KX_WEIGHTS", raising=False)
    monkeypatch.delenv("KX_PRECISION", raising=False)
    default = store.path("decoded", {"decoded": "caltech"})
    monkeypatch.setenv("KX_WEIGHTS", "random")
    random_weights = store.path("decoded", {"decoded": "caltech"})
    monkeypatch.setenv("KX_WEIGHTS", "imagenet")
    monkeypatch.setenv("KX_PRECISION", "fp32")
    fp32 = store.path("decoded", {"decoded": "caltech"})
    assert len({default, random_weights, fp32}) == 3
    monkeypatch.setenv("KX_PRECISION", "bf16")  # the default, named: the default's key
    assert store.path("decoded", {"decoded": "caltech"}) == default


def test_fp32_turns_the_cuda_autocast_off_and_the_cpu_is_float32_either_way(monkeypatch):
    monkeypatch.delenv("KX_PRECISION", raising=False)
    assert mixed_precision(torch.device("cpu")).fast_dtype == torch.bfloat16 and \
        not mixed_precision(torch.device("cpu"))._enabled
    assert regime.describe(cuda=True)["precision"] == "bf16 autocast"
    monkeypatch.setenv("KX_PRECISION", "fp32")
    assert regime.describe(cuda=True)["precision"] == "float32 (KX_PRECISION=fp32)"
    assert regime.describe(cuda=False)["precision"] == "float32 (CPU)"


@pytest.mark.parametrize("name, value", [("KX_WEIGHTS", "pretrained"), ("KX_PRECISION", "fp16")])
def test_an_unknown_switch_value_is_an_error_that_lists_the_valid_ones(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}={value!r} is not one of"):
        regime.non_defaults()
