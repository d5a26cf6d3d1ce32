"""What the browser tests share (test_browser, test_lab_start, test_site): Debian's Chromium driven through
Playwright, the marks that skip them with instructions where either is missing, and a free local port. Their
``browser`` fixture is in conftest.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    expect = sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ENABLE = ("as root: apt-get install chromium (Debian's package; .ci/run does it), then `make test` (which "
          "installs playwright from the test extras)")
#: slow, and skipped with instructions where Playwright or Chromium is missing
NEEDS_BROWSER = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None, reason=f"playwright is not installed; to run the browser tests: "
                                                       f"{ENABLE}"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found; to run the browser tests: {ENABLE}"),
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

