"""kx_utils.bench: throughput measurements and the Markdown report they make."""

import math

import pytest
import torch

from kx_utils.bench import Timing, inference_rate, markdown, training_rate
from kx_utils.profiles import get_profile

CPU = torch.device("cpu")


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
    Timing("train", "mobilenet_v2", 48, 64, "fp32 (today)", 100.0, "victims and surrogates", 100.0),
    Timing("train", "mobilenet_v2", 48, 64, "frozen14", 200.0, "tail only", 100.0),
    Timing("train", "gtsrb_5l", 32, 64, "no baseline", 1234.0, ""),
    Timing("inference", "mobilenet_v2", 48, 256, "bf16", 1500.0, "", 1000.0),
]
ACCURACY = [
    {"frozen_blocks": 0, "victim": "Caltech", "budget": 6000, "epochs": 10, "final_acc": 0.5, "best_acc": 0.55,
     "recovery": 0.8, "train_seconds": 100.0, "curve": [0.3, 0.5]},
    {"frozen_blocks": 14, "victim": "Caltech", "budget": 6000, "epochs": 10, "final_acc": 0.47, "best_acc": 0.52,
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
        ["mobilenet_v2", "48", "64", "frozen14", "200", "2.00", "tail only"]
    assert _row(text, "| mobilenet_v2 | 48 | 64 | fp32 (today) ")[5] == "1.00"
    assert _row(text, "| gtsrb_5l ") == ["gtsrb_5l", "32", "64", "no baseline", "1,234", "", ""]
    assert _row(text, "| mobilenet_v2 | 48 | 256 | bf16 ")[4:6] == ["1,500", "1.50"]
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
    assert "## Accuracy of the reference surrogates (6,000 queries, 10 epochs, seed 0)" in text
    full = _row(text, "| Caltech | whole network")
    assert full == ["Caltech", "whole network (today, the paper's)", "50.0%", "55.0%", "0.80", "+0.0 pp", "100",
                    "1.0", "0.30 0.50"]
    frozen = _row(text, "| Caltech | blocks 14+")
    # 47% against 50%: -3.0 pp; 100 s against 25 s: 4.0 times as fast
    assert frozen == ["Caltech", "blocks 14+ from cached activations", "47.0%", "52.0%", "0.75", "-3.0 pp", "25",
                      "4.0", "0.25 0.47"]


def test_markdown_accuracy_compares_each_victim_with_its_own_whole_network():
    gtsrb = [{**ACCURACY[0], "victim": "GTSRB", "final_acc": 0.9, "train_seconds": 50.0},
             {**ACCURACY[1], "victim": "GTSRB", "frozen_blocks": 7, "final_acc": 0.925, "train_seconds": 20.0}]
    text = markdown(get_profile("smoke"), CPU, [], ACCURACY + gtsrb)
    assert _row(text, "| Caltech | blocks 14+")[5:8] == ["-3.0 pp", "25", "4.0"]
    # 92.5% against GTSRB's 90% (not Caltech's 50%): +2.5 pp; 50 s against 20 s: 2.5
    assert _row(text, "| GTSRB | blocks 7+")[5:8] == ["+2.5 pp", "20", "2.5"]


def test_markdown_accuracy_without_a_whole_network_row_has_no_delta():
    text = markdown(get_profile("smoke"), CPU, [], ACCURACY[1:])
    frozen = _row(text, "| Caltech | blocks 14+")
    assert frozen[5] == "" and frozen[7] == ""
