"""``python -m kx_utils plan``: what a run of a profile would train, and whether its data and weights are present.

Each notebook's line is the registry's (every experiment's ``describe``, :mod:`kx_utils.experiments.catalogue`);
the checks look at folders and weight files only: no dataset is decoded, no model built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import Profile
from ..config.seeds import seeds_note
from ..experiments.registry import experiments_of, notebook_names


@dataclass
class Plan:
    profile: str
    lines: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # each: what is missing and how to get it
    warnings: list[str] = field(default_factory=list)  # present but not as the paper's
    optional: list[str] = field(default_factory=list)  # absent, and the run goes on without it

    @property
    def ok(self) -> bool:
        return not self.missing

    def text(self) -> str:
        out = [f"kx plan for profile {self.profile}", *self.lines, "", "Checked present:"]
        out += [f"  ok  {p}" for p in self.present] or ["  (nothing)"]
        if self.warnings:
            out += ["", "Present, but not as expected:"] + [f"  WARNING  {w}" for w in self.warnings]
        if self.optional:
            out += ["", "Optional, not present (the run goes on without them; their rows read \"data not "
                        "present\"):"] + [f"  OPTIONAL  {o}" for o in self.optional]
        out += ["", "Missing:" if self.missing else "Missing: nothing; the run can start."]
        out += [f"  MISSING  {m}" for m in self.missing]
        if self.missing:
            out += ["", f"{len(self.missing)} item(s) missing: get them before `python -m kx_utils "
                        f"reproduce --profile {self.profile}`."]
        return "\n".join(out)


def plan(profile: Profile) -> Plan:
    """What a run of ``profile`` would train, and whether its data and weights are present.

    Checks folders and weight files only: no dataset is decoded, no model built.
    """
    from ..core.models import MissingWeightsError, resolve_weights
    from ..data.catalog import DATASETS, DatasetNotFoundError, data_root
    from ..data.datasets import DataLayoutError, list_image_folder, split_folder
    p = profile
    out = Plan(p.name)
    out.lines += [p.description, ""]
    for nb in notebook_names():  # each experiment's own line, as the registry declares it
        parts = [e.describe(p) for e in experiments_of(nb)]
        out.lines.append(f"{nb}: " + "; ".join(part for part in parts if part))
    out.lines += [f"Seeds: {seeds_note(p)}",
                  f"Surrogate training epochs: {p.surrogate_recipe.epochs} (the paper: 200). Nothing is trained by "
                  "--plan."]
    if not p.standins:
        from .memory import memory_lines
        out.lines += ["", *memory_lines(p)]

    # data: every split the profile's layout declares for every dataset of the paper
    try:
        root = data_root(p.data_root)
    except DatasetNotFoundError as exc:
        out.missing.append(str(exc))
        root = None
    if root is not None:
        for key, info in DATASETS.items():
            splits = info.standin_splits if p.standins else info.splits
            if p.standins and info.standin_optional and not all((root / info.standin / s).is_dir()
                                                                for s in splits.values()):
                out.optional.append(f"dataset {info.paper_name} ({info.standin}): {info.standin_optional}")
                continue
            for split in splits:
                try:
                    path = split_folder(key, split, p.standins, root, allow_download=False)
                except DatasetNotFoundError as exc:
                    out.missing.append(f"dataset {info.paper_name} ({key}) split {split}: {exc}")
                    continue
                expected = {"train": info.paper_train, "test": info.paper_test}.get(split)
                found = None
                if not p.standins and expected:  # a subset in the paper's place would not reproduce it
                    try:
                        found = len(list_image_folder(path)[1])
                    except DataLayoutError as exc:
                        out.missing.append(f"dataset {info.paper_name} ({key}) split {split}: {exc}")
                        continue
                out.present.append(f"dataset {info.paper_name} {split}: {path}")
                if found is not None and found < expected:
                    out.warnings.append(f"dataset {info.paper_name} {split} at {path} holds {found:,} "
                                        f"images, the paper's has {expected:,} ({info.how_to_get})")

        if p.standins:
            _check_standin_folders(out, root)

    # weights: every pretrained model the profile uses (scratch detectors need none)
    from ..runtime import regime
    for arch in dict.fromkeys([p.backbone, p.surrogate_arch, *p.detector_cv_archs]):
        if regime.weights() == "random":
            out.warnings.append(f"ImageNet weights of {arch}: NOT USED, {regime.WEIGHTS_ENV}=random builds it with "
                                "random weights (a dry run: its numbers mean nothing)")
            continue
        try:
            out.present.append(f"ImageNet weights of {arch}: {resolve_weights(arch)}")
        except MissingWeightsError as exc:
            out.missing.append(f"ImageNet weights of {arch}: {exc}")
    return out


def _check_standin_folders(out: Plan, root: Path) -> None:
    """A fetched stand-in that lost files is missing; one placed by hand that is not the stand-in, or
    fetched from another spec, is a warning (:mod:`kx_utils.data.fetch`)."""
    from ..data.fetch import standin_states

    for state in standin_states(root).values():
        problems = f" ({'; '.join(state.problems)})" if state.problems else ""
        if state.state == "damaged":
            out.missing.append(f"dataset folder {state.path} is damaged{problems}: rebuild it with `python -m "
                               f"kx_utils data fetch --profile {out.profile} --rebuild`")
        elif state.state in ("foreign", "stale"):
            out.warnings.append(f"dataset folder {state.path}: {state.detail}{problems}")
