"""The paper's qualitative claims (1-9), and claims about the defences it discusses (10-16, notebook 07), each a
check over the results with three verdicts.

Every check (:mod:`kx_utils.report.checks`) compares measured numbers against their noise
(:mod:`kx_utils.report.noise`) and returns *holds*, *fails* or *inconclusive*; a check whose
numbers are missing is *not evaluated* and says what is missing.  The same check runs on the
paper's own numbers (the paper's side of the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from . import checks as C
from . import defence_checks as DC
from . import diagnoses as D
from .checks import Check, Judgement
from .diagnoses import Diagnosis
from .noise import FAILS, HOLDS, NOT_EVALUATED, Comparison
from .results import (
    Getter,
    MissingData,
    Names,
    Results,
    paper_getter,
    paper_victim_names,
    victim_names,
)


@dataclass(frozen=True)
class Claim:
    number: int
    source: str  # where in the paper
    statement: str  # the paper's qualitative claim
    definition: str  # the check, precisely
    check: Check
    diagnose: Diagnosis  # why it fails, when our verdict is "fails" (kx_utils.report.diagnoses)
    paper_statement: str | None = None  # for claims the paper states without (enough) numbers


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str  # holds | fails | inconclusive | not evaluated
    evidence: str
    paper_verdict: str
    paper_evidence: str
    comparisons: list[Comparison] = field(default_factory=list)
    paper_comparisons: list[Comparison] = field(default_factory=list)
    diagnosis: str | None = None  # why our verdict is "fails" (None for the other verdicts)

    @property
    def holds(self) -> bool | None:
        """True (holds), False (fails), None (inconclusive or not evaluated)."""
        return {HOLDS: True, FAILS: False}.get(self.verdict)

    @property
    def paper_holds(self) -> bool | None:
        return {HOLDS: True, FAILS: False}.get(self.paper_verdict)


def verdict(value: bool | str | None) -> str:
    """The verdict's word; also accepts the True/False/None of :attr:`ClaimResult.holds`."""
    if isinstance(value, str):
        return value
    return {True: HOLDS, False: FAILS, None: NOT_EVALUATED}[value]


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Table 6, §5.1.2", "Answering with the predicted class only gives a worse surrogate than "
          "answering with the probability vector, for every victim.",
          "label_acc < probs_acc for every victim in Table 6 with both numbers (two accuracies on the victim's "
          "test set).", C.label_only_worse, D.label_only),
    Claim(2, "Table 5, §5.1.1", "Victims trained from scratch for their task are extracted less well "
          "(lower recovery) than victims fine-tuned from a pretrained model.",
          "recovery(GTSRB-5L) < recovery(GTSRB pretrained) and recovery(CIFAR10-9L) < recovery(CIFAR10 "
          "pretrained) in Table 5 (each measured pair; recovery = Acc(F_A) / Acc(F_V)).", C.scratch_lower_recovery, D.scratch_victims),
    Claim(3, "Table 4, §4.3", "The detector beats MSP (Baseline), ODIN and Mahalanobis at equal TNR on "
          "GTSRB, Diabetic5 and CIFAR10.",
          "for GTSRB, Diabetic5 and CIFAR10, in Table 4a (ImageNet) and 4b (OpenImages): ours_tpr > "
          "msp/odin_fair/mahalanobis_fair_tpr_at_ours (each baseline thresholded at our TNR, on the same OOD "
          "test images; ODIN and Mahalanobis tuned like our detector, without OOD test data); whether the "
          "published-protocol baselines (tuned on a sample of the OOD test set, as the paper's source code) are "
          "also beaten is stated beside. A tie is within the noise (the paper bolds a 99%/99% tie with "
          "Mahalanobis, Diabetic5 on OpenImages). The paper's verdict uses its published-protocol numbers.",
          C.detector_beats_baselines, D.detector_baselines),
    Claim(4, "Table 4, §4.3", "The detector is weakest on Caltech (most overlap with ImageNet/OpenImages).",
          "Caltech's balanced accuracy (ours_tpr + ours_tnr) / 2 is lower than every other victim's, in Table "
          "4a and in Table 4b.", C.detector_weakest_on_caltech, D.caltech_weakest),
    Claim(5, "Table 7, §5.2.1", "Larger batch sizes help most victims.",
          "for more than half of the victims of Table 7, the best accuracy at a batch size above 64 (bs128, "
          "bs256 where trained) is higher than at bs64.", C.larger_batches_help, D.larger_batches),
    Claim(6, "Figure 2, §5.2.1", "Every surrogate peaks before the last epoch (all would benefit from "
          "early stopping).",
          "for every victim of Figure 2, the best test accuracy of epochs 1..E-1 is higher than the last "
          "epoch's (E = epochs trained).", C.peaks_before_last_epoch, D.early_peaks,
          paper_statement="stated for all three victims (Figure 2: 'All models would benefit from early "
                          "stopping'); the paper prints no per-epoch numbers"),
    Claim(7, "§5.2.2", "In-distribution queries give a better surrogate than ImageNet queries.",
          "in_distribution_acc > imagenet_same_budget_acc: the Caltech victim's surrogate from in-distribution "
          "queries against the same validation grid run on as many ImageNet queries (Acc on the victim's test "
          "set). Without that control, the plain ImageNet surrogate counts only if it had at least as many "
          "queries (as the paper's: 97,280 Bing against 100,000 ImageNet queries).",
          C.in_distribution_beats_imagenet, D.in_distribution),
    Claim(8, "§5.2.2", "In-distribution queries evade the detector.",
          "holds when the detector flags the in-distribution queries no more often than the victim's benign test "
          "images (flagged_in_distribution − flagged_benign within the noise, or lower) while it flags as many "
          "unseen ImageNet queries clearly more often (flagged_imagenet > flagged_in_distribution); fails when "
          "in-distribution queries are flagged clearly more often than benign images; inconclusive otherwise. "
          "Binomial noise on the query counts.", C.in_distribution_evades, D.in_distribution,
          paper_statement="stated without a number ('adversarial queries may not be detected at all')"),
    Claim(9, "§5.1.3", "An unrelated transfer set (Diabetic5 queries against the GTSRB victim) gives a "
          "worse surrogate than ImageNet queries.",
          "gtsrb_with_diabetic5_queries_acc < gtsrb_with_imagenet_same_budget_acc: the Diabetic5 transfer set "
          "against as many ImageNet queries. Without that control, the plain ImageNet surrogate counts only if it "
          "had no more queries than the Diabetic5 attacker.", C.unrelated_transfer_set_worse, D.unrelated_queries,
          paper_statement="stated: 70% with Diabetic5 queries against 92.4% with Table 2's 100,000 ImageNet "
                          "queries; the paper gives no count of Diabetic5 queries, so no same-budget comparison"),
    # notebook 07: the defences of §6, measured against Knockoff (beyond the paper's tables)
    Claim(10, "§6", "Restricting the answers to classes or perturbing them does not prevent the Knockoff attack.",
          "for every defended API of 07 that keeps the honest client's top-1 class on at least "
          f"{DC.TOP1_KEPT:.0%} of its answers (label-only, reverse sigmoid, MAD where it does): the surrogate's "
          "accuracy > the victim's chance accuracy (its most frequent test class). Defences that change the top-1 "
          "class are left out and named.", DC.perturbations_do_not_prevent, D.defences,
          paper_statement="stated without numbers for Knockoff ('they ultimately do not prevent the Knockoff "
                          "attack')"),
    Claim(11, "Lee et al. 2019 (the paper's [19])", "Reverse sigmoid lowers the accuracy of a surrogate trained on "
          "probability vectors while the honest client keeps its top-1 class.",
          "for every reverse-sigmoid strength of 07 (probability answers): surrogate_acc < the undefended "
          f"surrogate_acc (Table 2's run), and top1_kept >= {DC.TOP1_KEPT:.0%} (fails otherwise).",
          DC.reverse_sigmoid_hurts, D.defences, paper_statement="beyond the paper: no numbers"),
    Claim(12, "Orekondy et al. 2020 (the paper's [23])", "At no more distortion of the answers, prediction "
          "poisoning (MAD) costs the attacker more than reverse sigmoid.",
          "for every MAD and reverse-sigmoid row of one victim with L1(MAD) <= L1(reverse sigmoid) (mean L1 distance "
          "of the answers to the victim's test images): recovery(MAD) < recovery(reverse sigmoid).",
          DC.mad_beats_reverse_sigmoid, D.defences, paper_statement="beyond the paper: no numbers"),
    Claim(13, "07 (a question §6 leaves open)", "Label-only answers cost the attacker more than any perturbation "
          "of the probability vector that keeps the honest client's top-1 class.",
          "recovery(label-only, Table 6's run) < recovery(perturbation) for every reverse-sigmoid or MAD row of 07 "
          f"with top1_kept >= {DC.TOP1_KEPT:.0%} (equal benign top-1 accuracy on both sides).",
          DC.label_only_costs_most, D.defences, paper_statement="beyond the paper: no numbers"),
    Claim(14, "§6, Juuti et al. 2019 (the paper's [11])", "PRADA does not detect the Knockoff attack's natural-image "
          "queries.",
          "no pretrained victim's Knockoff stream (Table 2's first transfer set, in order) is flagged by PRADA; fails "
          "when one is flagged while the same victim's honest client (its test images in random order) is not; "
          "inconclusive when both are.", DC.prada_misses_knockoff, D.defences,
          paper_statement="stated without numbers ('does not generalize to other attacks, e.g. the Knockoff "
                          "attack')"),
    Claim(15, "§6, Szyller et al. (the paper's [28])", "DAWN watermarks the model the Knockoff attack extracts.",
          "agreement of the extracted surrogate with the watermark's wrong classes > the agreement of a clean "
          "surrogate trained on the same queries with undefended answers (binomial on the watermarked queries).",
          DC.dawn_survives, D.defences,
          paper_statement="stated without numbers ('DAWN is effective at watermarking the model obtained using the "
                          "Knockoff attack')"),
    Claim(16, "Orekondy et al. 2019 (the paper's [22])", "Knockoff's adaptive sampling extracts a better surrogate "
          "than random sampling at the same budget.",
          "adaptive_acc > random_acc at 07's adaptive budget, for every victim it ran against (same pool, recipe "
          "and seeds).", DC.adaptive_beats_random, D.defences, paper_statement="beyond the paper: no numbers"),
)


def _evaluate(claim: Claim, get: Getter, names: Names, statement: str | None = None) -> Judgement:
    try:
        return claim.check(get, names)
    except MissingData as exc:
        return Judgement(NOT_EVALUATED, statement or exc.describe())


def check_claims(results: Results) -> list[ClaimResult]:
    """Every claim of :data:`CLAIMS`, on our results and on the paper's numbers."""
    ours_names, paper_names = victim_names(results), paper_victim_names()
    settings = results.profile_settings()
    out = []
    for claim in CLAIMS:
        ours = _evaluate(claim, results.require, ours_names)
        theirs = _evaluate(claim, paper_getter, paper_names, claim.paper_statement)
        diagnosis = None
        if ours.verdict == FAILS:
            try:
                diagnosis = claim.diagnose(results.require, ours_names, settings, ours.comparisons)
            except MissingData as exc:
                diagnosis = f"not diagnosed: {exc.describe()}"
        out.append(ClaimResult(claim, ours.verdict, ours.evidence, theirs.verdict, theirs.evidence,
                               ours.comparisons, theirs.comparisons, diagnosis))
    return out


def claims_text(claims: Iterable[ClaimResult]) -> str:
    """The claims check as plain text, for the terminal."""
    return "\n".join(f"  {c.claim.number}. {c.verdict:13s} {c.claim.statement}" for c in claims)


__all__ = ["CLAIMS", "Claim", "ClaimResult", "Judgement", "check_claims", "claims_text", "verdict"]
