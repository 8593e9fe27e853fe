"""kx_utils.bench.timing: throughput measurements, and the Markdown and JSON reports they make (kx_utils.bench.report)."""

import json
import math

import pytest
import torch

from kx_utils.__main__ import main
from kx_utils.bench.report import markdown
from kx_utils.bench.timing import (
    Timing,
    inference_models,
    inference_rate,
    package_path,
    profile_batch_sizes,
    swept_batches,
    training_models,
    training_rate,
)
from kx_utils.config.profiles import get_profile

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only: nothing below runs on it without a GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _positive_finite(rate):
    return isinstance(rate, float) and math.isfinite(rate) and rate > 0


# ---------------------------------------------------------------- measurements


def test_training_rate_fp32():
    assert _positive_finite(training_rate("gtsrb_5l", 32, 8, path="fp32", device=CPU, seconds=0.2))


def test_training_rate_contiguous():
    assert _positive_finite(training_rate("gtsrb_5l", 32, 8, path="contiguous", device=CPU, seconds=0.1))


def test_training_rate_frozen_prefix():
    assert _positive_finite(training_rate("mobilenet_v2", 32, 8, path="frozen7", device=CPU, seconds=0.2))


def test_training_rate_frozen_on_a_scratch_model_raises():
    with pytest.raises(ValueError):
        training_rate("gtsrb_5l", 32, 8, path="frozen1", device=CPU, seconds=0.1)


def test_inference_rate():
    assert _positive_finite(inference_rate("gtsrb_5l", 32, 8, device=CPU, seconds=0.2))


def test_inference_rate_of_a_prefix():
    assert _positive_finite(inference_rate("mobilenet_v2", 32, 8, device=CPU, seconds=0.2, prefix_blocks=7))


def test_rate_counts_images_not_steps():
    # the same model, batch 16 against batch 1: many more images per second with the bigger batch
    small = inference_rate("gtsrb_5l", 16, 1, device=CPU, seconds=0.2)
    big = inference_rate("gtsrb_5l", 16, 16, device=CPU, seconds=0.2)
    assert big > 2 * small


# ---------------------------------------------------------------- Timing


def test_timing_ratio():
    assert Timing("train", "m", 32, 8, "bf16", 200.0, baseline=100.0).ratio == pytest.approx(2.0)
    assert Timing("train", "m", 32, 8, "bf16", 50.0, baseline=200.0).ratio == pytest.approx(0.25)
    assert Timing("train", "m", 32, 8, "bf16", 200.0).ratio is None
    assert Timing("train", "m", 32, 8, "bf16", 200.0, baseline=0.0).ratio is None


# ---------------------------------------------------------------- markdown

TIMINGS = [
    Timing("train", "mobilenet_v2", 48, 64, "fp32", 100.0, "victims and surrogates", 100.0, default=True,
           flops_per_image=3 * 27.5e6),
    Timing("train", "mobilenet_v2", 48, 64, "frozen14", 200.0, "tail only", 100.0, flops_per_image=20.3e6),
    Timing("train", "gtsrb_5l", 32, 64, "no baseline", 1234.0, ""),
    Timing("inference", "mobilenet_v2", 48, 256, "bf16", 1500.0, "", 1000.0, flops_per_image=27.5e6),
]
ACCURACY = [
    {"path": "fp32", "frozen_blocks": 0, "victim": "Caltech", "budget": 6000, "epochs": 10, "seed": 0, "final_acc": 0.5, "best_acc": 0.55,
     "recovery": 0.8, "train_seconds": 100.0, "curve": [0.3, 0.5]},
    {"path": "frozen14", "frozen_blocks": 14, "victim": "Caltech", "budget": 6000, "epochs": 10, "seed": 0, "final_acc": 0.47, "best_acc": 0.52,
     "recovery": 0.75, "train_seconds": 25.0, "curve": [0.25, 0.47]},
]


def _row(text, start):
    rows = [line for line in text.splitlines() if line.startswith(start)]
    assert len(rows) == 1, rows
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_markdown_throughput_rows_and_ratio():
    text = markdown(get_profile("smoke"), CPU, TIMINGS, [])
    assert text.startswith("# kx benchmark: profile `smoke` on cpu")
    assert "## Training throughput" in text and "## Inference throughput" in text
    assert _row(text, "| mobilenet_v2 | 48 | 64 | frozen14 ") == \
        ["mobilenet_v2", "48", "64", "frozen14", "200", "2.00", "0.0203", "tail only"]
    # the package's own path is marked as today's; 3 x 27.5 MFLOP = 0.0825 GFLOP per image
    assert _row(text, "| mobilenet_v2 | 48 | 64 | fp32 (today) ")[5:7] == ["1.00", "0.0825"]
    assert _row(text, "| gtsrb_5l ") == ["gtsrb_5l", "32", "64", "no baseline", "1,234", "", "", ""]
    assert _row(text, "| mobilenet_v2 | 48 | 256 | bf16 ")[4:7] == ["1,500", "1.50", "0.0275"]
    # no peak on the CPU unless given: no peak columns
    assert "% of peak" not in text and "Peak of the device" not in text
    # inference rows come under the inference heading
    assert text.index("## Inference throughput") < text.index("| mobilenet_v2 | 48 | 256 | bf16 ")
    assert "## Accuracy" not in text


def test_markdown_without_inference_timings_has_no_inference_section():
    text = markdown(get_profile("smoke"), CPU, TIMINGS[:1], [])
    assert "## Training throughput" in text
    assert "## Inference throughput" not in text


def test_markdown_accuracy_delta_and_speed_against_the_whole_network():
    text = markdown(get_profile("smoke"), CPU, [], ACCURACY)
    assert "## Training throughput" not in text
    assert "## Accuracy of the reference surrogates (6,000 queries, 10 epochs, seed 0: Table 2's attack)" in text
    full = _row(text, "| Caltech | whole network")
    assert full == ["Caltech", "whole network (today, the paper's)", "50.0%", "55.0%", "0.80", "+0.0 pp", "100",
                    "1.0", "0.30 0.50"]
    frozen = _row(text, "| Caltech | blocks 14+")
    # 47% against 50%: -3.0 pp; 100 s against 25 s: 4.0 times as fast
    assert frozen == ["Caltech", "blocks 14+ from cached activations", "47.0%", "52.0%", "0.75", "-3.0 pp", "25",
                      "4.0", "0.25 0.47"]


def test_markdown_accuracy_compares_each_victim_with_its_own_whole_network():
    gtsrb = [{**ACCURACY[0], "victim": "GTSRB", "final_acc": 0.9, "train_seconds": 50.0},
             {**ACCURACY[1], "victim": "GTSRB", "path": "frozen7", "frozen_blocks": 7, "final_acc": 0.925, "train_seconds": 20.0}]
    text = markdown(get_profile("smoke"), CPU, [], ACCURACY + gtsrb)
    assert _row(text, "| Caltech | blocks 14+")[5:8] == ["-3.0 pp", "25", "4.0"]
    # 92.5% against GTSRB's 90% (not Caltech's 50%): +2.5 pp; 50 s against 20 s: 2.5
    assert _row(text, "| GTSRB | blocks 7+")[5:8] == ["+2.5 pp", "20", "2.5"]


def test_markdown_accuracy_without_a_whole_network_row_has_no_delta():
    text = markdown(get_profile("smoke"), CPU, [], ACCURACY[1:])
    frozen = _row(text, "| Caltech | blocks 14+")
    assert frozen[5] == "" and frozen[7] == ""


def test_markdown_on_a_gpu_gives_the_share_of_the_peak():
    rows = [Timing("train", "resnet34", 224, 64, "bf16", 2000.0, "", 2000.0, default=True,
                   flops_per_image=3 * 7.3e9),
            Timing("train", "gtsrb_5l", 32, 64, "bf16", 5000.0, "", 5000.0, default=True)]
    text = markdown(get_profile("paper"), CUDA, rows, [], name="NVIDIA H200", peak_tflops=989.0,
                    peak_source="the table")
    assert "Peak of the device: 989 TFLOP/s dense bf16 (the table)." in text
    # 2,000 img/s x 21.9 GFLOP = 43.8 TFLOP/s, 4.43% of 989
    assert _row(text, "| resnet34 ") == ["resnet34", "224", "64", "bf16 (today)", "2,000", "1.00", "21.9", "43.8",
                                         "4.4%", ""]
    assert _row(text, "| gtsrb_5l ")[6:9] == ["", "", ""]  # no FLOP count: no share either
    unknown = markdown(get_profile("paper"), CUDA, rows[:1], [], name="Some GPU")
    assert "Peak of the device: unknown for Some GPU: pass --peak-tflops to give it." in unknown
    assert _row(unknown, "| resnet34 ")[7:9] == ["43.8", "peak unknown"]


# ---------------------------------------------------------------- what is timed on each device


def test_the_package_path_is_bf16_on_a_gpu_and_fp32_on_the_cpu():
    assert (package_path(CPU), package_path(CUDA)) == ("fp32", "bf16")


def test_the_gpu_benchmark_times_the_papers_models_at_their_sizes():
    paper = get_profile("paper")
    assert training_models(paper, CUDA) == [
        ("resnet34", 224, "victims and surrogates", 64, True),
        ("mobilenet_v2", 224, "the mini profiles' backbone", 64, True),
        ("gtsrb_5l", 32, "scratch victims", 64, False), ("cifar10_9l", 32, "scratch victims", 64, False),
        ("resnet18", 224, "scratch detectors", 64, False), ("resnet34", 224, "scratch detectors", 64, False)]
    # the CPU benchmark keeps its models: no MobileNetV2 beside a ResNet34 surrogate
    assert [m[0] for m in training_models(paper, CPU)] == ["resnet34", "gtsrb_5l", "cifar10_9l", "resnet18",
                                                           "resnet34"]
    assert inference_models(paper) == [("resnet34", 224, "querying a victim"), ("resnet18", 224, "detector features"),
                                       ("resnet101", 224, "detector features"),
                                       ("resnet152", 224, "detector features")]


def test_the_gpu_benchmark_times_every_batch_size_the_profile_trains_at():
    paper = get_profile("paper")
    assert profile_batch_sizes(paper) == [16, 64, 128, 256]  # Table 7 and 5.2.2's grid
    # on a GPU the projection costs each task at its own batch size: all of them are timed
    assert swept_batches(paper, CUDA, 64) == [16, 64, 128, 256, 512]
    # the CPU sweep stays as it was (a 224 px ResNet34 at batch 128 is minutes on a CPU)
    assert swept_batches(paper, CPU, 64) == [16, 64, 256]
    smoke = get_profile("smoke", section5={**get_profile("smoke").section5.__dict__, "grid_batch_sizes": (8, 64)})
    assert 8 in swept_batches(smoke, CUDA, 32) and 8 not in swept_batches(smoke, CPU, 32)


# ---------------------------------------------------------------- the command


def _tiny_bench_args(tmp_path):
    sizes = {key: 16 for key in get_profile("smoke").image_size}
    overrides = {"backbone": "gtsrb_5l", "surrogate_arch": "gtsrb_5l", "image_size": sizes,
                 "scratch_image_size": 16, "detector_scratch_archs": [], "detector_cv_archs": ["gtsrb_5l"],
                 "surrogate_recipe": {"batch_size": 8}, "scratch_recipe": {"batch_size": 8}}
    return ["bench", "--profile", "smoke", "--overrides", json.dumps(overrides), "--no-accuracy", "--no-compile",
            "--seconds", "0.01", "--json", str(tmp_path / "bench.json"), "--out", str(tmp_path / "bench.md")]


# GTSRB-5L's forward pass on one 16 px image, by hand (2 FLOPs per multiply-add): three 3x3 convolutions
# 3->32 at 16x16, 32->64 at 8x8, 64->128 at 4x4, then 2048->256 and the head 256->classes
GTSRB_5L_16PX = 2 * (3 * 9 * 32 * 16 * 16 + 32 * 9 * 64 * 8 * 8 + 64 * 9 * 128 * 4 * 4 + 2048 * 256)


def test_bench_json_round_trip_on_a_tiny_profile(tmp_path, capsys):
    assert main(_tiny_bench_args(tmp_path)) == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert list(doc) == ["device", "device_name", "peak_bf16_tflops", "profile", "limits", "timings"]
    limits = doc["limits"]
    assert limits["memory_gb_per_s"] > 0 and limits["fp32_gflops"] > 0 and limits["bf16_gflops"] > 0
    assert (doc["device"], doc["peak_bf16_tflops"], doc["profile"]) == ("cpu", None, "smoke")
    assert isinstance(doc["device_name"], str) and doc["device_name"]
    keys = ["section", "model", "size", "batch", "path", "default", "images_per_s", "flops_per_image", "note"]
    for row in doc["timings"]:
        assert list(row) == keys
        assert isinstance(row["images_per_s"], float) and row["images_per_s"] > 0
        assert row["default"] == (row["path"] == "fp32")  # float32 is the package's CPU path
    trained = [(r["model"], r["batch"], r["path"]) for r in doc["timings"] if r["section"] == "train"]
    assert trained == [("gtsrb_5l", 8, "fp32"), ("gtsrb_5l", 8, "contiguous"), ("gtsrb_5l", 8, "bf16"),
                       ("gtsrb_5l", 8, "bf16_pointwise"), ("gtsrb_5l", 8, "frozen_bn"),
                       ("gtsrb_5l", 8, "frozen_bn+bf16_pointwise"), ("gtsrb_5l", 16, "fp32"), ("gtsrb_5l", 256, "fp32"),
                       ("gtsrb_5l", 8, "fp32"), ("gtsrb_5l", 8, "contiguous"), ("gtsrb_5l", 8, "bf16"),
                       ("cifar10_9l", 8, "fp32"), ("cifar10_9l", 8, "contiguous"), ("cifar10_9l", 8, "bf16")]
    inferred = [(r["batch"], r["path"]) for r in doc["timings"] if r["section"] == "inference"]
    assert inferred == [(256, "fp32"), (64, "fp32"), (1024, "fp32"), (256, "bf16")]
    gtsrb = [r for r in doc["timings"] if r["model"] == "gtsrb_5l"]
    # training: the 100-class head, three forward passes; inference: the 10-class head, one
    assert {r["flops_per_image"] for r in gtsrb if r["section"] == "train"} == {3.0 * (GTSRB_5L_16PX + 2 * 256 * 100)}
    assert {r["flops_per_image"] for r in gtsrb if r["section"] == "inference"} == {float(GTSRB_5L_16PX + 2 * 256 * 10)}
    # the Markdown holds the same rows
    text = (tmp_path / "bench.md").read_text()
    assert text in capsys.readouterr().out
    assert "Produced by `python -m kx_utils bench --profile smoke` with --overrides of backbone, surrogate_arch, " \
           "detector_scratch_archs, detector_cv_archs, image_size, scratch_image_size, scratch_recipe, " \
           "surrogate_recipe;" in text
    throughput = text.split("## Training throughput")[1]  # the machine-limits table repeats some rows
    assert len([line for line in throughput.splitlines() if line.startswith("| gtsrb_5l ")]) == \
        len([r for r in doc["timings"] if r["model"] == "gtsrb_5l"])
    assert "## Machine limits" in text and "float32 matrix multiply" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_on_cuda_without_a_gpu_says_so(tmp_path, capsys):
    assert main(_tiny_bench_args(tmp_path) + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "error: `python -m kx_utils bench --device cuda` needs a CUDA GPU, but torch.cuda.is_available() " \
           "is False" in err
    assert "or choose the CPU (--device cpu)" in err
    assert not (tmp_path / "bench.json").exists()


def test_bench_rejects_a_peak_that_is_not_positive(tmp_path, capsys):
    assert main(_tiny_bench_args(tmp_path) + ["--peak-tflops", "0"]) == 2
    assert "--peak-tflops must be a positive number of TFLOP/s, got 0.0" in capsys.readouterr().err


@needs_cuda
def test_bench_on_cuda_times_the_bf16_path_as_the_default(tmp_path):
    assert main(_tiny_bench_args(tmp_path) + ["--device", "cuda", "--peak-tflops", "100"]) == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert (doc["device"], doc["peak_bf16_tflops"]) == ("cuda", 100.0)
    assert doc["device_name"] == torch.cuda.get_device_name()
    for row in doc["timings"]:
        assert row["default"] == (row["path"] == "bf16")
    assert {r["model"] for r in doc["timings"] if r["section"] == "train"} >= {"gtsrb_5l", "mobilenet_v2"}


def test_paths_name_their_speed_ups_and_a_surrogate_path_sets_the_profile_values_that_train_it():
    from kx_utils.bench.timing import (
        frozen_prefix_blocks,
        speedups_of,
        surrogate_settings_of,
    )
    assert (frozen_prefix_blocks("frozen14"), frozen_prefix_blocks("frozen_bn"), frozen_prefix_blocks("fp32")) == (14, 0, 0)
    assert speedups_of("frozen_bn+bf16_pointwise") == {"frozen_bn", "bf16_pointwise"} and speedups_of("bf16") == set()
    assert surrogate_settings_of("frozen_bn+bf16_pointwise") == {
        "surrogate_frozen_blocks": 0, "surrogate_batch_norm": "frozen", "surrogate_precision": "bf16_pointwise"}
    assert surrogate_settings_of("frozen7")["surrogate_frozen_blocks"] == 7
    with pytest.raises(ValueError, match="no surrogate is trained on path 'compile'"):
        surrogate_settings_of("compile")


def test_the_speed_up_paths_train():
    for path in ("bf16_pointwise", "frozen_bn", "frozen_bn+bf16_pointwise"):
        assert _positive_finite(training_rate("mobilenet_v2", 32, 8, path=path, device=CPU, seconds=0.2))


def test_limits_place_a_training_row_by_hand():
    from kx_utils.bench.limits import (
        MachineLimits,
        matmul_gflops,
        memory_bandwidth,
        placement,
    )
    limits = MachineLimits("cpu", 2, 20.0, 100.0, 400.0, 2048, 512)
    # 500 img/s x 0.1 GFLOP per image = 50 GFLOP/s: half the float32 ceiling, an eighth of the bf16 one
    assert placement(500, 0.1e9, limits) == pytest.approx({"gflops": 50.0, "of_fp32_matmul": 0.5,
                                                           "of_bf16_matmul": 0.125})
    assert _positive_finite(memory_bandwidth(CPU, megabytes=8, repeats=2))
    assert _positive_finite(matmul_gflops(CPU, torch.float32, side=128, repeats=2))


def test_a_training_steps_operators_add_up_and_name_the_convolution_backward_passes():
    from kx_utils.bench.ops import breakdown_lines, step_breakdown
    b = step_breakdown("gtsrb_5l", 16, 8, classes=5, steps=2, top=50)
    assert b.ms_per_step > 0 and [o.ms_per_step for o in b.ops] == sorted((o.ms_per_step for o in b.ops), reverse=True)
    assert sum(o.share for o in b.ops) <= 1 + 1e-9  # self times: no operator counted twice
    names = {o.name for o in b.ops}
    assert "aten::convolution_backward" in names  # GTSRB-5L: three convolutions, no batch norm
    assert b.convolution_backward and all("weight" in o.name for o in b.convolution_backward)
    assert sum(o.ms_per_step for o in b.convolution_backward) == pytest.approx(
        next(o.ms_per_step for o in b.ops if o.name == "aten::convolution_backward"), rel=1e-6)
    text = "\n".join(breakdown_lines(b))
    assert "## Where a training step's time goes" in text and "| convolution_backward |" in text
    with pytest.raises(ValueError, match="steps and top must be 1 or more"):
        step_breakdown("gtsrb_5l", 16, 8, steps=0)


def test_the_whole_network_reference_is_table_2s_first_seed_surrogate(tiny_profile):
    """The benchmark's accuracy rows are Table 2's attack: its float32 row is the very artifact Table 2 made
    (read back, not trained again), and a candidate path trains its own beside it."""
    from kx_utils.bench.timing import reference_accuracy
    from kx_utils.config.seeds import seeds_for
    from kx_utils.experiments.attack import knockoff
    from kx_utils.experiments.section5 import table2_attack

    profile = tiny_profile.replace(surrogate_validation_fraction=0.25, surrogate_seeds=(3, 4))
    table2 = knockoff(profile, "cifar10", seed=seeds_for(profile, "table2")[0], **table2_attack(profile))
    whole, frozen_bn = reference_accuracy(profile, ("cifar10",), ("fp32", "frozen_bn"))
    assert whole["cached"] and whole["seed"] == 3
    assert (whole["final_acc"], whole["best_acc"]) == (table2.final_accuracy, table2.best_accuracy)
    assert not frozen_bn["cached"] and frozen_bn["seed"] == 3
