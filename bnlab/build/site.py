"""The course as a static HTML site, built offline from the stored notebooks (``make site``).

:func:`build_site` copies the **executed** lectures (``notebooks/NN_*.ipynb``), the student exercises
(``exercises/ex*.ipynb``, unexecuted) and the lesson map (``notebooks/00_start_here.ipynb``) into a temporary
Sphinx source folder, adjusts the copies, and runs Sphinx with myst-nb and sphinx-book-theme (configuration in
``docs/site/conf.py``). Nothing is executed and nothing is fetched:

* the copies mirror the repository's layout, so the notebooks' own relative links (``02_forward_pass.ipynb``,
  ``../exercises/ex1_forward.ipynb``, with or without ``#anchor``) resolve to the built pages;
* the lesson map's copy gets a hidden table of contents (lectures, then exercises), which gives every page the
  sidebar and the previous/next links in lesson order;
* below each dashboard's stored figure (a PNG whose text line says "an interactive dashboard") the copy gets a
  note saying that the figure is a snapshot and how to use the controls live;
* MathJax 2.7 comes from the ``jupyter-server-mathjax`` package and is served from the site's ``_static``.

Every Sphinx warning (a broken link or cross-reference among them) fails the build, after all are shown.

    bnlab build site [--out DIR] [--quiet]     (the one entry point: bnlab/build/cli.py)
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import nbformat

__all__ = ["SiteBuildError", "add_dashboard_notes", "build_site", "course_pages"]

ROOT = Path(__file__).resolve().parents[2]
START_PAGE = Path("notebooks/00_start_here.ipynb")
CONF_DIR = ROOT / "docs" / "site"  # conf.py and the site's own static files
MARKER = ".bnlab-site"  # written into every built site, so a rebuild may replace the folder
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full"  # the combined configuration conf.py's mathjax_path loads
SITE_PACKAGES = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
                 "jupyter_server_mathjax": "jupyter-server-mathjax"}
INSTALL_HINT = "install them with `pip install -e '.[site]'` (or run `make site`)"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Sphinx colours its warnings on a terminal
# The text line a dashboard leaves in a stored notebook (bnlab/widgets/_dashboard.py, _repr_mimebundle_).
_DASHBOARD_TEXT = re.compile(r"^(?P<title>.+?): an interactive dashboard \(run the notebook to use its controls; "
                             r"the figure shows the setting (?P<setting>.*)\)\.?$", re.DOTALL)


class SiteBuildError(RuntimeError):
    """The site could not be built: a page is missing, a dependency is not installed or Sphinx warned."""


def course_pages(root: Path | None = None) -> tuple[Path, list[Path], list[Path]]:
    """The notebooks the site is made of, under the repository ``root``: (the lesson map, the lectures in
    order, the exercises in order). Raises :class:`SiteBuildError` if the lesson map or either group is
    missing."""
    root = ROOT if root is None else Path(root)
    start = root / START_PAGE
    if not start.is_file():
        raise SiteBuildError(f"the site's landing page {start} does not exist: expected the 'Start here' notebook "
                             f"with the lesson map at {START_PAGE}")
    lectures = sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb") if p.name != START_PAGE.name)
    exercises = sorted((root / "exercises").glob("ex*.ipynb"))
    for kind, found, pattern in (("lectures", lectures, "notebooks/NN_*.ipynb"),
                                 ("exercises", exercises, "exercises/ex*.ipynb")):
        if not found:
            raise SiteBuildError(f"no {kind} found under {root}: expected files matching {pattern}")
    return start, lectures, exercises


def build_site(out: Path | None = None, *, root: Path | None = None, quiet: bool = False) -> Path:
    """Build the static site from the stored notebooks into ``out`` (default: ``build/site`` in the
    repository) and return the path of its ``index.html``, which leads to the lesson map.

    ``out`` must be absent, empty or a site built here before (it is replaced). ``root`` is the repository
    (default: the one this package lives in). Sphinx's progress and warnings go to stdout and stderr unless
    ``quiet``. Raises :class:`SiteBuildError` if a page or a dependency is missing, or if Sphinx warns (the
    error lists every warning).
    """
    root = ROOT if root is None else Path(root)
    out = (root / "build" / "site") if out is None else Path(out)
    _require_packages()
    _check_out(out)
    start, lectures, exercises = course_pages(root)
    with tempfile.TemporaryDirectory(prefix="bnlab-site-") as tmp:
        # myst-nb writes the outputs' images beside Sphinx's output folder (into its parent's
        # jupyter_execute/), so Sphinx builds inside the temporary folder and the result is moved to ``out``
        source, site = Path(tmp) / "source", Path(tmp) / "html" / "site"
        _write_sources(source, start, lectures, exercises)
        _copy_mathjax(site / "_static" / "mathjax")
        _run_sphinx(source, CONF_DIR, site, Path(tmp) / "doctrees", root=root, quiet=quiet)
        start_html = start.relative_to(root).with_suffix(".html").as_posix()
        (site / "index.html").write_text(_redirect_page(start_html), encoding="utf-8")
        (site / MARKER).write_text("built by bnlab.build.site; `make site` replaces this folder\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(site, out)
    return out / "index.html"


# -- the source folder ---------------------------------------------------------------------------------------
def _write_sources(source: Path, start: Path, lectures: list[Path], exercises: list[Path]) -> None:
    """Copies of the notebooks under ``source``, in the repository's layout, adjusted for the site."""
    (source / "notebooks").mkdir(parents=True)
    (source / "exercises").mkdir()
    landing = nbformat.read(start, as_version=4)
    landing.cells.append(nbformat.v4.new_markdown_cell(_toctree(lectures, exercises)))
    nbformat.write(landing, source / "notebooks" / start.name)
    for lecture in lectures:
        notebook = nbformat.read(lecture, as_version=4)
        add_dashboard_notes(notebook, f"notebooks/{lecture.name}")
        nbformat.write(notebook, source / "notebooks" / lecture.name)
    for exercise in exercises:
        shutil.copyfile(exercise, source / "exercises" / exercise.name)


def _toctree(lectures: list[Path], exercises: list[Path]) -> str:
    """A hidden table of contents (MyST): it orders the pages for the sidebar and previous/next links."""
    def block(caption: str, folder: str, pages: list[Path]) -> str:
        entries = "\n".join(f"/{folder}/{page.stem}" for page in pages)
        return f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n{entries}\n```"

    return block("Lectures", "notebooks", lectures) + "\n\n" + block("Exercises", "exercises", exercises)


def _dashboard(output: nbformat.NotebookNode) -> tuple[str, str] | None:
    """(title, setting) if the output is a dashboard's stored figure, else None."""
    data = output.get("data", {})
    text = data.get("text/plain", "")
    match = _DASHBOARD_TEXT.match(("".join(text) if isinstance(text, list) else text).strip())
    if match is None or "image/png" not in data:
        return None
    return match["title"].strip(), match["setting"].strip()


def add_dashboard_notes(notebook: nbformat.NotebookNode, path: str) -> int:
    """After every dashboard figure stored in a code cell's outputs, add an output (Markdown) saying that the
    figure is a snapshot and how to run the dashboard live (``path``: the notebook in the repository). A cell
    whose only image is a dashboard's also gets that image's alt text. Cells are neither added nor moved, so
    Sphinx's cell numbers in warnings stay the notebook's. Returns how many notes were added."""
    added = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs, found = [], []
        for output in cell.get("outputs", []):
            outputs.append(output)
            dashboard = _dashboard(output)
            if dashboard is not None:
                found.append(dashboard)
                note = _dashboard_note(*dashboard, path)
                outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": note}))
        images = sum("image/png" in output.get("data", {}) for output in outputs)
        if len(found) == 1 and images == 1:
            title, setting = found[0]
            options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
            options.setdefault("alt", f"{title}: snapshot of the interactive dashboard at the setting {setting}")
        cell.outputs = outputs
        added += len(found)
    return added


def _dashboard_note(title: str, setting: str, path: str) -> str:
    """A MyST admonition (class ``bnlab-dashboard-note``) for the dashboard figure just above it."""
    setting = setting.replace("`", "'")
    return (f"```{{admonition}} {title} (interactive dashboard)\n:class: tip bnlab-dashboard-note\n\n"
            f"The figure above is a snapshot of the dashboard at the setting `{setting}`. To move its "
            f"controls and train new settings, open `{path}` in JupyterLab (`make lab` in the course "
            f"repository, or your course's JupyterHub or Binder) and run the notebook.\n```")


# -- the build -----------------------------------------------------------------------------------------------
def _require_packages() -> None:
    missing = [name for module, name in SITE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise SiteBuildError(f"building the site needs {', '.join(SITE_PACKAGES.values())}; missing: "
                             f"{', '.join(missing)}: {INSTALL_HINT}")


def _check_out(out: Path) -> None:
    """``out`` may be replaced: it is absent, an empty folder or a site built here before."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SiteBuildError(f"the output {out} is a file: expected a folder (absent, empty or a previous site)")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise SiteBuildError(f"the output folder {out} is not empty and holds no site built by bnlab (no {MARKER} "
                             f"file): refusing to replace it; pass an empty or new folder")


def _copy_mathjax(target: Path) -> None:
    """MathJax 2.7 from the jupyter-server-mathjax package, without the translations other than English."""
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file() or not (static / "config" / f"{MATHJAX_CONFIG}.js").is_file():
        raise SiteBuildError(f"{static} does not hold MathJax.js and config/{MATHJAX_CONFIG}.js: expected the "
                             f"jupyter-server-mathjax package's MathJax 2.7")

    def skip(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if Path(folder).name == "localization" and name != "en"]

    shutil.copytree(static, target, ignore=skip)


class _Tee(io.StringIO):
    """Keeps what is written and, unless ``stream`` is None, passes it on."""

    def __init__(self, stream: TextIO | None):
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        if self.stream is not None:
            self.stream.write(text)
        return super().write(text)


def _run_sphinx(source: Path, conf_dir: Path, out: Path, doctrees: Path, *, root: Path, quiet: bool) -> None:
    """Sphinx's HTML build of ``source`` into ``out``; raises SiteBuildError listing every warning, with the
    copies' paths replaced by the notebooks' paths under ``root``."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    if not (conf_dir / "conf.py").is_file():
        raise SiteBuildError(f"the site's Sphinx configuration {conf_dir / 'conf.py'} does not exist")
    warnings = _Tee(None if quiet else sys.stderr)
    with patch_docutils(conf_dir), docutils_namespace():
        app = Sphinx(source, conf_dir, out, doctrees, "html", status=None if quiet else sys.stdout,
                     warning=warnings, freshenv=True, warningiserror=True)
        app.build()
    reported = _ANSI.sub("", warnings.getvalue()).replace(f"{source}{os.sep}", f"{root}{os.sep}").strip()
    if app.statuscode != 0 or reported:
        raise SiteBuildError(f"Sphinx reported problems (every warning fails the site build; a broken link or "
                             f"reference among them; in a notebook, line N0000+k is about line k of cell N):\n"
                             f"{reported}")


def _redirect_page(target: str) -> str:
    """The site's index.html: it sends the browser to the lesson map (Sphinx builds it in notebooks/, where
    the notebooks' relative links work)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>bnlab — batch normalization, end to end</title>\n"
            f'<meta http-equiv="refresh" content="0; url={target}">\n'
            f'<link rel="canonical" href="{target}">\n</head>\n'
            f'<body><p>The course starts at <a href="{target}">the lesson map</a>.</p></body>\n</html>\n')

