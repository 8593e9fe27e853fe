"""The paper-shaped dry run: every path `--profile paper` takes, end to end, on synthetic data (make test-paper-path).

The `paper` profile itself (its datasets' folder layout, 10-fold CV with `detector_cv_cs=10`-style integer
strengths, ResNet18/34/101/152, `detector_ood_share=1.0`, the pool of every ImageNet split, 380 Bing images
per class...) with three explicit changes: synthetic images in the paper's folders
(:mod:`tests.paper_shaped_data`: mixed sizes, a large first image, JPEG and PNG), random weights in place
of the ImageNet checkpoints (``KX_WEIGHTS=random``, which every output states), and tiny sizes and
epochs through ``--overrides``.  The grid runs on Ray with two workers, then the seven notebooks and the
report; a serial grid of notebooks 01-02 afterwards finds everything made.  Every task and notebook must finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paper_shaped_data import write_paper_shaped_data

pytestmark = pytest.mark.paper_path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_victims", "02_knockoff", "03_detection", "04_architecture_and_output", "05_hyperparameters",
             "06_in_distribution", "07_defences")
SIZE = 24  # every pretrained model's input side; the scratch victims keep the paper's 32 px
# what keeps the run in minutes on two cores; everything else is the paper profile's
OVERRIDES = {
    "image_size": {k: SIZE for k in ("caltech256", "cubs200", "diabetic5", "gtsrb", "cifar10", "imagenet",
                                     "openimages", "bing")},
    "transfer_budget": 120, "victim_recipe": {"epochs": 1}, "scratch_recipe": {"epochs": 1},
    "surrogate_recipe": {"epochs": 1}, "detector_recipe": {"epochs": 1}, "in_distribution_per_class": 4,
    "baseline_tuning_size": 20, "odin_temperatures": [1, 1000], "odin_epsilons": [0, 0.002],
    "mahalanobis_epsilons": [0, 0.002],
    "detector_cv_cs": 3,  # a count of strengths, as the paper's 10: sklearn's log grid, stored as floats
    "cuda_eval_batch_size": 256, "progress": False,
    # 07: the paper's answer formats and defences, one strength each, on one victim (their paths are the same for
    # every victim); a high DAWN rate so that 120 queries hold watermarked ones
    "defences": {"victims": ["cifar10"], "reverse_sigmoid_betas": [1.0], "mad_epsilons": [1.0], "dawn_rates": [0.5],
                 "prada_queries": 100, "adaptive_victims": ["caltech"], "adaptive_budget": 60},
}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_path")
    write_paper_shaped_data(root / "data")
    env = {**os.environ, "KX_DATA": str(root / "data"), "KX_CACHE": str(root / "cache"),
           "KX_RUNS": str(root / "runs"), "KX_FIGURES": str(root / "figures"), "KX_WEIGHTS": "random",
           "KX_PROFILE": "paper"}
    env.pop("KX_NO_TRAINING", None)

    def kx(*args, check=True):
        done = subprocess.run([sys.executable, "-m", "kx_utils", *args, "--profile", "paper",
                               "--overrides", json.dumps(OVERRIDES)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        if check and done.returncode != 0:
            pytest.fail(f"`kx {' '.join(args)}` exited {done.returncode}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")
        return done

    reproduce = kx("reproduce", "--grid", "--executor", "ray", "--workers", "2", "--threads", "1")
    return root, kx, reproduce


def test_every_grid_task_of_the_paper_profile_finishes(dry_run):
    root, _, _ = dry_run
    grid = json.loads((root / "runs" / "paper" / "grid.json").read_text())
    failed = [(o["task"], (o["error"] or "").strip().splitlines()[-1:]) for o in grid["outcomes"] if o["status"] != "done"]
    assert not failed
    names = {o["task"] for o in grid["outcomes"]}
    # one of each kind the paper's notebooks need, on its paper settings
    assert {"victim/caltech", "victim/gtsrb_5l", "detection/table4/cubs", "detection/api_demo",
            "detection/in_distribution", "surrogates/5.1.3/seed0"} <= names
    assert len(names) >= 50


def test_every_notebook_finishes_and_the_report_says_the_weights_were_random(dry_run):
    root, _, reproduce = dry_run
    state = json.loads((root / "runs" / "paper" / "pipeline.json").read_text())
    assert {nb: state["notebooks"][nb]["status"] for nb in NOTEBOOKS} == {nb: "finished" for nb in NOTEBOOKS}
    for nb in NOTEBOOKS:
        env = json.loads((root / "runs" / "paper" / f"{nb}.json").read_text())["environment"]
        assert env["pretrained_weights"].startswith("RANDOM (KX_WEIGHTS=random")
    report = (root / "figures" / "paper" / "report.md").read_text()
    assert "RANDOM (KX_WEIGHTS=random" in report
    assert {"table4a.csv", "table5.csv", "table7.csv", "figure2.png"} <= {p.name for p in (root / "figures" / "paper").iterdir()}
    assert not (REPO / "figures" / "paper").exists()  # KX_FIGURES: nothing of a dry run lands in the repository


def test_the_paper_comparisons_use_the_unseen_imagenet_images_there_are(dry_run):
    root, _, _ = dry_run
    section = json.loads((root / "runs" / "paper" / "06_in_distribution.json").read_text())["values"]["section_5_2_2"]
    # detector_ood_share=1.0: the defender trained on the whole train split, the 20 test images stay unseen
    assert section["unseen_imagenet_queries"] == 20 < section["in_distribution_queries"]


def test_a_serial_grid_afterwards_finds_everything_made(dry_run):
    _, kx, _ = dry_run
    listing = kx("grid", "--list").stdout
    assert "to compute  victim/" not in listing and "to compute  surrogate/" not in listing
    serial = kx("grid", "--executor", "serial", "--only", "01", "02").stdout
    assert " 0 failed, 0 skipped" in serial


def test_every_split_was_decoded_at_a_models_side_not_at_its_first_images(dry_run):
    """Every split's first image is 480 x 360: decoded at that side, ImageNet's 100,000 images would take 75 GB."""
    from kx_utils.runtime import integrity
    root, _, _ = dry_run
    sides = {}
    for path in (root / "cache" / "decoded").glob("*.pt"):
        blob = integrity.load(path)
        sides[path.name] = tuple(blob["images"].shape[-2:])
    # 24 px (centre crops of 27 px: Resize(256) + CenterCrop(224)), the victims' uncropped 27 px training
    # sets (RandomResizedCrop(224) of 256 px), the scratch victims' 32 px
    assert sides and set(sides.values()) <= {(24, 24), (27, 27), (32, 32)}
