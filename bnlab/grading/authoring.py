"""Build the exercise masters (solutions/*.ipynb) from their percent-format sources (solutions/src/*.py).

The sources use the percent format of :mod:`bnlab.build.notebooks`, plus three exercise markers:

``# %% solution id=ex1_forward``        the learner's code, with ``### BEGIN SOLUTION`` / ``### END SOLUTION``
``# %% tests id=ex1_forward_tests points=2``  a locked, graded test cell (``checks.*`` calls)
``# %% locked id=ex1_setup``            a read-only code cell (imports, given data)

This module adds only the exercise markup: nbgrader's cell metadata, the locks, and the exercise id (the file
name, ``ex1_forward``) in ``metadata.bnlab.exercise``. The first markdown line ``# Exercise ...`` titles it.
Building is deterministic, so the masters can be checked against their sources in a test
(``bnlab build masters --check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from bnlab.build.notebooks import new_cell, new_course_notebook, parse_source, write_notebook

__all__ = ["build_masters", "master_from_source"]


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
    for index, spec in enumerate(parse_source(path.read_text(encoding="utf-8"), name=path.name)):
        cell = new_cell(spec, spec["attrs"].get("id", f"{path.stem}-{index:02d}").replace("_", "-"))
        if spec["role"]:
            try:
                cell.metadata["nbgrader"] = _nbgrader(spec["role"], spec["attrs"])
            except ValueError as error:
                raise ValueError(f"{path.name}, cell {index + 1}: {error}") from None
            if spec["role"] != "solution":
                cell.metadata["editable"] = False
                cell.metadata["deletable"] = False
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def build_masters(sources: Path, masters: Path, *, check: bool = False) -> list[Path]:
    """Write ``masters/<name>.ipynb`` for every ``sources/<name>.py``; returns the paths written (or, with
    ``check=True``, the ones that would change, writing nothing)."""
    return [masters / f"{source.stem}.ipynb" for source in sorted(sources.glob("*.py"))
            if write_notebook(master_from_source(source), masters / f"{source.stem}.ipynb", check=check)]
