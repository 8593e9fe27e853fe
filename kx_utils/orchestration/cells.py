"""``%%needs_data P diabetic5``: a notebook cell that runs only when the data it needs is present.

Load it with ``%load_ext kx_utils.orchestration.cells``.  The first word names the notebook's profile variable,
the second a dataset (a key of :data:`kx_utils.data.catalog.DATASETS`).  When the profile may go without
that dataset (mini's Diabetic5 stand-in, ``DatasetInfo.standin_optional``) and it is not present,
the cell is skipped with a line saying so, and the report marks what it would have measured
"data not present".  Otherwise the cell runs as if the line were not there: its errors fail the
notebook, and a required dataset that is missing fails with the loader's own error.
"""

from __future__ import annotations

from ..data.catalog import absent_optional_datasets, dataset_info

USAGE = "usage: %%needs_data <profile variable> <dataset>, e.g. %%needs_data P diabetic5"


def skip_reason(profile, dataset: str) -> str | None:
    """Why a cell that needs ``dataset`` is skipped under ``profile``, or None when it runs."""
    info = dataset_info(dataset)
    why = absent_optional_datasets(profile.standins, profile.data_root).get(dataset)
    return None if why is None else f"skipped: {info.paper_name} data not present ({why})"


def needs_data(line: str, cell: str) -> None:
    from IPython import get_ipython
    from IPython.core.error import UsageError

    shell = get_ipython()
    words = line.split()
    if len(words) != 2:
        raise UsageError(USAGE)
    if words[0] not in shell.user_ns:
        raise UsageError(f"%%needs_data: no variable {words[0]!r} holds the profile; {USAGE}")
    reason = skip_reason(shell.user_ns[words[0]], words[1])
    if reason:
        print(reason)
        return
    code = shell.transform_cell(cell)
    filename = shell.compile.cache(code)  # in linecache: a traceback shows the cell's own lines
    exec(compile(code, filename, "exec"), shell.user_global_ns, shell.user_ns)


def load_ipython_extension(ipython) -> None:
    ipython.register_magic_function(needs_data, magic_kind="cell")
