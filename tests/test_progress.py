"""kx_utils.runtime.progress: one bar per training run that stays, a widget in Jupyter and text elsewhere."""

import re
from html import unescape

import pytest
import torch
import torch.nn as nn

from kx_utils.core import train
from kx_utils.core.recipe import Recipe
from kx_utils.runtime import progress

RECIPE = Recipe(epochs=2, batch_size=4, lr=0.05, milestones=())


def _tiny_run(**kwargs):
    """10 images of 3x4x4 in batches of 4: 3 batches per epoch, 6 in all."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10) % 2
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    return train.fit(model, images, labels, RECIPE, eval_sets={"test": (images, labels)}, device="cpu",
                     desc="surrogate of Tiny", **kwargs)


@pytest.fixture
def kept_bars(monkeypatch):
    """The bars fit makes, kept for inspection."""
    made = []

    def recording(*args, **kwargs):
        made.append(progress.progress_bar(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(train, "progress_bar", recording)
    return made


def test_outside_jupyter_the_text_bar_stays_on_stderr_with_the_last_epoch(capsys):
    _tiny_run(progress=True)
    err = capsys.readouterr().err
    final = err.split("\r")[-1]  # what the terminal shows last: the finished bar, kept on its own line
    assert final.startswith("surrogate of Tiny: 100%") and final.endswith("\n")
    assert re.search(r"\| 6/6 \[\d\d:\d\d<00:00, epoch 2/2, test \d+\.\d%\]$", final), final


def test_no_bar_when_progress_is_off(capsys, kept_bars):
    _tiny_run(progress=False)
    assert kept_bars == [] and capsys.readouterr().err == ""


def test_in_jupyter_a_widget_bar_counts_batches_and_stays_green(monkeypatch, kept_bars):
    from tqdm.notebook import tqdm_notebook

    monkeypatch.setattr(progress, "in_jupyter_kernel", lambda: True)
    _tiny_run(progress=True)
    (bar,) = kept_bars
    assert isinstance(bar, tqdm_notebook)
    label, widget, counts = bar.container.children
    assert (widget.value, widget.max) == (6, 6)  # batches, so the bar moves within an epoch
    assert widget.bar_style == "success"  # closed as finished ...
    assert bar.container.layout.visibility != "hidden"  # ... and still shown (leave=True)
    assert widget.layout.width == progress.WIDGET_BAR_WIDTH  # a short bar, not the output's width
    shown = lambda html: unescape(html).replace("\u2007", " ")  # noqa: E731  (tqdm pads with figure spaces)
    assert shown(label.value) == "surrogate of Tiny: 100%"
    assert re.fullmatch(r" 6/6 \[\d\d:\d\d<00:00, epoch 2/2, test \d+\.\d%\]", shown(counts.value))


def test_a_run_that_fails_leaves_its_widget_bar_red(monkeypatch, kept_bars):
    monkeypatch.setattr(progress, "in_jupyter_kernel", lambda: True)

    def broken_accuracy(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(train, "accuracy", broken_accuracy)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        _tiny_run(progress=True)
    (bar,) = kept_bars
    label, widget, counts = bar.container.children
    assert widget.value == 3 and widget.bar_style == "danger"  # stopped after the first epoch's batches


def test_in_jupyter_without_ipywidgets_the_error_names_the_fix(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(progress, "in_jupyter_kernel", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets"
                        else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"need ipywidgets.*pip install -r requirements.txt.*progress=False"):
        progress.progress_bar(3, "surrogate of Tiny")


def test_a_plain_python_process_is_not_a_jupyter_kernel():
    assert progress.in_jupyter_kernel() is False


def test_in_a_real_kernel_the_bar_is_a_widget_and_nothing_goes_to_stderr(monkeypatch):
    import os

    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import REPO

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from kx_utils.runtime.progress import in_jupyter_kernel, progress_bar\n"
        "print(in_jupyter_kernel())\n"
        "bar = progress_bar(2, 'surrogate of Tiny')\n"
        "bar.update(2)\n"
        "bar.close()")])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    assert [o.get("name") for o in outputs if o.output_type == "stream"] == ["stdout"]  # no stderr
    assert outputs[0].text == "True\n"
    (widget,) = [o for o in outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in widget.data
