import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # deterministic, and the CI machine has two cores shared with xdist workers


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20151502)


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """An empty experiment user cache in a temp dir, and no runs remembered in memory (live runs of a test
    neither read nor leave anything in ~/.cache)."""
    from bnlab.experiments import _cache

    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "cache"))
    _cache._memory.clear()
    yield tmp_path / "cache"
    _cache._memory.clear()


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every pyplot figure a test opened: figure tests would otherwise pile up past matplotlib's
    20-open-figures warning, which the suite treats as an error."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, through Playwright) for one browser-test module; see tests/_browser.py."""
    from _browser import CHROMIUM, CHROMIUM_ARGS, sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
