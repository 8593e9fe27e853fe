"""The ROC figure of Table 4: each baseline's curve, our detector's operating point, the 95% TNR line."""

from __future__ import annotations

import numpy as np

from ..experiments.detection import BASELINE_COLUMNS

LABELS = {"msp": "MSP", "odin_fair": "ODIN (fair)", "odin_published": "ODIN (published)",
          "mahalanobis_fair": "Mahalanobis (fair)", "mahalanobis_published": "Mahalanobis (published)"}


def roc_figure(results: dict, baseline_tnr: float, ood: str = "imagenet"):
    """One panel per victim of ``results`` (victim key -> :class:`Table4Result`)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.3), squeeze=False)
    for ax, result in zip(axes[0], results.values()):
        s = result.scores[ood]
        for method in BASELINE_COLUMNS:
            s_in, s_ood = s["in"][method].numpy(), s["ood"][method].numpy()
            labels = np.r_[np.zeros(len(s_in)), np.ones(len(s_ood))]
            fpr, tpr, _ = roc_curve(labels, np.r_[s_in, s_ood])
            ax.plot(fpr, tpr, lw=1.2, ls="--" if method.endswith("published") else "-", label=LABELS[method])
        row = result.row_a if ood == "imagenet" else result.row_b
        ax.scatter([1 - row["ours_tnr"]], [row["ours_tpr"]], marker="*", s=150, c="k", zorder=5, label="ours")
        ax.axvline(1 - baseline_tnr, ls=":", c="grey")
        ax.set(title=result.victim_name, xlabel="1 − TNR", ylabel="TPR", xlim=(0, 1), ylim=(0, 1.02))
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig
