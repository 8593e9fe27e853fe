import math

import pytest
import torch
import torch.nn as nn

from kx_utils.config.profiles import PAPER_ADAM, PAPER_SGD
from kx_utils.core.recipe import Recipe
from kx_utils.core.train import (
    augment_batch,
    best_epoch,
    fit,
    learning_rate,
    per_class_accuracy,
    soft_cross_entropy,
)


def test_soft_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.tensor([[0.5, 0.25, 0.25]])
    z = math.log(math.exp(2) + 1 + math.exp(-1))
    expected = -(0.5 * (2 - z) + 0.25 * (0 - z) + 0.25 * (-1 - z))
    assert soft_cross_entropy(logits, p).item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_of_one_hot_equals_cross_entropy():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    onehot = nn.functional.one_hot(y, 4).float()
    assert soft_cross_entropy(logits, onehot).item() == pytest.approx(
        nn.functional.cross_entropy(logits, y).item(), rel=1e-6)


def test_paper_schedules_scale_with_the_number_of_epochs():
    # SGD: 0.1, divided by 10 at epochs 60, 120, 180 of 200 (one step per epoch here)
    lrs = [learning_rate(PAPER_SGD, e, 200) for e in (0, 59, 60, 119, 120, 180, 199)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001])
    # the same fractions on a 20-epoch run
    assert learning_rate(PAPER_SGD, 5, 20) == pytest.approx(0.1)
    assert learning_rate(PAPER_SGD, 6, 20) == pytest.approx(0.01)
    # Adam: 1e-3, then 5e-4 after half the run
    assert learning_rate(PAPER_ADAM, 99, 200) == pytest.approx(1e-3)
    assert learning_rate(PAPER_ADAM, 100, 200) == pytest.approx(5e-4)


def test_warmup_ramps_linearly():
    r = Recipe(epochs=1, batch_size=1, lr=1.0, milestones=(), warmup_fraction=0.1)
    assert learning_rate(r, 0, 100) == pytest.approx(0.1)
    assert learning_rate(r, 4, 100) == pytest.approx(0.5)
    assert learning_rate(r, 50, 100) == pytest.approx(1.0)


def test_crop_augmentation_shifts_content_and_keeps_shape():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, "crop", g)
    assert out.shape == x.shape
    assert torch.all(out.sum((1, 2, 3)) <= 4)  # the square may leave the frame, never grows
    centres = {tuple(torch.nonzero(o[0]).float().mean(0).tolist()) for o in out if o.sum() == 4}
    assert len(centres) > 3  # different samples get different shifts
    flipped = augment_batch(torch.arange(4.0).view(1, 1, 1, 4).repeat(200, 1, 1, 1), "flip", g)
    assert 50 < (flipped[:, 0, 0, 0] == 3).sum() < 150  # about half are mirrored


def _separable(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.full((n, 3, 4, 4), 40, dtype=torch.uint8)
    x[y == 1] = 200
    noise = torch.randint(0, 30, x.shape, generator=g, dtype=torch.uint8)
    return x + noise, y


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x - 0.5)


def test_fit_learns_hard_and_soft_targets():
    x, y = _separable()
    recipe = Recipe(epochs=5, batch_size=32, optimizer="adam", lr=0.01, momentum=0, weight_decay=0,
                    milestones=())
    for targets in (y, nn.functional.one_hot(y, 2).float() * 0.8 + 0.1):
        torch.manual_seed(0)
        history = fit(Tiny(), x, targets, recipe, eval_sets={"test": (x, y)}, progress=False)
        assert len(history) == 5
        assert history[-1]["test_acc"] > 0.95
        assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_fit_resumes_after_a_kill_to_the_same_result(tmp_path, monkeypatch):
    import kx_utils.core.train as kt
    x, y = _separable()
    recipe = Recipe(epochs=4, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9, milestones=(0.5,))
    torch.manual_seed(0)
    straight = Tiny()
    reference = fit(straight, x, y, recipe, eval_sets={"test": (x, y)}, progress=False, seed=3)

    ckpt = tmp_path / "run.ckpt"
    real_save = kt.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if obj["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the second epoch's checkpoint

    monkeypatch.setattr(kt, "atomic_save", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(Tiny(), x, y, recipe, eval_sets={"test": (x, y)}, progress=False, seed=3, checkpoint=ckpt)
    monkeypatch.setattr(kt, "atomic_save", real_save)

    resumed = Tiny()  # fresh weights: everything must come from the checkpoint
    history = fit(resumed, x, y, recipe, eval_sets={"test": (x, y)}, progress=False, seed=3,
                  checkpoint=ckpt)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in history] == pytest.approx([r["train_loss"] for r in reference])
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_per_class_accuracy_and_best_epoch():
    pred = torch.tensor([0, 0, 1, 2, 2])
    labels = torch.tensor([0, 1, 1, 2, 2])
    acc = per_class_accuracy(pred, labels, 4)
    assert acc[:3] == [1.0, 0.5, 1.0] and math.isnan(acc[3])
    hist = [{"epoch": 1, "a": 0.5}, {"epoch": 2, "a": 0.7}, {"epoch": 3, "a": 0.7}]
    assert best_epoch(hist, "a")["epoch"] == 2


def test_fit_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="targets"):
        fit(Tiny(), torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long),
            Recipe(epochs=1, batch_size=2), progress=False)


def test_resized_crop_boxes_follow_torchvisions_random_resized_crop():
    from kx_utils.core.train import (
        RESIZED_CROP_RATIO,
        RESIZED_CROP_SCALE,
        resized_crop_boxes,
    )
    boxes = resized_crop_boxes(4000, 256, 256, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 256).all()
    share = w * h / 256 ** 2
    assert share.min() >= RESIZED_CROP_SCALE[0] * 0.95 and share.max() <= 1.0
    fitted = share < 1.0  # the whole image is the fallback, where no try fits
    ratio = (w / h)[fitted]
    assert ratio.min() >= RESIZED_CROP_RATIO[0] * 0.9 and ratio.max() <= RESIZED_CROP_RATIO[1] * 1.1
    assert 0.45 < share.mean() < 0.6  # U(0.08, 1) of the area, less what does not fit: about a half
    assert torch.equal(boxes, resized_crop_boxes(4000, 256, 256, torch.Generator().manual_seed(0)))


def test_a_resized_crop_to_the_input_size_samples_inside_its_box():
    from kx_utils.core.train import augment_batch
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, :, 16:] = 1.0  # left half 0, right half 1
    out = augment_batch(x, "resized_crop", torch.Generator().manual_seed(1), out_size=28)
    assert out.shape == (64, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    # crops land on either side of the edge: some all dark, some all bright, some both
    means = out.mean((1, 2, 3))
    assert (means < 0.01).any() and (means > 0.99).any() and ((means > 0.2) & (means < 0.8)).any()
    flipped = augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(1), out_size=28)
    assert not torch.equal(flipped, out)  # same boxes, some flipped


def test_the_paper_profile_sees_centre_crops_of_a_larger_decode_as_the_knockoff_code():
    from kx_utils.config.profiles import get_profile
    from kx_utils.data.imagefolder import centre_crop
    from kx_utils.experiments.victims import stored_side, victim_recipe
    paper, mini = get_profile("paper"), get_profile("mini")
    assert stored_side(paper, 224) == 256 and stored_side(mini, 48) == 48
    assert victim_recipe(paper, "caltech").augment == "resized_crop_flip"
    assert victim_recipe(paper, "gtsrb").augment == "resized_crop"  # no flips of traffic signs
    grid = torch.arange(16).view(1, 1, 4, 4)
    assert centre_crop(grid, 2).flatten().tolist() == [5, 6, 9, 10]
