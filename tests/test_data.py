import pytest
import torch

from kx_utils.core.images import resize_images
from kx_utils.data import catalog as kc
from kx_utils.data import datasets as kd
from kx_utils.data import download as kdl
from kx_utils.data.catalog import DatasetNotFoundError
from kx_utils.data.datasets import (
    CorruptImageError,
    ImageSet,
    load_split,
    per_class_indices,
)
from tests.conftest import write_image_folder


def test_load_split_decodes_imagefolder_to_uint8(tiny_data, store):
    s = load_split("cifar10", "train", standins=True, size=16, root=tiny_data, store=store)
    assert s.images.dtype == torch.uint8 and s.images.shape == (96, 3, 16, 16)
    assert s.labels.tolist() == sorted(s.labels.tolist())  # ImageFolder order: class by class
    assert torch.bincount(s.labels).tolist() == [24] * 4
    assert s.classes == [f"class_{c:02d}" for c in range(4)]
    # class 0 is red, class 1 green: the pixels really belong to their labels
    mean_rgb = s.images[s.labels == 0].float().mean((0, 2, 3))
    assert mean_rgb[0] > 150 and mean_rgb[1] < 50


def test_second_load_reuses_the_decode_cache(tiny_data, store, monkeypatch):
    first = load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    monkeypatch.setattr(kd, "decode_folder", lambda *a, **k: pytest.fail("decoded twice"))
    second = load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    assert torch.equal(first.images, second.images)


def test_changed_folder_is_decoded_again(tiny_data, store):
    before = load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    write_image_folder(tiny_data / "cifar10" / "test", classes=5, per_class=8, seed=9)
    after = load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    assert len(after) == len(before) + 8


def test_load_split_resizes_with_centre_crop(tiny_data, store):
    s = load_split("cifar10", "test", standins=True, size=8, root=tiny_data, store=store)
    assert s.images.shape[-2:] == (8, 8)


def test_missing_dataset_folder_names_path_and_source(tmp_path, store):
    with pytest.raises(DatasetNotFoundError) as err:
        load_split("gtsrb", "train", standins=True, size=16, root=tmp_path, store=store)
    assert str(tmp_path / "gtsrb" / "train") in str(err.value)
    assert "KX_DATA" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="kaggle"):
        load_split("diabetic5", "train", standins=False, size=16, root=tmp_path, store=store)


def test_missing_kx_data_says_how_to_set_it(monkeypatch, store, tmp_path):
    monkeypatch.delenv("KX_DATA", raising=False)
    monkeypatch.setattr(kc, "DEFAULT_DATA_ROOT", tmp_path / "no-data-here")
    with pytest.raises(DatasetNotFoundError, match="set KX_DATA"):
        load_split("cifar10", "train", standins=True, size=16, store=store)


def test_corrupt_image_is_named(tiny_data, store):
    bad = tiny_data / "cifar10" / "train" / "class_01" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        load_split("cifar10", "train", standins=True, size=16, root=tiny_data, store=store)


def test_unknown_dataset_and_split_are_errors():
    with pytest.raises(KeyError, match="cifar10"):
        kc.dataset_info("mnist")
    with pytest.raises(KeyError, match="train, test"):
        kc.dataset_info("gtsrb").location(True, "pool")


def test_per_class_indices_are_seeded_and_capped():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    a = per_class_indices(labels, 4, seed=1)
    assert torch.bincount(labels[a]).tolist() == [4, 3, 4]
    assert torch.equal(a, per_class_indices(labels, 4, seed=1))
    assert not torch.equal(a, per_class_indices(labels, 4, seed=2))
    assert len(set(a.tolist())) == len(a)


def test_without_classes_renumbers_the_rest():
    s = ImageSet(torch.zeros(6, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 2, 1, 0]),
                 ["a", "b", "c"])
    t = s.without_classes([1])
    assert t.classes == ["a", "c"] and t.labels.tolist() == [0, 1, 1, 0]


def test_resize_keeps_uint8_and_constant_images():
    x = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    y = resize_images(x, 4)
    assert y.dtype == torch.uint8 and y.shape == (2, 3, 4, 4) and (y == 77).all()


def test_registry_covers_the_papers_datasets():
    assert {"caltech256", "cubs200", "diabetic5", "gtsrb", "cifar10", "imagenet", "openimages",
            "bing"} <= set(kc.DATASETS)
    for info in kc.DATASETS.values():
        assert info.how_to_get and info.standin_note


def test_download_writes_imagefolder_atomically(tmp_path, monkeypatch, store):
    from PIL import Image as PILImage

    class FakeTorchvisionSet:
        classes = ["cat", "dog"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return PILImage.new("RGB", (8, 8), (60 * i, 0, 0)), i % 2

    def fake_cifar(raw, out):
        for split in ("train", "test"):
            kdl._export_torchvision(FakeTorchvisionSet(), out / split, FakeTorchvisionSet.classes)

    monkeypatch.setitem(kdl.DOWNLOADERS, "cifar10", fake_cifar)
    s = load_split("cifar10", "train", standins=False, size=16, root=tmp_path, store=store, allow_download=True)
    assert len(s) == 4 and s.classes == ["cat", "dog"]

    def broken(raw, out):
        (out / "train" / "x").mkdir(parents=True)
        raise ConnectionError("network down")

    monkeypatch.setitem(kdl.DOWNLOADERS, "gtsrb", broken)
    with pytest.raises(ConnectionError):
        load_split("gtsrb", "train", standins=False, size=16, root=tmp_path, store=store, allow_download=True)
    assert not (tmp_path / "gtsrb").exists()  # no half-exported folder is left to be trusted
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gtsrb")]


def test_without_download_permission_nothing_is_fetched(tmp_path, monkeypatch, store):
    monkeypatch.setitem(kdl.DOWNLOADERS, "cifar10", lambda raw, out: pytest.fail("downloaded"))
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_split("cifar10", "train", standins=False, size=16, root=tmp_path, store=store)


def _striped(path, w, h, period, fmt=None):
    import numpy as np
    from PIL import Image
    x = (np.arange(w)[None, :, None] // period % 2) * 200 + 30
    Image.fromarray(np.broadcast_to(x, (h, w, 3)).astype(np.uint8)).save(path, format=fmt)


def test_every_image_is_decoded_to_the_asked_size_whatever_the_first_images_size(tmp_path):
    from kx_utils.data.imagefolder import decode_image, decode_images
    paths = [tmp_path / f"{i}.{ext}" for i, ext in enumerate(["jpg", "png", "png", "jpg"])]
    _striped(paths[0], 30, 30, 3)  # a 30 px first image (GTSRB's smallest signs)...
    _striped(paths[1], 224, 160, 2)  # ...must not make the 224 px ones 30 px
    _striped(paths[2], 1600, 1200, 8)  # and a large one stays 64 px, not 1,600
    _striped(paths[3], 50, 90, 5, "JPEG")
    out = decode_images(paths, 64, workers=2)
    assert out.shape == (4, 3, 64, 64) and out.dtype == torch.uint8
    for i, path in enumerate(paths):  # each image as decoded alone: nothing of its neighbours
        assert torch.equal(out[i], torch.from_numpy(decode_image(path, 64)).permute(2, 0, 1))
    # the 2-px stripes of the 224 px image survive as contrast at 64 px; squashed to 30 px first they would not
    assert out[1].float().std() > 20
    with pytest.raises(ValueError, match="needs the side in pixels"):
        decode_images(paths, None)


def test_decoding_at_a_size_equals_decoding_as_stored_then_resizing(tmp_path):
    """mini's stand-ins are square: decoding them at 48 px gives what decoding at 64 and resizing gave."""
    import numpy as np
    from PIL import Image

    from kx_utils.data.imagefolder import decode_images
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    stored = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    for size in (48, 32):
        assert torch.equal(decode_images(paths, size), resize_images(stored, size))


def test_a_large_jpeg_decoded_at_a_reduced_scale_stays_close_to_the_full_decode(tmp_path):
    import numpy as np
    from PIL import Image

    from kx_utils.core.images import square_resize
    from kx_utils.data.imagefolder import decode_image
    yy, xx = np.mgrid[0:2592, 0:3888]
    pixels = np.stack([xx * 255 // 3888, yy * 255 // 2592, (xx + yy) % 256], -1).astype(np.uint8)
    path = tmp_path / "fundus.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    drafted = torch.from_numpy(decode_image(path, 224)).permute(2, 0, 1)
    with Image.open(path) as im:
        full = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    left = (3888 - 2592) // 2
    reference = square_resize(full[None, :, :, left:left + 2592], 224)[0]
    assert drafted.shape == (3, 224, 224)
    assert (drafted.float() - reference.float()).abs().mean() < 3  # of 255 levels


def test_the_decoded_size_of_the_paper_sets_is_stated():
    from kx_utils.data.imagefolder import decoded_bytes
    assert decoded_bytes(100_000, 224) == 15_052_800_000  # the ImageNet pool: 15 GB at 224 px, 3 bytes a pixel


def test_load_split_needs_a_size(tiny_data, store):
    with pytest.raises(TypeError, match="needs size=, the side in pixels"):
        load_split("cifar10", "train", standins=True, size=None, root=tiny_data, store=store)


def test_a_centre_crop_decode_is_resize_then_the_central_square(tmp_path):
    """Resize(256) + CenterCrop(224), the Knockoff authors' test transform, in one decode."""
    from kx_utils.data.imagefolder import centre_crop, decode_image
    path = tmp_path / "wide.png"
    _striped(path, 300, 200, 3)
    cropped = torch.from_numpy(decode_image(path, 56, crop=224 / 256)).permute(2, 0, 1)
    whole = torch.from_numpy(decode_image(path, 64)).permute(2, 0, 1)
    assert torch.equal(cropped, centre_crop(whole, 56))
