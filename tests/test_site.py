"""The static course site (``make site``), built once for this module from the stored notebooks.

As files: every lecture and exercise has a page, no page or stylesheet loads anything from another host, and
every dashboard figure carries its note. In Chromium through Playwright, page by page (the landing page, every
lecture, every exercise): math typeset with nothing left raw, every image loaded, every local link and anchor
resolves, previous/next follow the lesson order, no console error, no failed request, and no request leaves
127.0.0.1 (the page is served by a local HTTP server; anything else is recorded and refused).

Needs Sphinx, myst-nb, sphinx-book-theme and jupyter-server-mathjax; the browser checks also need Debian's
chromium at /usr/bin/chromium and the Python package playwright. Without them the tests skip and say how to
enable them.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import re
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest
from _browser import NEEDS_BROWSER

ROOT = Path(__file__).resolve().parents[1]
SITE_ENABLE = "run `make site` once, or `pip install '.[site]'`"
TIMEOUT_MS = 60_000

_MISSING = [name for module, name in (("sphinx", "sphinx"), ("myst_nb", "myst-nb"),
                                      ("sphinx_book_theme", "sphinx-book-theme"),
                                      ("jupyter_server_mathjax", "jupyter-server-mathjax"))
            if importlib.util.find_spec(module) is None]
pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=f"the static site needs {', '.join(_MISSING)}: {SITE_ENABLE}"),
    # sphinx-book-theme and myst-parser still use an attribute Sphinx 9 deprecates; not ours to fix
    pytest.mark.filterwarnings("ignore:.*is deprecated. Check CHANGES for Sphinx API modifications"),
]


def _browser_test(function):
    """Slow, and skipped with instructions where Chromium or Playwright is missing."""
    for mark in NEEDS_BROWSER:
        function = mark(function)
    return function


# -- what the site must contain, from the repository (independently of bnlab.build.site) ---------------------
START = "notebooks/00_start_here.html"
LECTURES = sorted(f"notebooks/{p.stem}.html" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                  if p.stem != "00_start_here")
EXERCISES = sorted(f"exercises/{p.stem}.html" for p in (ROOT / "exercises").glob("ex*.ipynb"))
ORDER = [START, *LECTURES, *EXERCISES]  # the lesson order: sidebar and previous/next
PAGES = ["index.html", *ORDER]


def _source(page: str) -> Path:
    return ROOT / Path(page).with_suffix(".ipynb")


def _outputs(page: str) -> list[dict]:
    """The stored outputs of a page's notebook."""
    notebook = nbformat.read(_source(page), as_version=4)
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def _has_math(page: str) -> bool:
    notebook = nbformat.read(_source(page), as_version=4)
    return any("$" in cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def _text(output: dict) -> str:
    text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def _dashboard_count(page: str) -> int:
    """Dashboard figures stored in a page's notebook: a PNG whose text line says it is a dashboard."""
    return sum("image/png" in output.get("data", {}) and ": an interactive dashboard (run the notebook" in
               _text(output) for output in _outputs(page))


def _figure_count(page: str) -> int:
    """PNG outputs shown as images (an output that also has HTML shows the HTML)."""
    return sum("image/png" in output.get("data", {}) and "text/html" not in output.get("data", {})
               for output in _outputs(page))


# -- the site, built once, and a local server for it ----------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from bnlab.build.site import build_site

    out = tmp_path_factory.mktemp("site") / "site"
    started = time.monotonic()
    index = build_site(out, quiet=True)
    print(f"site built in {time.monotonic() - started:.1f} s")
    assert index == out / "index.html"
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP on 127.0.0.1 and a free port; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=site))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# -- as files -------------------------------------------------------------------------------------------------
def test_the_course_has_lectures_and_exercises():
    assert len(LECTURES) >= 13, f"expected the 13 lectures under notebooks/, found {LECTURES}"
    assert EXERCISES, "expected exercises/ex*.ipynb"


def test_every_lecture_and_exercise_has_a_page(site):
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing, f"pages not built: {missing}"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert f'url={START}"' in index, f"index.html should lead to the lesson map {START}; it is:\n{index}"


# the attributes through which a tag makes the browser load something
_LOADS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "iframe": ("src",), "frame": ("src",),
          "source": ("src", "srcset"), "video": ("src", "poster"), "audio": ("src",), "embed": ("src",),
          "object": ("data",), "track": ("src",), "input": ("src",)}


class _Assets(HTMLParser):
    """What a page loads: (tag, attribute, value) of scripts, stylesheets, images, frames, media, and the
    url(...) of its inline styles. Plain <a> links are not loads."""

    def __init__(self):
        super().__init__()
        self.assets: list[tuple[str, str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and name in _LOADS.get(tag, ()):
                self.assets.append((tag, name, value))
            if value and name == "style":
                self.assets += [(tag, "style", url) for url in _css_urls(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.assets += [("style", "url", url) for url in _css_urls(data)]


def _css_urls(css: str) -> list[str]:
    return [m.strip("'\" ") for m in re.findall(r"url\(([^)]*)\)", css)] + re.findall(
        r"@import\s+[\"']([^\"']+)", css)


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.IGNORECASE))


def test_no_page_or_stylesheet_loads_anything_from_another_host(site):
    remote, mathjax = [], set()
    for path in sorted(site.rglob("*.html")):
        parser = _Assets()
        parser.feed(path.read_text(encoding="utf-8"))
        remote += [(str(path.relative_to(site)), *asset) for asset in parser.assets if _is_remote(asset[2])]
        mathjax |= {value for tag, _, value in parser.assets if tag == "script" and "MathJax.js" in value}
    for path in sorted(site.rglob("*.css")):
        remote += [(str(path.relative_to(site)), "css", "url", url)
                   for url in _css_urls(path.read_text(encoding="utf-8", errors="replace")) if _is_remote(url)]
    assert not remote, f"assets from another host: {remote[:20]}"
    assert mathjax and all(value.startswith(("_static/", "../_static/")) for value in mathjax), mathjax
    assert (site / "_static" / "mathjax" / "MathJax.js").is_file()


def test_every_dashboard_figure_carries_a_note(site):
    expected = {page: _dashboard_count(page) for page in LECTURES}
    assert sum(expected.values()) > 0, "the lectures store no dashboard figure: has the dashboards' text changed?"
    found = {page: (site / page).read_text(encoding="utf-8").count("bnlab-dashboard-note") for page in LECTURES}
    assert found == expected


def test_build_refuses_to_replace_a_folder_it_did_not_build(tmp_path):
    from bnlab.build.site import SiteBuildError, build_site

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SiteBuildError, match="refusing to replace"):
        build_site(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_build_without_the_lesson_map_says_what_is_missing(tmp_path):
    from bnlab.build.site import SiteBuildError, build_site

    with pytest.raises(SiteBuildError, match="00_start_here.ipynb"):
        build_site(tmp_path / "out", root=tmp_path)


# -- in the browser -------------------------------------------------------------------------------------------
class _Traffic:
    """What a page did on the network and the console. Requests to another host are refused and recorded."""

    def __init__(self, base: str):
        self.host = urlsplit(base).netloc
        self.remote: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []

    def _local(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("data", "blob") or (parts.scheme == "http" and parts.netloc == self.host)

    def route(self, route) -> None:
        if self._local(route.request.url):
            route.continue_()
        else:
            self.remote.append(route.request.url)
            route.abort()

    def watch(self, page) -> None:
        page.on("request", lambda r: None if self._local(r.url) else self.remote.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url}: HTTP {r.status}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


_MATH = """async () => {
    // Sphinx's math elements (MathJax's own output uses the class "math" too, without "notranslate")
    const maths = [...document.querySelectorAll('span.math.notranslate, div.math.notranslate')];
    const result = {count: maths.length, loaded: Boolean(window.MathJax && MathJax.Hub)};
    if (!maths.length || !result.loaded) return result;
    await new Promise(resolve => MathJax.Hub.Register.StartupHook('End', resolve));
    await new Promise(resolve => MathJax.Hub.Queue(resolve));
    result.untypeset = maths.filter(m => !m.querySelector('.MathJax, .MathJax_Display'))
                            .map(m => m.textContent.slice(0, 80));
    result.errors = [...document.querySelectorAll('.MathJax_Error, .noError')].map(e => e.textContent.slice(0, 80));
    const article = document.querySelector('article').cloneNode(true);
    article.querySelectorAll('pre, code, script, .math').forEach(e => e.remove());
    result.raw = [...article.textContent.matchAll(/.{0,40}(\\$\\$|\\$\\\\[A-Za-z]|\\\\\\(|\\\\\\[).{0,40}/g)]
                 .map(m => m[0]);
    return result;
}"""

_IMAGES = """async () => {
    const images = [...document.images];
    images.forEach(img => { img.loading = 'eager'; });
    await Promise.all(images.map(img => img.decode().catch(() => null)));
    return {count: document.querySelectorAll('.cell_output img').length,
            broken: images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute('src'))};
}"""

_NOTES = """() => [...document.querySelectorAll('.bnlab-dashboard-note')].map(note => {
    // the note is an output of the dashboard's cell, right after its figure
    let image = note.previousElementSibling;
    while (image && image.tagName !== 'IMG') image = image.previousElementSibling;
    return {visible: note.checkVisibility(), text: note.innerText,
            image: Boolean(image && image.naturalWidth > 0), alt: image ? image.alt : ''};
})"""


class _Targets:
    """Local link targets fetched once each: HTTP status and the ids a page defines."""

    def __init__(self):
        self._cache: dict[str, tuple[int, set[str]]] = {}

    def get(self, url: str) -> tuple[int, set[str]]:
        if url not in self._cache:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, b""
            ids: set[str] = set()
            if url.endswith((".html", "/")):
                ids = set(re.findall(r"""\s(?:id|name)=["']([^"']+)["']""", body.decode("utf-8", "replace")))
            self._cache[url] = (status, ids)
        return self._cache[url]


@pytest.fixture(scope="module")
def targets() -> _Targets:
    return _Targets()


def _broken_links(hrefs: list[str], base: str, targets: _Targets) -> list[str]:
    host, broken = urlsplit(base).netloc, []
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme in ("mailto", "tel") or (parts.scheme in ("http", "https") and parts.netloc != host):
            continue  # a plain link to elsewhere (a paper, say) is allowed; it is not followed
        if parts.scheme != "http":
            broken.append(f"{href}: not a page of the site")
            continue
        status, ids = targets.get(parts._replace(fragment="").geturl())
        if status != 200:
            broken.append(f"{href}: HTTP {status}")
        elif parts.fragment and unquote(parts.fragment) not in ids:
            broken.append(f"{href}: no element with id {unquote(parts.fragment)!r}")
    return broken


@_browser_test
@pytest.mark.parametrize("path", PAGES)
def test_page_in_the_browser(server, browser, targets, path):
    traffic = _Traffic(server)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
    context.route("**/*", traffic.route)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    traffic.watch(page)
    try:
        page.goto(f"{server}/{path}")
        shown = START if path == "index.html" else path
        page.wait_for_url(f"{server}/{shown}")  # index.html leads to the lesson map
        page.wait_for_load_state("networkidle")

        math = page.evaluate(_MATH)
        if math["count"]:
            assert math["loaded"], f"{shown} has {math['count']} formulas but MathJax did not load"
            assert not math["untypeset"], f"formulas not typeset: {math['untypeset'][:5]}"
            assert not math["errors"], f"MathJax errors: {math['errors'][:5]}"
            assert not math["raw"], f"TeX left raw in the text: {math['raw'][:5]}"
        else:
            assert not _has_math(shown), f"{shown}: its notebook's markdown has math, the page has no formula"

        images = page.evaluate(_IMAGES)
        assert not images["broken"], f"images that did not load: {images['broken']}"
        if shown in LECTURES:
            assert images["count"] == _figure_count(shown), "the page does not show every stored figure"

        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        broken = _broken_links(hrefs, page.url, targets)
        assert not broken, f"broken links on {shown}: {broken}"

        position = ORDER.index(shown)
        for selector, neighbour in (("a.left-prev", position - 1), ("a.right-next", position + 1)):
            link = page.locator(selector)
            if 0 <= neighbour < len(ORDER):
                assert urljoin(page.url, link.get_attribute("href")) == f"{server}/{ORDER[neighbour]}", selector
            else:
                assert link.count() == 0, f"{shown} is an end of the lesson order but has {selector}"
        sidebar = {urljoin(page.url, href).split("#")[0] for href in
                   page.eval_on_selector_all("nav.bd-docs-nav a[href]", "links => links.map(a => a.href)")}
        assert {f"{server}/{other}" for other in ORDER} <= sidebar, "the sidebar does not list every page"
        if shown == START:
            linked = {href.split("#")[0] for href in
                      page.eval_on_selector_all("article a[href]", "links => links.map(a => a.href)")}
            unlinked = [other for other in ORDER[1:] if f"{server}/{other}" not in linked]
            assert not unlinked, f"the lesson map does not link {unlinked}"

        notes = page.evaluate(_NOTES)
        assert len(notes) == (_dashboard_count(shown) if shown in LECTURES else 0)
        for note in notes:
            assert note["visible"] and note["image"], f"a dashboard note without its figure above: {note}"
            assert "JupyterLab" in note["text"] and shown.replace(".html", ".ipynb") in note["text"], note["text"]
            assert "interactive dashboard" in note["alt"], f"the dashboard figure's alt text: {note['alt']!r}"

        page.wait_for_load_state("networkidle")  # fonts MathJax asked for while typesetting
        assert not traffic.remote, f"requests that left 127.0.0.1: {traffic.remote}"
        assert not traffic.failed, f"failed requests: {traffic.failed}"
        assert not traffic.errors, f"console errors: {traffic.errors}"
    finally:
        context.close()
