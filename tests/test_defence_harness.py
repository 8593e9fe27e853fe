"""Notebook 07's harness: defences named in settings, on the API, their utility, their claims and their cost.

The defences' own formulas are tested in ``test_defences.py`` and the adaptive sampler in ``test_adaptive.py``;
the end-to-end path (grid, notebook, report) runs in the smoke grid and the notebook tests.
"""

from __future__ import annotations

import pytest
import torch

from kx_utils import get_profile
from kx_utils.core.api import PredictionAPI, api_description
from kx_utils.core.defences import MAD, Dawn, ReverseSigmoid, reverse_sigmoid
from kx_utils.experiments import defences as dx
from kx_utils.experiments.attack import surrogate_settings
from kx_utils.experiments.defence_specs import (
    build_defence,
    defence_label,
    defence_settings,
    sampling_settings,
)
from kx_utils.experiments.registry import build_tasks, cost_of
from kx_utils.report import FAILS, HOLDS, INCONCLUSIVE, NOT_EVALUATED
from kx_utils.report import defence_checks as DC
from kx_utils.report.figures import defence_tradeoffs
from tests.defence_tables import adaptive, dawn, defence_row, defences, prada
from tests.test_api import FixedLogits, _images
from tests.test_report import claim_result

SMOKE = get_profile("smoke", progress=False)


# ---------------------------------------------------------------- specs and the API


def test_specs_fill_defaults_and_refuse_unknown_names():
    assert defence_settings(None) is None
    assert defence_settings({"name": "reverse_sigmoid", "beta": 0.5}) == {"name": "reverse_sigmoid", "beta": 0.5,
                                                                          "gamma": 0.1}
    assert defence_settings({"name": "mad"})["oracle"] == "extreme"
    with pytest.raises(ValueError, match="reverse_sigmoid, mad, dawn"):
        defence_settings({"name": "noise"})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['eps'\] of the mad defence; valid: epsilon"):
        defence_settings({"name": "mad", "eps": 1.0})
    assert defence_label({"name": "mad", "epsilon": 0.5, "oracle": "argmax"}) == "MAD-argmax ε=0.5"
    assert defence_label({"name": "dawn", "rate": 0.01}) == "DAWN r=1%"


def test_built_defences_are_the_core_objects_with_the_spec_parameters():
    rs = build_defence(SMOKE, {"name": "reverse_sigmoid", "beta": 0.3, "gamma": 0.2}, 10)
    assert isinstance(rs, ReverseSigmoid) and (rs.beta, rs.gamma) == (0.3, 0.2)
    dawn = build_defence(SMOKE, {"name": "dawn", "rate": 0.2}, 10)
    assert isinstance(dawn, Dawn) and dawn.rate == 0.2 and dawn.key == b"kx-dawn-0"
    state = torch.random.get_rng_state()
    mad = build_defence(SMOKE, {"name": "mad", "epsilon": 0.4}, 7)
    assert isinstance(mad, MAD) and mad.epsilon == 0.4 and mad.proxy.num_classes == 7
    assert torch.equal(torch.random.get_rng_state(), state)  # the proxy's head did not move the caller's stream
    again = build_defence(SMOKE, {"name": "mad", "epsilon": 0.4}, 7)
    assert torch.equal(mad.proxy.head.weight, again.proxy.head.weight)  # proxy_seed fixes it


def test_api_applies_the_defence_before_the_format():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 2.0]])
    images = _images([0, 1])
    plain = PredictionAPI(FixedLogits(logits), device="cpu")(images)
    defended = PredictionAPI(FixedLogits(logits), device="cpu", defence=ReverseSigmoid(1.0, 0.1))
    assert torch.allclose(defended(images), reverse_sigmoid(plain, 1.0, 0.1))
    assert defended.describe() == {"mode": "probs", "defence": {"defence": "reverse_sigmoid", "beta": 1.0,
                                                                "gamma": 0.1}}
    # label answers are the argmax of the defended vector: a watermark that moves the top-1 class shows
    swap = Dawn(b"k", rate=0.999)
    labels = PredictionAPI(FixedLogits(logits), mode="label", device="cpu", defence=swap)(images)
    assert (labels.argmax(1) != plain.argmax(1)).all()


def test_no_defence_and_random_sampling_keep_every_earlier_key():
    assert api_description("probs") == {"mode": "probs"}  # as before defences existed
    plain = surrogate_settings(SMOKE, "cifar10", with_content=False)
    assert "defence" not in plain["query"]["api"] and "sampling" not in plain["query"]
    assert surrogate_settings(SMOKE, "cifar10", defence=None, sampling="random", with_content=False) == plain
    rs = surrogate_settings(SMOKE, "cifar10", defence={"name": "reverse_sigmoid"}, with_content=False)
    assert rs["query"]["api"]["defence"] == {"name": "reverse_sigmoid", "beta": 1.0, "gamma": 0.1}
    adaptive = surrogate_settings(SMOKE, "cifar10", sampling="adaptive", with_content=False)
    assert adaptive["query"]["sampling"] == {"strategy": "adaptive", "reward": "all", "hierarchy": "wordnet",
                                             "batch_size": SMOKE.surrogate_recipe.batch_size,
                                             "learning_rate": SMOKE.surrogate_recipe.lr}


def test_sampling_errors_name_the_fix():
    with pytest.raises(ValueError, match='"random", "adaptive" or a dict'):
        sampling_settings(SMOKE, "greedy")
    with pytest.raises(ValueError, match="'wordnet' \\(WordNet above the pool's ImageNet classes\\) or 'flat'"):
        sampling_settings(SMOKE, {"hierarchy": "tree"})
    with pytest.raises(ValueError, match=r"unknown adaptive sampling parameter\(s\) \['steps'\]"):
        sampling_settings(SMOKE, {"steps": 3})


# ---------------------------------------------------------------- the honest client's cost


def test_benign_utility_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    benign = {"probs": probs, "images": _images([0, 1]), "labels": torch.tensor([0, 2])}
    none = dx.benign_utility(SMOKE, benign, None)
    assert none["benign_acc"] == 0.5 and none["top1_kept"] == 1.0 and none["l1"] == pytest.approx(0, abs=1e-7)
    assert none["chance"] == 0.5 and none["benign_queries"] == 2
    label = dx.benign_utility(SMOKE, benign, None, "label")
    # one-hot answers: L1 = 2 (1 - p_top) per row, mean of 0.6 and 1.0
    assert label["l1"] == pytest.approx(0.8) and label["benign_acc"] == 0.5
    rs = dx.benign_utility(SMOKE, benign, {"name": "reverse_sigmoid", "beta": 1.0, "gamma": 0.1})
    expected = reverse_sigmoid(probs, 1.0, 0.1)
    assert rs["l1"] == pytest.approx(float((expected - probs).abs().sum(1).mean()), rel=1e-5)
    assert rs["top1_kept"] == 1.0


# ---------------------------------------------------------------- the registry and the cost model


def test_every_07_task_is_declared_and_costed():
    tasks = [t for t in build_tasks(SMOKE) if t.notebook == "07_defences"]
    names = {t.name for t in tasks}
    assert "defences/dawn/cifar10/r0.1/seed0" in names and "defences/prada/cifar10" in names
    assert "surrogate/adaptive/cifar10/adaptive/seed1" in names
    # the undefended and label-only attacks are Table 2's and Table 6's tasks, not 07's
    assert not any(n.endswith(("probs/none/seed0", "label/none/seed0")) for n in names)
    for t in tasks:
        cost = cost_of(SMOKE, t)
        assert cost.passes or t.function.endswith("prada_result")
    dawn = next(t for t in tasks if t.function.endswith("dawn_verification"))
    train = [w for w in cost_of(SMOKE, dawn).passes if w.section == "train"]
    assert len(train) == 2  # a watermarked and a clean surrogate


# ---------------------------------------------------------------- the claims


def test_defence_claims_hold_and_fail_on_hand_made_tables():
    assert claim_result(11, defences=defences()).verdict == HOLDS  # 60% vs 70% +- 0.8 pp
    assert claim_result(11, defences=defences(rs_acc=0.75)).verdict == FAILS
    assert claim_result(11, defences=defences(rs_acc=0.698)).verdict == INCONCLUSIVE
    assert claim_result(11, defences=defences(rs_top1=0.9)).verdict == FAILS  # the top-1 class is not kept
    assert claim_result(12, defences=defences()).verdict == HOLDS  # MAD at L1 1.0 <= reverse sigmoid's 1.2
    assert claim_result(12, defences=defences(mad_acc=0.70)).verdict == FAILS
    assert claim_result(13, defences=defences(label_acc=0.30)).verdict == HOLDS  # below MAD 40%, RS 60%
    assert claim_result(13, defences=defences(label_acc=0.65)).verdict == FAILS
    ten = claim_result(10, defences=defences())
    assert ten.verdict == HOLDS and "chance" in ten.evidence
    assert claim_result(10, defences=defences(label_acc=0.1)).verdict == INCONCLUSIVE  # at chance, 0 noise side
    assert claim_result(11, defences={}).verdict == NOT_EVALUATED


def test_claim_10_leaves_out_defences_that_break_the_top1_class():
    table = defences()
    table["cifar10/probs/mad_e1"]["top1_kept"] = 0.0
    result = claim_result(10, defences=table)
    assert "MAD" not in " ".join(c.label for c in result.comparisons) and "left out" in result.evidence


def test_prada_claim_three_ways():
    assert claim_result(14, prada=prada(False, False)).verdict == HOLDS
    assert claim_result(14, prada=prada(True, False)).verdict == FAILS
    result = claim_result(14, prada=prada(True, True))
    assert result.verdict == INCONCLUSIVE and "flagged at query 120" in result.evidence


def test_dawn_and_adaptive_claims():
    assert claim_result(15, dawn=dawn(0.6)).verdict == HOLDS
    assert claim_result(15, dawn=dawn(0.08)).verdict == INCONCLUSIVE  # 0.08 vs 0.05 on 120 queries
    assert claim_result(16, adaptive=adaptive([0.45, 0.44, 0.46])).verdict == FAILS  # paired over seeds


def test_top1_threshold_is_the_documented_one():
    assert DC.TOP1_KEPT == 0.99


def test_tradeoff_figure_has_a_panel_per_defence_family():
    fig = defence_tradeoffs({**defences(), "cifar10/probs/dawn_r0.01": defence_row("dawn", "probs", 0.69, 0.86, 0.02)})
    assert [ax.get_title() for ax in fig.axes] == ["Reverse sigmoid (Lee et al.)", "MAD (Orekondy et al.)",
                                                   "DAWN watermark (Szyller et al.)"]
    undefended = fig.axes[0].lines[0]
    assert list(undefended.get_xdata()) == [0.0, 1.2]  # the line starts at the undefended API


def test_the_adaptive_attacker_reads_each_pool_class_wnid_from_its_images_paths():
    from kx_utils.data.datasets import ImageSet
    from kx_utils.experiments.adaptive import class_folders
    pool = ImageSet(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 2]),
                    ["goldfish, Carassius auratus", "tench", "cougar"], "pool",
                    ["train/n01443537/a.jpg", "train/n01443537/b.jpg", "train/n02125311/c.jpg"])
    assert class_folders(pool) == ["n01443537", None, "n02125311"]  # class 1 has no image in this pool
