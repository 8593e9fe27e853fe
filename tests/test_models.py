import pytest
import torch
import torchvision

from kx_utils import models as km
from kx_utils.models import MissingWeightsError, build_model


@pytest.mark.parametrize("arch,size,dim", [("gtsrb_5l", 32, 256), ("cifar10_9l", 32, 256),
                                           ("mobilenet_v2", 32, 1280), ("resnet18", 32, 512),
                                           ("efficientnet_lite0", 32, 1280)])
def test_models_map_images_to_logits_and_features(arch, size, dim):
    model = build_model(arch, num_classes=7, pretrained=False).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.features(x).shape == (2, dim)


def test_scratch_models_have_the_documented_depth():
    def weight_layers(m):
        return sum(isinstance(l, (torch.nn.Conv2d, torch.nn.Linear)) for l in m.modules())
    assert weight_layers(build_model("gtsrb_5l", 43, pretrained=False)) == 5
    assert weight_layers(build_model("cifar10_9l", 10, pretrained=False)) == 9


def test_normalisation_uses_imagenet_statistics():
    norm = km.Normalize()
    mean = torch.tensor(km.IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(norm(mean), torch.zeros(1, 3, 2, 2))


def test_pretrained_mobilenet_loads_offline_and_recognises_imagenet_statistics():
    model = build_model("mobilenet_v2", num_classes=3, pretrained=True)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(km.resolve_weights("mobilenet_v2"), weights_only=True))
    assert torch.equal(model.body[0][0][0].weight, reference.features[0][0].weight)


def test_pretrained_efficientnet_lite0_loads_offline():
    model = build_model("efficientnet_lite0", num_classes=2, pretrained=True)
    fresh = build_model("efficientnet_lite0", num_classes=2, pretrained=False)
    assert not torch.equal(model.body.net._conv_stem.weight, fresh.body.net._conv_stem.weight)


def test_missing_weights_name_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingWeightsError, match="resnet34-b627a593.pth"):
        build_model("resnet34", 10, pretrained=True)
    monkeypatch.setattr(km, "_packaged_weights", lambda arch: None)
    with pytest.raises(MissingWeightsError, match="mobilenet_v2-b0353104.pth"):
        build_model("mobilenet_v2", 10, pretrained=True)


def test_seeding_the_hub_cache_lets_torchvisions_weights_api_work_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert km.seed_hub_cache()
    net = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")  # finds the file, no download
    assert net.classifier[1].out_features == 1000
    assert km.resolve_weights("mobilenet_v2").parent == tmp_path / "checkpoints"


def test_unknown_architecture_and_pretrained_scratch_model_are_errors():
    with pytest.raises(ValueError, match="resnet34"):
        build_model("vgg16", 10)
    with pytest.raises(ValueError, match="pretrained=False"):
        build_model("gtsrb_5l", 43, pretrained=True)
