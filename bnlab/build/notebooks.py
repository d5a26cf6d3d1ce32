"""Percent-format notebook sources, and the lectures built from them.

A source is a plain Python file cut into cells by marker lines:

``# %% [markdown]``                            a markdown cell (every line commented with ``# ``)
``# %%``                                       an ordinary code cell
``# %% solution id=ex1_forward``               exercise masters only: the learner's code
``# %% tests id=ex1_forward_tests points=2``   exercise masters only: a locked, graded test cell
``# %% locked id=ex1_setup``                   exercise masters only: a read-only code cell

The lectures' sources are ``notebooks/src/NN_name.py``; ``bnlab build lectures`` executes each in a fresh kernel
and writes ``notebooks/NN_name.ipynb`` without widget state or timestamps, refusing a notebook that raised. The
exercise masters (``solutions/src``) use the same parser and :func:`write_notebook`; their nbgrader markup is
added by :mod:`bnlab.grading.authoring`.

The start page ``notebooks/src/00_start_here.py`` holds a placeholder (:data:`LESSON_MAP_PLACEHOLDER`) where the
build puts the lesson map kept in ``README.md`` between :data:`LESSON_MAP_BEGIN` and :data:`LESSON_MAP_END`, its
links made relative to ``notebooks/``: the map is written once, in the README.
"""

from __future__ import annotations

import copy
import posixpath
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat

__all__ = [
    "KERNELSPEC",
    "LESSON_MAP_BEGIN",
    "LESSON_MAP_END",
    "LESSON_MAP_PLACEHOLDER",
    "ROOT",
    "LectureError",
    "build_lecture",
    "lecture_sources",
    "lesson_map",
    "new_cell",
    "new_course_notebook",
    "notebook_from_source",
    "parse_source",
    "strip_volatile_metadata",
    "write_notebook",
]

ROOT = Path(__file__).resolve().parents[2]  # the repository (bnlab is installed editable from it)
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

MARKER = re.compile(r"^# %%(?: \[(?P<markdown>markdown)\]"
                    r"| (?P<role>solution|tests|locked)(?P<attrs>(?: \w+=\S+)*))?\s*$")

LESSON_MAP_BEGIN = re.compile(r"^<!-- lesson map begin\b.*?-->\n", re.MULTILINE | re.DOTALL)
LESSON_MAP_END = re.compile(r"^<!-- lesson map end -->$", re.MULTILINE)
LESSON_MAP_PLACEHOLDER = re.compile(r"<!-- lesson map from README\.md\b.*?-->", re.DOTALL)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


class LectureError(RuntimeError):
    """A lecture could not be built: its source is malformed, a cell raised, or the lesson map is missing."""


# -- sources -------------------------------------------------------------------------------------------------
def parse_source(text: str, *, name: str = "<source>") -> list[dict[str, Any]]:
    """Cells of a percent-format source: ``{"type", "role", "attrs", "source"}`` dicts, in order.

    ``type`` is "markdown" or "code"; ``role`` is None for ordinary cells; ``attrs`` holds ``key=value`` pairs.
    Raises ValueError, naming ``name`` and the line, for a malformed marker, text before the first marker or a
    markdown line that does not start with ``#``.
    """
    cells: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        marker = MARKER.match(line)
        if marker:
            attrs = dict(pair.split("=", 1) for pair in (marker.group("attrs") or "").split())
            cells.append({"type": "markdown" if marker.group("markdown") else "code",
                          "role": marker.group("role"), "attrs": attrs, "lines": []})
        elif line.startswith("# %%"):
            raise ValueError(f"{name} line {number}: malformed cell marker {line!r}: expected '# %%', "
                             f"'# %% [markdown]' or '# %% solution|tests|locked key=value ...'")
        elif cells:
            cells[-1]["lines"].append((number, line))
        elif line.strip():
            raise ValueError(f"{name} line {number}: text before the first '# %%' marker: {line!r}")
    for cell in cells:
        lines = cell.pop("lines")
        if cell["type"] == "markdown":
            bad = [(number, ln) for number, ln in lines if ln and not ln.startswith("#")]
            if bad:
                raise ValueError(f"{name} line {bad[0][0]}: a markdown line must start with '# ', got {bad[0][1]!r}")
            cell["source"] = "\n".join(ln[2:] if ln.startswith("# ") else ln[1:] for _, ln in lines).strip("\n")
        else:
            cell["source"] = "\n".join(ln for _, ln in lines).strip("\n")
    return cells


def new_course_notebook() -> nbformat.NotebookNode:
    """An empty notebook with the course's kernelspec (python3) and language info."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def kernel_language_info() -> dict[str, Any]:
    """The language info the course's ``python3`` kernel (ipykernel on this Python) reports, as an executed
    notebook stores it."""
    from ipykernel.ipkernel import IPythonKernel

    return copy.deepcopy(IPythonKernel.language_info)


def new_cell(spec: dict[str, Any], cell_id: str) -> nbformat.NotebookNode:
    """A markdown or code cell (no outputs) from one :func:`parse_source` entry, with a stable id."""
    make = nbformat.v4.new_markdown_cell if spec["type"] == "markdown" else nbformat.v4.new_code_cell
    cell = make(spec["source"])
    cell["id"] = cell_id
    return cell


def write_notebook(nb: nbformat.NotebookNode, target: Path, *, check: bool = False) -> bool:
    """Validate ``nb`` and write it to ``target`` (nbformat's layout, one final newline) if that changes the
    file; returns whether it did (with ``check=True``: whether it would, writing nothing)."""
    nbformat.validate(nb)
    text = nbformat.writes(nb) + "\n"
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return False
    if not check:
        target.write_text(text, encoding="utf-8")
    return True


# -- the lesson map ------------------------------------------------------------------------------------------
def lesson_map(readme: Path, relative_to: str) -> str:
    """The README's lesson map (the text between its lesson-map markers) with every relative link rewritten
    for a page in the repository folder ``relative_to`` (``"notebooks"``: ``exercises/ex1.ipynb`` becomes
    ``../exercises/ex1.ipynb``). Raises LectureError if the markers are missing or out of order."""
    text = readme.read_text(encoding="utf-8")
    begin, end = LESSON_MAP_BEGIN.search(text), LESSON_MAP_END.search(text)
    if not begin or not end or end.start() < begin.end():
        raise LectureError(f"{readme}: no lesson map: expected a line '<!-- lesson map begin ... -->', the map, "
                           f"then a line '<!-- lesson map end -->'")

    def rebase(link: re.Match) -> str:
        target = link.group("target")
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return link.group(0)
        path, hash_, anchor = target.partition("#")
        return f"]({posixpath.relpath(path, relative_to)}{hash_}{anchor})"

    return _LINK.sub(rebase, text[begin.end():end.start()].strip("\n"))


# -- lectures ------------------------------------------------------------------------------------------------
def lecture_sources(prefixes: Iterable[str] = (), *, root: Path = ROOT) -> list[Path]:
    """The lecture sources ``notebooks/src/*.py`` under ``root``, sorted; only those whose file names start
    with one of ``prefixes`` if any are given."""
    prefixes = tuple(prefixes)
    sources = sorted((root / "notebooks" / "src").glob("*.py"))
    return [s for s in sources if not prefixes or s.name.startswith(prefixes)]


def notebook_from_source(path: Path, *, root: Path = ROOT) -> nbformat.NotebookNode:
    """An unexecuted notebook with the cells of a lecture source under ``root`` (no exercise roles), the
    lesson map filled in where the source has the placeholder."""
    nb = new_course_notebook()
    for index, spec in enumerate(parse_source(path.read_text(encoding="utf-8"), name=path.name)):
        if spec["role"]:
            raise ValueError(f"{path.name}: exercise cell markers ('{spec['role']}') do not belong in a lecture")
        placeholder = LESSON_MAP_PLACEHOLDER.search(spec["source"]) if spec["type"] == "markdown" else None
        if placeholder:
            table = lesson_map(root / "README.md", path.parent.parent.relative_to(root).as_posix())
            text = spec["source"]
            spec = {**spec, "source": text[:placeholder.start()] + table + text[placeholder.end():]}
        nb.cells.append(new_cell(spec, f"{path.stem}-{index:03d}"))  # stable ids keep diffs small
    return nb


def strip_volatile_metadata(nb: nbformat.NotebookNode) -> None:
    """Drop widget state and per-cell execution timestamps (they change on every run)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)


def build_lecture(source: Path, *, root: Path = ROOT, timeout: int = 300) -> float:
    """Execute one lecture from its source in a fresh ``python3`` kernel (working folder: the notebook's) and
    write ``notebooks/<name>.ipynb``; returns the wall time of the execution in seconds, kernel start included
    (0 for a notebook without code cells, written without starting a kernel). Raises LectureError if a cell
    raised; nothing is written then."""
    nb = notebook_from_source(source, root=root)
    folder = source.parent.parent
    seconds = 0.0
    if not any(cell.cell_type == "code" for cell in nb.cells):
        # what a kernel would have stored: JupyterLab marks a notebook modified when the language info its
        # kernel reports on start differs from the stored one, so a page nobody touched would ask to be saved
        nb.metadata["language_info"] = kernel_language_info()
    else:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError

        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNELSPEC["name"], record_timing=False,
                                resources={"metadata": {"path": str(folder)}})
        start = time.perf_counter()
        try:
            client.execute()
        except CellExecutionError as error:
            raise LectureError(f"{source.name}: a cell raised, nothing written:\n{error}") from None
        seconds = time.perf_counter() - start
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        raise LectureError(f"{source.name} raised {errors[0].get('ename')}: {errors[0].get('evalue')}; "
                           f"nothing written")
    strip_volatile_metadata(nb)
    write_notebook(nb, folder / f"{source.stem}.ipynb")
    return seconds
