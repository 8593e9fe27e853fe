"""Corrupt artifacts: every damaged file is caught by its checksum, named in a warning, set aside
and recomputed, and nothing damaged is ever unpickled."""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from kx_utils.core.recipe import Recipe
from kx_utils.core.train import fit
from kx_utils.runtime import integrity
from kx_utils.runtime.artifacts import (
    ArtifactStore,
    ArtifactWarning,
    CorruptArtifactError,
    artifact_kind,
    atomic_save,
)

PROBE = artifact_kind("probe", 1)  # the kind these tests store
OTHER = artifact_kind("probe_other", 1)
PACKAGE = Path(__file__).resolve().parent.parent / "kx_utils"


def payload(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"weights": torch.randn(2000, generator=gen), "classes": ["a", "b"], "accuracy": 0.5 + seed}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and torch.equal(a["weights"], b["weights"]) and \
        a["classes"] == b["classes"] and a["accuracy"] == b["accuracy"]


def truncate(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    return data[:rng.randrange(0, len(data))]


def flip(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        # half the flips land in the header, half in the payload: both must be caught
        at = rng.randrange(0, integrity.HEADER_BYTES) if rng.random() < 0.5 else rng.randrange(len(data))
        damaged[at] ^= rng.randint(1, 255)
    return bytes(damaged)


def empty(_data: bytes, _rng: random.Random, _other: bytes) -> bytes:
    return b""


def foreign(_data: bytes, _rng: random.Random, other: bytes) -> bytes:
    return other  # another artifact's complete, valid file copied into this one's place


def garbage(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))


CORRUPTIONS = {  # how, trials (seeded), the reason the warning must give
    "truncated": (truncate, 20, r"truncated|empty|header"),
    "bytes flipped": (flip, 30, r"damaged|checksum|header|another artifact|truncated|longer"),
    "empty": (empty, 1, r"the file is empty"),
    "another artifact's file": (foreign, 2, r"it holds another artifact \(probe/.*\.pt\), not probe/"),
    "random bytes": (garbage, 5, r"no kx_utils header"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_artifact_is_detected_named_set_aside_and_recomputed(name, tmp_path, monkeypatch,
                                                                       fault_ledger):
    corrupt, trials, reason = CORRUPTIONS[name]
    rng = random.Random(f"corruption {name}")
    survived = lost = 0
    for trial in range(trials):
        store = ArtifactStore(tmp_path / f"cache{trial}")
        path = store.save(PROBE, {"trial": trial}, payload(trial))
        other = store.save(PROBE, {"trial": trial, "other": True}, payload(trial + 100)).read_bytes()
        bad = corrupt(path.read_bytes(), rng, other)
        path.write_bytes(bad)

        def unpickled(*args, **kwargs):
            raise AssertionError(f"{name}: a damaged file reached torch.load")

        monkeypatch.setattr(torch, "load", unpickled)
        with pytest.warns(ArtifactWarning) as caught:
            found = store.load(PROBE, {"trial": trial})
        monkeypatch.undo()
        message = str(caught[0].message)
        assert found is None, f"{name}, trial {trial}: a damaged file was trusted"
        assert str(path) in message and "probe artifact" in message and "recomputed" in message
        assert re.search(reason, message), message
        aside = path.with_name(path.name + ".corrupt")
        assert aside.read_bytes() == bad and not path.exists()

        calls = []
        again = store.cached(PROBE, {"trial": trial}, lambda: calls.append(1) or payload(trial))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the recomputed file verifies: no second warning
            reloaded = store.load(PROBE, {"trial": trial})
        lost += not (same(reloaded, payload(trial)) and same(again, payload(trial)))
        survived += calls == [1] and same(reloaded, payload(trial))
    fault_ledger(f"corrupt artifact: {name}", trials, survived, lost)
    assert (survived, lost) == (trials, 0)


def test_files_written_before_checksums_are_recomputed_with_one_warning_per_cache(store, fault_ledger):
    old = [store.path(PROBE, {"old": i}) for i in range(3)]
    for i, path in enumerate(old):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload(i), path)  # what kx_utils wrote before checksums: a bare torch file
    with pytest.warns(ArtifactWarning) as caught:
        found = [store.load(PROBE, {"old": i}) for i in range(3)]
    assert found == [None, None, None] and not any(p.exists() for p in old)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(old[0]) in message and "without a checksum" in message and str(store.root) in message
    recomputed = store.cached(PROBE, {"old": 1}, lambda: payload(1))
    assert same(store.load(PROBE, {"old": 1}), payload(1)) and same(recomputed, payload(1))
    fault_ledger("artifact written before checksums", 3, 3, 0)


class Arbitrary:
    pass


def test_verified_bytes_that_weights_only_refuses_are_an_error_not_a_recompute(store, monkeypatch):
    path = store.path(PROBE, {"k": 1})
    with monkeypatch.context() as m:  # as code from before the writer's check stored it
        m.setattr(integrity, "not_plain", lambda obj: None)
        atomic_save({"obj": Arbitrary()}, path)  # a valid checksum over a pickled class
    with pytest.raises(CorruptArtifactError, match=r"weights_only=True \(WeightsUnpickler error: "
                       r"Unsupported global: .*Arbitrary.*fix that code"):
        store.load(PROBE, {"k": 1})
    assert path.is_file()  # not a damaged file: left for the author to see


@pytest.mark.parametrize("value, where", [
    ({"Cs": list(np.logspace(-4, 4, 3))}, r"\['Cs'\]\[0\] is numpy.float64"),  # what detect/binary.py stored
    ({"n": np.int64(3)}, r"\['n'\] is numpy.int64"),
    ({"rows": [{"obj": Arbitrary()}]}, r"\['rows'\]\[0\]\['obj'\] is .*Arbitrary"),
    ({np.str_("k"): 1}, r"a key of the artifact is numpy.str_"),
])
def test_the_writer_refuses_what_weights_only_would_refuse_and_writes_nothing(store, value, where):
    with pytest.raises(TypeError, match=where + ".*weights_only=True.*convert it"):
        store.save(PROBE, {"k": 2}, value)
    assert not store.path(PROBE, {"k": 2}).exists()
    assert not [p for p in store.path(PROBE, {"k": 2}).parent.iterdir() if p.suffix == ".tmp"]


def test_plain_values_round_trip_through_the_store(store):
    value = {"Cs": [float(c) for c in np.logspace(-4, 4, 3)], "t": torch.ones(2), "shape": torch.Size([2]),
             "dtype": torch.uint8, "nested": ({"a": None, "b": True}, [1, "x"])}
    store.save(PROBE, {"k": 3}, value)
    loaded = store.load(PROBE, {"k": 3})
    assert loaded["Cs"] == value["Cs"] and loaded["dtype"] is torch.uint8 and loaded["nested"] == value["nested"]


def test_a_file_copied_to_another_cache_keeps_its_identity(tmp_path):
    first, second = ArtifactStore(tmp_path / "a"), ArtifactStore(tmp_path / "b")
    path = first.save(PROBE, {"k": 1}, payload(1))
    target = second.path(PROBE, {"k": 1})
    target.parent.mkdir(parents=True)
    shutil.copy(path, target)
    assert same(second.load(PROBE, {"k": 1}), payload(1))
    other_kind = second.path(OTHER, {"k": 1})  # the same key under another kind is another artifact
    other_kind.parent.mkdir(parents=True)
    shutil.copy(path, other_kind)
    with pytest.warns(ArtifactWarning, match=r"holds another artifact \(probe/"):
        assert second.load(OTHER, {"k": 1}) is None


def test_the_header_records_identity_length_and_checksum(tmp_path):
    path = tmp_path / "probe" / "k.pt"
    atomic_save({"x": torch.arange(4)}, path)
    data = path.read_bytes()
    head = data[:integrity.HEADER_BYTES]
    end = head.index(b"}") + 1
    assert head.startswith(b"KXCHECKED1\n{") and head[end:] == b" " * (integrity.HEADER_BYTES - end - 1) + b"\n"
    fields = json.loads(head[len(integrity.MAGIC):end])
    body = data[integrity.HEADER_BYTES:]
    assert fields == {"identity": "probe/k.pt", "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_every_torch_load_in_the_package_is_weights_only_and_nothing_unpickles():
    loads = []
    for source in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                if owner == "torch" and node.func.attr == "load":
                    flags = {k.arg: k.value for k in node.keywords}
                    weights_only = flags.get("weights_only")
                    assert isinstance(weights_only, ast.Constant) and weights_only.value is True, \
                        f"{source.name}:{node.lineno}: torch.load without weights_only=True"
                    loads.append(f"{source.name}:{node.lineno}")
                assert not (owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads")), \
                    f"{source.name}:{node.lineno}: {owner}.{node.func.attr} unpickles arbitrary code"
    assert len(loads) == 2  # integrity.load (every artifact and checkpoint) and models (pretrained weights)
    for notebook in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "torch.load" not in code and "pickle" not in code, f"{notebook.name} reads files itself"


def test_concurrent_writers_of_one_key_never_expose_a_partial_file(store):
    """The Ray executor's case: several processes computing the same artifact write it at once."""
    value = payload(7)
    errors, stop = [], threading.Event()

    def write():
        for _ in range(15):
            store.save(PROBE, {"shared": 1}, value)

    def read():
        while not stop.is_set():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                found = store.load(PROBE, {"shared": 1})
            if caught or (found is not None and not same(found, value)):
                errors.append((found, [str(w.message) for w in caught]))

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write) for _ in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert same(store.load(PROBE, {"shared": 1}), value)
    assert sorted(p.name for p in store.root.joinpath(PROBE).iterdir()) == \
        sorted([store.path(PROBE, {"shared": 1}).name, store.path(PROBE, {"shared": 1}).with_suffix(".json").name])


def _tiny_training(checkpoint: Path) -> list[dict]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 3, 4, 4), dtype=torch.uint8, generator=gen)
    labels = (images.float().mean((1, 2, 3)) > 127).long()
    history = fit(model, images, labels, Recipe(epochs=3, batch_size=8, lr=0.05), seed=0, device="cpu",
                  checkpoint=checkpoint, progress=False)
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in history]


def test_a_damaged_training_checkpoint_is_set_aside_and_training_starts_over(tmp_path):
    reference = _tiny_training(tmp_path / "clean" / "run.ckpt")
    checkpoint = tmp_path / "damaged" / "run.ckpt"
    atomic_save({"epoch": 2}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-3])
    with pytest.warns(ArtifactWarning, match=r"training checkpoint .*run\.ckpt failed verification \(truncated"):
        history = _tiny_training(checkpoint)
    assert history == reference and [row["epoch"] for row in history] == [1, 2, 3]
    assert checkpoint.with_name("run.ckpt.corrupt").is_file()
