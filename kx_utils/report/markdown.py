"""``report.md``: the claims check with its noise, the tables, the figures, the stand-ins, the
profile's deviations from the paper, the wall times, the machine and library versions.

Paths are shown relative to the repository root (or as ``$KX_RUNS`` / ``$KX_CACHE`` when
outside it): nothing written holds an absolute path of the machine.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..data.catalog import dataset_info
from ..experiments.registry import producer
from ..experiments.victims import CLEARLY_LEARNED
from ..orchestration.pipeline import NOTEBOOKS, format_seconds
from ..runtime.artifacts import REPO_ROOT
from . import paper
from .claims import ClaimResult
from .noise import MARGIN, NOISE_RULE, NOT_EVALUATED, Comparison, show_difference
from .results import DATA_NOT_PRESENT, Results, victim_names
from .tables import (
    AT_CHANCE_MARK,
    DEFENCE_TABLES,
    OURS_ONLY_TABLES,
    TABLE_SPECS,
    at_chance_victims,
    frame_to_markdown,
)

# The project's target for a whole mini run on a 2-core CPU. It was 90 minutes until Section 5 ran at Table 2's
# scale: one surrogate of that size costs 5-7 minutes of a core, and Table 2, Table 5's scratch victims and the
# label-only column on three seeds are 36 of them, 1h30m-1h40m on two workers before the victims, the detectors,
# Table 7 or notebook 07. The target is the whole as measured on the slower of two machines of this kind (about
# 2h27m there) with room to spare.
MINI_TARGET_SECONDS = 165 * 60
MINI_TARGET = (f"the project's target for a mini run: {MINI_TARGET_SECONDS // 3600}h"
               f"{MINI_TARGET_SECONDS % 3600 // 60:02d}m on a 2-core CPU")
ALL = {6: "six", 7: "seven", 8: "eight"}.get(len(NOTEBOOKS), str(len(NOTEBOOKS)))  # the registry's notebooks
FIGURE_CAPTIONS = (
    ("figure1", "Figure 1 — the CIFAR10 victim: histogram of the transfer set's predicted classes (bars) and "
                "per-class test accuracy of victim and surrogate; the classes with the largest gaps are in bold."),
    ("figure2", "Figure 2 — Acc(F_A) over the training epochs against the victims of the profile's plan (the "
                "paper: Caltech, CIFAR10 and GTSRB); mean over seeds with a band of one sd, the star marks the best "
                "epoch of the mean, dashed lines the attacker's validation accuracy and circles the epoch it would "
                "stop at."),
    ("budget_curves", "Budget curves (beyond the paper) — recovery against the number of queries, Table 2's "
                      "recipe at each budget; small dots are single seeds, hollow markers the paper's Table 2 "
                      "recovery at 100,000 queries."),
    ("defence_tradeoffs", "Defences against Knockoff (07, beyond the paper) — the attacker's recovery against the "
                          "honest client's cost (mean L1 distortion of the answers to the victim's test images), one "
                          "panel per defence; labels give each point's strength and the benign top-1 accuracy."),
    ("table2_curves", "Appendix — every Table 2 surrogate's accuracy over the epochs: test (solid, mean and sd "
                      "over seeds) and the attacker's own validation accuracy on its held-out queries (dashed), "
                      "to show where training flattens."),
)


def shown_path(path: str | os.PathLike | None, outside: str) -> str:
    """``path`` relative to the repository root; ``outside`` when it lies elsewhere."""
    if not path:
        return outside
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return outside


def _missing_hint(profile: str, notebook: str) -> str:
    return f"`python -m kx_utils reproduce --profile {profile} --only {notebook}`"


# ---------------------------------------------------------------- claims


def _paper_column(c: ClaimResult) -> str:
    if c.paper_verdict == NOT_EVALUATED and c.claim.paper_statement:
        return "stated"
    return c.paper_verdict


def _comparison_table(comparisons: list[Comparison]) -> list[str]:
    lines = [f"| compared | claimed | measured | margin | noise (1 sd) | noise from | judged (margin vs {MARGIN:g} sd) |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        measured = f"{c.left.shown()} vs {c.right.shown()}"
        lines.append(f"| {c.label} | {c.relation} | {measured} | {show_difference(c.margin, c.unit)} | "
                     f"{show_difference(c.noise, c.unit, signed=False)} | {c.how} | {c.word} |")
    return lines


def claim_seeds(comparisons) -> str:
    """How many seeds the numbers of a verdict rest on: "3", "1 and 3" where its measures differ, "-" where no
    measure is a mean over seeds (a single run's binomial noise)."""
    counts = sorted({len(m.seeds) or 1 for c in comparisons for m in (c.left, c.right)})
    return " and ".join(map(str, counts)) if counts else "-"


def claims_lines(claims: list[ClaimResult]) -> list[str]:
    md = ["## Claims check", "",
          "Each qualitative claim of the paper, written as a check over the results. *Paper* applies the same check "
          "to the paper's own numbers (*stated*: the paper states the claim without the numbers the check needs). "
          "Where our verdict is *fails*, *Why it fails here* gives the measured numbers the failure rests on: the "
          "comparisons against the claim, and what the run records about their cause (training length against "
          "the paper's, Table 7's equal-steps control, a threshold-free AUROC beside a thresholded TPR).",
          "", "### How verdicts are decided", "", NOISE_RULE, "",
          "| # | claim | source | ours | seeds (ours) | paper |", "|---|---|---|---|---|---|"]
    for c in claims:
        md.append(f"| {c.claim.number} | {c.claim.statement} | {c.claim.source} | **{c.verdict}** | "
                  f"{claim_seeds(c.comparisons)} | {_paper_column(c)} |")
    md.append("")
    for c in claims:
        paper_side = c.paper_evidence if c.paper_verdict == NOT_EVALUATED else f"{c.paper_verdict} — {c.paper_evidence}"
        md += [f"### Claim {c.claim.number}: {c.verdict} — {c.claim.statement}", "",
               f"- Check: {c.claim.definition}", f"- Ours: **{c.verdict}** — {c.evidence}",
               f"- Paper: {paper_side}"]
        if c.diagnosis:
            md.append(f"- Why it fails here: {c.diagnosis}")
        md.append("")
        if c.comparisons:
            md += ["The comparisons behind our verdict:", ""] + _comparison_table(c.comparisons) + [""]
    return md


# ---------------------------------------------------------------- the machine, the time, the stand-ins


def environment_lines(results: Results) -> list[str]:
    keys, per_nb = [], {}
    for nb in NOTEBOOKS:
        env = results.documents.get(nb, {}).get("environment")
        if env:
            per_nb[nb] = env
            keys += [k for k in env if k not in keys]
    lines = ["| item | value |", "|---|---|"]
    for key in keys:
        values = {}
        for nb, env in per_nb.items():
            values.setdefault(str(env.get(key)), []).append(nb[:2])
        shown = next(iter(values)) if len(values) == 1 else "; ".join(
            f"{v} ({', '.join(nbs)})" for v, nbs in values.items())
        lines.append(f"| {key} | {shown} |")
    import matplotlib
    import papermill
    import seaborn

    lines.append(f"| report: python, pandas, matplotlib, seaborn, papermill | {platform.python_version()}, "
                 f"{pd.__version__}, {matplotlib.__version__}, {seaborn.__version__}, {papermill.__version__} |")
    if not per_nb:
        lines.insert(0, "No notebook results, so no record of the machine that ran them.\n")
    return lines


def _runs_since_empty_cache(runs: list[dict]) -> list[dict]:
    """The ``reproduce`` commands since the last one that started from an empty cache."""
    starts = [i for i, r in enumerate(runs) if r.get("cache_files_at_start") == 0]
    return runs[starts[-1]:] if starts else []


def _last_command_line(last: dict) -> str:
    cache = ("an empty cache" if last.get("cache_files_at_start") == 0
             else f"a cache holding {last.get('cache_files_at_start')} files")
    where = shown_path(last.get("cache_root"), "`$KX_CACHE`, outside the repository")
    grid = last.get("grid")
    phase = (f" (the experiment grid first: {format_seconds(grid.get('wall_seconds'))}, {grid.get('status')})"
             if grid else "")
    return (f"Last `reproduce` command: started {last.get('started')}, {last.get('status')}, "
            f"{format_seconds(last.get('wall_seconds'))}{phase}; ran {', '.join(last.get('ran') or []) or 'nothing'}; "
            f"reused {', '.join(last.get('reused') or []) or 'nothing'}; started from {cache} ({where}).")


def wall_time_lines(results: Results) -> list[str]:
    notebooks = results.state.get("notebooks", {})
    lines = ["| notebook | pipeline status | wall time (papermill) | notebook's own timer | results written |",
             "|---|---|---|---|---|"]
    total_pm, total_nb, complete = 0.0, 0.0, True
    for nb in NOTEBOOKS:
        entry, doc = notebooks.get(nb, {}), results.documents.get(nb)
        pm, own = entry.get("wall_seconds"), (doc or {}).get("wall_seconds")
        status = entry.get("status", "not run by the pipeline" if doc else "not run")
        if doc and status in ("failed", "interrupted", "running"):
            status += " (the results shown are from an earlier run)"
        if entry.get("status") == "finished" and pm is not None:
            total_pm += pm
        else:
            complete = False
        total_nb += own or 0
        lines.append(f"| {nb} | {status} | {format_seconds(pm) if entry.get('status') == 'finished' else ''} | "
                     f"{format_seconds(own)} | {(doc or {}).get('created', 'missing')} |")
    lines.append(f"| **total** | | {format_seconds(total_pm) if complete else 'incomplete'} | "
                 f"{format_seconds(total_nb)} | |")
    summary = []
    runs = results.state.get("invocations", [])
    fed_by_grid = any(r.get("grid") for r in runs)
    if complete:
        summary.append(f"**Total wall time of the {ALL} notebooks: {format_seconds(total_pm)}** "
                       "(sum of their last pipeline runs" + ("; they loaded what the experiment grid had computed, "
                                                             "whose time is in the command's below)" if fed_by_grid
                                                             else ")") + ".")
    if runs:
        summary.append(_last_command_line(runs[-1]))
        chain = _runs_since_empty_cache(runs)
        if chain and chain[-1].get("status") == "finished" and complete:
            total = sum(r.get("wall_seconds") or 0 for r in chain)
            line = (f"**From an empty cache to all {ALL} notebooks: {format_seconds(total)}** of compute over "
                    f"{len(chain)} `reproduce` command(s) started {chain[0].get('started')}; failed or "
                    "interrupted attempts count, the time between commands does not.")
            if results.profile == "mini":
                line += f" Within {MINI_TARGET}: {'yes' if total <= MINI_TARGET_SECONDS else 'no'}."
            summary.append(line)
        elif results.profile == "mini":  # the target is for a whole run: a warm cache's times say nothing of it
            summary.append(f"No run from an empty cache to all {ALL} notebooks is recorded here, so {MINI_TARGET} "
                           "is not judged.")
        one_command = [r for r in runs if r.get("status") == "finished" and r.get("only") is None
                       and len(r.get("ran") or []) == len(NOTEBOOKS)]
        if one_command:
            r = one_command[-1]
            fresh = "from an empty cache" if r.get("cache_files_at_start") == 0 else "with a warm cache"
            summary.append(f"Latest single command that ran all {ALL} notebooks: {format_seconds(r.get('wall_seconds'))} "
                           f"{fresh} (started {r.get('started')}).")
    else:
        summary.append("No pipeline state (the notebooks were not run by `python -m kx_utils reproduce`): "
                       "only the notebooks' own timers are known.")
    return summary + [""] + lines


def budget_text(settings: Mapping) -> str:
    """The profile's query budget, stated once: Table 2's, which every Section 5 attack (Tables 5-7, 5.1.3's
    recipe) uses too, and the convergence protocol's where it runs on its own budget."""
    recipe = settings.get("surrogate_recipe") or {}
    text = (f"{settings.get('transfer_budget')} queries, {recipe.get('epochs')} epochs (Table 2; every Section 5 "
            "attack is Table 2's: Tables 5-7, and 5.1.3's recipe)")
    s5 = settings.get("section5") or {}
    if s5.get("table7_convergence_victims"):
        text += (f"; Table 7's convergence protocol: {s5.get('table7_convergence_budget') or settings.get('transfer_budget')} "
                 f"queries, up to {s5.get('table7_convergence_epochs') or recipe.get('epochs')} epochs")
    return text


def seeds_line(settings: Mapping) -> str:
    """Which results are means over seeds, and which single-seed (the profile's plan)."""
    seeds = list(settings.get("surrogate_seeds") or [settings.get("seed", 0)])
    single = list((settings.get("section5") or {}).get("single_seed") or [])
    if len(seeds) < 2:
        return f"**Seeds:** every surrogate result comes from one seed ({seeds[0]}); its noise is binomial."
    text = (f"**Seeds:** every surrogate result is the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}; "
            "each seed draws its own transfer set and initialisation, the victims stay fixed); `sd` columns give "
            "their standard deviation, and the claims check judges on the spread over seeds.")
    if single:
        text += f" **Single-seed** (seed {seeds[0]} only, for time): {', '.join(single)}."
    return text


def standin_lines(settings: Mapping) -> list[str]:
    from ..core.models import SHORT_NAMES
    from ..data.catalog import DATASETS

    standins = settings.get("standins", False)
    sizes = settings.get("image_size", {})
    lines = ["| paper dataset | paper size | in this profile | px | note |", "|---|---|---|---|---|"]
    for key, info in DATASETS.items():
        where = f"`{info.standin}`" if standins else f"`{info.folder}`"
        note = info.standin_note if standins else "the paper's dataset"
        counts = f"{info.paper_classes or '—'} classes, {info.paper_train or '—'} / {info.paper_test or '—'}"
        lines.append(f"| {info.paper_name} ({counts}) | {info.paper_size} | {where} | {sizes.get(key, '')} | {note} |")

    def arch(name):
        return f"{name} ({SHORT_NAMES.get(name, name)})"

    def recipe(r):
        r = r or {}
        return f"{r.get('epochs')} epochs, batch {r.get('batch_size')}, {r.get('optimizer')} lr {r.get('lr')}"

    lines += ["", "| paper model / setting | in this profile |", "|---|---|",
              f"| ResNet34, ImageNet-pretrained victims (Caltech, CUBS, Diabetic5, GTSRB, CIFAR10) | "
              f"{arch(settings.get('backbone'))}, {recipe(settings.get('victim_recipe'))} |",
              f"| GTSRB-5L, CIFAR10-9L from scratch, 32 px, Adam | {settings.get('scratch_image_size')} px, "
              f"{recipe(settings.get('scratch_recipe'))} |",
              f"| ResNet34 surrogate, 200 epochs, batch 64 | {arch(settings.get('surrogate_arch'))}, "
              f"{recipe(settings.get('surrogate_recipe'))} |",
              f"| 100,000 ImageNet queries | {budget_text(settings)} |",
              f"| detectors from scratch RN18, RN34 | {', '.join(settings.get('detector_scratch_archs') or [])}, "
              f"{recipe(settings.get('detector_recipe'))} |",
              f"| detectors RN18/34/101/152*CV (frozen + logistic regression) | "
              f"{', '.join(arch(a) for a in settings.get('detector_cv_archs') or [])}, "
              f"{settings.get('cv_folds')}-fold CV |",
              f"| ImageNet 90,000 / 10,000 and OpenImages 20,000 for detection | "
              f"{settings.get('detector_ood_train') or 'all'} / {settings.get('detector_ood_test') or 'all'} and "
              f"{settings.get('openimages_test') or 'all'} |",
              f"| 380 Bing images per Caltech class (§5.2.2) | {settings.get('in_distribution_per_class') or 'all'} "
              f"per class |",
              f"| batch sizes 16, 64, 128, 256 (Table 7) | {', '.join(map(str, settings.get('batch_sizes') or []))} |"]
    return lines


# ---------------------------------------------------------------- report.md


def render_report(results: Results, tables: dict[str, pd.DataFrame], missing: dict[str, str],
                  claims: list[ClaimResult], figures: dict[str, str]) -> str:
    settings = results.profile_settings()
    profile = results.profile
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    folder = shown_path(results.folder, f"$KX_RUNS/{profile}")
    md = [f"# kx reproduction report — profile `{profile}`", "",
          f"Paper: *{paper.PAPER_TITLE}* ({paper.PAPER_AUTHORS}).", "",
          f"Generated {now} by `python -m kx_utils report --profile {profile}` from the notebooks' JSON "
          f"results in `{folder}/` (never from their printed output). Accuracies and rates are percentages; "
          "`diff` is ours minus the paper's (percentage points for rates).", "",
          f"Profile `{profile}`: {settings.get('description', '')}", "", seeds_line(settings), ""]
    have = [nb for nb in NOTEBOOKS if nb in results.documents]
    md.append(f"Results present: {len(have)} of {len(NOTEBOOKS)} notebooks.")
    for key, why in results.data_not_present.items():
        md += ["", f"**Data not present:** {dataset_info(key).paper_name} — its rows read *data not present* "
                   f"and what needs it is not evaluated ({why})."]
    if results.missing_notebooks:
        md += ["", "**Missing** (the parts that need them are left out or marked *not evaluated*):", ""]
        md += [f"- `{nb}` — produce it with {_missing_hint(profile, nb)}" for nb in results.missing_notebooks]
    md += [""] + claims_lines(claims)
    md += ["## Tables", ""]
    names = victim_names(results)
    marked = [names.get(key, key) for key in at_chance_victims(results)]
    if marked:
        md += [f"Rows marked *{AT_CHANCE_MARK.strip()}* ({', '.join(marked)}): the victim itself is not clearly above "
               f"chance (at most {CLEARLY_LEARNED}x the accuracy of always answering its most frequent test class), "
               "so its surrogates are no evidence about extraction; they stay in the tables, and every claim over "
               "every victim leaves them out.", ""]
    for spec in TABLE_SPECS:
        md += [f"### {spec.title}", ""]
        if spec.key in tables:
            if spec.caption:
                md += [spec.caption, ""]
            md += [frame_to_markdown(tables[spec.key]), "", f"Files: `{spec.key}.csv`, `{spec.key}.md`.", ""]
        elif DATA_NOT_PRESENT in missing[spec.key]:
            md += [f"*{missing[spec.key]}*", ""]
        else:
            md += [f"*{missing[spec.key]}* — produce it with {_missing_hint(profile, producer(spec.key))}.", ""]
    extra = [(k, t) for k, t in OURS_ONLY_TABLES if k in tables]
    if extra:
        md += ["## Other measurements (ours only)", ""]
        for key, title in extra:
            md += [f"### {title}", "", frame_to_markdown(tables[key]), "", f"Files: `{key}.csv`, `{key}.md`.", ""]
    defence = [(k, t, c) for k, t, c in DEFENCE_TABLES if k in tables]
    if defence:
        md += ["## Beyond the paper: the defences of §6 against Knockoff (07)", ""]
        for key, title, caption in defence:
            md += [f"### {title}", "", caption, "", frame_to_markdown(tables[key]), "",
                   f"Files: `{key}.csv`, `{key}.md`.", ""]
    md += ["## Figures", ""]
    for key, caption in FIGURE_CAPTIONS:
        if key in figures:
            md += [f"![{caption}]({key}.png)", "", f"{caption} Files: `{key}.png`, `{key}.pdf`.", ""]
        else:
            md += [f"*{caption.split(' — ')[0]}: {figures.get(key + '_missing', 'not produced')}* — produce it "
                   f"with {_missing_hint(profile, producer(key))}.", ""]
    md += ["## Stand-ins in this profile", ""] + standin_lines(settings) + [""]
    md += ["## Deviations from the paper", ""]
    notes = list(settings.get("notes") or [])
    md += [f"- {n}" for n in notes] or ["- none: this profile uses the paper's settings."]
    nb_notes = [(nb, n) for nb in NOTEBOOKS for n in results.documents.get(nb, {}).get("notes") or []]
    if nb_notes:
        md += ["", "Notes written by the notebooks:", ""] + [f"- `{nb}`: {n}" for nb, n in nb_notes]
    md += ["", "## Wall time", ""] + wall_time_lines(results)
    md += ["", "## Machine and library versions", ""] + environment_lines(results) + [""]
    return "\n".join(md)

