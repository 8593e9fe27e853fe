"""Writing ``figures/<profile>/``: the tables (CSV and Markdown), the figures (PNG and PDF) and report.md.

The folder is built aside and swapped in whole, so a crash never leaves a half-written
folder that looks complete.  Every text file written is scrubbed of the machine's absolute
paths (the repository root, the runs, cache and data folders).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..runtime.artifacts import REPO_ROOT, atomic_write_text
from . import paper
from .claims import ClaimResult, check_claims
from .figures import (
    budget_curves,
    defence_tradeoffs,
    figure1,
    figure2,
    save_figure,
    table2_curves,
)
from .markdown import render_report
from .noise import FAILS, HOLDS, INCONCLUSIVE, NOT_EVALUATED
from .results import MissingData, Results, load_all, victim_names
from .tables import build_tables, frame_to_csv, frame_to_markdown


def default_output(profile_name: str) -> Path:
    """``figures/<profile>/`` of the repository, or ``$KX_FIGURES/<profile>/`` (a dry run's, a scratch run's)."""
    base = os.environ.get("KX_FIGURES")
    return (Path(base).expanduser().resolve() if base else REPO_ROOT / "figures") / profile_name


def _default_output(profile_name: str) -> Path:
    from .. import (
        report,  # looked up on the package at call time, so a caller can redirect it
    )

    return report.default_output(profile_name)


@dataclass
class ReportOutcome:
    folder: Path
    files: list[str]
    claims: list[ClaimResult]
    missing_notebooks: list[str]
    missing_parts: dict[str, str]

    def summary(self) -> str:
        counts = {v: sum(1 for c in self.claims if c.verdict == v) for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_EVALUATED)}
        text = (f"{self.folder}: report.md and {len(self.files) - 1} table/figure files; claims: "
                f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} inconclusive, "
                f"{counts[NOT_EVALUATED]} not evaluated")
        if self.missing_notebooks:
            text += f"; missing results of {', '.join(self.missing_notebooks)}"
        return text


def path_replacements(results: Results) -> list[tuple[str, str]]:
    """(absolute prefix, what to show instead), longest first: the runs, cache and data folders, the repository."""
    settings = results.profile_settings()
    pairs = [(results.folder, f"$KX_RUNS/{results.profile}"), (settings.get("cache_root"), "$KX_CACHE"),
             (settings.get("data_root"), "$KX_DATA")]
    if results.folder is not None:
        pairs.append((Path(results.folder).parent, "$KX_RUNS"))
    pairs += [(r.get("cache_root"), "$KX_CACHE") for r in results.state.get("invocations", [])]
    pairs += [(os.environ.get(var), f"${var}") for var in ("KX_DATA", "KX_CACHE", "KX_RUNS")]
    out = []
    for path, shown in pairs:
        if not path:
            continue
        path = Path(path).expanduser().resolve()
        try:
            shown = path.relative_to(REPO_ROOT).as_posix()
        except ValueError:
            pass
        out.append((str(path), shown))
    out.append((str(REPO_ROOT) + os.sep, ""))
    out.append((str(REPO_ROOT), "."))
    return sorted(set(out), key=lambda p: -len(p[0]))


def scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    for prefix, shown in replacements:
        text = text.replace(prefix, shown)
    return text


def _clean_leftovers(out: Path) -> None:
    for leftover in out.parent.glob(f".{out.name}.*"):
        if leftover.is_dir() and (".building-" in leftover.name or ".old-" in leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


# Files another command writes into figures/<profile>/ (`python -m kx_utils bench --out ... --json ...`):
# the report does not make them, so a new report keeps them (each carries its own date and machine)
KEPT_FROM_OTHER_COMMANDS = ("bench.md", "bench.json")


def _keep_other_commands_files(old: Path, building: Path) -> list[str]:
    kept = []
    for name in KEPT_FROM_OTHER_COMMANDS:
        if (old / name).is_file() and not (building / name).exists():
            shutil.copy2(old / name, building / name)
            kept.append(name)
    return kept


def _draw_figures(results: Results, folder: Path) -> tuple[list[str], dict[str, str]]:
    files, figures = [], {}
    names = victim_names(results)
    paper_recovery = {k: r.get("recovery") for k, r in paper.TABLE2.items()}
    for key, source, draw in (("figure1", "figure1", lambda d: figure1(d, names.get(d.get("victim"), d.get("name")))),
                              ("figure2", "figure2", figure2), ("table2_curves", "knockoff", table2_curves),
                              ("budget_curves", "budget_curves_figure",
                               lambda d: budget_curves(d, paper_recovery)),
                              ("defence_tradeoffs", "defence_tradeoffs", defence_tradeoffs)):
        try:
            data = results.require(source)
        except MissingData as exc:
            figures[key + "_missing"] = exc.describe().replace("not evaluated", "not produced")
            continue
        files += save_figure(draw(data), folder, key)
        figures[key] = f"{key}.png"
    return files, figures


def write_report(profile_name: str, runs: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None) -> ReportOutcome:
    """Regenerate ``figures/<profile>/`` (or ``out``) from the results of ``profile_name``."""
    results = load_all(profile_name, runs)
    out = Path(out) if out is not None else _default_output(profile_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out)
    replacements = path_replacements(results)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        files = []
        tables, missing = build_tables(results)
        for key, frame in tables.items():
            atomic_write_text(building / f"{key}.csv", scrub(frame_to_csv(frame), replacements))
            atomic_write_text(building / f"{key}.md", scrub(frame_to_markdown(frame), replacements) + "\n")
            files += [f"{key}.csv", f"{key}.md"]
        figure_files, figures = _draw_figures(results, building)
        files += figure_files
        claims = check_claims(results)
        report = render_report(results, tables, missing, claims, figures)
        atomic_write_text(building / "report.md", scrub(report, replacements))
        files.append("report.md")
        if out.is_dir():
            files += _keep_other_commands_files(out, building)
        os.chmod(building, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(building, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ReportOutcome(out, files, claims, results.missing_notebooks, missing)
