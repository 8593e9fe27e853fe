"""Notebook 03's tables (kx_utils.experiments.detection_tables): the checks and helpers by hand, then Table 4 and
the filter on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from kx_utils.core import detectors as D
from kx_utils.experiments import detection_tables as dt
from kx_utils.experiments.detection import BASELINE_COLUMNS, detection_data
from tests.conftest import write_image_folder

# ----------------------------------------------------------------- by hand


def test_a_baseline_is_read_at_our_tnr():
    """What Table 4's ``<baseline>_tpr_at_ours`` column means, on five in-distribution and four OOD scores."""
    scores_in = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    scores_ood = torch.tensor([0.15, 0.35, 0.45, 0.6])
    # our TNR 80%: one of five in-scores may be flagged -> threshold 0.4 -> 0.45 and 0.6 flagged
    assert D.tpr_at_tnr(scores_in, scores_ood, 0.8) == 0.5
    # 60%: two may be flagged -> threshold 0.3 -> 0.35, 0.45, 0.6
    assert D.tpr_at_tnr(scores_in, scores_ood, 0.6) == 0.75
    # OOD above in-distribution in 1 + 3 + 4 + 5 of the 20 pairs
    assert D.auroc(scores_in, scores_ood) == pytest.approx(13 / 20)


def test_no_overlap_where_the_paper_says_none():
    overlap = {"caltech": {"overlapping": 40, "names": ["bear"]}, "gtsrb": {"overlapping": 0, "names": []}}
    dt.check_no_overlap(overlap)  # Caltech overlaps ImageNet, as the paper says
    with pytest.raises(RuntimeError, match=r"gtsrb: 2 classes listed as overlapping ImageNet \(\['stop', 'yield'\]\)"):
        dt.check_no_overlap({**overlap, "gtsrb": {"overlapping": 2, "names": ["stop", "yield"]}})


def test_gtsrb_must_be_detected_with_pretrained_weights_only(monkeypatch):
    monkeypatch.setenv("KX_WEIGHTS", "imagenet")
    dt.check_gtsrb_detected({"gtsrb": {"ours_tpr": 0.9, "ours_tnr": 0.7}})  # balanced accuracy 0.8
    dt.check_gtsrb_detected({"cifar10": {"ours_tpr": 0.0, "ours_tnr": 0.0}})  # no GTSRB row: nothing to check
    with pytest.raises(RuntimeError, match="GTSRB: our detector's balanced accuracy 0.750 is not above 0.75"):
        dt.check_gtsrb_detected({"gtsrb": {"ours_tpr": 0.8, "ours_tnr": 0.7}})
    monkeypatch.setenv("KX_WEIGHTS", "random")  # the dry run: random features detect nothing
    dt.check_gtsrb_detected({"gtsrb": {"ours_tpr": 0.5, "ours_tnr": 0.5}})


def test_filter_rows_need_the_whole_transfer_set_and_unseen_queries(tiny_profile):
    row = {"name": "CIFAR10-MNV2", "transfer_queries": 60, "unseen_queries": 12}
    dt.check_filter_row(tiny_profile, row)
    with pytest.raises(RuntimeError, match="59 Knockoff queries through the filter"):
        dt.check_filter_row(tiny_profile, {**row, "transfer_queries": 59})
    with pytest.raises(RuntimeError, match="none of the 60 Knockoff queries is unseen"):
        dt.check_filter_row(tiny_profile, {**row, "unseen_queries": 0})


def test_a_flagged_query_gets_a_label_only():
    demo = [{"origin": "ImageNet", "flagged": True, "non_zero": 1},
            {"origin": "CIFAR10", "flagged": False, "non_zero": 10}]
    dt.check_label_only(demo)
    with pytest.raises(RuntimeError, match=r"query 1 \(ImageNet\) was flagged but answered with 10"):
        dt.check_label_only([demo[0], {**demo[1], "origin": "ImageNet", "flagged": True}])


def test_table3_stand_in_rows_sit_beside_the_row_they_stand_in_for():
    table3 = {"RN18": {"paper_row": "RN18"}, "MNV2*CV": {"paper_row": "RN34*CV"}, "EffL0*CV": {"paper_row": None}}
    paper = {"RN18": {"tpr": 0.9}, "RN34*CV": {"tpr": 0.95}, "RN101*CV": {"tpr": 0.96}}
    paper_rows, names = dt.table3_beside_paper(table3, paper)
    assert paper_rows == {"RN18": {"tpr": 0.9}, "MNV2*CV": {"tpr": 0.95}}
    assert names == {"RN18": "RN18", "MNV2*CV": "MNV2*CV (paper RN34*CV)", "EffL0*CV": "EffL0*CV"}


def test_tuning_values_leave_out_the_fitted_regressions():
    class Result:
        victim_name = "CIFAR10-MNV2"

    tuning = {"fair": {"odin_temperature": 1000.0, "mahalanobis_ensemble": {"coef": [1.0]}},
              "published_imagenet": {"odin_temperature": 1.0, "mahalanobis_ensemble": {"coef": [2.0]}}}
    tables = dt.Table4Tables(a={}, b={}, tuning={"cifar10": tuning}, results={"cifar10": Result()})
    assert tables.tuning_values == {"cifar10": {"fair": {"odin_temperature": 1000.0},
                                                "published_imagenet": {"odin_temperature": 1.0}}}
    assert "mahalanobis_ensemble" in tuning["fair"]  # the tunings themselves are left as they are
    assert tables.names == {"cifar10": "CIFAR10-MNV2"}


def test_section_seconds_add_up_each_section_and_save_as_a_dict(monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr(dt, "perf_counter", lambda: next(clock))
    seconds = dt.SectionSeconds()
    with seconds("table3"):
        pass
    with pytest.raises(ValueError), seconds("table3"):  # a failing section still counts its time
        raise ValueError
    assert seconds == {"table3": 3.5}
    assert json.loads(json.dumps({"section_seconds": seconds})) == {"section_seconds": {"table3": 3.5}}


def test_detector_choice_requires_the_features_from_the_cache(tiny_profile, monkeypatch):
    class Data:
        class in_train:
            images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)

    from_cache = []
    monkeypatch.setattr(dt, "choose_cv_arch", lambda profile, store: ("mobilenet_v2", {"mobilenet_v2": 0.9}))
    monkeypatch.setattr(dt, "get_detector", lambda profile, key, store: None)
    monkeypatch.setattr(dt, "detection_data", lambda profile, key, store: Data)
    monkeypatch.setattr(dt, "backbone_features", lambda *args, **kwargs: (None, from_cache[-1]))
    profile = tiny_profile.replace(detector_arch=None)  # chosen by CV, not fixed
    from_cache.append(True)
    assert dt.detector_choice(profile) == {"arch": "mobilenet_v2", "cv_balanced_accuracy": {"mobilenet_v2": 0.9},
                                                "rule": "best CV score on CUBS"}
    from_cache.append(False)
    with pytest.raises(RuntimeError, match="CUBS training features of mobilenet_v2 were computed again"):
        dt.detector_choice(profile)


# ----------------------------------------------------------------- on tiny data


@pytest.fixture
def detection_profile(tiny_profile, tiny_data):
    """tests/test_detect.py's tiny detection profile: an OpenImages stand-in, small detector settings."""
    write_image_folder(tiny_data / "ood_web" / "test", classes=1, per_class=12, seed=5, pattern="noise")
    return tiny_profile.replace(
        detector_arch="mobilenet_v2", cv_folds=3, detector_cv_cs=(0.01, 1.0), baseline_tuning_size=10,
        detector_ood_share=0.5, detector_ood_train=None, detector_ood_test=None, openimages_test=None,
        detector_scratch_image_size=None, detector_scratch_train=40, odin_temperatures=(1.0, 100.0),
        odin_epsilons=(0.0, 0.002), mahalanobis_epsilons=(0.0, 0.002))


def test_table4_filter_and_demo_on_tiny_data(detection_profile, store, one_torch_thread):
    overlap = dt.overlap_table(detection_profile, ["cifar10"], store)
    assert overlap["cifar10"]["overlapping"] == 0 and overlap["cifar10"]["train_kept"] == 96
    t4 = dt.table4(detection_profile, ["cifar10"], store)
    in_test = len(detection_data(detection_profile, "cifar10", store).in_test)  # 32, less the validation sample
    assert 0 < in_test < 32 and t4.a["cifar10"]["in_test"] == t4.b["cifar10"]["in_test"] == in_test and t4.names == {"cifar10": t4.results["cifar10"].victim_name}
    assert set(t4.tuning["cifar10"]) == {"fair", "published_imagenet", "published_openimages"}
    for columns, _ in dt.TABLE4_VIEWS:
        assert set(columns) <= set(t4.a["cifar10"]) and set(columns) <= set(t4.b["cifar10"])
    assert {c for columns, _ in dt.TABLE4_VIEWS for c in columns} >= {f"{m}_tpr_at_ours" for m in BASELINE_COLUMNS}
    rows = dt.filter_table(detection_profile, ["cifar10"], store)
    assert rows["cifar10"]["transfer_queries"] == 60 and rows["cifar10"]["benign_queries"] == in_test
    demo = dt.api_demo_rows(detection_profile, "cifar10", store)
    assert [q["origin"] for q in demo] == ["ImageNet"] * 4 + ["CIFAR10"] * 4
