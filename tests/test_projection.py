"""The GPU-hours projection: image passes per task, throughput, the list schedule."""

from __future__ import annotations

import json

import pytest
import torch

from kx_utils import get_profile
from kx_utils.projection import (STATED_CEILING_IMAGES_PER_S, Throughput, Work, critical_path_order, list_schedule,
                                 load_bench, project, surrogate_work)


def test_list_schedule_by_hand():
    durations = {"a": 2.0, "b": 3.0, "c": 1.0, "d": 4.0}
    after = {"a": (), "b": (), "c": ("a",), "d": ("c",)}
    order = ["a", "b", "c", "d"]
    assert list_schedule(durations, after, order, 1) == 10.0
    # two GPUs: a [0,2] and b [0,3]; c after a on the first [2,3]; d after c [3,7]
    assert list_schedule(durations, after, order, 2) == 7.0
    assert list_schedule(durations, after, order, 8) == 7.0  # the chain a-c-d is the floor


def test_surrogate_work_counts_the_passes(monkeypatch):
    mini = get_profile("mini", data_root="/nonexistent")  # sizes from the paper's Table 1 when no data
    work = surrogate_work(mini, "caltech", budget=6000, validation_fraction=0.1, test_curve=False,
                          recipe=mini.surrogate_recipe.replace(epochs=6))
    assert work[0] == Work("inference", "mobilenet_v2", 48, 6000)  # the victim answers every query
    assert work[1] == Work("train", "mobilenet_v2", 48, 5400 * 6)  # 10% held out, 6 epochs
    # scored once at the end (test_curve=False) on the paper's 6,904 test images, validation every epoch
    assert work[2].images == pytest.approx((6904 / 6 + 600) * 6)


def test_throughput_measured_first_then_stated(monkeypatch):
    import kx_utils.models as models
    monkeypatch.setattr(models, "build_model", lambda arch, classes, pretrained=False: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10)))  # 2 * 48 * 10 = 960 FLOPs per image
    bench = {"device_name": "Test GPU", "timings": [
        {"section": "train", "model": "resnet34", "size": 224, "batch": 64, "path": "bf16", "default": True,
         "images_per_s": 1234.0},
        {"section": "train", "model": "resnet34", "size": 224, "batch": 64, "path": "fp32", "default": False,
         "images_per_s": 99999.0}]}
    t = Throughput(bench, peak_tflops=1e-6, peak_fraction=0.5)  # 0.5 MFLOP/s reached
    assert t.images_per_s("train", "resnet34", 224) == 1234.0
    assert "measured on Test GPU" in t.used[("train", "resnet34", 224)][1]
    assert t.images_per_s("train", "tiny", 4) == pytest.approx(0.5e6 / (3 * 960))
    assert t.images_per_s("inference", "tiny", 4) == pytest.approx(0.5e6 / 960)
    assert Throughput(None).images_per_s("inference", "tiny", 4) == STATED_CEILING_IMAGES_PER_S


def test_projection_of_smoke_adds_up():
    p = project(get_profile("smoke", data_root="/nonexistent"), gpus=(1, 2, 4))
    assert set(p.per_notebook) == {"01_victims", "02_knockoff", "03_detection", "04_architecture_and_output",
                                   "05_hyperparameters", "06_in_distribution"}
    total = sum(p.per_notebook.values())
    assert p.makespan[1] == pytest.approx(total)  # one GPU: every task, one after another
    assert p.makespan[4] <= p.makespan[2] <= p.makespan[1] and p.makespan[2] < p.makespan[1]
    assert "| **total** |" in p.text()


def test_a_bad_benchmark_file_is_named(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"device": "cuda"}))
    with pytest.raises(ValueError, match="not a benchmark of `python -m kx_utils bench --json`"):
        load_bench(bad)
    with pytest.raises(ValueError, match="bench --device cuda --json"):
        load_bench(tmp_path / "missing.json")


def test_plan_rejects_zero_gpus(capsys):
    from kx_utils.__main__ import main
    assert main(["plan", "--profile", "smoke", "--gpus", "0"]) == 2
    assert "positive counts" in capsys.readouterr().err


def test_the_task_heading_the_longest_chain_goes_first_and_dependencies_stay_first():
    # a (1 s) -> b (10 s); c 6 s; d 5 s; listed as the grid lists them
    durations = {"a": 1.0, "c": 6.0, "d": 5.0, "b": 10.0}
    after = {"a": (), "c": (), "d": (), "b": ("a",)}
    order = critical_path_order(durations, after, ["a", "c", "d", "b"])
    assert order == ["a", "b", "c", "d"]  # ranks: a 11, b 10, c 6, d 5
    # two workers: a (0-1), b (1-11), c (1-7), d (7-12); in the listed order b starts last: 6-16
    assert list_schedule(durations, after, order, 2) == 12.0
    assert list_schedule(durations, after, ["a", "c", "d", "b"], 2) == 16.0
    long_last = {"x": 3.0, "y": 3.0, "z": 6.0}
    none = {k: () for k in long_last}
    assert list_schedule(long_last, none, ["x", "y", "z"], 2) == 9.0
    assert list_schedule(long_last, none, critical_path_order(long_last, none, ["x", "y", "z"]), 2) == 6.0
    # a zero-time dependency ties with its dependent and still comes first
    assert critical_path_order({"p": 0.0, "q": 4.0}, {"p": (), "q": ("p",)}, ["p", "q"]) == ["p", "q"]
