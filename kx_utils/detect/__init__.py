"""Detecting Knockoff queries (Section 4): the paper's binary detector and three OOD baselines.

- :mod:`.rates` — TPR/TNR (OOD is the positive class), TPR at a TNR, AUROC, FPR at 95% TPR;
- :mod:`.binary` — the paper's detector as estimators: from scratch, or frozen backbone + logistic
  regression (``fit(in_images, ood_images)``, ``score(images)``: higher = more OOD);
- :mod:`.baselines`, :mod:`.layers` — MSP, ODIN and Lee et al.'s multi-layer Mahalanobis, same interface;
- :mod:`.sets` — the image sets of §4.2.1, the defender/attacker split of ImageNet, validation samples;
- :mod:`.experiments` — Tables 3 and 4 and the filter, with the profile's settings and the cache.
"""

from .binary import IN_LABEL, OOD_LABEL, BinaryDetector, FrozenBackboneLogistic, ScratchDetector, fit_logistic_cv
from .experiments import (BASELINE_COLUMNS, api_demo, TABLE3_VICTIM, Table4Result, backbone_features, choose_cv_arch,
                          cv_detector, detector_row_name, detector_scores, filter_report, get_detector,
                          overlap_rows, paper_row, scratch_detector, table3_rows, table4_result, tune_baselines,
                          unseen_imagenet_queries)
from .rates import (auroc, fpr_at_tpr, rates, threshold_at_tnr, tpr_at_tnr, true_negative_rate,
                    true_positive_rate)
from .sets import DetectionData, detection_data, unseen_mask

__all__ = [
    "IN_LABEL", "OOD_LABEL", "BinaryDetector", "FrozenBackboneLogistic", "ScratchDetector", "fit_logistic_cv",
    "BASELINE_COLUMNS", "TABLE3_VICTIM", "api_demo", "Table4Result", "backbone_features", "choose_cv_arch", "cv_detector",
    "detector_row_name", "detector_scores", "filter_report", "get_detector", "overlap_rows", "paper_row",
    "scratch_detector", "table3_rows", "table4_result", "tune_baselines", "unseen_imagenet_queries",
    "auroc", "fpr_at_tpr", "rates", "threshold_at_tnr", "tpr_at_tnr", "true_negative_rate", "true_positive_rate",
    "DetectionData", "detection_data", "unseen_mask",
]
