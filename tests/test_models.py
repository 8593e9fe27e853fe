import pytest
import torch
import torchvision

from kx_utils.core import models as km
from kx_utils.core.models import MissingWeightsError, build_model


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
    # by hand: (x - mean) / std with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
    x = torch.tensor([0.485, 0.456 + 0.224, 0.406 - 2 * 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(norm(x).flatten(), torch.tensor([0.0, 1.0, -2.0]), atol=1e-6)
    assert torch.allclose(norm(torch.ones(1, 3, 1, 1)).flatten(),
                          torch.tensor([0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225]), atol=1e-6)
    model = build_model("gtsrb_5l", 43, pretrained=False)
    assert isinstance(model.normalize, km.Normalize)  # every model normalises its [0, 1] input itself


def imagenet_sample(every: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``every``-th image of $KX_DATA/imagenet_sample (one ImageNet photo per class, 64 px) in
    [0, 1], with its ImageNet-1k label; skips the test when the folder is not there."""
    import csv
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(os.environ.get("KX_DATA") or "/nonexistent") / "imagenet_sample"
    if not (root / "classes.csv").is_file():
        pytest.skip("needs the ImageNet sample of $KX_DATA (imagenet_sample/): set KX_DATA")
    with open(root / "classes.csv") as f:
        rows = list(csv.DictReader(f))[::every]
    images = [np.array(Image.open(root / "sample" / r["folder"] / f"{r['folder']}.jpg").convert("RGB"))
              for r in rows]
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255,
            torch.tensor([int(r["index"]) for r in rows]))


def test_pretrained_mobilenet_classifies_imagenet_photos():
    """The pretrained body, its pooling and the ImageNet normalisation together reproduce torchvision's
    classifier: with the checkpoint's own 1000-class head, it names most of 100 ImageNet photos."""
    images, labels = imagenet_sample()
    images = torch.nn.functional.interpolate(images, size=128, mode="bilinear", antialias=True,
                                             align_corners=False)  # 64 px photos: 128 px is closer to 224
    model = build_model("mobilenet_v2", num_classes=1000, pretrained=True).eval()
    state = torch.load(km.resolve_weights("mobilenet_v2"), weights_only=True)
    model.head.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})
    with torch.no_grad():
        logits = model(images)
        unnormalised = model.head(model.body(images))  # the same network without the normalisation
    top1 = (logits.argmax(1) == labels).float().mean().item()
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    # measured: top-1 0.41, top-5 0.73 (chance: 0.001 and 0.005); without normalisation top-1 0.10
    assert top5 >= 0.6 and top1 >= 0.3, (top1, top5)
    assert top1 >= 2 * (unnormalised.argmax(1) == labels).float().mean().item()


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
