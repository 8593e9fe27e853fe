"""Each notebook's measurements as one small JSON document: the input of the report.

A document looks like::

    {"notebook": "02_knockoff", "profile": "mini", "created": "...", "wall_seconds": 412.0,
     "environment": {...}, "profile_settings": {...},
     "tables": {"table2": {"caltech": {"victim_acc": 0.64, "surrogate_acc": 0.51, ...}, ...}},
     "figures": {...}, "values": {...}, "notes": ["..."]}

Tables use the row keys and column names of :mod:`kx_utils.report.paper`, so the report
can put the paper's number beside ours.  Accuracies and rates are fractions.
Documents are written atomically next to the executed notebooks, in
``runs/<profile>/`` (or ``$KX_RUNS/<profile>/``); :func:`read_results` reads one
back, and a missing or corrupt file is an error that names it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from ..config.schema import Profile
from ..data.catalog import absent_optional_datasets
from ..experiments.schemas import check_tables
from ..runtime import regime
from ..runtime.artifacts import REPO_ROOT, atomic_write_text


def runs_root(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("KX_RUNS") or REPO_ROOT / "runs").expanduser().resolve()


def results_path(notebook: str, profile_name: str, runs: str | os.PathLike | None = None) -> Path:
    return runs_root(runs) / profile_name / f"{notebook}.json"


def environment() -> dict:
    """Machine and library versions, for the report."""
    import numpy
    import sklearn
    import torch
    import torchvision
    env = {
        "python": platform.python_version(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
        # CPU results are bit-reproducible only for the same thread count and instruction set: the
        # kernels (oneDNN, MKL) split reductions by thread and pick code paths by ISA
        "torch_threads": torch.get_num_threads(), "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **regime.describe(cuda=torch.cuda.is_available()),
    }
    return env


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # tensors and numpy values
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    if isinstance(value, Path):
        return str(value)
    return value


class NotebookRun:
    """Collects one notebook's results and writes them; ``started`` marks the wall-clock start.

    >>> run = NotebookRun("02_knockoff", profile)
    >>> run.tables["table2"] = {...}
    >>> run.save()  # writes run.path

    ``save`` returns nothing, so a notebook whose last line saves shows no machine path.
    """

    def __init__(self, notebook: str, profile: Profile, runs: str | os.PathLike | None = None):
        self.notebook, self.profile, self.runs = notebook, profile, runs
        self.started = time.perf_counter()
        self.tables: dict[str, dict] = {}
        self.figures: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.notes: list[str] = []
        # optional data (mini's Diabetic5 stand-in) this run goes without: the report marks those rows
        self.data_not_present = absent_optional_datasets(profile.standins, profile.data_root)

    def document(self) -> dict:
        return _jsonable({
            "notebook": self.notebook, "profile": self.profile.name,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": time.perf_counter() - self.started,
            "environment": environment(), "profile_settings": self.profile.as_dict(),
            "tables": self.tables, "figures": self.figures, "values": self.values, "notes": self.notes,
            "data_not_present": self.data_not_present,
        })

    @property
    def path(self) -> Path:
        """Where :meth:`save` writes this run's document."""
        return results_path(self.notebook, self.profile.name, self.runs)

    def save(self) -> None:
        """Write the document; a table whose rows do not fit its schema (:mod:`kx_utils.experiments.schemas`)
        is a :class:`~kx_utils.experiments.schemas.ResultSchemaError` and nothing is written."""
        check_tables(_jsonable(self.tables), self.notebook)
        atomic_write_text(self.path, json.dumps(self.document(), indent=1, sort_keys=False))


class CorruptResultsError(ValueError):
    """A results file exists but is not a results document; the message names the file."""


def read_results(path: str | os.PathLike) -> dict:
    """The results document at ``path`` (a notebook's ``runs/<profile>/<notebook>.json``).

    Raises FileNotFoundError when it is missing and :class:`CorruptResultsError` when it
    cannot be read as a JSON object: either way the message names the file and what to do,
    and a corrupt file is never taken for a missing one (or the other way round).
    """
    path = Path(path)
    rerun = (f"run notebooks/{path.stem}.ipynb (or `python -m kx_utils reproduce --profile "
             f"{path.parent.name} --only {path.stem}`)")
    if not path.is_file():
        raise FileNotFoundError(f"no results of {path.stem} for profile {path.parent.name}: {path} is "
                                f"missing; {rerun} first")
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptResultsError(f"results file {path} cannot be read ({exc}); {rerun} again to "
                                  "rewrite it") from None
    if not isinstance(document, dict):
        raise CorruptResultsError(f"results file {path} holds a JSON {type(document).__name__}, not a "
                                  f"results document (a JSON object); {rerun} again to rewrite it")
    return document
