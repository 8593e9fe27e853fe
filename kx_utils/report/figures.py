"""Figures 1 and 2 of the paper, drawn from the notebooks' figure data.

The report saves them as PNG and PDF; notebooks 04 and 05 show the very same figures
(``display(figure1(data))``); :func:`recovery_by_format` (notebook 04's Table 6) and
:func:`validation_grid_curves` (notebook 06's grid) are those notebooks' own plots.
Figures are made without pyplot, so drawing one never changes the backend of a notebook
that imports this module, and seaborn's style is applied to them alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

STYLE = "whitegrid"
PALETTE = "colorblind"


def png_bytes(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    fig._repr_png_ = lambda: png_bytes(fig)  # display(fig) shows it in a notebook, whatever its backend
    return fig


def gap_indices(data: Mapping, classes: list[str], victim: list[float], surrogate: list[float]) -> list[int]:
    """The classes to mark: the data's ``largest_gaps`` (names or indices), else the two largest gaps."""
    given = data.get("largest_gaps")
    if given is None:  # two, as the paper's Figure 1 marks "deer" and "horse"
        order = sorted(range(len(classes)), key=lambda i: victim[i] - surrogate[i], reverse=True)
        return order[:2]
    out = []
    for g in given:
        if isinstance(g, dict):
            g = g.get("index", g.get("class"))
        if isinstance(g, bool):
            continue
        if isinstance(g, int) and 0 <= g < len(classes):
            out.append(g)
        elif isinstance(g, str) and g in classes:
            out.append(classes.index(g))
    return out


def figure1(data: Mapping, victim_label: str | None = None):
    """Transfer-set histogram per predicted class, with per-class test accuracy of victim and surrogate.

    ``data`` is notebook 04's ``figure1`` (:func:`kx_utils.experiments.section5.figure1_data`).
    """
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    classes = [str(c) for c in data["classes"]]
    histogram = list(data["histogram"])
    victim, surrogate = list(data["per_class_victim"]), list(data["per_class_surrogate"])
    if not (len(classes) == len(histogram) == len(victim) == len(surrogate)):
        raise ValueError("figure1: classes, histogram and per-class accuracies differ in length "
                         f"({len(classes)}, {len(histogram)}, {len(victim)}, {len(surrogate)})")
    gaps = set(gap_indices(data, classes, victim, surrogate))
    colours = sns.color_palette(PALETTE)
    bar, gap_bar, victim_colour, surrogate_colour = "#c9c9c9", colours[1], colours[0], colours[3]
    x = list(range(len(classes)))
    fig = _new_figure(max(6.0, 0.55 * len(classes)), 4.6)
    with sns.axes_style(STYLE):
        ax = fig.add_subplot()
        ax.bar(x, histogram, color=[gap_bar if i in gaps else bar for i in x], alpha=0.85)
        ax.set_ylabel("queries in the transfer set")
        ax.set_xticks(x, classes, rotation=45 if len(classes) <= 20 else 90, ha="right", fontsize=8)
        for i, tick in enumerate(ax.get_xticklabels()):
            if i in gaps:
                tick.set_fontweight("bold")
        acc = ax.twinx()
        acc.grid(False)
        acc.plot(x, victim, "o-", color=victim_colour, label="victim Acc per class")
        acc.plot(x, surrogate, "s--", color=surrogate_colour, label="surrogate Acc per class")
        acc.set_ylim(0, 1.05)
        acc.set_ylabel("test accuracy per class")
    handles = [Patch(color=bar, label="transfer-set queries per predicted class"),
               Patch(color=gap_bar, label="class with one of the largest accuracy gaps"),
               Line2D([], [], marker="o", color=victim_colour, label="victim Acc per class"),
               Line2D([], [], marker="s", ls="--", color=surrogate_colour, label="surrogate Acc per class")]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=2)
    name = victim_label or data.get("name") or data.get("victim", "")
    ax.set_title(f"Figure 1 — {name}: transfer set and per-class accuracy (bold: largest gaps)", fontsize=9)
    return fig


def _curves_frame(data: Mapping):
    """Long form (victim, epoch, accuracy, seed) of each victim's test curve; per-seed curves where given."""
    import pandas as pd

    records = []
    for key, row in data.items():
        name = row.get("name", key)
        seeds = [c for c in (row.get("test_acc_per_epoch_seeds") or []) if isinstance(c, list) and c]
        for s, curve in enumerate(seeds or [row.get("test_acc_per_epoch") or []]):
            records += [{"victim": name, "epoch": e, "accuracy": a, "seed": s} for e, a in enumerate(curve, 1)
                        if a is not None]
    return pd.DataFrame.from_records(records, columns=["victim", "epoch", "accuracy", "seed"])


def figure2(data: Mapping, title: str = "Figure 2 — surrogate accuracy over epochs (star: best epoch)"):
    """Surrogate test accuracy over the epochs per victim: the best epoch starred, the attacker's
    validation accuracy dashed and its validation-selected epoch circled where measured.

    ``data`` is notebook 05's ``figure2`` (:func:`kx_utils.experiments.section5.curve_entry` per victim); a
    victim with ``test_acc_per_epoch_seeds`` is drawn as the mean with a band of one sd over seeds.
    """
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    rows = {k: r for k, r in data.items() if r.get("test_acc_per_epoch")}
    colours = dict(zip([r.get("name", k) for k, r in rows.items()], sns.color_palette(PALETTE)))
    fig = _new_figure(8.0, 4.2)
    with sns.axes_style(STYLE):
        ax = fig.add_subplot()
        curves = _curves_frame(rows)
        if not curves.empty:
            sns.lineplot(curves, x="epoch", y="accuracy", hue="victim", palette=colours, errorbar="sd",
                         marker="o", markersize=4, ax=ax, legend=False)
        for key, row in rows.items():
            name, accs = row.get("name", key), list(row["test_acc_per_epoch"])
            colour = colours[name]
            val = row.get("val_acc_per_epoch")
            if val:
                ax.plot(range(1, len(val) + 1), val, ls="--", lw=1, color=colour, alpha=0.7)
            best = row.get("best_epoch") or 1 + max(range(len(accs)), key=lambda i: accs[i])
            best_acc = accs[best - 1] if 1 <= best <= len(accs) else max(accs)
            ax.plot([best], [best_acc], marker="*", markersize=14, color=colour, markeredgecolor="black",
                    linestyle="none", zorder=3)
            ax.annotate(f"epoch {best}: {best_acc:.1%}", (best, best_acc), textcoords="offset points",
                        xytext=(4, 6), fontsize=7)
            chosen = row.get("val_selected_epoch")
            if isinstance(chosen, int) and 1 <= chosen <= len(accs):
                ax.plot([chosen], [accs[chosen - 1]], marker="o", markersize=10, markerfacecolor="none",
                        markeredgecolor="black", linestyle="none", zorder=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(y=0.12)
        ax.set(xlabel="epoch", ylabel="Acc(F_A) on the victim's test set")
        ax.set_title(title, fontsize=9)
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=n) for n, c in colours.items()]
    handles += [Line2D([], [], color="grey", label="test accuracy"),
                Line2D([], [], color="grey", ls="--", label="attacker's validation accuracy"),
                Line2D([], [], marker="*", markersize=10, color="grey", markeredgecolor="black", ls="none",
                       label="best test epoch"),
                Line2D([], [], marker="o", markersize=8, markerfacecolor="none", markeredgecolor="black",
                       ls="none", label="validation-selected epoch")]
    if not any(r.get("val_acc_per_epoch") for r in rows.values()):
        handles = [h for h in handles if h.get_label() not in ("attacker's validation accuracy",
                                                                "validation-selected epoch")]
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    return fig


def table2_curves(data: Mapping):
    """Appendix: every Table 2 surrogate's test and validation accuracy over the epochs (convergence)."""
    return figure2(data, "Table 2 surrogates — test (solid) and the attacker's validation (dashed) accuracy")


def budget_curves(data: Mapping, paper_recovery: Mapping[str, float] | None = None, paper_budget: int = 100_000):
    """Recovery Acc(F_A)/Acc(F_V) against the number of queries (log scale), mean and per-seed points per
    victim; the paper's Table 2 recovery at its 100,000 queries is drawn as a hollow marker."""
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter

    fig = _new_figure(7.0, 4.0)
    colours = dict(zip(list(data), sns.color_palette(PALETTE)))
    with sns.axes_style(STYLE):
        ax = fig.add_subplot()
        for key, entry in data.items():
            points = sorted(entry["points"].values(), key=lambda p: p["budget"])
            budgets = [p["budget"] for p in points]
            colour = colours[key]
            ax.plot(budgets, [p["recovery"] for p in points], marker="o", color=colour, label=entry.get("name", key))
            for p in points:
                seeds = p.get("recovery_seeds") or []
                ax.scatter([p["budget"]] * len(seeds), seeds, s=10, color=colour, alpha=0.5)
            if paper_recovery and paper_recovery.get(key) is not None:
                ax.scatter([paper_budget], [paper_recovery[key]], s=60, facecolors="none", edgecolors=colour,
                           linewidths=1.5, zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.axhline(1.0, color="black", lw=0.5)
        ax.set(xlabel="queries (log scale)", ylabel="recovery Acc(F_A) / Acc(F_V)")
        ax.set_title("Recovery against the query budget (hollow: the paper's Table 2 at 100,000 queries)",
                     fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside right upper")
    return fig


# Table 6's answer formats from the most to the least the API gives away
FORMATS_BY_DETAIL = ("probs", "top3", "rounded", "top1", "label")


def recovery_by_format(rows: Mapping, formats: tuple[str, ...] = FORMATS_BY_DETAIL, width: float = 0.16):
    """Grouped bars: each victim's surrogate recovery Acc(F_A)/Acc(F_V) for each answer format it was attacked
    with (a format a victim was not attacked with leaves a gap in its group).

    ``rows`` is notebook 04's ``table6`` (:func:`kx_utils.experiments.section5.format_row` per victim, with
    ``<format>_recovery``).
    """
    import seaborn as sns

    keys = list(rows)
    fig = _new_figure(7.0, 3.5)
    with sns.axes_style(STYLE):
        ax = fig.add_subplot()
        for i, (fmt, colour) in enumerate(zip(formats, sns.color_palette(PALETTE))):
            shown = [k for k in keys if rows[k].get(f"{fmt}_recovery") is not None]
            ax.bar([keys.index(k) + (i - (len(formats) - 1) / 2) * width for k in shown],
                   [rows[k][f"{fmt}_recovery"] for k in shown], width=width, color=colour, label=fmt)
        ax.set_xticks(range(len(keys)), [rows[k].get("name", k) for k in keys], fontsize=8)
        ax.axhline(1.0, color="black", lw=0.5)
        ax.set(ylabel="recovery Acc(F_A)/Acc(F_V)")
        ax.set_title("Surrogate recovery by answer format", fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="outside lower center", ncols=len(formats))
    return fig


def validation_grid_curves(grid: Mapping, control: Mapping | None = None, reference_acc: float | None = None):
    """5.2.2's validation grid: per batch size, validation (solid) and test (dashed) accuracy over the epochs,
    the attacker's choice starred at its test accuracy; beside it the ImageNet control's grid where given.

    ``grid`` and ``control`` are :func:`kx_utils.experiments.in_distribution.validation_grid` results (one
    seed's); ``reference_acc`` (notebook 02's surrogate) is drawn as a dotted line.
    """
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    panels = [("in-distribution queries", grid)] + ([("ImageNet queries (control)", control)] if control else [])
    fig = _new_figure(5.5 * len(panels), 3.4)
    with sns.axes_style(STYLE):
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, g) in zip(axes, panels):
            for cell, colour in zip(g["grid"].values(), sns.color_palette(PALETTE)):
                epochs = range(1, len(cell["val_acc_per_epoch"]) + 1)
                ax.plot(epochs, cell["val_acc_per_epoch"], marker=".", color=colour,
                        label=f"bs {cell['batch_size']} val")
                ax.plot(epochs, cell["test_acc_per_epoch"], ls="--", color=colour, alpha=0.6)
            ax.scatter([g["chosen_epochs"]], [g["test_acc"]], marker="*", s=150, color="black", zorder=3,
                       label="chosen (test acc)")
            if reference_acc is not None:
                ax.axhline(reference_acc, color="gray", lw=0.8, ls=":", label="notebook 02")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel="epoch", ylabel="accuracy (solid: validation, dashed: test)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
    return fig


def save_figure(fig, folder: Path, stem: str) -> list[str]:
    """``<stem>.png`` and ``<stem>.pdf`` in ``folder``; no timestamps, so a rerun gives the same bytes."""
    fig.savefig(folder / f"{stem}.png", dpi=150, metadata={"Software": None})
    fig.savefig(folder / f"{stem}.pdf", metadata={"CreationDate": None})
    return [f"{stem}.png", f"{stem}.pdf"]


DEFENCE_FAMILIES = (("reverse_sigmoid", "Reverse sigmoid (Lee et al.)"), ("mad", "MAD (Orekondy et al.)"),
                    ("dawn", "DAWN watermark (Szyller et al.)"))


def defence_tradeoffs(rows: Mapping):
    """One panel per defence: the attacker's recovery against what the honest client loses (the mean L1 distance
    of its answers to the true probability vectors), each point labelled with its strength and the benign top-1
    accuracy; the undefended API (circle) and label-only answers (square) are drawn in every panel."""
    import seaborn as sns

    families = [(f, title) for f, title in DEFENCE_FAMILIES if any(r["family"] == f for r in rows.values())]
    fig = _new_figure(3.6 * max(1, len(families)), 3.6)
    colours = dict(zip(("probs", "label"), sns.color_palette(PALETTE)))
    with sns.axes_style(STYLE):
        axes = fig.subplots(1, max(1, len(families)), sharey=True, squeeze=False)[0]
        for ax, (fam, title) in zip(axes, families):
            for mode in ("probs", "label"):
                points = sorted((r for r in rows.values() if r["family"] == fam and r["answers"] == mode),
                                key=lambda r: r["strength"])
                if not points:
                    continue
                base = [r for r in rows.values() if r["family"] == "none" and r["answers"] == mode]
                line = base + points
                ax.plot([r["l1"] for r in line], [r["recovery"] for r in line], marker="o", color=colours[mode],
                        label=f"{mode} answers")
                for r in points:
                    ax.annotate(f"{r['strength']:g} (top-1 {r['benign_acc']:.0%})", (r["l1"], r["recovery"]),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")
            for r in rows.values():
                if r["family"] in ("none", "label-only") and r["answers"] == ("probs" if r["family"] == "none"
                                                                              else "label"):
                    ax.scatter([r["l1"]], [r["recovery"]], marker="o" if r["family"] == "none" else "s", s=40,
                               facecolors="none", edgecolors="black", zorder=3)
                    ax.annotate("undefended" if r["family"] == "none" else "label-only", (r["l1"], r["recovery"]),
                                fontsize=6, xytext=(3, -9), textcoords="offset points")
            ax.set(xlabel="benign answers' mean L1 distortion", title=title)
            ax.title.set_fontsize(8)
        axes[0].set_ylabel("attacker's recovery Acc(F_A) / Acc(F_V)")
        handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="outside right upper")
    fig.suptitle("Defences against Knockoff: the attacker's recovery against the honest client's cost "
                 "(labels: strength, benign top-1)", fontsize=9)
    return fig
