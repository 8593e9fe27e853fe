"""Progress bars of long loops: a widget in Jupyter, a text bar on a terminal.

One bar per training run, labelled with what it trains and counting batches, so that it
moves within an epoch.  Bars stay once finished: while a long cell works the newest bar is
its sign of life, and afterwards the finished bars are the record of what the cell trained.
"""

from __future__ import annotations

import importlib.util
import sys

# a short widget bar of fixed width between its description and its counts, which keep their room
WIDGET_BAR_WIDTH = "160px"
# tqdm's default less the rate (batches/s): what is done, the time, and the postfix fit beside the bar
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def in_jupyter_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), where output is HTML and widgets."""
    kernel_shell, ipython = sys.modules.get("ipykernel.zmqshell"), sys.modules.get("IPython")
    if kernel_shell is None or ipython is None:  # neither imported: certainly not in a kernel
        return False
    return isinstance(ipython.get_ipython(), kernel_shell.ZMQInteractiveShell)


def progress_bar(total: int, desc: str, *, initial: int = 0, unit: str = "batch"):
    """A tqdm bar of ``total`` steps: an ipywidgets bar in a Jupyter kernel, else text on stderr.

    In a kernel without ipywidgets this raises (tqdm would print a warning box and a text bar
    on stderr instead): ipywidgets is pinned in requirements.txt.
    """
    if in_jupyter_kernel():
        if importlib.util.find_spec("ipywidgets") is None:
            raise ImportError("progress bars in a Jupyter kernel need ipywidgets, which this environment lacks: "
                              "`pip install -r requirements.txt` installs the pinned version (or turn the bars "
                              "off with get_profile(..., progress=False))")
        from tqdm.notebook import tqdm as notebook_tqdm
        bar = notebook_tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=True, bar_format=BAR_FORMAT)
        # sized here, not with tqdm's ncols, which would also stretch the text the saved notebook keeps;
        # no part shrinks (a squeezed text wraps mid-name, a squeezed bar vanishes): in a narrow output
        # the counts go to the next line
        description, widget, counts = bar.container.children
        bar.container.layout.flex_flow = "row wrap"
        description.layout.flex = counts.layout.flex = widget.layout.flex = "0 0 auto"
        widget.layout.width = WIDGET_BAR_WIDTH
        return bar
    from tqdm import tqdm as text_tqdm
    return text_tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=True, file=sys.stderr,
                     bar_format=BAR_FORMAT)
