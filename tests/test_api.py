import pytest
import torch
import torch.nn as nn

from kx_utils.core.api import PredictionAPI, answers_to_targets, format_answers


class FixedLogits(nn.Module):
    """Returns preset logits, one row per query (the image's first pixel picks the row)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


PROBS = torch.tensor([[0.62, 0.26, 0.08, 0.04], [0.1, 0.2, 0.3, 0.4]])


def test_answer_formats():
    assert torch.equal(format_answers(PROBS, "probs"), PROBS)
    top1 = format_answers(PROBS, "topk", k=1)
    assert torch.allclose(top1, torch.tensor([[0.62, 0, 0, 0], [0, 0, 0, 0.4]]))
    top3 = format_answers(PROBS, "topk", k=3)
    assert (top3 > 0).sum(1).tolist() == [3, 3] and top3[0, 3] == 0
    assert torch.allclose(format_answers(PROBS, "rounded", decimals=1),
                          torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]]))
    assert format_answers(PROBS, "label").tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="probs, topk, rounded, label"):
        format_answers(PROBS, "logits")


def test_answers_become_probability_targets():
    t = answers_to_targets(torch.tensor([[0.6, 0.0, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert t[0].tolist() == pytest.approx([0.75, 0, 0.25, 0])
    assert t[1].tolist() == pytest.approx([0.25] * 4)  # nothing learned: uniform
    with pytest.raises(ValueError, match="refused"):
        answers_to_targets(torch.tensor([[float("nan"), 0.5]]))


def _images(rows):
    x = torch.zeros(len(rows), 3, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(rows, dtype=torch.uint8)
    return x


def test_api_counts_queries_and_answers_in_its_mode():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    api = PredictionAPI(FixedLogits(logits), mode="label", device="cpu")
    out = api(_images([0, 1, 1]))
    assert out.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    api(_images([0]))
    assert api.query_count == 4
    probs = PredictionAPI(FixedLogits(logits), device="cpu")(_images([0]))
    assert probs.tolist()[0] == pytest.approx(logits[0].softmax(0).tolist())


def test_detector_in_front_refuses_or_degrades_flagged_queries():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    flag_row_1 = lambda x: x[:, 0, 0, 0] == 1
    refusing = PredictionAPI(FixedLogits(logits), detector=flag_row_1, device="cpu")
    r = refusing.respond(_images([0, 1]))
    assert r.flagged.tolist() == [False, True]
    assert not torch.isnan(r.answers[0]).any() and torch.isnan(r.answers[1]).all()
    assert refusing.query_count == 2  # refused queries are still counted
    degrading = PredictionAPI(FixedLogits(logits), detector=flag_row_1, detector_action="label",
                              device="cpu")
    assert degrading(_images([1])).tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match="refuse, label"):
        PredictionAPI(FixedLogits(logits), detector_action="shrug")
