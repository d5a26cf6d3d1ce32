"""Build the exercise masters (solutions/*.ipynb) from their percent-format sources (solutions/src/*.py).

A source is a plain Python file cut into cells by marker lines:

``# %% [markdown]``                     a markdown cell (every line commented with ``# ``)
``# %%``                                an ordinary code cell
``# %% solution id=ex1_forward``        the learner's code, with ``### BEGIN SOLUTION`` / ``### END SOLUTION``
``# %% tests id=ex1_forward_tests points=2``  a locked, graded test cell (``checks.*`` calls)
``# %% locked id=ex1_setup``            a read-only code cell (imports, given data)

The first markdown line ``# Exercise ...`` titles it; the file name (``ex1_forward``) is the exercise id that
goes into ``metadata.bnlab.exercise``. Building is deterministic, so the masters can be checked against their
sources in a test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from bnlab.percent_format import new_course_notebook, parse_source

__all__ = ["master_from_source", "build_masters"]

def _nbgrader(role: str, attrs: dict[str, str]) -> dict[str, Any]:
    if "id" not in attrs:
        raise ValueError(f"a {role} cell needs id=...")
    grade = role == "tests"
    meta = {"grade": grade, "grade_id": attrs["id"], "locked": role != "solution", "schema_version": 3,
            "solution": role == "solution", "task": False}
    if grade:
        points = float(attrs.get("points", "1"))
        meta["points"] = int(points) if points.is_integer() else points
    return meta


def master_from_source(path: Path) -> Any:
    """The master notebook of one source file (no outputs)."""
    nb = new_course_notebook()
    nb.metadata["bnlab"] = {"exercise": path.stem}
    for index, spec in enumerate(parse_source(path.read_text())):
        if spec["type"] == "markdown":
            cell = nbformat.v4.new_markdown_cell(spec["source"])
        else:
            cell = nbformat.v4.new_code_cell(spec["source"])
        if spec["role"]:
            cell.metadata["nbgrader"] = _nbgrader(spec["role"], spec["attrs"])
            if spec["role"] != "solution":
                cell.metadata["editable"] = False
                cell.metadata["deletable"] = False
        cell["id"] = spec["attrs"].get("id", f"{path.stem}-{index:02d}").replace("_", "-")
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def build_masters(sources: Path, masters: Path, *, check: bool = False) -> list[Path]:
    """Write ``masters/<name>.ipynb`` for every ``sources/<name>.py``; returns the paths written (or, with
    ``check=True``, the ones that would change, writing nothing)."""
    changed = []
    for source in sorted(sources.glob("*.py")):
        target = masters / f"{source.stem}.ipynb"
        text = nbformat.writes(master_from_source(source)) + "\n"
        if not target.exists() or target.read_text() != text:
            changed.append(target)
            if not check:
                target.write_text(text)
    return changed
