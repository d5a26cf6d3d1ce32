"""`make lab` as a learner meets it: JupyterLab opens the lesson map (notebooks/00_start_here.ipynb) and asks
nothing, in particular not whether to fetch Jupyter's news.

The test runs the real ``make lab`` with extra flags (a random port, a token, a stand-in browser that records
the address JupyterLab asks it to open), in a fresh HOME and fresh Jupyter config/data/runtime folders, so no
setting of the user's can hide the prompt: switching it off is the job of the overrides ``make lab`` puts into
the environment (``.venv/share/jupyter/lab/settings/overrides.json``). Headless Chromium then opens that
address, as the learner's browser would.

It never installs anything: if ``make lab`` would run pip first (pyproject.toml or constraints.txt changed since
.venv was set up), it skips and says so. Like tests/test_browser.py it needs Debian's chromium and the Python
package playwright, and skips without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from _browser import NEEDS_BROWSER, expect, free_port

ROOT = Path(__file__).resolve().parents[1]
START_PAGE = "notebooks/00_start_here.ipynb"
TIMEOUT_MS = 120_000
NEWS = re.compile(r"\bnews\b", re.IGNORECASE)

pytestmark = [
    *NEEDS_BROWSER,
    pytest.mark.skipif(shutil.which("make") is None, reason="`make` is not installed; the test runs `make lab`"),
]


def _lab_would_install() -> bool:
    """Whether ``make lab`` would run pip before starting JupyterLab (its install is out of date)."""
    dry_run = subprocess.run(["make", "--dry-run", "lab"], cwd=ROOT, capture_output=True, text=True, check=True)
    return "pip install" in dry_run.stdout


def _isolated_env(base: Path) -> dict[str, str]:
    """The environment for ``make lab``: a fresh HOME and Jupyter folders, none of the caller's Jupyter
    variables (a JUPYTERLAB_SETTINGS_DIR, say, could hold a setting that hides the prompt), and no user
    setting but autosave off."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JUPYTER", "IPYTHON"))}
    folders = {"HOME": "home", "JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data",
               "JUPYTER_RUNTIME_DIR": "runtime", "IPYTHONDIR": "ipython"}
    for key, name in folders.items():
        (base / name).mkdir()
        env[key] = str(base / name)
    # the one user setting: no autosave, so the test never writes to the repository's start page
    docmanager = base / "config" / "lab" / "user-settings" / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    return env


@pytest.fixture(scope="module")
def started_lab(tmp_path_factory):
    """``make lab`` running headless. Yields (the address it asked the browser to open, base url, token)."""
    if not (ROOT / START_PAGE).exists():
        pytest.fail(f"{START_PAGE} is missing: `make lab` opens it first")
    if _lab_would_install():
        pytest.skip("`make lab` would run pip first (its install in .venv is missing or older than pyproject.toml "
                    "or constraints.txt), which this test never does: run `make lab` or `make test` once, then "
                    "rerun it")
    base = tmp_path_factory.mktemp("make-lab")
    env = _isolated_env(base)
    opened = base / "opened-url"
    recorder = base / "browser"  # JupyterLab's "browser": writes down the address it is given
    recorder.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n')
    recorder.chmod(0o755)
    port, token = free_port(), os.urandom(16).hex()
    lab_args = (f"--port={port} --ServerApp.port_retries=0 --ServerApp.ip=127.0.0.1 "
                f"--IdentityProvider.token={token} --allow-root '--ServerApp.browser={recorder} %s'")
    log_path = base / "make-lab.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(["make", "lab", f"LAB_ARGS={lab_args}"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (opened.exists() and opened.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make lab` did not open a browser (exit status {process.poll()}); its output:\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield opened.read_text().strip(), f"http://127.0.0.1:{port}", token
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End ``make lab`` and the JupyterLab it started, which run in a process group of their own (JupyterLab
    shuts its kernels down on SIGTERM), and wait until the group is empty."""
    for sig, seconds in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            process.poll()  # reap make
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            continue
        break
    process.wait()


def _lesson_map_heading() -> str:
    """The first heading of the lesson map's first markdown cell, as it reads once rendered."""
    notebook = nbformat.read(ROOT / START_PAGE, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+?)\s*#*\s*$", cell.source, re.MULTILINE)
            if match:
                return re.sub(r"[*_`]", "", match.group(1))
    raise AssertionError(f"{START_PAGE} has no markdown heading")


def test_the_environment_switches_the_news_prompt_off(started_lab):
    """The notification settings JupyterLab serves: defaults replaced by the environment's overrides, and no
    user setting (the user settings folder is fresh) on top of them."""
    _, url, token = started_lab
    request = f"{url}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
    with urllib.request.urlopen(request, timeout=30) as response:
        served = json.load(response)
    defaults = {key: served["schema"]["properties"][key]["default"] for key in ("fetchNews", "checkForUpdates")}
    assert defaults == {"fetchNews": "false", "checkForUpdates": False}, (
        f"JupyterLab's notification defaults are {defaults}: the overrides in "
        f".venv/share/jupyter/lab/settings/overrides.json (from jupyter/overrides.json) did not apply")
    assert served["settings"] == {}, f"the user settings were not fresh: {served['settings']}"


def test_make_lab_opens_the_lesson_map_and_asks_nothing(started_lab, browser, tmp_path):
    """What a learner sees: the address `make lab` hands the browser opens JupyterLab on the lesson map, in a
    file browser rooted at the repository, with no dialog, no news toast and an empty notification centre."""
    opened, url, _ = started_lab
    assert opened.startswith("file://"), f"JupyterLab gave the browser {opened!r}, not its redirect file"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(opened)  # the redirect file JupyterLab wrote, as a learner's browser gets it
        page.wait_for_url(f"{url}/lab/tree/{START_PAGE}*")

        # the lesson map's tab is open and current, and shows the rendered map
        current_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel")
        expect(current_tab).to_have_text(Path(START_PAGE).name, timeout=TIMEOUT_MS)
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
        expect(notebook.locator(".jp-MarkdownOutput").first).to_be_visible(timeout=TIMEOUT_MS)
        expect(notebook).to_contain_text(_lesson_map_heading())
        # the file browser shows the repository: the lectures and the exercises are both a click away
        listing = page.locator(".jp-DirListing-content")
        page.locator(".jp-BreadCrumbs-home").click()
        for folder in ("notebooks", "exercises"):
            expect(listing.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{folder}$"))).to_have_count(1)

        # Give the announcements plugin its chance: it asks right after the app is restored, well before a
        # kernel (which the map's notebook starts) reports idle.
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\| Idle/.test(e.textContent))",
            timeout=TIMEOUT_MS, polling=250)
        page.wait_for_timeout(2_000)

        # the kernel's language info is already stored, so starting it changes nothing: the map does not open
        # as modified (closing it would then ask whether to save a file the learner never touched)
        tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), (
            f"{START_PAGE} opens marked as modified: its stored metadata differs from what the kernel reports")

        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        assert not dialogs, f"JupyterLab asks something on start: {dialogs}"
        toasts = [text for text in page.locator(".Toastify__toast").all_inner_texts() if text.strip()]
        assert not [text for text in toasts if NEWS.search(text)], f"a toast asks about news: {toasts}"
        # the notification centre (the bell in the status bar) holds nothing: every toast also lands there
        bell = page.locator("[role='button']:has(.jp-Notification-Status-Text)")
        bell.click()
        header = page.locator(".jp-Notification-Center .jp-Notification-Header")
        expect(header).to_be_visible()
        if "No notifications" not in header.inner_text():  # the header counts what the centre holds
            page.wait_for_timeout(500)  # let the list render, to show what it holds
            listed = page.locator(".jp-Notification-Center .jp-Notification-List-Item").all_inner_texts()
            pytest.fail(f"JupyterLab shows notifications on start ({header.inner_text().strip()}): {listed}")
        page.screenshot(path=str(Path(os.environ.get("BNLAB_SCREENSHOT_DIR") or tmp_path) / "make-lab-start.png"))
    finally:
        page.close()
