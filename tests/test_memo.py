"""kx_utils.runtime.memo: the one policy of the package's in-process memos, and the keys they are held under."""

from __future__ import annotations

import pytest
import torch

from kx_utils.runtime import memo as M
from tests.conftest import write_image_folder


def test_a_memo_builds_once_per_key_and_forgets_the_least_recently_used_first():
    built = []
    m = M.Memo("test entries", max_entries=2)

    def build(v):
        return lambda: built.append(v) or v

    assert m.get("a", build(1)) == 1 and m.get("a", build(99)) == 1 and built == [1]
    m.get("b", build(2))
    m.get("a", build(99))  # "a" is now the most recent
    m.get("c", build(3))  # ... so "b" goes
    assert "a" in m and "c" in m and "b" not in m and len(m) == 2
    assert built == [1, 2, 3]


def test_a_memo_makes_room_before_it_builds():
    m = M.Memo("test room", max_entries=1)
    m.get("a", lambda: 1)
    seen = []
    m.get("b", lambda: seen.append(len(m)) or 2)
    assert seen == [0]  # the old value was let go before the new one was built


def test_a_byte_budget_keeps_what_fits_and_hands_back_what_cannot():
    budget = [10]
    m = M.Memo("test bytes", max_bytes=lambda: budget[0], size_of=len)
    m.get("x", lambda: "aaaa")
    m.get("y", lambda: "bbbb")
    m.get("z", lambda: "cccc")  # 12 bytes held > 10: "x" goes
    assert "x" not in m and "y" in m and "z" in m
    assert m.get("big", lambda: "d" * 11) == "d" * 11 and "big" not in m and len(m) == 2
    with pytest.raises(ValueError, match="size_of"):
        M.Memo("no size", max_bytes=5)


def test_forget_all_empties_every_memo_of_the_package(tiny_profile):
    from kx_utils.core.detectors import binary
    from kx_utils.data import datasets
    from kx_utils.experiments import detection_sets, ood_baselines
    package = [datasets._REMEMBERED, datasets._CONTENT_MEMO, detection_sets._SETS, binary._BACKBONES,
               ood_baselines._GAUSSIANS]
    small = datasets.ImageSet(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), ["c"])
    for i, memo in enumerate(package):
        memo.get(("test", i), lambda: small)
    assert all(len(memo) == 1 for memo in package)
    M.forget_all()
    assert [len(memo) for memo in package] == [0] * len(package)


@pytest.fixture
def sets_profile(tiny_profile, tiny_data):
    write_image_folder(tiny_data / "ood_web" / "test", classes=1, per_class=12, seed=5, pattern="noise")
    return tiny_profile.replace(detector_ood_share=0.5, baseline_tuning_size=10, detector_ood_train=None,
                                detector_ood_test=None, openimages_test=None)


def _files(data):
    return {name: getattr(data, name).files for name in ("in_train", "in_test", "ood_train", "ood_tune", "ood_test",
                                                         "openimages_test", "in_tune", "in_fit")}


def test_the_section4_sets_are_held_under_what_they_depend_on(sets_profile):
    from kx_utils.experiments.detection_sets import detection_data
    first = detection_data(sets_profile, "cifar10")
    # a setting the sets do not depend on: the very same sets come back
    other = detection_data(sets_profile.replace(transfer_budget=7, cv_folds=4), "cifar10")
    assert other.in_train is first.in_train and other.ood_train is first.ood_train
    # settings they depend on: each gives the sets a fresh computation gives
    for change in ({"detector_ood_share": 0.25}, {"baseline_tuning_size": 4}, {"published_validation_fraction": 0.3},
                   {"detector_ood_test": 9}, {"openimages_test": 5}, {"seed": 3}, {"train_per_class": 10},
                   {"test_per_class": 3}):
        changed = sets_profile.replace(**change)
        detection_data(sets_profile, "cifar10")  # the sets of the unchanged profile are held ...
        held = _files(detection_data(changed, "cifar10"))  # ... and must not be handed back here
        M.forget_all()
        assert held == _files(detection_data(changed, "cifar10")), change
        assert held != _files(first), change
