"""Rates of a detector, in the paper's convention: out-of-distribution (OOD) is the positive class.

**TPR** is the share of OOD (attacker's) queries flagged, **TNR** the share of
in-distribution (the victim's own) queries passed.  Every score is "higher = more
OOD".  Besides the paper's TPR/TNR pairs and "TPR at a given TNR", the two figures
the OOD literature reports: AUROC and the FPR (in-distribution flagged) at 95% TPR.
"""

from __future__ import annotations

import math

import torch


def _flags(flags) -> torch.Tensor:
    flags = torch.as_tensor(flags).reshape(-1)
    if flags.dtype != torch.bool:
        raise TypeError(f"flags must be booleans (True = flagged as out of distribution), got {flags.dtype}")
    return flags.cpu()


def true_positive_rate(flags_ood) -> float:
    """TPR: the share of out-of-distribution (attacker's) queries that are flagged."""
    flags_ood = _flags(flags_ood)
    if len(flags_ood) == 0:
        raise ValueError("no out-of-distribution flags: the TPR of an empty set is undefined")
    return int(flags_ood.sum()) / len(flags_ood)


def true_negative_rate(flags_in) -> float:
    """TNR: the share of in-distribution (the victim's own) queries that pass."""
    flags_in = _flags(flags_in)
    if len(flags_in) == 0:
        raise ValueError("no in-distribution flags: the TNR of an empty set is undefined")
    return int((~flags_in).sum()) / len(flags_in)


def rates(flags_ood, flags_in) -> tuple[float, float]:
    """``(TPR, TNR)``: the share of OOD queries flagged and of in-distribution queries passed."""
    return true_positive_rate(flags_ood), true_negative_rate(flags_in)


def _scores(scores, what: str) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach().cpu().to(torch.float64).reshape(-1)
    if len(scores) == 0:
        raise ValueError(f"no {what} scores")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{what} scores contain NaN or infinite values")
    return scores


def threshold_at_tnr(scores_in, tnr: float) -> float:
    """The lowest threshold ``t`` that passes at least ``tnr`` of the in-distribution queries.

    A query is flagged when its score is strictly above ``t``; ``-inf`` (flag
    everything) when ``tnr`` is 0.
    """
    if not 0.0 <= tnr <= 1.0:
        raise ValueError(f"tnr must be a fraction in [0, 1], got {tnr}")
    ordered = torch.sort(_scores(scores_in, "in-distribution")).values
    n = len(ordered)
    may_flag = math.floor((1.0 - tnr) * n + 1e-9)  # in-distribution queries allowed above t
    if may_flag >= n:
        return float("-inf")
    return float(ordered[n - 1 - may_flag])


def tpr_at_tnr(scores_in, scores_ood, tnr: float) -> float:
    """The largest TPR of a threshold on the scores (higher = more OOD) whose TNR is at least ``tnr``."""
    threshold = threshold_at_tnr(scores_in, tnr)
    return float((_scores(scores_ood, "out-of-distribution") > threshold).double().mean())


def fpr_at_tpr(scores_in, scores_ood, tpr: float = 0.95) -> float:
    """The share of in-distribution queries flagged by the highest threshold that flags at least ``tpr``
    of the OOD queries (the literature's "FPR at 95% TPR"; lower is better)."""
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be a fraction in [0, 1], got {tpr}")
    ood = torch.sort(_scores(scores_ood, "out-of-distribution"), descending=True).values
    must_flag = math.ceil(tpr * len(ood) - 1e-9)
    if must_flag == 0:
        return 0.0
    threshold = float(ood[must_flag - 1])  # flag scores >= threshold
    return float((_scores(scores_in, "in-distribution") >= threshold).double().mean())


def auroc(scores_in, scores_ood) -> float:
    """Area under the ROC curve with OOD positive: P(score_ood > score_in), ties counted one half."""
    s_in, s_ood = _scores(scores_in, "in-distribution"), _scores(scores_ood, "out-of-distribution")
    both = torch.cat([s_in, s_ood])
    ranks = _average_ranks(both)
    rank_sum = float(ranks[len(s_in):].sum())
    n_in, n_ood = len(s_in), len(s_ood)
    return (rank_sum - n_ood * (n_ood + 1) / 2) / (n_in * n_ood)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing their mean rank (Mann–Whitney)."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    unique, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    if len(unique) < len(values):
        first = torch.cumsum(counts, 0) - counts + 1  # first rank of each run of ties
        mean_rank = (first + (counts - 1) / 2).to(values.dtype)
        ranks[order] = mean_rank[inverse]
    return ranks

