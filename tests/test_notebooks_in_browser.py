"""JupyterLab in a real browser: notebook 02 run as a reader runs it, and what the reader sees.

JupyterLab starts on a free port with a token, serving a temporary folder that holds a copy of
notebooks/02_knockoff.ipynb; the kernel gets KX_PROFILE=smoke, this checkout's kx_utils and a
KX_CACHE and KX_RUNS of its own, so the run writes nothing here.  Its cache starts with the victims
and decoded images that tests/test_notebooks.py's run of 01 left (copies; none when this test runs
alone), as for a reader who ran 01 before 02: the run trains every surrogate, and shows their
progress bars, without training the victims again.  Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``, since Playwright cannot download its own browser here)
opens the notebook, clicks Run > Run All Cells and watches the run.  A screenshot of the whole
notebook is saved whether the checks pass or not: ``test-artifacts/jupyterlab-02_knockoff.png``
(git-ignored; KX_TEST_ARTIFACTS moves it).

Needs KX_DATA (skipped without it, like the other notebook checks) and Chromium (KX_CHROMIUM, or
``chromium`` on the PATH: ``apt-get install -y chromium``, which .ci/run does).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from kx_utils import get_profile
from kx_utils.experiments.victims import PRETRAINED_VICTIMS, victim_name
from tests.conftest import REPO, SmokeEnv

pytestmark = [pytest.mark.browser, pytest.mark.notebooks]  # a notebook run: not in `make test-quick`

NOTEBOOK = "02_knockoff.ipynb"
# a guard against a hung kernel or browser, not a speed check
RUN_GUARD_SECONDS = float(os.environ.get("KX_BROWSER_GUARD_SECONDS", 3600))
STDERR_BOX = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'  # errors and stderr
PROGRESS = ".jp-OutputArea-output .widget-hprogress .progress-bar"
REUSED_ARTIFACTS = ("victim", "decoded")  # what 01 leaves for 02: never an answer or a surrogate


def chromium_executable() -> str:
    found = os.environ.get("KX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the browser test needs Chromium, which is not installed: `apt-get install -y chromium` "
                    "on Debian (.ci/run does it), or set KX_CHROMIUM to a Chromium executable; "
                    "`-m 'not browser'` leaves the test out", pytrace=False)
    return found


def artifacts_folder() -> Path:
    folder = Path(os.environ.get("KX_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    folder: Path  # what JupyterLab serves: the notebook's copy
    private: list[Path]  # the run's own cache and results: no output may name them
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _user_settings(folder: Path) -> None:
    """JupyterLab settings of a reader who ticked 'Always start the preferred kernel'; every cell kept in
    the page (not only those scrolled to), so the checks and the screenshot see the whole notebook."""
    for plugin, values in {"notebook-extension/tracker": {"autoStartDefaultKernel": True, "windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}
                           }.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def jupyterlab(tmp_path, smoke_env: SmokeEnv):
    folder, home = tmp_path / "lab", tmp_path / "jupyter"
    folder.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, folder / NOTEBOOK)
    _user_settings(home / "settings")
    cache, runs = tmp_path / "kx_cache", tmp_path / "runs"
    for kind in REUSED_ARTIFACTS:
        if (smoke_env.cache / kind).is_dir():
            shutil.copytree(smoke_env.cache / kind, cache / kind)
    env = {**os.environ, "KX_PROFILE": "smoke", "KX_CACHE": str(cache), "KX_RUNS": str(runs),
           # the kernel imports this checkout's kx_utils, whatever the environment has installed
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           # nothing of the user's Jupyter or IPython setup
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "IPYTHONDIR": str(home / "ipython")}
    env.pop("MPLBACKEND", None)
    port, token, log = free_port(), secrets.token_hex(16), tmp_path / "jupyterlab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
             "--allow-root"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, folder, [cache, runs, tmp_path], log)
    try:
        _wait_for_server(lab, server)
        yield lab
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_for_server(lab: Lab, server: subprocess.Popen, guard: float = 180) -> None:
    deadline = time.monotonic() + guard
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode} before serving:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on {lab.url} within {guard:.0f} s:\n{lab.log_tail()}")


PAGE_STATE = """() => ({
  prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim()),
  bars: [...document.querySelectorAll('%s')].map(e => e.className),
})""" % PROGRESS

TABLES = """() => [...document.querySelectorAll('.jp-OutputArea-output table.dataframe')].map(t => ({
  header: [...t.querySelectorAll('thead tr')].map(r => [...r.querySelectorAll('th')].map(c => c.textContent.trim())),
  rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.textContent.trim())),
}))"""


OUTPUT_TEXTS = "es => es.map(e => e.innerText.replace(/\\u2007/g, ' '))"  # tqdm pads with figure spaces


def _finished(bar_class: str) -> bool:
    return "progress-bar-success" in bar_class or "progress-bar-danger" in bar_class


def _run_all(page, lab: Lab) -> dict:
    """Run > Run All Cells once the kernel is up, then watch until no cell is queued or running; what was
    seen on the way."""
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
    page.wait_for_selector('.jp-StatusBar-TextItem:has-text("| Idle")', timeout=120_000)  # a kernel, ready
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-item:has-text("Run All Cells")')
    page.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                           ".some(e => e.textContent.trim() !== '[ ]:')", timeout=60_000)
    seen = {"bar_moving_while_a_cell_ran": False, "most_bars": 0, "polls": 0}
    deadline, idle_polls = time.monotonic() + RUN_GUARD_SECONDS, 0
    while time.monotonic() < deadline:
        state = page.evaluate(PAGE_STATE)
        seen["polls"] += 1
        running = "[*]:" in state["prompts"]
        if running and any(not _finished(c) for c in state["bars"]):
            seen["bar_moving_while_a_cell_ran"] = True
        seen["most_bars"] = max(seen["most_bars"], len(state["bars"]))
        idle_polls = 0 if running else idle_polls + 1
        if idle_polls >= 2 and seen["polls"] > 2:
            return seen
        time.sleep(2)
    pytest.fail(f"notebook {NOTEBOOK} still running after {RUN_GUARD_SECONDS:.0f} s (KX_BROWSER_GUARD_SECONDS); "
                f"prompts {state['prompts']}\n{lab.log_tail()}")


def _screenshot_whole_notebook(page, path: Path) -> None:
    height = page.evaluate("() => document.querySelector('.jp-WindowedPanel-outer').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 200, 16_000)})
    page.wait_for_timeout(500)  # a layout pass for the new size
    page.evaluate("() => { document.querySelector('.jp-WindowedPanel-outer').scrollTop = 0; }")
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))


def test_knockoff_notebook_in_jupyterlab_runs_all_with_widget_bars_tables_and_no_stderr(jupyterlab):
    from playwright.sync_api import sync_playwright

    lab, chromium = jupyterlab, chromium_executable()
    screenshot = artifacts_folder() / "jupyterlab-02_knockoff.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
            try:
                seen = _run_all(page, lab)
                state, tables = page.evaluate(PAGE_STATE), page.evaluate(TABLES)
                stderr_boxes = page.eval_on_selector_all(STDERR_BOX, "es => es.map(e => e.innerText)")
                outputs = "\n".join(page.eval_on_selector_all(".jp-OutputArea-output", OUTPUT_TEXTS))
            finally:
                _screenshot_whole_notebook(page, screenshot)
                print(f"screenshot: {screenshot}")
        finally:
            browser.close()

    assert stderr_boxes == [], f"stderr or error output in JupyterLab (screenshot {screenshot}):\n" + \
        "\n---\n".join(stderr_boxes)
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), f"cells not run: {state['prompts']}"

    # the progress bars: ipywidgets bars, one moving while a cell worked, every one kept and finished
    assert seen["bar_moving_while_a_cell_ran"], "no widget progress bar moved while a cell ran"
    assert state["bars"] and len(state["bars"]) == seen["most_bars"]  # none wiped
    assert all("progress-bar-success" in c for c in state["bars"]), state["bars"]
    assert "surrogate of" in outputs

    # Table 2 as HTML: our five victims beside the paper, under a header of measures over their columns
    names = [victim_name(get_profile("smoke"), k) for k in PRETRAINED_VICTIMS]
    (table2,) = [t for t in tables if [r[0] for r in t["rows"]] == names]
    assert len(table2["header"]) == 2 and table2["header"][0] == ["", "victim_acc", "surrogate_acc", "recovery"]
    sources = table2["header"][1][1:]
    assert sources[:2] == ["paper", "ours"] and set(sources) == {"paper", "ours", "sd", "diff"}  # sd: two seeds
    assert table2["rows"][0][1] == "74.6%"  # Caltech's victim_acc in the paper
    # the Knockoff paper's numbers, a table of their own: its three victims, no empty columns or rows
    (dagger,) = [t for t in tables if [r[0] for r in t["rows"]] == ["Caltech-RN34", "CUBS-RN34", "Diabetic5-RN34"]]
    assert dagger["header"] == [["", "victim_acc", "surrogate_acc", "recovery"]]
    assert dagger["rows"][0] == ["Caltech-RN34", "78.8%", "75.4%", "0.96"]

    # no machine paths: not the saved results' path, nor any of the run's own folders
    assert "PosixPath" not in outputs
    assert not [str(p) for p in lab.private if str(p) in outputs]
