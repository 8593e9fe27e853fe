"""Detecting Knockoff queries (Section 4) as estimators on tensors: the paper's binary detector and three
out-of-distribution baselines; higher scores mean more out of distribution.

- :mod:`.rates` — TPR/TNR (OOD is the positive class), TPR at a TNR, AUROC, FPR at 95% TPR;
- :mod:`.binary` — the paper's detector: from scratch, or frozen backbone + logistic regression
  (``fit(in_images, ood_images)``, ``score(images)``);
- :mod:`.baselines`, :mod:`.layers` — MSP, ODIN and Lee et al.'s multi-layer Mahalanobis, same interface.

The experiments of Tables 3 and 4 (with the profile's settings and the cache) are
:mod:`kx_utils.experiments.detection`.
"""

from .binary import (
           IN_LABEL,
           OOD_LABEL,
           BinaryDetector,
           FrozenBackboneLogistic,
           ScratchDetector,
           fit_logistic_cv,
)
from .rates import (
           auroc,
           fpr_at_tpr,
           rates,
           threshold_at_tnr,
           tpr_at_tnr,
           true_negative_rate,
           true_positive_rate,
)

__all__ = ["IN_LABEL", "OOD_LABEL", "BinaryDetector", "FrozenBackboneLogistic", "ScratchDetector", "fit_logistic_cv",
           "auroc", "fpr_at_tpr", "rates", "threshold_at_tnr", "tpr_at_tnr", "true_negative_rate",
           "true_positive_rate"]
