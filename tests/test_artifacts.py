import os

import pytest
import torch

from kx_utils.artifacts import CorruptArtifactError, atomic_save, settings_key


def test_settings_key_ignores_order_and_sees_values():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})
    assert settings_key({"lr": 0.1}) != settings_key({"lr": 0.10000001})


def test_cached_computes_once(store):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = store.cached("thing", {"k": 1}, compute)
    second = store.cached("thing", {"k": 1}, compute)
    assert len(calls) == 1
    assert torch.equal(first["x"], second["x"])
    store.cached("thing", {"k": 2}, compute)
    assert len(calls) == 2


def test_a_crash_while_writing_leaves_no_artifact(store, monkeypatch):
    def exploding_save(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        store.save("thing", {"k": 1}, {"x": 1})
    monkeypatch.undo()
    assert store.load("thing", {"k": 1}) is None
    folder = store.root / "thing"
    assert not [p for p in folder.iterdir() if p.suffix in (".pt", ".tmp")]


def test_corrupt_artifact_is_an_error_naming_the_file(store):
    path = store.path("thing", {"k": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(CorruptArtifactError, match=str(path.name)):
        store.load("thing", {"k": 1})


class Arbitrary:
    pass


def test_artifacts_load_with_weights_only(store):
    path = store.path("thing", {"k": 1})
    path.parent.mkdir(parents=True)
    torch.save({"obj": Arbitrary()}, path)  # pickled code is refused on load
    with pytest.raises(CorruptArtifactError):
        store.load("thing", {"k": 1})


def test_atomic_save_replaces_existing_file(tmp_path):
    path = tmp_path / "a.pt"
    atomic_save({"v": 1}, path)
    atomic_save({"v": 2}, path)
    assert torch.load(path, weights_only=True)["v"] == 2
    assert os.listdir(tmp_path) == ["a.pt"]
