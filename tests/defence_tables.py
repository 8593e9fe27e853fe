"""Hand-made rows of notebook 07's tables (kx_utils.experiments.defences), for the claims tests."""

from __future__ import annotations


def defence_row(family, answers, acc, recovery, l1, top1=1.0, name="CIFAR10-MNV2", seeds=None, **extra):
    row = {"name": name, "defence": family, "family": family, "answers": answers, "strength": 1.0,
           "victim_acc": 0.8, "chance": 0.1, "surrogate_acc": acc, "recovery": recovery, "benign_acc": 0.8,
           "top1_kept": top1, "l1": l1, "kl": 0.1, "benign_queries": 3000, "budget": 12000, "seeds": [0],
           "test_size": 3000, **extra}
    if seeds:
        row.update({"surrogate_acc_seeds": seeds, "recovery_seeds": [s / 0.8 for s in seeds], "seeds": [0, 1, 2]})
    return row


def defences(rs_acc=0.60, mad_acc=0.40, label_acc=0.55, rs_top1=1.0):
    """Undefended 70% (three seeds), label-only, reverse sigmoid at L1 1.2 and MAD at L1 1.0, one victim."""
    return {"cifar10/probs/none": defence_row("none", "probs", 0.70, 0.875, 0.0, seeds=[0.70, 0.71, 0.69]),
            "cifar10/label/none": defence_row("label-only", "label", label_acc, label_acc / 0.8, 0.8),
            "cifar10/probs/reverse_sigmoid_b1": defence_row("reverse_sigmoid", "probs", rs_acc, rs_acc / 0.8, 1.2,
                                                            top1=rs_top1),
            "cifar10/probs/mad_e1": defence_row("mad", "probs", mad_acc, mad_acc / 0.8, 1.0)}


def dawn(suspect, clean=0.05, watermarked=120):
    return {"cifar10/r0.01": {"name": "CIFAR10-MNV2", "rate": 0.01, "watermarked": watermarked, "budget": 12000,
                              "agreement_suspect": suspect, "agreement_clean": clean, "chance": 1 / 9,
                              "surrogate_acc": 0.7, "clean_acc": 0.7, "seed": 0}}


def adaptive(adaptive_seeds, random_seeds=(0.50, 0.51, 0.49)):
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"cifar10": {"name": "CIFAR10-MNV2", "victim_acc": 0.8, "chance": 0.1, "budget": 2000, "test_size": 3000,
                        "reward": "all", "seeds": [0, 1, 2], "random_acc": mean(random_seeds),
                        "random_acc_seeds": list(random_seeds), "adaptive_acc": mean(adaptive_seeds),
                        "adaptive_acc_seeds": list(adaptive_seeds), "random_recovery": mean(random_seeds) / 0.8,
                        "adaptive_recovery": mean(adaptive_seeds) / 0.8, "random_classes_queried": 200,
                        "adaptive_classes_queried": 150}}


def prada(knock_flagged, benign_flagged):
    def row(client, flagged):
        return {"name": "CIFAR10-MNV2", "client": client, "queries": 3000, "flagged": flagged,
                "first_flagged": 120 if flagged else None, "tests": 290, "min_w": 0.85 if flagged else 0.97,
                "last_w": 0.95, "delta": 0.9}
    return {"cifar10/knockoff": row("knockoff", knock_flagged),
            "cifar10/benign_random": row("benign_random", benign_flagged)}
