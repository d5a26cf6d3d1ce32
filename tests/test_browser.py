"""The lectures with dashboards in a real browser: JupyterLab headless, Chromium through Playwright, every cell
run, a slider moved, the figure redrawn and no error shown. Screenshots go to $BNLAB_SCREENSHOT_DIR (default:
pytest's temp dir); the best ones are copied by hand to docs/screenshots/ for the README.

Needs Debian's chromium at /usr/bin/chromium and the Python package playwright (``playwright install`` is never
needed or used). Without them the tests skip and say how to enable them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from _browser import NEEDS_BROWSER, expect, free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 120_000

pytestmark = NEEDS_BROWSER

# notebook -> (the key pressed on its first dashboard's first slider, the status line expected afterwards).
# Lectures 2 and 5 have instant explorers (gamma 1 -> 1.25; momentum one notch up) with an empty status line;
# in 7 and 8 the target is a precomputed setting (depth 10 -> 20, normalization batch 8 -> 4); in 9 the
# learning rate moves half a grid step (0.1 -> 0.133), which is not precomputed: the figure greys, and
# Train live trains it in a background thread while the kernel stays responsive (10 likewise, init std).
# In 12 the test batch goes from 2 to 1 with polluted statistics, a setting the lecture invites: the status
# quotes torch's error, no traceback. 13 runs its two gloo processes from the browser's kernel, and its
# explorer goes from 2 to 4 processes of 32 digits.
LECTURES = {"02_forward_pass": ("ArrowRight", ""), "05_inference": ("ArrowRight", ""),
            "07_depth": ("End", "from the cache"), "08_batch_size": ("ArrowLeft", "from the cache"),
            "09_learning_rate": ("ArrowRight", "not precomputed"), "10_figure1": ("ArrowRight", "not precomputed"),
            "12_in_practice": ("ArrowLeft", "raises ValueError"), "13_distributed": ("ArrowRight", "batch of 128")}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A headless JupyterLab on a random port with its own config/runtime/settings dirs, serving copies of the
    lectures (so autosave never touches the repository). Yields (base_url, token, notebook_dir)."""
    base = tmp_path_factory.mktemp("jupyterlab")
    notebooks = base / "notebooks"
    notebooks.mkdir()
    for stem in LECTURES:  # outputs cleared, so an empty prompt means "not run yet"
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, notebooks / f"{stem}.ipynb")
    settings = base / "settings" / "@jupyterlab"
    # every cell stays in the DOM (no virtual scrolling), so prompts and outputs can be checked; no news popup
    for name, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                         ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})):
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(base / "config"), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "IPYTHONDIR": str(base / "ipython"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "BNLAB_CACHE_DIR": str(base / "experiment-cache")}  # live runs start from an empty user cache
    log = (base / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}", "--ServerApp.port_retries=0",
         f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=notebooks)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"JupyterLab did not start; its log:\n{(base / 'lab.log').read_text()[-3000:]}")
        time.sleep(0.3)
    yield url, token, notebooks
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    directory = Path(os.environ.get("BNLAB_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _wait_for_kernel(page) -> None:
    """The notebook's kernel has started and is idle (the status bar says so)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\| Idle/.test(e.textContent))",
        timeout=TIMEOUT_MS, polling=250)


def _wait_until_idle(page) -> None:
    """The kernel is idle and every code cell has an execution count (no ``[*]`` or empty prompt left)."""
    page.wait_for_function(
        """() => {
            const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
            if (!indicator || indicator.getAttribute('data-status') !== 'idle') return false;
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""", timeout=TIMEOUT_MS, polling=250)


@pytest.mark.parametrize("stem", list(LECTURES))
def test_lecture_runs_in_the_browser_and_its_dashboard_redraws(lab, browser, screenshot_dir, stem):
    url, token, notebooks = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(f"{url}/lab/tree/{stem}.ipynb?reset&token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell")
        _wait_for_kernel(page)
        # run everything through the menu, as a learner would
        page.locator(".lm-MenuBar-item", has_text="Run").click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        _wait_until_idle(page)

        tracebacks = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert tracebacks.count() == 0, f"a cell wrote to stderr or raised: {tracebacks.first.inner_text()[:500]}"
        dashboard = page.locator(".bnlab-dashboard").first
        figure = dashboard.locator("img.bnlab-figure")
        expect(figure).to_be_visible()
        dashboard.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"{stem}-notebook.png"))
        before = figure.get_attribute("src")

        dashboard.locator(".widget-slider .noUi-handle").first.focus()
        key, status = LECTURES[stem]
        page.keyboard.press(key)
        if status == "not precomputed":
            expect(dashboard).to_contain_text(status)
            # the greying fades in over 0.2 s: wait for it rather than reading the opacity mid-transition
            page.wait_for_function("img => Number(getComputedStyle(img).opacity) < 0.5",
                                   arg=figure.element_handle(), timeout=10_000)
            dashboard.locator("button", has_text="Train live").click()
            status = "trained live (now cached)"
            expect(dashboard).to_contain_text(status, timeout=180_000)
        else:
            page.wait_for_function("([img, old]) => img.getAttribute('src') !== old",
                                   arg=[figure.element_handle(), before], timeout=60_000)
        _wait_until_idle(page)
        errors = dashboard.locator(".bnlab-error")
        assert errors.inner_text().strip() == "", f"the dashboard shows an error: {errors.inner_text()[:500]}"
        if status:
            expect(dashboard).to_contain_text(status)
        else:
            expect(dashboard).not_to_contain_text("failed")
        dashboard.screenshot(path=str(screenshot_dir / f"{stem}-dashboard.png"))
    finally:
        page.close()
