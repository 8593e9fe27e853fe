"""Fault injection, the quick cases: bad inputs, a full disk, two runs on one cache, and kills at
deterministic moments of a tiny training run.  The long cases (SIGKILLs of the smoke `reproduce`
at seeded random moments, determinism of two smoke runs) are in test_reliability.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kx_utils import __main__ as cli
from kx_utils import get_profile
from kx_utils.data.catalog import DatasetNotFoundError
from kx_utils.data.datasets import CorruptImageError, DataLayoutError, load_split
from kx_utils.experiments.attack import BudgetError, sample_transfer_set
from kx_utils.experiments.victims import get_victim
from kx_utils.orchestration import pipeline as pl
from kx_utils.orchestration import plan as planning
from kx_utils.orchestration.pipeline import RunInProgress, reproduce
from kx_utils.runtime import integrity
from kx_utils.runtime.artifacts import DiskFullError, artifact_kind
from tests.conftest import REPO
from tests.test_pipeline import FakeExecute, write_notebook

DISK_PROBE = artifact_kind("disk_probe", 1)  # the kind the full-disk test writes

# ---------------------------------------------------------------- bad inputs: data


def test_an_empty_class_folder_is_an_error_naming_it(tiny_data, store, fault_ledger):
    (tiny_data / "cifar10" / "train" / "class_09").mkdir()
    with pytest.raises(DataLayoutError, match=r"class folder .*cifar10/train/class_09 holds no images: .*"
                                              r"add its images or remove the folder"):
        load_split("cifar10", "train", standins=True, size=16, root=tiny_data, store=store)
    fault_ledger("bad input: empty class folder", 1, 1, 0)


def test_a_non_image_file_is_an_error_naming_it(tiny_data, store, fault_ledger):
    (tiny_data / "cifar10" / "train" / "class_01" / "notes.txt").write_text("labels checked by hand")
    (tiny_data / "cifar10" / "train" / "class_01" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped
    with pytest.raises(DataLayoutError, match=r"class_01/notes.txt is not an image \(kx reads .jpg, .*\): "
                                              r"move it out .* or delete it"):
        load_split("cifar10", "train", standins=True, size=16, root=tiny_data, store=store)
    (tiny_data / "cifar10" / "train" / "class_01" / "notes.txt").unlink()
    assert len(load_split("cifar10", "train", standins=True, size=16, root=tiny_data, store=store)) == 96
    fault_ledger("bad input: non-image file", 1, 1, 0)


def _png16(path: Path, pixels: np.ndarray, colour: bool) -> None:
    """A 16-bit PNG written by hand: Pillow cannot write 16-bit colour."""
    import struct
    import zlib
    h, w = pixels.shape[:2]
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if colour else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_every_image_mode_is_converted_to_8_bit_rgb_or_named(tiny_data, store, fault_ledger):
    folder = tiny_data / "cifar10" / "test" / "class_00"
    for f in folder.iterdir():
        f.unlink()
    Image.new("L", (16, 16), 90).save(folder / "grey.png")
    Image.new("CMYK", (16, 16), (0, 200, 100, 55)).save(folder / "cmyk.tif")  # -> (255 - C)(255 - K) / 255
    _png16(folder / "grey16.png", np.full((16, 16), 51400), colour=False)  # 51400 >> 8 = 200
    _png16(folder / "rgb16.png", np.tile(np.array([51400, 1000, 65535]), (16, 16, 1)), colour=True)
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    Image.new("LA", (16, 16), (70, 0)).save(folder / "grey_alpha.png")  # fully transparent: alpha dropped
    s = load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    pixel = {Path(f).name: s.images[i, :, 0, 0].tolist() for i, f in enumerate(s.files) if "class_00" in f}
    assert pixel == {"cmyk.tif": [200, 43, 122], "grey.png": [90, 90, 90], "grey16.png": [200, 200, 200],
                     "grey_alpha.png": [70, 70, 70], "palette.png": [10, 20, 30], "rgb16.png": [200, 3, 255]}

    Image.new("F", (16, 16), 0.25).save(folder / "float.tif")  # no defined 8-bit equivalent: named
    with pytest.raises(CorruptImageError, match=r"float.tif has pixel mode 'F', .*save it as 8-bit RGB"):
        load_split("cifar10", "test", standins=True, size=16, root=tiny_data, store=store)
    fault_ledger("bad input: grey / CMYK / 16-bit / palette / LA images (converted), float image (named)",
                 7, 7, 0)


def test_a_missing_split_names_the_folder_and_the_valid_splits(tiny_data, store, fault_ledger):
    with pytest.raises(DatasetNotFoundError, match=r"dataset folder .*cifar10/pool not found: .*point KX_DATA"):
        load_split("cifar10", "pool", standins=True, size=16, root=tiny_data, store=store)
    with pytest.raises(KeyError, match=r"dataset 'cifar10' has no split 'val'; its splits: train, test, pool"):
        load_split("cifar10", "val", standins=True, size=16, root=tiny_data, store=store)
    fault_ledger("bad input: missing split", 2, 2, 0)


def test_kx_data_unset_or_a_file_is_an_error_saying_how_to_set_it(tmp_path, monkeypatch, store, capsys,
                                                                  fault_ledger):
    monkeypatch.delenv("KX_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"no data folder: set KX_DATA to the folder"):
        load_split("cifar10", "train", standins=True, size=16, store=store)
    a_file = tmp_path / "datasets.tar"
    a_file.write_bytes(b"not a folder")
    monkeypatch.setenv("KX_DATA", str(a_file))
    with pytest.raises(DatasetNotFoundError, match=r"KX_DATA=.*datasets.tar is not a folder; point it at"):
        load_split("cifar10", "train", standins=True, size=16, store=store)
    monkeypatch.setenv("KX_RUNS", str(tmp_path / "runs"))
    assert cli.main(["reproduce", "--profile", "smoke"]) == 1  # checked before anything runs
    assert "datasets.tar is not a folder" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    fault_ledger("bad input: KX_DATA unset / a file", 3, 3, 0)


# ---------------------------------------------------------------- bad inputs: the command line


@pytest.mark.parametrize("argv, message", [
    (["--only", "08"], "notebook '08' matches none; the notebooks are: 01_victims, 02_knockoff"),
    (["--overrides", '{"transfer_budget": 3000'], "--overrides is not valid JSON (Expecting ',' delimiter"),
    (["--overrides", "[3000]"], "--overrides must be a JSON object of profile values, got '[3000]'"),
    (["--overrides", '{"transfer_budget": "3000"}'], "transfer_budget must be an integer, got '3000' (str)"),
    (["--overrides", '{"surrogate_recipe": {"epochs": -2}}'], "surrogate_recipe: epochs must be 1 or more, "
                                                              "got -2"),
    (["--overrides", '{"victim_overrides": {"gtsrb": {"lr": "fast"}}}'],
     "victim_overrides['gtsrb']: lr must be a number, got 'fast' (str)"),
    (["--overrides", '{"validation_fraction": 1.5}'], "validation_fraction is a fraction, from 0 to 1, got 1.5"),
    (["--overrides", '{"section5": {"table7_convergence_patience": 0}}'],
     "section5: table7_convergence_patience must be 1 or more, got 0"),
    (["--overrides", '{"batch_sizes": [64, "a"]}'], "batch_sizes must be a list of integers, got [64, 'a']"),
], ids=["unknown notebook", "malformed JSON", "not an object", "wrong type", "negative epochs",
        "victim recipe type", "fraction out of range", "zero epochs", "list item type"])
def test_bad_command_lines_exit_2_naming_the_problem(argv, message, tmp_path, monkeypatch, capsys, fault_ledger):
    monkeypatch.setenv("KX_RUNS", str(tmp_path / "runs"))
    assert cli.main(["reproduce", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()  # nothing ran
    fault_ledger(f"bad input: {' '.join(argv)}", 1, 1, 0)


def test_a_budget_larger_than_the_pool_says_how_to_fix_it(fault_ledger):
    with pytest.raises(BudgetError, match=r"a budget of 121 queries exceeds the attacker's pool of 120 images; "
                                          r"lower the budget, enlarge the pool"):
        sample_transfer_set(120, 121, seed=0)
    fault_ledger("bad input: budget larger than the pool", 1, 1, 0)


# ---------------------------------------------------------------- a full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_an_artifact_leaves_nothing_and_says_so(store, monkeypatch, fault_ledger):
    real_save = torch.save

    def half_then_full(obj, f):
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        _no_space()

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(DiskFullError, match=r"no space left on the disk of .*disk_probe while writing .*\.pt: nothing "
                                            r"was written .*point KX_CACHE") as err:
        store.save(DISK_PROBE, {"k": 1}, {"x": torch.zeros(1000)})
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert [p.name for p in (store.root / "disk_probe").iterdir() if p.suffix != ".json"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing half-written is left for a later load to trip on
        assert store.load(DISK_PROBE, {"k": 1}) is None
    fault_ledger("full disk while writing an artifact (simulated ENOSPC)", 1, 1, 0)


def test_a_full_disk_stops_reproduce_with_a_message_and_no_partial_state(tmp_path, monkeypatch, capsys,
                                                                          fault_ledger):
    runs = tmp_path / "runs"
    monkeypatch.setenv("KX_RUNS", str(runs))
    monkeypatch.setenv("KX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(planning, "plan", lambda profile: planning.Plan(profile.name))  # data and weights present
    monkeypatch.setattr(pl, "papermill_execute", FakeExecute())
    monkeypatch.setattr(os, "fsync", _no_space)
    assert cli.main(["reproduce", "--profile", "smoke", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "error: [Errno 28] no space left on the disk of" in err and "pipeline.json" in err
    assert [p.name for p in (runs / "smoke").iterdir() if not p.name.startswith(".pipeline")] == []
    fault_ledger("full disk while writing the pipeline state (simulated ENOSPC)", 1, 1, 0)


# ---------------------------------------------------------------- two runs on one cache


@pytest.fixture
def notebooks(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in pl.NOTEBOOKS:
        write_notebook(folder / f"{name}.ipynb")
    return folder


def test_a_second_reproduce_on_the_same_cache_stops_naming_the_first(notebooks, tmp_path, monkeypatch,
                                                                      fault_ledger):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KX_CACHE", str(cache))
    second_runs = tmp_path / "runs_b"
    refused = []

    class StartsASecondRun(FakeExecute):
        def __call__(self, notebook, executed, parameters, cwd):
            if notebook.stem == "02_knockoff":  # the first run is half-way: try another runs folder
                other = FakeExecute()
                with pytest.raises(RunInProgress) as err:
                    reproduce("smoke", runs=second_runs, notebook_dir=notebooks, execute=other, log=lambda m: None)
                refused.append((str(err.value), other.calls))
            super().__call__(notebook, executed, parameters, cwd)

    first = StartsASecondRun()
    reproduce("smoke", runs=tmp_path / "runs_a", notebook_dir=notebooks, execute=first, log=lambda m: None)
    assert first.calls == list(pl.NOTEBOOKS)
    (message, second_calls), = refused
    assert f"{cache} is in use by another kx_utils command (pid {os.getpid()} on " in message
    assert f"reproduce --profile smoke into {tmp_path / 'runs_a' / 'smoke'}" in message
    assert "give this run a cache of its own with KX_CACHE=" in message
    assert second_calls == [] and not (second_runs / "smoke" / "pipeline.json").exists()  # wrote nothing
    # once the first has ended, the cache is free again
    reproduce("smoke", runs=second_runs, notebook_dir=notebooks, execute=FakeExecute(), log=lambda m: None)
    fault_ledger("two reproduce commands on one cache", 1, 1, 0)


def test_a_killed_holder_releases_the_cache_and_the_cli_exits_3_while_it_lives(notebooks, tmp_path, monkeypatch,
                                                                              capsys, fault_ledger):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KX_CACHE", str(cache))
    monkeypatch.setenv("KX_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(pl, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setattr(planning, "plan", lambda profile: planning.Plan(profile.name))
    monkeypatch.setattr(pl, "papermill_execute", FakeExecute())
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from kx_utils.runtime.locks import exclusive
            with exclusive({str(cache / '.reproduce.lock')!r}, "a holder in a test", ""):
                print("held", flush=True)
                time.sleep(600)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(["reproduce", "--profile", "smoke", "--no-report"]) == 3
        err = capsys.readouterr().err
        assert f"pid {holder.pid} on" in err and "a holder in a test" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert cli.main(["reproduce", "--profile", "smoke", "--no-report"]) == 0  # kill -9 freed the lock
    fault_ledger("reproduce while another holds the cache; holder killed -9", 2, 2, 0)


# ---------------------------------------------------------------- kills at deterministic moments

# The child trains a tiny victim and SIGKILLs itself at its n-th checked write: half-way through the
# payload, or with the file complete but not yet renamed into place.
DYING_CHILD = textwrap.dedent("""
    import io, json, os, signal, sys
    import torch
    from kx_utils.runtime import artifacts
    from kx_utils import get_profile
    from kx_utils.experiments.victims import get_victim

    torch.set_num_threads(1)
    kill_at, moment, overrides = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    writes = 0
    real_save, real_replace = torch.save, os.replace

    def dying_save(obj, f):
        global writes
        writes += 1
        if writes == kill_at and moment == "mid-write":
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(obj, f)

    def dying_replace(src, dst):
        if writes == kill_at and moment == "before-rename" and str(dst).endswith((".pt", ".ckpt")):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    torch.save = dying_save
    artifacts.os.replace = dying_replace
    get_victim(get_profile("smoke", **overrides), "cifar10_9l")
""")


def _victim_fingerprint(victim) -> tuple:
    history = [{k: v for k, v in row.items() if k != "train_seconds"} for row in victim.history]
    weights = {k: v.clone() for k, v in victim.model.state_dict().items()}
    return victim.test_accuracy, victim.per_class_accuracy, history, weights


def _same(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and a[3].keys() == b[3].keys() and all(torch.equal(a[3][k], b[3][k]) for k in a[3])


def test_kills_at_deterministic_moments_of_training_lose_nothing(tiny_data, tmp_path, monkeypatch,
                                                                 one_torch_thread, fault_ledger):
    overrides = {"data_root": str(tiny_data), "scratch_image_size": 16, "train_per_class": None,
                 "test_per_class": None, "scratch_recipe": {"epochs": 3, "batch_size": 16},
                 "device": "cpu", "progress": False}
    writes = []
    real_dump = integrity.dump
    monkeypatch.setattr(integrity, "dump", lambda obj, f, identity: writes.append(identity) or
                        real_dump(obj, f, identity))
    profile = get_profile("smoke", **overrides, cache_root=str(tmp_path / "uninterrupted"))
    reference = _victim_fingerprint(get_victim(profile, "cifar10_9l"))
    monkeypatch.undo()
    # the train and test splits' content digests (the victim's key), decoded train, decoded test,
    # three epoch checkpoints, the victim
    assert [w.split("/")[0] for w in writes] == ["split_content", "split_content", "decoded", "decoded",
                                                 "victim", "victim", "victim", "victim"]

    trials = [(1, "mid-write"), (3, "mid-write"), (6, "mid-write"), (6, "before-rename"), (8, "mid-write")]
    survived = lost = 0
    for n, moment in trials:
        cache = tmp_path / f"killed_{n}_{moment}"
        child = subprocess.run([sys.executable, "-c", DYING_CHILD, str(n), moment,
                                json.dumps({**overrides, "cache_root": str(cache)})],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        assert child.returncode == -signal.SIGKILL, child.stderr
        debris = sorted(p.name for p in cache.rglob("*.tmp"))
        rerun = get_victim(get_profile("smoke", **overrides, cache_root=str(cache)), "cifar10_9l")
        loads = all(integrity.load(p) is not None for p in cache.rglob("*") if p.suffix in (".pt", ".ckpt"))
        equal = _same(_victim_fingerprint(rerun), reference)
        survived += bool(debris) and loads and equal and not rerun.from_cache
        lost += not equal
    fault_ledger("SIGKILL at a deterministic write of a tiny training run, then rerun", len(trials), survived, lost)
    assert (survived, lost) == (len(trials), 0)
