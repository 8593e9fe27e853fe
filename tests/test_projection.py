"""The GPU-hours projection: image passes per task, throughput, the list schedule."""

from __future__ import annotations

import json

import pytest
import torch

from kx_utils import get_profile
from kx_utils.experiments.registry import (
    Experiment,
    Task,
    UnknownExperiment,
    registered,
)
from kx_utils.experiments.workload import (
    LOGISTIC_BYTES_PER_S,
    LOGISTIC_ITERATIONS,
    TASK_START_S,
    UnmodelledCall,
    Work,
    call_cost,
    cpu_work,
    surrogate_work,
    task_work,
)
from kx_utils.orchestration.projection import (
    HIGH,
    LOW,
    REFERENCE,
    STATED_CEILING_IMAGES_PER_S,
    STEP_OVERHEAD_S,
    Projection,
    Throughput,
    critical_path_order,
    estimated_seconds,
    list_schedule,
    load_bench,
    project,
    task_seconds,
)


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
    # the victim answers every query, in evaluation batches of the GPU
    assert work[0] == Work("inference", "mobilenet_v2", 48, 6000, mini.cuda_eval_batch_size)
    assert work[1] == Work("train", "mobilenet_v2", 48, 5400 * 6, 64)  # 10% held out, 6 epochs, the recipe's batch
    # scored once at the end (test_curve=False) on the paper's 6,904 test images, validation every epoch
    assert work[2].images == pytest.approx((6904 / 6 + 600) * 6)


def test_throughput_measured_first_then_stated(monkeypatch):
    import kx_utils.core.models as models
    monkeypatch.setattr(models, "build_model", lambda arch, classes, pretrained=False: torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10)))  # 2 * 48 * 10 = 960 FLOPs per image
    bench = {"device_name": "Test GPU", "timings": [
        {"section": "train", "model": "resnet34", "size": 224, "batch": 64, "path": "bf16", "default": True,
         "images_per_s": 1234.0},
        {"section": "train", "model": "resnet34", "size": 224, "batch": 64, "path": "fp32", "default": False,
         "images_per_s": 99999.0}]}
    t = Throughput(bench, peak_tflops=1e-6, peak_fraction=0.5)  # 0.5 MFLOP/s reached
    assert t.images_per_s("train", "resnet34", 224, 64) == 1234.0
    assert "measured on Test GPU" in t.used[("train", "resnet34", 224, 64)][LOW][1]
    assert t.images_per_s("train", "tiny", 4, 64) == pytest.approx(0.5e6 / (3 * 960))
    assert t.images_per_s("inference", "tiny", 4, 1024) == pytest.approx(0.5e6 / 960)
    assert Throughput(None).images_per_s("inference", "tiny", 4, 1024) == STATED_CEILING_IMAGES_PER_S


def test_projection_of_smoke_adds_up():
    p = project(get_profile("smoke", data_root="/nonexistent"), gpus=(1, 2, 4))
    for end in (LOW, HIGH):
        assert set(p.per_notebook[end]) == {"01_victims", "02_knockoff", "03_detection",
                                            "04_architecture_and_output", "05_hyperparameters", "06_in_distribution",
                                            "07_defences"}
        total = p.total(end)
        assert p.makespan[end][1] == pytest.approx(total)  # one GPU: every task, one after another
        assert p.makespan[end][4] <= p.makespan[end][2] <= p.makespan[end][1] < total * 1.0000001
        assert p.makespan[end][2] < p.makespan[end][1]
        assert sum(p.parts[end].values()) == pytest.approx(total)  # what the seconds go to covers them all
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


# ---------------------------------------------------------------- batch sizes, the two ends, CPU work

PAPER = get_profile("paper", data_root="/nonexistent")  # the paper's Table 1 counts: no data here
RESNET34_BENCH = {"device_name": "Test GPU", "timings": [
    {"section": "train", "model": "resnet34", "size": 224, "batch": 16, "path": "bf16", "default": True,
     "images_per_s": 2000.0},
    {"section": "train", "model": "resnet34", "size": 224, "batch": 64, "path": "bf16", "default": True,
     "images_per_s": 5000.0},
    {"section": "train", "model": "resnet34", "size": 224, "batch": 256, "path": "bf16", "default": True,
     "images_per_s": 6000.0},
    {"section": "inference", "model": "resnet34", "size": 224, "batch": 1024, "path": "bf16", "default": True,
     "images_per_s": 20000.0}]}


def _table7(batch: int) -> Task:
    return Task(f"surrogate/table7/caltech/bs{batch}/seed0", "05_hyperparameters", "kx_utils.experiments.attack:knockoff",
                ("caltech",), {"batch_size": batch, "seed": 0}, experiment="table7")


def test_a_batch_16_task_is_costed_at_the_batch_16_rate_when_measured():
    t = Throughput(RESNET34_BENCH)
    train = [w for w in task_work(PAPER, _table7(16)) if w.section == "train"]
    assert train == [Work("train", "resnet34", 224, 100_000 * 200, 16)]
    for end in (LOW, HIGH):  # a measured rate is the rate at both ends
        assert task_seconds(PAPER, _table7(16), t, end)["train resnet34 @ 224 px"] == pytest.approx(2e7 / 2000.0)
        assert task_seconds(PAPER, _table7(64), t, end)["train resnet34 @ 224 px"] == pytest.approx(2e7 / 5000.0)


def test_one_tasks_seconds_by_hand():
    # Table 7's batch-16 surrogate of Caltech: the victim answers 100,000 queries (20,000 img/s), the
    # surrogate trains 200 epochs of them at 2,000 img/s and scores the 6,904 test images every epoch
    expected = 100_000 / 20_000 + 100_000 * 200 / 2_000 + 6_904 * 200 / 20_000  # 5 + 10,000 + 69.04 s
    seconds = estimated_seconds(PAPER, [_table7(16)], Throughput(RESNET34_BENCH))
    assert seconds == {"surrogate/table7/caltech/bs16/seed0": pytest.approx(expected)}
    assert expected == pytest.approx(10_074.04)


def test_an_unmeasured_batch_size_takes_a_neighbours_rate_and_is_flagged():
    t = Throughput(RESNET34_BENCH)
    # batch 128: the next larger measured (256) at the low end, the next smaller (64) at the high end
    assert t.images_per_s("train", "resnet34", 224, 128, LOW) == 6000.0
    assert t.images_per_s("train", "resnet34", 224, 128, HIGH) == 5000.0
    assert "batch 128 NOT MEASURED: batch 64's rate" in t.used[("train", "resnet34", 224, 128)][HIGH][1]
    # batch 8: nothing smaller measured, so batch 16's time per image plus the overhead of the extra steps
    assert t.images_per_s("train", "resnet34", 224, 8, LOW) == 2000.0
    slower = 1 / (1 / 2000.0 + STEP_OVERHEAD_S * (1 / 8 - 1 / 16))
    assert t.images_per_s("train", "resnet34", 224, 8, HIGH) == pytest.approx(slower)
    assert "NOT MEASURED" in Projection("p", (1,), 0, {LOW: {}, HIGH: {}}, {LOW: {1: 0}, HIGH: {1: 0}},
                                        {LOW: {"x": 0.0}, HIGH: {"x": 0.0}}, t.used).text()


def test_the_high_ends_stated_rate_is_the_reference_scaled():
    t = Throughput()
    arch, size, batch, rate = REFERENCE
    assert t.images_per_s("train", arch, size, batch, HIGH) == pytest.approx(rate)  # 4,500 at batch 64
    per_image = 1 / rate - STEP_OVERHEAD_S / batch  # the reference without its per-step overhead
    assert t.images_per_s("train", arch, size, 16, HIGH) == pytest.approx(1 / (per_image + STEP_OVERHEAD_S / 16))
    assert t.images_per_s("train", arch, size, 16, HIGH) < t.images_per_s("train", arch, size, 256, HIGH) < \
        t.images_per_s("train", arch, size, 256, LOW)
    # twice the FLOPs per image (ResNet34 at 224 px against ResNet18), about twice the compute time
    r18 = 1 / t.images_per_s("train", "resnet18", 224, batch, HIGH) - STEP_OVERHEAD_S / batch
    assert per_image / r18 == pytest.approx(7.33 / 3.63, rel=0.02)
    with pytest.raises(ValueError, match="'low' or 'high'"):
        t.images_per_s("train", arch, size, batch, "middle")
    with pytest.raises(ValueError, match="leaves no time"):
        Throughput(step_overhead_s=1.0)


def test_the_paper_range_low_end_at_most_high_end_and_what_dominates():
    p = project(PAPER)
    assert p.total(LOW) < p.total(HIGH)
    for n in p.gpus:
        assert p.makespan[LOW][n] <= p.makespan[HIGH][n]
    for nb, seconds in p.per_notebook[LOW].items():
        assert seconds <= p.per_notebook[HIGH][nb]
    for ends in p.sources.values():
        assert ends[HIGH][0] <= ends[LOW][0]
    label, share = p.dominant(LOW)
    assert label == "train resnet34 @ 224 px" and share > 0.9  # 200-epoch ResNet34 training at 224 px
    text = p.text()
    assert f"to {p.total(HIGH) / 3600:,.1f} on H200s" in text
    assert "Dominant: train resnet34 @ 224 px, " in text and "Not counted at either end" in text
    assert "ImageNet train: 90,000, the paper's count (no folder on this machine)" in text
    assert "train     resnet34 @ 224 px, batch 16:" in text  # Table 7's batch 16 has a rate of its own


def test_the_dominant_line_by_hand():
    parts = {LOW: {"train resnet34 @ 224 px": 90.0, "inference resnet34 @ 224 px": 10.0},
             HIGH: {"train resnet34 @ 224 px": 150.0, "CPU: decoding": 40.0, "inference resnet34 @ 224 px": 10.0}}
    p = Projection("p", (1,), 1, {LOW: {"nb": 100.0}, HIGH: {"nb": 200.0}}, {LOW: {1: 100.0}, HIGH: {1: 200.0}},
                   parts, {}, notebook_parts={"nb": parts[HIGH]})
    assert p.dominant(HIGH) == ("train resnet34 @ 224 px", 0.75)
    assert "Dominant: train resnet34 @ 224 px, 90% of the low end and 75% of the high end; next at the high " \
           "end: CPU: decoding 20%, inference resnet34 @ 224 px 5%" in p.text()


def test_cpu_work_decodes_once_reloads_after_and_fits_each_detector_once():
    table4 = Task("detection/table4/caltech", "03_detection", "kx_utils.experiments.detection:table4_result", ("caltech",),
                  experiment="table4")
    seen: set = set()
    first = cpu_work(PAPER, call_cost(PAPER, table4), seen)
    kinds = [c.kind for c in first]
    assert kinds.count("task starts") == 1 and first[0].seconds == TASK_START_S
    assert "reloads" not in kinds and kinds.count("decoding") == 5  # Caltech train/test, ImageNet x2, OpenImages
    # the RN101*CV detector: 10 folds x 10 strengths on 9/10 of the data, the refit on all of it
    n, dim, fits = 23_703 + 90_000, 2048, 10 * 9 + 1
    [logistic] = [c for c in first if c.kind == "logistic regressions"]
    assert logistic.seconds == pytest.approx(fits * LOGISTIC_ITERATIONS * 16 * n * dim / LOGISTIC_BYTES_PER_S)
    again = cpu_work(PAPER, call_cost(PAPER, Task("detection/filter/caltech", "03_detection",
                                                  "kx_utils.experiments.detection:filter_report", ("caltech",))), seen)
    assert {c.kind for c in again} == {"task starts", "reloads"}  # decoded and fitted already
    reload = next(c for c in again if c.kind == "reloads")
    assert reload.amount in {23_703 * 3 * 224 * 224, 90_000 * 3 * 224 * 224}
    # the low end counts image passes only: no CPU work in it
    assert not any(k.startswith("CPU") for k in task_seconds(PAPER, table4, Throughput(), LOW))


def test_a_benchmark_row_without_a_batch_is_refused(tmp_path):
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"timings": [{"section": "train", "model": "m", "size": 32, "images_per_s": 1.0}]}))
    with pytest.raises(ValueError, match="without section, model, size, batch"):
        load_bench(bad)


def test_a_task_the_projection_has_no_model_of_is_an_error_never_zero(monkeypatch):
    import kx_utils.orchestration.projection as projection
    smoke = get_profile("smoke", data_root="/nonexistent")
    # a task of a declared experiment whose call the cost model does not know
    extra = Task("detection/new_thing", "03_detection", "kx_utils.experiments.detection:new_thing", experiment="table4")
    monkeypatch.setattr(projection, "grid_tasks", lambda profile: [extra])
    with pytest.raises(UnmodelledCall, match="detection/new_thing: no cost model of kx_utils.experiments.detection:new"):
        project(smoke)
    # a task no experiment declares
    stray = Task("detection/stray", "03_detection", "kx_utils.experiments.detection:table4_result", ("caltech",))
    monkeypatch.setattr(projection, "grid_tasks", lambda profile: [stray])
    with pytest.raises(UnknownExperiment, match="no experiment ''"):
        project(smoke)
    # an experiment with tasks but no cost model
    with registered(Experiment("costless", "03_detection", (), lambda p: "", lambda b: None)):
        monkeypatch.setattr(projection, "grid_tasks", lambda profile: [Task("x", "03_detection", "m:f",
                                                                            experiment="costless")])
        with pytest.raises(UnknownExperiment, match="'costless' declares tasks but no cost model"):
            project(smoke)
