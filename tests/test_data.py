import pytest
import torch

from kx_utils import data as kd
from kx_utils.data import (CorruptImageError, DatasetNotFoundError, ImageSet, load_split,
                           per_class_indices, resize_images)
from tests.conftest import write_image_folder


def test_load_split_decodes_imagefolder_to_uint8(tiny_data, store):
    s = load_split("cifar10", "train", standins=True, root=tiny_data, store=store)
    assert s.images.dtype == torch.uint8 and s.images.shape == (96, 3, 16, 16)
    assert s.labels.tolist() == sorted(s.labels.tolist())  # ImageFolder order: class by class
    assert torch.bincount(s.labels).tolist() == [24] * 4
    assert s.classes == [f"class_{c:02d}" for c in range(4)]
    # class 0 is red, class 1 green: the pixels really belong to their labels
    mean_rgb = s.images[s.labels == 0].float().mean((0, 2, 3))
    assert mean_rgb[0] > 150 and mean_rgb[1] < 50


def test_second_load_reuses_the_decode_cache(tiny_data, store, monkeypatch):
    first = load_split("cifar10", "test", standins=True, root=tiny_data, store=store)
    monkeypatch.setattr(kd, "decode_folder", lambda *a, **k: pytest.fail("decoded twice"))
    second = load_split("cifar10", "test", standins=True, root=tiny_data, store=store)
    assert torch.equal(first.images, second.images)


def test_changed_folder_is_decoded_again(tiny_data, store):
    before = load_split("cifar10", "test", standins=True, root=tiny_data, store=store)
    write_image_folder(tiny_data / "cifar10" / "test", classes=5, per_class=8, seed=9)
    after = load_split("cifar10", "test", standins=True, root=tiny_data, store=store)
    assert len(after) == len(before) + 8


def test_load_split_resizes_with_centre_crop(tiny_data, store):
    s = load_split("cifar10", "test", standins=True, size=8, root=tiny_data, store=store)
    assert s.images.shape[-2:] == (8, 8)


def test_missing_dataset_folder_names_path_and_source(tmp_path, store):
    with pytest.raises(DatasetNotFoundError) as err:
        load_split("gtsrb", "train", standins=True, root=tmp_path, store=store)
    assert str(tmp_path / "gtsrb" / "train") in str(err.value)
    assert "KX_DATA" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="kaggle"):
        load_split("diabetic5", "train", standins=False, root=tmp_path, store=store)


def test_missing_kx_data_says_how_to_set_it(monkeypatch, store, tmp_path):
    monkeypatch.delenv("KX_DATA", raising=False)
    monkeypatch.setattr(kd, "DEFAULT_DATA_ROOT", tmp_path / "no-data-here")
    with pytest.raises(DatasetNotFoundError, match="set KX_DATA"):
        load_split("cifar10", "train", standins=True, store=store)


def test_corrupt_image_is_named(tiny_data, store):
    bad = tiny_data / "cifar10" / "train" / "class_01" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        load_split("cifar10", "train", standins=True, root=tiny_data, store=store)


def test_unknown_dataset_and_split_are_errors():
    with pytest.raises(KeyError, match="cifar10"):
        kd.dataset_info("mnist")
    with pytest.raises(KeyError, match="train, test"):
        kd.dataset_info("gtsrb").location(True, "pool")


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
            "bing"} <= set(kd.DATASETS)
    for info in kd.DATASETS.values():
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
            kd._export_torchvision(FakeTorchvisionSet(), out / split, FakeTorchvisionSet.classes)

    monkeypatch.setitem(kd.DOWNLOADERS, "cifar10", fake_cifar)
    s = load_split("cifar10", "train", standins=False, root=tmp_path, store=store, allow_download=True)
    assert len(s) == 4 and s.classes == ["cat", "dog"]

    def broken(raw, out):
        (out / "train" / "x").mkdir(parents=True)
        raise ConnectionError("network down")

    monkeypatch.setitem(kd.DOWNLOADERS, "gtsrb", broken)
    with pytest.raises(ConnectionError):
        load_split("gtsrb", "train", standins=False, root=tmp_path, store=store, allow_download=True)
    assert not (tmp_path / "gtsrb").exists()  # no half-exported folder is left to be trusted
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gtsrb")]


def test_without_download_permission_nothing_is_fetched(tmp_path, monkeypatch, store):
    monkeypatch.setitem(kd.DOWNLOADERS, "cifar10", lambda raw, out: pytest.fail("downloaded"))
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_split("cifar10", "train", standins=False, root=tmp_path, store=store)
