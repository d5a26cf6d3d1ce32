"""Lecture notebooks (and the start page): in step with their sources, executed, clean, checkable by nbval."""

import json
from pathlib import Path

import nbformat
import pytest

from bnlab.build.notebooks import notebook_from_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))  # the start page (00_start_here) and the lectures
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
START_PAGE = ROOT / "notebooks" / "00_start_here.ipynb"
LECTURES = [path for path in NOTEBOOKS if path != START_PAGE]


def test_there_are_lectures_and_a_start_page():
    assert LECTURES, "no lecture notebooks found"
    assert START_PAGE in NOTEBOOKS, f"no start page {START_PAGE.relative_to(ROOT)} (bnlab build lectures 00)"


def test_every_source_has_its_notebook_and_back():
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_equal_its_source(path):
    stored = nbformat.read(path, as_version=4)
    built = notebook_from_source(ROOT / "notebooks" / "src" / f"{path.stem}.py")
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells], \
        f"{path.name} is out of date: run bnlab build lectures {path.stem[:2]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_executed_clean_and_stateless(path):
    raw = json.loads(path.read_text())
    nb = nbformat.reads(path.read_text(), as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in raw["metadata"], "widget state is stored: strip it (bnlab build lectures does)"
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1)), \
        "cells were not executed once, top to bottom"
    for cell in code_cells:
        for output in cell.outputs:
            assert output.output_type != "error", f"stored error output: {output.get('ename')}"
            assert not (output.output_type == "stream" and output.name == "stderr"), \
                f"stored stderr output (a warning?): {output.text[:200]!r}"


def test_every_course_notebook_stores_the_same_kernel_language_info():
    """The start page, written without a kernel, stores what the lectures' kernel stored when they ran: with
    anything less JupyterLab marks the page modified as soon as its kernel starts (tests/test_lab_start.py)."""
    infos = {path.name: nbformat.read(path, as_version=4).metadata.get("language_info") for path in NOTEBOOKS}
    assert len({json.dumps(info, sort_keys=True) for info in infos.values()}) == 1, \
        f"the notebooks store different language info: {infos}"
    assert {"name", "version", "mimetype", "file_extension"} <= set(infos[START_PAGE.name])


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_notebook_has_at_least_two_checked_cells_with_output(path):
    nb = nbformat.read(path, as_version=4)
    checked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    assert len(checked) >= 2
    for cell in checked:
        assert cell.outputs, f"checked cell has no output: {cell.source[:80]!r}"
        assert not any("image/png" in o.get("data", {}) for o in cell.outputs), "checked cells must print text"


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.stem)
def test_notebook_reads_like_a_chapter(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Lecture")
    for heading in ("Learning goals", "Prerequisites", "## Summary", "## Questions"):
        assert heading in text, f"missing {heading!r}"
    assert "$" in text, "no LaTeX at all"
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert figures >= 1, "a lecture shows at least one figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_relative_links_point_to_files_that_exist(path):
    import re

    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    links = [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in target]
    for target in links:
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name} links to missing {target}"


def _code_outputs_text(cell) -> str:
    return "".join(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
                   for o in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_stored_source_listing_is_the_current_source(path):
    """A show_source listing stored in a notebook must equal the library's source today (no stale code)."""
    import importlib
    import inspect
    import re

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "show_source(" not in cell.source:
            continue
        text = _code_outputs_text(cell)
        header = re.match(r"# (bnlab/[\w/]+)\.py : ([\w.]+)  \(the library's current source\)\n", text)
        assert header, f"{path.name}: a show_source output without its header line: {text[:120]!r}"
        module = importlib.import_module(header.group(1).replace("/", "."))
        obj = module
        for part in header.group(2).split("."):
            obj = getattr(obj, part)
        # (IPython's plain-text form of a Code object drops the source's final newline)
        assert text[header.end():].rstrip("\n") == inspect.getsource(obj).rstrip("\n"), \
            (f"{path.name} shows a stale listing of {header.group(2)}: rebuild it with "
             f"bnlab build lectures {path.stem[:2]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lectures_mentioned_exist_or_are_marked_planned(path):
    """'lecture 11' in the text needs notebooks/11_*.ipynb, unless the same line says it is planned."""
    import re

    existing = {int(p.stem[:2]) for p in NOTEBOOKS}
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            for mention in re.finditer(r"[Ll]ectures?\s+(\d+(?:\s*(?:,|and|or|–|-)\s*\d+)*)", line):
                numbers = {int(n) for n in re.findall(r"\d+", mention.group(1))}
                missing = sorted(numbers - existing)
                assert not missing or "planned" in line, \
                    f"{path.name} refers to lecture(s) {missing}, which do not exist yet: {line.strip()!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checked_cells_print_numbers_not_bare_verdicts(path):
    """A checked line shows the value and its bracket ('2.1e-16 (< 1e-10)'), not a bare True or False."""
    import re

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "NBVAL_CHECK_OUTPUT" not in cell.source:
            continue
        for line in _code_outputs_text(cell).splitlines():
            assert not re.search(r"(^|[:=\s])(True|False)\s*$", line), \
                f"{path.name}: checked output line ends in a bare verdict: {line.strip()!r}"
