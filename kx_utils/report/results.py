"""The notebooks' JSON results as the report reads them, and the paper's numbers under the same keys.

Each notebook writes ``runs/<profile>/<notebook>.json`` (:class:`kx_utils.orchestration.run_results.NotebookRun`).
:func:`load_all` reads every one that exists; a file that exists but cannot be read as a
results document is an error naming it (:class:`~kx_utils.orchestration.run_results.CorruptResultsError`),
never a silently missing notebook.  :class:`Results` finds a table, figure or value by key
in the notebook that produces it (:func:`kx_utils.experiments.registry.producer`); a missing one raises
:class:`MissingData`, which the report turns into "not evaluated" / "not produced".

Per-seed values.  A row may carry, beside a measured column ``<col>``, the values of the
independent runs (training seeds) it summarises as ``<col>_seeds: [v1, v2, ...]``; ``<col>``
is then their mean.  The claims check uses their spread as the noise of a comparison
(:mod:`kx_utils.report.noise`).  Without seeds the noise is binomial on the test-set size:
a row's ``test_size``, else the ``test`` count of the victim's dataset in Table 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..config.profiles import get_profile
from ..data.catalog import dataset_info
from ..experiments.registry import notebook_names, producer
from ..experiments.schemas import ResultSchemaError, check_tables
from ..orchestration.pipeline import load_state, run_dir
from ..orchestration.run_results import CorruptResultsError, read_results, results_path
from . import paper

DOCUMENT_PARTS = ("tables", "figures", "values")
# results that need a dataset a profile may go without (kx_utils.data.catalog.DatasetInfo.standin_optional)
NEEDS_DATA = {"section_5_1_3": "diabetic5"}
DATA_NOT_PRESENT = "data not present"

# the paper's test-set sizes beyond Table 1 (§4.2.1: 10,000 ImageNet and 20,000 OpenImages test images;
# §5.2.2: 380 Bing images for each of the 256 Caltech classes; §3: 100,000 ImageNet queries)
PAPER_OOD_TEST = {"table4a": 10_000, "table4b": 20_000}
PAPER_IN_DISTRIBUTION_QUERIES = 380 * 256
PAPER_TRANSFER_BUDGET = 100_000


class MissingData(LookupError):
    """A number a table or claim needs is not in the results (or not in the paper).

    ``notebook`` names a notebook whose results are missing altogether; ``detail`` says
    what is missing otherwise.
    """

    def __init__(self, key: str, notebook: str | None = None, detail: str = ""):
        self.key, self.notebook, self.detail = key, notebook, detail
        super().__init__(f"{key}{': ' + detail if detail else ''}")

    def describe(self) -> str:
        if self.notebook:
            return f"not evaluated (missing {self.notebook}{': ' + self.detail if self.detail else ''})"
        return f"not evaluated ({self.detail or self.key + ' missing'})"


@dataclass
class Results:
    """The JSON documents of one profile's notebooks, and the pipeline's state."""

    profile: str
    documents: dict[str, dict]
    state: dict = field(default_factory=dict)
    folder: Path | None = None  # where the documents were read

    @property
    def missing_notebooks(self) -> list[str]:
        return [nb for nb in notebook_names() if nb not in self.documents]

    @property
    def data_not_present(self) -> dict[str, str]:
        """dataset key -> why, for the optional datasets the notebooks ran without."""
        absent = {}
        for doc in self.documents.values():
            absent.update(doc.get("data_not_present") or {})
        return absent

    def find(self, key: str):
        """The table, figure or value ``key`` of the notebook that produces it, or None."""
        doc = self.documents.get(producer(key))  # the registry says which notebook writes it
        if doc is None:
            return None
        for part in DOCUMENT_PARTS:
            found = (doc.get(part) or {}).get(key)
            if found is not None:
                return found
        return None

    def require(self, key: str):
        found = self.find(key)
        if found is None and NEEDS_DATA.get(key) in self.data_not_present:
            raise MissingData(key, None, f"{DATA_NOT_PRESENT}: {dataset_info(NEEDS_DATA[key]).paper_name}")
        if found is None:
            notebook = producer(key)
            if notebook in self.documents:
                raise MissingData(key, None, f"{notebook} has no {key}")
            raise MissingData(key, notebook)
        return found

    def profile_settings(self) -> dict:
        for nb in notebook_names():
            settings = self.documents.get(nb, {}).get("profile_settings")
            if settings:
                return settings
        return get_profile(self.profile).as_dict()


def _checked(document: dict, path: Path) -> dict:
    for part in DOCUMENT_PARTS:
        if not isinstance(document.get(part, {}), dict):
            raise CorruptResultsError(f"results file {path}: its {part!r} is a JSON "
                                      f"{type(document[part]).__name__}, not an object; rerun "
                                      f"notebooks/{path.stem}.ipynb to rewrite it")
    try:
        # a column missing is drawn as not measured; a column the schema does not know, or a value of the wrong
        # kind, is another version's document (a renamed column would otherwise read as missing everywhere)
        check_tables(document.get("tables", {}), path.name, complete=False)
    except ResultSchemaError as exc:
        raise CorruptResultsError(f"results file {path} does not fit the tables' schema ({exc}); it was "
                                  f"written by other code: rerun notebooks/{path.stem}.ipynb (or `python -m "
                                  f"kx_utils reproduce --profile {path.parent.name} --only {path.stem}`)") from None
    return document


def load_all(profile_name: str, runs: str | os.PathLike | None = None) -> Results:
    """Every notebook result of ``profile_name`` that exists.

    Raises :class:`~kx_utils.orchestration.run_results.CorruptResultsError` (naming the file) for a results
    file that exists but is not a readable results document.
    """
    get_profile(profile_name)  # an unknown profile is an error here, not an empty report
    documents = {}
    for nb in notebook_names():
        path = results_path(nb, profile_name, runs)
        if path.exists():
            documents[nb] = _checked(read_results(path), path)
    return Results(profile_name, documents, load_state(profile_name, runs), run_dir(profile_name, runs))


# ---------------------------------------------------------------- the paper's side


def _dataset_of(victim_key: str) -> str | None:
    from ..experiments.victims import VICTIMS

    spec = VICTIMS.get(victim_key)
    return spec.dataset if spec else None


def _paper_table4(table: Mapping[str, Mapping], key: str) -> dict:
    return {victim: {**row, "ood_test": PAPER_OOD_TEST[key],
                     "in_test": paper.TABLE1.get(_dataset_of(victim) or "", {}).get("test")}
            for victim, row in table.items()}


def paper_results() -> dict:
    """The paper's numbers under the same keys as ours, for the paper's side of tables and claims."""
    return {
        "table1": paper.TABLE1, "table2": paper.TABLE2, "table3": paper.TABLE3,
        "table4a": _paper_table4(paper.TABLE4A, "table4a"), "table4b": _paper_table4(paper.TABLE4B, "table4b"),
        "table5": paper.TABLE5, "table6": paper.TABLE6, "table7": paper.TABLE7,
        # 5.1.3 compares its 70% with Table 2's GTSRB surrogate (100,000 ImageNet queries); the paper
        # gives no count of Diabetic5 queries
        "section_5_1_3": {**paper.SECTION_5_1_3,
                          "gtsrb_with_imagenet_queries_acc": paper.TABLE2["gtsrb"]["surrogate_acc"],
                          "imagenet_budget": PAPER_TRANSFER_BUDGET,
                          "victim_acc": paper.TABLE2["gtsrb"]["victim_acc"]},
        "section_5_2_2": {**paper.SECTION_5_2_2, "victim_acc": paper.TABLE2["caltech"]["victim_acc"],
                          "in_distribution_queries": PAPER_IN_DISTRIBUTION_QUERIES,
                          "imagenet_queries_budget": PAPER_TRANSFER_BUDGET},
    }


def paper_getter(key: str):
    found = paper_results().get(key)
    if found is None:
        raise MissingData(key, None, "the paper gives no numbers")
    return found


# ---------------------------------------------------------------- names, numbers, sizes

Getter = Callable[[str], object]
Names = Mapping[str, str]


def victim_names(results: Results) -> dict[str, str]:
    """Victim key -> this profile's name (``CIFAR10-MNV2``), from the results, else the profile."""
    from ..experiments.victims import VICTIMS, victim_name

    profile = get_profile(results.profile)
    profile = profile.replace(backbone=results.profile_settings().get("backbone") or profile.backbone)
    names = {k: victim_name(profile, k) for k in VICTIMS}
    for key in ("victims", "table2", "table5", "table6", "table7", "figure2", "early_stopping"):
        for row_key, row in (results.find(key) or {}).items():
            if isinstance(row, dict) and row.get("name"):
                names[row_key] = row["name"]
    return names


def paper_victim_names() -> dict[str, str]:
    from ..experiments.victims import VICTIMS, victim_name

    return {k: victim_name(get_profile("paper"), k) for k in VICTIMS}


def num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value_of(row: Mapping | None, column: str):
    value = (row or {}).get(column)
    return value if num(value) else None


def pct(value) -> str:
    return f"{100 * value:.1f}%" if num(value) else "n/a"


def test_size(get: Getter, victim_key: str, row: Mapping | None, names: Names) -> int:
    """How many test images the accuracies of ``row`` (a victim's) were measured on.

    The row's own ``test_size``, else the ``test`` count of the victim's dataset in
    Table 1 (the same per-class-capped test split every notebook evaluates on).
    """
    own = value_of(row, "test_size")
    if own:
        return int(own)
    dataset = _dataset_of(victim_key)
    if dataset is not None:
        try:
            table1 = get("table1")
        except MissingData:
            table1 = {}
        count = value_of(table1.get(dataset), "test")
        if count:
            return int(count)
    raise MissingData("table1", None, f"no test-set size for {names.get(victim_key, victim_key)}: no "
                                      "test_size in its row and no test count in Table 1 (01_victims)")
