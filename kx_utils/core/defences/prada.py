"""PRADA (Juuti et al., "PRADA: Protecting Against DNN Model Stealing Attacks", EuroS&P 2019): a stateful detector
that watches one client's stream of queries, following the authors' code
(SSGAalto/prada-protecting-against-dnn-model-stealing-attacks, ``src/growing_set.py``).

For each query ``x`` the victim predicts class ``c``.  The client's *growing set* of class ``c`` keeps the queries
that were far from it: the first query of a class enters it; a later one is compared with every member, its
minimum L2 distance ``d`` is recorded, and ``x`` joins the set when ``d`` exceeds the class's threshold, which
then becomes ``max(threshold, mean - std)`` of the distances of the set's members (the first member counting 0).
Benign queries of natural images give normally distributed minimum distances; synthetic, perturbation-based
queries do not.  Every 10 queries (before the 1st, 11th, ...), the distances of the classes with at least 10 of
them are pooled, those more than 3 standard deviations from their mean dropped, and, once more than 100 remain,
the Shapiro-Wilk statistic ``W`` is computed: the client is flagged while ``W < delta`` (the authors' server uses
``delta = 0.9``).  Distances are on the raw query (the authors' images; here the decoded image tensor, or any
feature vector the caller passes, such as the victim's penultimate layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from scipy import stats

CHECK_EVERY = 10  # queries between two normality tests
MIN_PER_CLASS = 10  # distances a class needs before its own join the pooled test
MIN_POOLED = 100  # pooled distances needed before any test (the authors' "> 100")
OUTLIER_SD = 3.0


@dataclass
class Prada:
    """One client's PRADA state: ``observe(query, predicted_class) -> flagged``."""

    delta: float = 0.9
    growing: dict = field(default_factory=dict)  # class -> list of member queries (flattened float tensors)
    member_distances: dict = field(default_factory=dict)  # class -> the members' distances (first: 0)
    thresholds: dict = field(default_factory=dict)
    distances: dict = field(default_factory=dict)  # class -> every recorded minimum distance
    queries: int = 0
    flagged: bool = False
    statistics: list = field(default_factory=list)  # (queries seen, W) of every test made

    def observe(self, query: torch.Tensor, predicted_class: int) -> bool:
        x = query.detach().reshape(-1).double()
        c = int(predicted_class)
        if c not in self.growing:
            self.growing[c], self.member_distances[c], self.thresholds[c] = [x], [0.0], 0.0
        else:
            members = torch.stack(self.growing[c])
            d = float((members - x).norm(dim=1).min())
            self.distances.setdefault(c, []).append(d)
            if d > self.thresholds[c]:
                self.growing[c].append(x)
                self.member_distances[c].append(d)
                dists = torch.tensor(self.member_distances[c], dtype=torch.float64)
                candidate = float(dists.mean() - dists.std(unbiased=False))  # numpy's std, as the authors'
                self.thresholds[c] = max(candidate, self.thresholds[c])
        if self.queries % CHECK_EVERY == 0:
            self._test()
        self.queries += 1
        return self.flagged

    def pooled_distances(self) -> torch.Tensor:
        """The distances the next normality test pools: classes with enough of them, outliers dropped."""
        pooled = [d for ds in self.distances.values() if len(ds) >= MIN_PER_CLASS for d in ds]
        if not pooled:
            return torch.empty(0, dtype=torch.float64)
        t = torch.tensor(pooled, dtype=torch.float64)
        keep = (t - t.mean()).abs() < OUTLIER_SD * t.std(unbiased=False)
        return t[keep]

    def _test(self) -> None:
        pooled = self.pooled_distances()
        if len(pooled) > MIN_POOLED:
            w = float(stats.shapiro(pooled.numpy()).statistic)
            self.statistics.append((self.queries, w))
            self.flagged = w < self.delta


def prada_stream(queries: torch.Tensor, predicted: torch.Tensor, delta: float = 0.9) -> dict:
    """Run one client's stream through PRADA: the flag after each query, the first query flagged (1-based, None
    if never) and the Shapiro-Wilk statistics of the tests made."""
    if len(queries) != len(predicted):
        raise ValueError(f"{len(queries)} queries but {len(predicted)} predicted classes")
    detector = Prada(delta=delta)
    flags = [detector.observe(q, int(c)) for q, c in zip(queries, predicted)]
    first = next((i + 1 for i, f in enumerate(flags) if f), None)
    return {"flags": flags, "first_flagged": first, "statistics": detector.statistics, "delta": delta}
